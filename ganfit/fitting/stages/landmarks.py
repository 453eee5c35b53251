"""The landmark stage as a `Stage`: shape, expression, pose and focal length from the 68 landmarks
(`ganfit.fitting.landmark_stage.LandmarkStage`, Levenberg-Marquardt), one solve per landmark convention
present in the batch, each with its landmark-to-vertex table. Photos of one subject (`frame_subject`) then share
one shape (`landmark_shared`: "shared" or GANFit's "average")."""
from __future__ import annotations

import torch

from ...model.morphable import MorphableModel
from ..landmark_energy import EnergyWeights
from ...errors import ConfigError
from ..landmark_shared import IDENTITY_MODES, fit_shared_identity
from ..landmark_stage import LandmarkStage, LandmarkStageResult
from ..observations import Observations
from ..state import FitState
from .base import Progress, StageOutcome

__all__ = ["LandmarksStage"]


class LandmarksStage:
    """Fits every photo from its landmarks alone (it starts from the mean face: the state given is not read).

    Args:
        model: the face model.
        energy: the energy's weights. focal_ratio: prior focal / longer image side.
        iterations / rigid_iterations / tolerance: the LM limits (`LandmarkStageConfig`).
        optimizer / adam_lr / adam_iterations: "lm" or "adam" and Adam's settings.
        num_shape / num_expression: components fitted (None: all). rotation: "axis_angle" or "6d".
        contour: "dynamic", "static", "off" or None (the convention's own).
        landmark_table: "auto" (the calibrated table for 2d landmarks when the model has one) or "model".
        identity_mode: how photos of one subject share their shape: "shared" (one shape fitted to all of
            them) or "average" (GANFit: the mean of their own fits, then each photo refitted with it fixed).
        device: where the solve runs.
    The outcome's extras hold "result", the merged `LandmarkStageResult`; its details per photo the
    convention and the landmark table's name.
    """

    name = "landmarks"
    timing_key = "landmark_stage"

    def __init__(self, model: MorphableModel, *, energy: EnergyWeights = EnergyWeights(), focal_ratio: float = 1.6,
                 iterations: int = 50, rigid_iterations: int = 2, tolerance: float = 1e-6, optimizer: str = "lm",
                 adam_lr: float = 0.02, adam_iterations: int = 400, num_shape: int | None = None,
                 num_expression: int | None = None, rotation: str = "axis_angle", contour: str | None = None,
                 landmark_table: str = "auto", identity_mode: str = "shared",
                 device: torch.device | str = "cpu") -> None:
        if identity_mode not in IDENTITY_MODES:
            raise ConfigError(f"identity mode must be one of {', '.join(IDENTITY_MODES)}; got {identity_mode!r}")
        self.identity_mode = identity_mode
        self.model, self.energy, self.focal_ratio = model, energy, focal_ratio
        self.iterations, self.rigid_iterations, self.tolerance = iterations, rigid_iterations, tolerance
        self.optimizer, self.adam_lr, self.adam_iterations = optimizer, adam_lr, adam_iterations
        self.num_shape, self.num_expression, self.rotation = num_shape, num_expression, rotation
        self.contour, self.landmark_table, self.device = contour, landmark_table, torch.device(device)
        self._solvers: dict[str, LandmarkStage] = {}
        self._table_names: dict[str, str] = {}

    def solver(self, convention: str) -> LandmarkStage:
        """The `LandmarkStage` of a convention ("2d" / "3d"), built on first use."""
        if convention not in self._solvers:
            table = self._table(convention)
            self._solvers[convention] = LandmarkStage(
                self.model, num_shape=self.num_shape, num_expression=self.num_expression, rotation=self.rotation,
                convention=convention, contour=self.contour, landmark_vertices=table.vertices, device=self.device)
            self._table_names[convention] = table.name
        return self._solvers[convention]

    def _table(self, convention: str):
        """Under "auto" the calibrated table for 2d landmarks when this model has one
        (`ganfit.model.landmark_table`), else the model's own landmark vertices."""
        from ...model.landmark_table import calibrated_table, model_table

        table = calibrated_table(self.model) if self.landmark_table == "auto" and convention == "2d" else None
        return table or model_table(self.model)

    def run(self, observations: Observations, state: FitState, *, generator: torch.Generator,
            progress: Progress | None = None) -> StageOutcome:
        """One solve per convention present, merged in photo order; then the photos of each subject with
        several photos refitted with one shape. Deterministic: `generator` is not drawn from.

        Raises:
            ConfigError: photos of one subject with different landmark conventions.
        """
        targets, sizes, conventions = observations.landmarks, observations.sizes, observations.conventions
        fs = observations.frame_subject.cpu()
        for subject in torch.unique(fs).tolist():
            used = {conventions[i] for i in (fs == subject).nonzero()[:, 0].tolist()}
            if len(used) > 1:
                raise ConfigError(f"the photos of subject {subject} mix landmark conventions ({', '.join(sorted(used))}); "
                                  "one person's photos need landmarks of one convention")
        groups = {c: [i for i, ci in enumerate(conventions) if ci == c] for c in dict.fromkeys(conventions)}

        def report(it: int, entry: dict) -> None:
            if it:
                shown = {"px": f"{float(entry['reprojection_px'].mean()):.2f}"}
                if progress is not None:
                    progress(shown)

        parts = []
        for convention, idx in groups.items():
            rows = torch.as_tensor(idx, device=targets.device)
            solver = self.solver(convention)
            result = solver.solve(
                targets[rows], sizes[rows], weights=observations.landmark_weights, energy=self.energy,
                focal_ratio=self.focal_ratio, iterations=self.iterations, rigid_iterations=self.rigid_iterations,
                ftol=self.tolerance, optimizer=self.optimizer, adam_lr=self.adam_lr,
                adam_iterations=self.adam_iterations, progress=report)
            group_subjects = fs[rows.cpu()]
            if torch.unique(group_subjects).numel() < group_subjects.numel():  # some subject has several photos
                result = fit_shared_identity(solver, result, targets[rows], sizes[rows], group_subjects,
                                             mode=self.identity_mode, weights=observations.landmark_weights,
                                             energy=self.energy, focal_ratio=self.focal_ratio,
                                             iterations=self.iterations, ftol=self.tolerance)
            parts.append((idx, result))
        result = LandmarkStageResult.merge(parts, targets.shape[0])
        b = targets.shape[0]
        return StageOutcome(
            state=FitState.from_fit_params(result.params, observations.frame_subject, landmark_vertices=result.vertex_ids),
            history=result.history, stop_reason=list(result.stop_reason), iterations=list(result.iterations),
            warnings=[[] for _ in range(b)],
            details=[{"convention": c, "landmark_table": self._table_names[c]} for c in conventions],
            extras={"result": result})
