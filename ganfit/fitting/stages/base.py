"""The `Stage` protocol: one step of a fit's schedule (DESIGN.md, "Stages").

A stage takes the `Observations` and the `FitState` the stage before it left, and returns a `StageOutcome`
holding the new state and its report. It gets its collaborators (face model, renderer, identity network,
texture model) through its constructor; the `Fitter` only runs the schedule (`ganfit.fitting.schedule`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from ..observations import Observations
from ..state import FitState

__all__ = ["Progress", "Stage", "StageOutcome"]

#: called once per iteration a progress bar should count, with the main terms to show ({"px": "1.23"})
Progress = Callable[[dict[str, str]], None]


@dataclass
class StageOutcome:
    """What one stage did to B photos.

    state: the `FitState` after the stage.
    history: one dict per iteration, term -> B values.
    stop_reason / iterations: per photo why and after how many iterations the stage stopped.
    warnings: per photo the stage's warnings.
    details: per photo JSON-ready facts for face.json's `solver` entry beyond stop reason and iterations
        (the landmark stage: convention and landmark table), or empty.
    extras: stage-specific results ("result": the landmark stage's `LandmarkStageResult`; "joint": the joint
        stage's `JointFit`).
    """

    state: FitState
    history: list[dict[str, list[float]]] = field(default_factory=list)
    stop_reason: list[str] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    warnings: list[list[str]] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    def solver(self, index: int) -> dict[str, Any]:
        """Photo `index`'s entry of face.json's `solver`: stop reason, iterations and `details`."""
        return {"stop_reason": self.stop_reason[index], "iterations": self.iterations[index],
                **(self.details[index] if index < len(self.details) else {})}

    def photo_warnings(self, index: int) -> list[str]:
        return list(self.warnings[index]) if index < len(self.warnings) else []


@runtime_checkable
class Stage(Protocol):
    """One stage of a schedule.

    name: the stage's name in `FitConfig.stages` and face.json's `solver` ("landmarks", "joint").
    timing_key: its entry in `FitResult.timings` ("landmark_stage", "joint_stage").
    """

    name: str
    timing_key: str

    def run(self, observations: Observations, state: FitState, *, generator: torch.Generator,
            progress: Progress | None = None) -> StageOutcome:
        """Fit from `state` (the previous stage's; `FitState.empty` for the first) to `observations`, drawing
        random numbers from `generator` only."""
        ...
