"""Each video frame's light, for a face whose albedo is known (the identity's model texture from the joint stage
on the keyframes, issue 13): the SH lighting (Ramamoorthi & Hanrahan 2001) that best explains the frame's face
pixels in closed form (`stages.joint_terms.sh_least_squares`), with the frame's fitted pose and expression."""
from __future__ import annotations

import numpy as np
import torch

from ..render.shading import default_sh
from .params import FitParams
from .stages.joint_terms import crop_images, face_crop, sh_least_squares

__all__ = ["frame_lighting"]


@torch.no_grad()
def frame_lighting(renderer, texture: torch.Tensor, params: FitParams, pixels: np.ndarray, landmarks: np.ndarray,
                   reference: torch.Tensor | None = None, *, margin: float = 1.3, region: str = "face") -> torch.Tensor:
    """The SH lighting of one frame.

    Args:
        renderer: a `Renderer` whose square image size is the crop the light is fitted in (e.g. 128 px).
        texture: (1, 3, Hu, Wu) the face's albedo texture (the joint stage's model texture).
        params: the frame's `FitParams` (1 row; frame pixels).
        pixels: (H, W, 3) the frame, uint8 or float in [0, 1].
        landmarks: (68, 2) the frame's landmarks (they place the crop).
        reference: (1, 9, 3) light the least squares is pulled towards where the face says little (default:
            the uniform white light).
        region: the model region whose pixels count (skin; hair and background drop out).
    Returns:
        (1, 9, 3) SH radiance coefficients, so that colour = albedo * irradiance(normal).
    """
    res = renderer.image_size[0]
    img = torch.as_tensor(np.asarray(pixels, dtype=np.float32))
    if img.max() > 1.5:
        img = img / 255.0
    lms = torch.as_tensor(np.asarray(landmarks, dtype=np.float32))[None]
    crop = face_crop(lms, res, margin)
    photo = crop_images(img.permute(2, 0, 1)[None], crop)  # (1, 3, R, R)
    p = params.to("cpu", torch.float32)
    cam = FitParams(p.shape, p.expression, p.rotation, p.translation, p.focal * crop.scale,
                    (p.principal - crop.origin) * crop.scale[:, None])
    ambient = default_sh(1)
    use = [region] if region and region in renderer.model.regions else False
    out = renderer.render(cam, texture=texture.float(), lighting=ambient, regions=use)
    mask = (out.alpha > 0.5).float()
    if use:
        mask = mask * (out.regions[region] > 0.5).float()
    ref = ambient if reference is None else reference.float()
    return sh_least_squares(out.image.flatten(1, 2), out.normals.flatten(1, 2),
                            photo.permute(0, 2, 3, 1).flatten(1, 2), mask.flatten(1), ref)
