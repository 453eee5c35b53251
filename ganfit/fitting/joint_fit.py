"""Running the joint stage on a batch of photos of any sizes, from the landmark stage's result.

`JointStage.run` takes a batch of equally sized images; photos differ in size, and large ones are fitted
on a downscaled working copy (`ganfit.io.images`), so each photo runs on its own, in the working copy's
pixels (landmarks, focal length and principal point scaled by `Image.scale`), and the results come back
in the photo's own pixels, merged into one batch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .params import FitParams
from .stages.joint import JointStage, JointStageResult

__all__ = ["JointFit", "run_joint_stage"]


@dataclass
class JointFit:
    """The joint stage's result for B photos (photo pixels).

    params: merged `FitParams` (B). results: per photo its `JointStageResult` (in the working copy's pixels:
    its `params` are kept as the stage returned them). stop_reason / iterations / warnings: per photo.
    model: the face model the stage fitted (for renders of the result, `joint_overlay`), or None.
    """

    params: FitParams
    results: list[JointStageResult] = field(default_factory=list)
    model: Any = field(default=None, repr=False)

    @property
    def stop_reason(self) -> list[str]:
        return [r.stop_reason[0] for r in self.results]

    @property
    def iterations(self) -> list[int]:
        return [r.iterations for r in self.results]

    @property
    def warnings(self) -> list[list[str]]:
        return [r.warnings[0] if r.warnings else [] for r in self.results]

    def summary(self, index: int) -> dict:
        """JSON-ready parameters and loss history of photo `index`: texture latent, SH lighting (9 x 3),
        colour gain and offset, per-term losses per iteration, stop reason, iterations and seconds."""
        r = self.results[index]
        history = {k: [float(h[k][0]) for h in r.history] for k in (r.history[0] if r.history else {})}
        return {
            "texture_latent": r.latent[0].detach().cpu().tolist(),
            "sh_lighting": r.lighting[0].detach().cpu().tolist(),
            "colour_gain": r.gain[0].detach().cpu().tolist(),
            "colour_offset": r.offset[0].detach().cpu().tolist(),
            "losses": history,
            "stop_reason": r.stop_reason[0],
            "iterations": r.iterations,
            "seconds": r.seconds,
        }


def _scaled(params: FitParams, i: int, scale: tuple[float, float], dtype=None) -> FitParams:
    """Photo `i`'s parameters with focal and principal point in the working copy's pixels (x `scale`; the
    mean of the two axes for the focal length, which is one number)."""
    sx, sy = scale
    s = torch.tensor([sx, sy], dtype=params.principal.dtype, device=params.principal.device)
    one = params.select(i)
    return dataclasses.replace(one, focal=one.focal * (0.5 * (sx + sy)), principal=one.principal * s)


def run_joint_stage(stage: JointStage, images: Sequence, targets: torch.Tensor, params: FitParams,
                    vertex_ids: torch.Tensor, landmark_weights: torch.Tensor, generator: torch.Generator,
                    progress: Callable[[int, dict[str, torch.Tensor]], None] | None = None) -> JointFit:
    """Run `stage` on each photo from the landmark stage's result.

    Args:
        stage: the `JointStage`.
        images: B decoded photos (`ganfit.io.images.Image`: pixels (h, w, 3) and `scale`).
        targets: (B, 68, 2) landmarks in photo pixels.
        params: (B) the landmark stage's `FitParams` (photo pixels).
        vertex_ids: (B, 68) model vertex of each landmark.
        landmark_weights: (68,) per-landmark weights.
        generator: the fit's random numbers (drawn in photo order: same seed, same result).
        progress: passed to `JointStage.run`.
    Returns:
        `JointFit`, its params with the focal length and principal point the landmark stage gave (the joint
        stage keeps them) and the rest from the joint stage.
    """
    results = []
    dtype, device = params.shape.dtype, params.shape.device
    for i, img in enumerate(images):
        scale = tuple(float(v) for v in img.scale)
        pixels = torch.from_numpy(np.array(img.pixels, dtype=np.float32))[None]  # a writable copy
        lms = targets[i:i + 1] * torch.tensor(scale, dtype=targets.dtype, device=targets.device)
        results.append(stage.run(pixels, lms, _scaled(params, i, scale), vertex_ids[i:i + 1], generator=generator,
                                 landmark_weights=landmark_weights, progress=progress))
    cat = lambda name: torch.cat([getattr(r.params, name).to(device, dtype) for r in results])  # noqa: E731
    merged = FitParams(shape=cat("shape"), expression=cat("expression"), rotation=cat("rotation"),
                       translation=cat("translation"), focal=params.focal, principal=params.principal)
    return JointFit(params=merged, results=results, model=getattr(stage, "model", None))
