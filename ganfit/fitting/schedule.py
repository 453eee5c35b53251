"""The schedule of a fit as data: `FitConfig.stages` lists the stages' typed settings (`LandmarkStageConfig`,
`JointStageConfig`), each stage is built once from its settings and the fit-wide options, and `run_schedule`
runs them in order, each from the state the one before it left."""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Mapping, Sequence

import torch

from ..model.morphable import MorphableModel
from .config import FitConfig, LandmarkStageConfig
from .landmark_energy import EnergyWeights
from .observations import Observations
from .stages.base import Progress, Stage, StageOutcome
from .stages.joint import JointStageConfig
from .stages.joint_adapter import JointFitStage
from .stages.landmarks import LandmarksStage
from .state import FitState

__all__ = ["StageFactory", "build_schedule", "default_factories", "joint_stage", "landmarks_stage", "run_schedule"]

#: builds one stage from the fit's config, that stage's own settings (an entry of `config.stages`), the face
#: model and the device
StageFactory = Callable[[FitConfig, Any, MorphableModel, torch.device], Stage]


def landmarks_stage(config: FitConfig, stage: LandmarkStageConfig, model: MorphableModel,
                    device: torch.device) -> LandmarksStage:
    """The landmark stage of `stage` (iterations, solver, weights) and `config`'s landmark and focal settings."""
    cfg, w = config, stage.weights
    energy = EnergyWeights(landmark_sigma=cfg.landmark_sigma, w_landmark=w.landmark, w_shape=w.shape_prior,
                           w_expr=w.expression_prior, w_focal=w.focal_prior, focal_log_sigma=cfg.focal_log_sigma)
    return LandmarksStage(model, energy=energy, focal_ratio=cfg.focal_ratio, iterations=stage.iterations,
                          rigid_iterations=stage.rigid_iterations, tolerance=stage.tolerance, optimizer=stage.optimizer,
                          adam_lr=stage.adam_lr, adam_iterations=stage.adam_iterations, num_shape=cfg.num_shape,
                          num_expression=cfg.num_expression, rotation=cfg.rotation,
                          contour=None if cfg.contour == "auto" else cfg.contour, landmark_table=cfg.landmark_table,
                          identity_mode=cfg.same_person,
                          device=device)


def joint_stage(config: FitConfig, stage: JointStageConfig, model: MorphableModel,
                device: torch.device) -> JointFitStage:
    """The joint stage of `stage` with `config`'s `identity`, `identity_weights` and `texture_model`; its
    collaborators load when a fit first reaches it. Its landmark term is the landmark stage's: the fit's
    `FitConfig.landmark_sigma` (and the observations' landmark weights, from `jaw_weight`)."""
    from .stages.setup import build_joint_stage

    settings = dataclasses.replace(stage, landmark_sigma=config.landmark_sigma, jaw_weight=config.jaw_weight)
    return JointFitStage(functools.partial(
        build_joint_stage, model, settings, identity=config.identity,
        identity_weights=config.identity_weights, texture_model=config.texture_model, device=device),
        contour=config.contour, identity_mode=stage.same_person)


def default_factories() -> dict[str, StageFactory]:
    """The stage of each name `FitConfig.stages` accepts."""
    return {"landmarks": landmarks_stage, "joint": joint_stage}


def build_schedule(config: FitConfig, model: MorphableModel, device: torch.device | str, *,
                   factories: Mapping[str, StageFactory] | None = None) -> list[Stage]:
    """The stages of `config.stages`, in order, each built from its own settings.

    Args:
        config: the fit's configuration.
        model: the face model. device: where the stages run.
        factories: stage builders by name, replacing or adding to `default_factories()` (a test's or an
            experiment's own stage under a name of the schedule).
    Raises:
        KeyError: a name without a factory.
    """
    table = {**default_factories(), **(factories or {})}
    device = torch.device(device)
    return [table[settings.name](config, settings, model, device) for settings in config.stages]


def run_schedule(schedule: Sequence[Stage], observations: Observations, *, generator: torch.Generator,
                 state: FitState | None = None,
                 progress: Callable[[Stage], tuple[Progress | None, Callable[[], None]]] | None = None,
                 timings: dict[str, float] | None = None) -> list[StageOutcome]:
    """Run the stages in order, each from the state the one before it left.

    Args:
        schedule: the stages. observations: what they fit to. generator: the fit's random numbers.
        state: the first stage's starting state (default `FitState.empty(observations.frame_subject)`).
        progress: for each stage, returns its per-iteration callback and a function closing it afterwards.
        timings: when given, each stage's seconds are stored under its `timing_key`.
    Returns:
        One `StageOutcome` per stage; the last one's state is the fit's.
    """
    state = FitState.empty(observations.frame_subject) if state is None else state
    outcomes = []
    for stage in schedule:
        t0 = time.perf_counter()
        report, close = progress(stage) if progress is not None else (None, lambda: None)
        try:
            outcome = stage.run(observations, state, generator=generator, progress=report)
        finally:
            close()
        if timings is not None:
            timings[stage.timing_key] = time.perf_counter() - t0
        outcomes.append(outcome)
        state = outcome.state
    return outcomes
