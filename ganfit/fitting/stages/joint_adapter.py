"""The joint stage as a `Stage`: `joint_fit.run_joint_stage` (each photo in its working copy's pixels) from
the landmark stage's state, its texture latent, SH lighting and colour gain/offset added to the state."""
from __future__ import annotations

from typing import Callable

import torch

from ...errors import ConfigError
from ..history import merge_histories
from ..joint_fit import JointFit, run_joint_stage
from ..observations import Observations
from ..state import FitState
from .base import Progress, StageOutcome
from .joint import JointStage

__all__ = ["JointFitStage"]

#: the terms a progress bar shows (then the landmark error in pixels)
SHOWN = ("pixel", "identity")


class JointFitStage:
    """The joint stage of a schedule.

    Args:
        stage: the `JointStage` (or any object with its `run`), or a callable that builds it (called on the first `run`, so its renderer,
            identity network and texture model load only when a fit reaches this stage; see
            `stages.setup.build_joint_stage`).
        contour: the fit's `FitConfig.contour`: under "auto" and "dynamic" the jaw-line landmarks of photos with
            2d landmarks slide along the outline in the joint stage too; "static" and "off" keep them fixed.
        identity_mode: `FitConfig.same_person` ("shared" or "average", `joint_fit.run_joint_stage`).
    The outcome's extras hold "joint", the `JointFit` (face.json's `joint`, the model texture).
    """

    name = "joint"
    timing_key = "joint_stage"

    def __init__(self, stage: JointStage | Callable[[], JointStage], contour: str = "auto",
                 identity_mode: str = "shared") -> None:
        self.contour, self.identity_mode = contour, identity_mode
        built = hasattr(stage, "run")  # a JointStage, or anything with its `run`
        self._stage = stage if built else None
        self._build = None if built else stage

    @property
    def stage(self) -> JointStage:
        """The `JointStage` (built on first use)."""
        if self._stage is None:
            self._stage = self._build()
        return self._stage

    def run(self, observations: Observations, state: FitState, *, generator: torch.Generator,
            progress: Progress | None = None) -> StageOutcome:
        """Raises ConfigError when no landmark stage ran before (the state has no pose or landmark vertices)."""
        if not state.fitted or state.landmark_vertices is None:
            raise ConfigError("the joint stage starts from the landmark stage's result: run landmarks before joint")

        def report(it: int, terms: dict) -> None:
            shown = {k: f"{float(terms[k].mean()):.3f}" for k in SHOWN if k in terms}
            if "reprojection_px" in terms:
                shown["px"] = f"{float(terms['reprojection_px'].mean()):.2f}"
            if progress is not None:
                progress(shown)

        joint = run_joint_stage(self.stage, observations.images, observations.landmarks, state.to_fit_params(),
                                state.landmark_vertices, observations.landmark_weights, generator, report,
                                frame_subject=observations.frame_subject,
                                sliding_jaw=[c == "2d" and self.contour in ("auto", "dynamic")
                                             for c in observations.conventions],
                                identity_mode=self.identity_mode)
        return StageOutcome(state=_joint_state(joint, state), history=_merged_history(joint),
                            stop_reason=joint.stop_reason, iterations=joint.iterations, warnings=joint.warnings,
                            extras={"joint": joint})


def _joint_state(joint: JointFit, before: FitState) -> FitState:
    """The state after the joint stage: its `FitParams` (photo pixels), texture latents, lighting and colour."""
    cat = lambda name: torch.cat([getattr(r, name) for r in joint.results])  # noqa: E731
    return FitState.from_fit_params(joint.params, before.frame_subject, landmark_vertices=before.landmark_vertices,
                                    texture_latent=cat("latent"), lighting=cat("lighting"), gain=cat("gain"),
                                    offset=cat("offset"))


def _merged_history(joint: JointFit) -> list[dict[str, list[float]]]:
    """One history for the B photos, each run separately: a photo's shorter history repeats its last entry."""
    return merge_histories([([i], r.history) for i, r in enumerate(joint.results)], len(joint.results), fill=float("nan"))
