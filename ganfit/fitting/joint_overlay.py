"""What the overlay shows of a joint fit (not differentiable): the fitted render at the overlay's size, and
the landmark stage's geometry for the before/after panel.

`joint_render` renders the joint stage's result as the stage saw it (`ganfit.fitting.stages.joint_energy.
JointEnergy.render`): the model texture (albedo) lit by the fitted SH lighting, then the camera's colour
transform ``gain * render + offset`` on the face, premultiplied by coverage so the overlay composites it
over the photo; the mesh's enclosed holes (open mouth, nostrils, ear canals) are painted the stage's cavity
colour (`joint_terms.fill_holes`), as the stage composited them. Only the face's bounding box is rendered (as `PhotoTexture.renders`), so the cost follows
the face's size. `stage_geometry` projects a stage's `FitParams` (e.g. `FitResult.landmark_stage_params`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model.geometry import vertex_normals
from ..render.camera import project_points, transform_points
from .params import FitParams
from .photo_texture import pixel_box

__all__ = ["StageGeometry", "stage_geometry", "joint_render", "panel_scale"]

#: render pixels kept around the face's projected bounding box (antialiasing needs a neighbour)
_MARGIN = 2


def panel_scale(image_size: tuple[float, float], max_side: int) -> tuple[float, tuple[int, int]]:
    """The overlay's scale from photo pixels (never up) and its panel size (W, H), as `make_fit_overlay`."""
    w, h = float(image_size[0]), float(image_size[1])
    scale = min(1.0, max_side / max(w, h))
    return scale, (max(1, int(round(w * scale))), max(1, int(round(h * scale))))


@dataclass(frozen=True)
class StageGeometry:
    """One face under one stage's parameters, in photo pixels (numpy).

    projected: (V, 2) pixels; depth: (V,) mm, larger = farther; landmarks: (68, 2) pixels (None without
    landmark vertices); normals: (V, 3) camera-space unit vertex normals.
    """

    projected: np.ndarray
    depth: np.ndarray
    landmarks: np.ndarray | None
    normals: np.ndarray


def _one(params: FitParams, i: int, dtype=torch.float64) -> FitParams:
    return params.select(i).detach().to("cpu", dtype)


@torch.no_grad()
def stage_geometry(model, params: FitParams, index: int, landmark_vertices: torch.Tensor | None = None) -> StageGeometry:
    """Face `index` of `params` projected with its camera.

    Args:
        model: the `MorphableModel`; params: B faces (photo pixels); landmark_vertices: (B, 68) or (68,)
            the model vertex of each landmark (`FitResult.landmark_vertices`), or None.
    """
    p = _one(params, index)
    cam = transform_points(model.vertices(p.shape, p.expression), p.rotation_matrix(), p.translation)
    proj = project_points(cam, p.focal, p.principal)[0]
    tris = torch.as_tensor(np.asarray(model.triangles, dtype=np.int64))
    normals = vertex_normals(cam, tris)[0]
    lms = None
    if landmark_vertices is not None:
        ids = torch.as_tensor(landmark_vertices).reshape(-1, 68)
        lms = proj[ids[min(index, len(ids) - 1)].long()].numpy()
    return StageGeometry(proj.numpy(), (-cam[0, :, 2]).numpy(), lms, normals.numpy())


@torch.no_grad()
def joint_render(model, joint, index: int, image_size: tuple[float, float], *, max_side: int = 1024,
                 rasterizer=None) -> np.ndarray | None:
    """The joint fit of photo `index` rendered at the overlay's size.

    Args:
        model: the `MorphableModel` the joint stage fitted.
        joint: the `JointFit` (its params in photo pixels; per photo its model texture, SH lighting, gain
            and offset).
        image_size: (W, H) of the photo the camera is in (`FitResult.camera.image_size`).
        max_side: the overlay panel's longest side (`make_fit_overlay`'s `max_side`).
        rasterizer: a `Rasterizer` (default ``make_rasterizer("auto")``).
    Returns:
        (h, w, 4) float32 premultiplied RGBA in [0, 1] at the panel size, or None when the face is not in view.
    """
    from ..render.renderer import Renderer, make_rasterizer

    res = joint.results[index]
    p = _one(joint.params, index)
    scale, (w, h) = panel_scale(image_size, max_side)
    cam = transform_points(model.vertices(p.shape, p.expression), p.rotation_matrix(), p.translation)[0]
    proj = project_points(cam[None], p.focal * scale, p.principal * scale)[0]
    box = pixel_box(proj, cam[:, 2] < 0, (w, h), _MARGIN)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    crop = FitParams(shape=p.shape, expression=p.expression, rotation=p.rotation, translation=p.translation,
                     focal=p.focal * scale, principal=p.principal * scale - torch.tensor([[x0, y0]], dtype=p.focal.dtype))
    renderer = Renderer(model, rasterizer if rasterizer is not None else make_rasterizer("auto", "cpu"),
                        image_size=(x1 - x0, y1 - y0))
    out = renderer.render(crop, texture=res.texture[:1].detach().cpu().to(p.focal.dtype),
                          lighting=res.lighting[:1].detach().cpu().to(p.focal.dtype), regions=False)
    gain = res.gain[:1].detach().cpu().to(p.focal.dtype)
    offset = res.offset[:1].detach().cpu().to(p.focal.dtype)
    image = out.image[0] * gain[0] + offset[0] * out.alpha[0][..., None]
    alpha = out.alpha[0][..., None]
    from .stages.joint_terms import CAVITY_COLOUR, enclosed_holes

    holes = enclosed_holes(out.mask)[0][..., None].to(image.dtype)  # the render over the cavity colour there
    image = image + (1 - alpha) * holes * torch.tensor(CAVITY_COLOUR, dtype=image.dtype)
    alpha = alpha + (1 - alpha) * holes
    rgba = np.zeros((h, w, 4), np.float32)
    rgba[y0:y1, x0:x1] = torch.cat([torch.minimum(image.clamp(0, 1), alpha), alpha], -1).float().numpy()
    return rgba
