"""Running the joint stage on a batch of photos of any sizes, from the landmark stage's result.

`JointStage.run` takes a batch of equally sized images; photos differ in size, and large ones are fitted
on a downscaled working copy (`ganfit.io.images`), so each photo runs on its own, in the working copy's
pixels (landmarks, focal length and principal point scaled by `Image.scale`), and the results come back
in the photo's own pixels, merged into one batch. Photos of one person (`frame_subject`) run together, as one
batch padded to the largest of them (the padding lies outside every face crop), with their shape and texture
latent tied (`stages.joint_tie`).
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


def _padded(images: Sequence) -> torch.Tensor:
    """(F, H, W, 3) float32: the working copies of F photos, each at the top left of the largest size."""
    h = max(img.pixels.shape[0] for img in images)
    w = max(img.pixels.shape[1] for img in images)
    out = torch.zeros(len(images), h, w, 3)
    for k, img in enumerate(images):
        px = torch.from_numpy(np.array(img.pixels, dtype=np.float32))
        out[k, : px.shape[0], : px.shape[1]] = px
    return out


def split_result(result: JointStageResult, k: int) -> JointStageResult:
    """Photo `k` of a batched `JointStageResult` as a result of its own (batch 1)."""
    pick = lambda t: t[k:k + 1]  # noqa: E731
    return JointStageResult(params=result.params.select(k), latent=pick(result.latent), lighting=pick(result.lighting),
                            gain=pick(result.gain), offset=pick(result.offset), texture=pick(result.texture),
                            history=[{name: [v[k]] for name, v in h.items()} for h in result.history],
                            stop_reason=[result.stop_reason[k]], iterations=result.iterations,
                            warnings=[result.warnings[k]] if result.warnings else [[]], seconds=result.seconds)


def run_joint_stage(stage: JointStage, images: Sequence, targets: torch.Tensor, params: FitParams,
                    vertex_ids: torch.Tensor, landmark_weights: torch.Tensor, generator: torch.Generator,
                    progress: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
                    frame_subject: torch.Tensor | None = None, sliding_jaw: Sequence[bool] | None = None,
                    identity_mode: str = "shared") -> JointFit:
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
        frame_subject: (B,) long, each photo's person; a person's photos share shape and texture latent.
            None: every photo its own person.
        identity_mode: how a person's photos share them: "shared" (optimised together, tied) or "average"
            (GANFit: each photo fitted on its own, the mean shape and latent taken, then each photo's
            expression, pose, light and colour refitted with them fixed; twice the time).
        sliding_jaw: per photo whether its jaw-line landmarks follow the outline (2d landmarks; a person's
            photos share one convention); None: none do.
    Returns:
        `JointFit`, its params with the focal length and principal point the landmark stage gave (the joint
        stage keeps them) and the rest from the joint stage.
    """
    dtype, device = params.shape.dtype, params.shape.device
    fs = torch.arange(len(images)) if frame_subject is None else torch.as_tensor(frame_subject, dtype=torch.long).cpu()
    results: list[JointStageResult | None] = [None] * len(images)
    for subject in dict.fromkeys(fs.tolist()):  # in order of first appearance: same seed, same result
        rows = (fs == subject).nonzero()[:, 0].tolist()
        scales = [tuple(float(v) for v in images[i].scale) for i in rows]
        lms = torch.cat([targets[i:i + 1] * torch.tensor(s, dtype=targets.dtype, device=targets.device)
                         for i, s in zip(rows, scales)])
        scaled = [_scaled(params, i, s) for i, s in zip(rows, scales)]
        batch = FitParams(**{name: torch.cat([getattr(p, name) for p in scaled]) for name in
                             ("shape", "expression", "rotation", "translation", "focal", "principal")})
        pixels = _padded([images[i] for i in rows])
        jaw = bool(sliding_jaw[rows[0]]) if sliding_jaw is not None else False
        tie = {"frame_subject": torch.zeros(len(rows), dtype=torch.long)} if len(rows) > 1 else {}
        if len(rows) > 1 and identity_mode == "average":
            alone = stage.run(pixels, lms, batch, vertex_ids[rows], generator=generator,
                              landmark_weights=landmark_weights, progress=progress, sliding_jaw=jaw)
            mean = dataclasses.replace(alone.params, shape=alone.params.shape.mean(0, keepdim=True).expand(len(rows), -1))
            latent = alone.latent.mean(0, keepdim=True).expand(len(rows), -1)
            run = stage.with_fixed_identity().run(pixels, lms, mean.to(dtype=batch.shape.dtype), vertex_ids[rows],
                                                  generator=generator, landmark_weights=landmark_weights,
                                                  progress=progress, sliding_jaw=jaw, latent=latent,
                                                  lighting=alone.lighting, **tie)
        else:
            run = stage.run(pixels, lms, batch, vertex_ids[rows], generator=generator,
                            landmark_weights=landmark_weights, progress=progress, sliding_jaw=jaw, **tie)
        for k, i in enumerate(rows):
            results[i] = run if len(rows) == 1 else split_result(run, k)
    cat = lambda name: torch.cat([getattr(r.params, name).to(device, dtype) for r in results])  # noqa: E731
    merged = FitParams(shape=cat("shape"), expression=cat("expression"), rotation=cat("rotation"),
                       translation=cat("translation"), focal=params.focal, principal=params.principal)
    return JointFit(params=merged, results=results, model=getattr(stage, "model", None))
