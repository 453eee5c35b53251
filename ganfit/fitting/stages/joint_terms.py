"""Pure tensor functions of the joint stage (GANFit, Gecer et al. CVPR 2019, sec. 3.4-3.5): the face crop the
stage works in, compositing, the robust pixel term, the lighting and colour priors, latent truncation, the
closed-form SH initialisation and the id-hat sampler's random poses and lights. No configuration is read here.

Holes of the face mesh. The models leave cavities open (bfm-3ddfa: the mouth between the lips, the nostrils,
the ear canals), so "the render where the face is, the photo elsewhere" would show the photo's own teeth and
mouth interior through them, and the identity network would see the photo's real mouth in the render.
`fill_holes` paints the enclosed holes of a render's coverage (uncovered pixels that do not reach the image
border) with a dark cavity colour before compositing: the cavities are not modelled, and in a photo they are
dark (mouth interior, nostrils, ear canals). Working on the coverage rather than the mesh covers every hole
of every model at any pose, costs one 2-D hole fill per image, and keeps the composite as differentiable as
before (the filled background is a constant of the step, like the photo it replaces; the lips' inner
silhouette now blends against the cavity colour, so it still passes gradients to the geometry).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...perception.identity.dlib_chip import face_chip_details
from ...render.camera import matrix_from_euler
from ...render.shading import SH_BAND_FACTORS, default_sh, sh_basis, sh_directional

__all__ = [
    "CAVITY_COLOUR", "FaceCrop", "colour_prior", "composite", "enclosed_holes", "fill_holes", "crop_images", "face_crop", "lighting_prior", "random_lighting",
    "random_pose", "robust_pixel_loss", "sh_least_squares", "truncate_latent",
]


@dataclass(frozen=True)
class FaceCrop:
    """A square crop of each image around its face, resampled to `resolution` pixels.

    origin: (B, 2) top-left corner of the crop in image pixels; scale: (B,) crop pixels per image pixel.
    A point u of the image is at (u - origin) * scale in the crop; a pinhole camera (f, c) becomes
    (f * scale, (c - origin) * scale).
    """

    origin: torch.Tensor
    scale: torch.Tensor
    resolution: int

    def points(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) image pixels -> crop pixels."""
        return (pixels - self.origin[:, None]) * self.scale[:, None, None]


def face_crop(landmarks: torch.Tensor, resolution: int, margin: float = 1.3) -> FaceCrop:
    """The crop around dlib's face chip (`dlib_chip.face_chip_details`, 25 % padding around the inner face),
    grown by `margin`, so the identity network's chip lies inside the crop with room for the forehead and chin.

    Args:
        landmarks: (B, 68, 2) pixels.
        resolution: side of the crop in pixels.
        margin: crop side / chip side.
    """
    d = face_chip_details(landmarks.detach().double())
    side = d.extent.to(landmarks.dtype) * margin  # (B,)
    origin = d.center.to(landmarks.dtype) - side[:, None] / 2
    return FaceCrop(origin=origin, scale=resolution / side, resolution=int(resolution))


def crop_images(images: torch.Tensor, crop: FaceCrop) -> torch.Tensor:
    """Resample (B, 3, H, W) images into their crops (B, 3, R, R), bilinear after a box pre-filter when the
    crop shrinks the image (so a large photo does not alias). Outside the image: edge values."""
    b, _, h, w = images.shape
    r = crop.resolution
    out = []
    for i in range(b):
        img = images[i : i + 1]
        shrink = int(math.floor(1.0 / float(crop.scale[i])))
        if shrink >= 2:
            img = F.avg_pool2d(img, shrink, shrink, ceil_mode=True)
        hi, wi = img.shape[-2:]
        step = 1.0 / float(crop.scale[i])  # image pixels per crop pixel
        centres = (torch.arange(r, dtype=images.dtype, device=images.device) + 0.5) * step  # crop pixel centres
        xs = (crop.origin[i, 0] + centres) * (wi / w)
        ys = (crop.origin[i, 1] + centres) * (hi / h)
        gx = xs / wi * 2 - 1
        gy = ys / hi * 2 - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None]  # (1, R, R, 2) as (x, y)
        out.append(F.grid_sample(img, grid.to(img.dtype), mode="bilinear", padding_mode="border", align_corners=False))
    return torch.cat(out)


def composite(render: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """The render over a background: render (B, 3, H, W) premultiplied, alpha (B, H, W), background
    (B, 3, H, W) or broadcastable -> (B, 3, H, W) ``render + (1 - alpha) * background``."""
    return render + (1.0 - alpha[:, None]) * background


#: linear RGB in [0, 1] of the cavities the face mesh leaves open (a dark red-brown: a shadowed mouth interior)
CAVITY_COLOUR = (0.16, 0.07, 0.06)


def enclosed_holes(covered: torch.Tensor, grow: int = 1) -> torch.Tensor:
    """The holes of a render's coverage: (B, H, W) bool pixels covered by the face -> (B, H, W) bool pixels
    not covered and not connected (4-neighbours) to the image border through uncovered pixels, grown by
    `grow` pixels into the covered ones around them (the antialiased edges, whose partial coverage would
    otherwise blend in what lies behind). Not differentiable (a mask); runs on the CPU (scipy)."""
    from scipy import ndimage

    cov = covered.detach().to("cpu", torch.bool).numpy()
    out = np.zeros_like(cov)
    for i, c in enumerate(cov):
        labels, n = ndimage.label(~c)  # 4-connected components of the uncovered pixels
        if n == 0:
            continue
        inside = np.ones(n + 1, bool)
        inside[0] = False
        inside[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = False  # reach the border
        holes = inside[labels]
        if grow > 0 and holes.any():
            holes = ndimage.binary_dilation(holes, np.ones((3, 3), bool), iterations=grow)
        out[i] = holes
    return torch.from_numpy(out).to(covered.device)


def fill_holes(background: torch.Tensor | float, covered: torch.Tensor,
               colour: tuple[float, float, float] = CAVITY_COLOUR, grow: int = 1) -> torch.Tensor:
    """The background to composite a render over, with the render's enclosed holes (`enclosed_holes` of
    `covered`, (B, H, W) bool) painted `colour`: background (B, 3, H, W), broadcastable or a number ->
    (B, 3, H, W). Use ``composite(render, alpha, fill_holes(photo, out.mask))``."""
    holes = enclosed_holes(covered, grow)
    b, h, w = holes.shape
    bg = torch.as_tensor(background)
    dtype = bg.dtype if bg.is_floating_point() else torch.float32
    bg = bg.to(device=covered.device, dtype=dtype)
    bg = bg.view(1, -1, 1, 1) if bg.ndim <= 1 else bg
    c = torch.tensor(colour, dtype=dtype, device=covered.device).view(1, 3, 1, 1)
    return torch.where(holes[:, None], c, bg.expand(b, 3, h, w))


def robust_pixel_loss(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, keep: float = 0.9,
                      eps: float = 1e-3) -> torch.Tensor:
    """GANFit's pixel term (eq. 5, an L1 distance), made robust to what no texture explains (hair, glasses,
    hands): per pixel the smoothed L1 error summed over channels, ``sqrt(d^2 + eps^2)``, averaged over the
    pixels of `mask` whose error is among the lowest `keep` fraction (a trimmed mean; the threshold is a
    constant of the step).

    Args:
        image, target: (B, 3, H, W); mask: (B, H, W) weights in [0, 1] (not differentiated).
        keep: fraction of the masked pixels kept (1: the plain masked mean).
    Returns:
        (B,) mean per-pixel error (sum of the 3 channels' absolute errors); 0 where the mask is empty.
    """
    err = (image - target).pow(2).add(eps * eps).sqrt().sum(1)  # (B, H, W)
    w = mask.detach().to(err.dtype)
    if keep < 1.0:
        e = err.detach()
        thresholds = []
        for i in range(err.shape[0]):
            vals = e[i][w[i] > 0.5]
            thresholds.append(torch.quantile(vals, keep) if vals.numel() else e.new_tensor(float("inf")))
        w = w * (e <= torch.stack(thresholds)[:, None, None]).to(w.dtype)
    total = w.flatten(1).sum(-1)
    return (err * w).flatten(1).sum(-1) / total.clamp_min(1.0)


def lighting_prior(sh: torch.Tensor, reference: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian prior on SH radiance coefficients around a reference light (e.g. `default_sh`), in units of
    the irradiance each coefficient produces (coefficient x its band factor A_l x Y_l0 constant), so sigma is a
    fraction of the albedo's brightness for every band.

    Args: sh, reference: (B, 9, 3); sigma: std in irradiance units. Returns (B,).
    """
    a = torch.tensor([SH_BAND_FACTORS[0] * 0.282095] + [SH_BAND_FACTORS[1] * 0.488603] * 3
                     + [SH_BAND_FACTORS[2] * 1.092548] * 5, dtype=sh.dtype, device=sh.device)
    return 0.5 * (((sh - reference) * a[None, :, None]) / sigma).pow(2).flatten(1).sum(-1)


def colour_prior(gain: torch.Tensor, offset: torch.Tensor, gain_sigma: float, offset_sigma: float) -> torch.Tensor:
    """Gaussian prior of the camera's per-channel colour transform ``gain * colour + offset`` around the
    identity: gain (B, 3) around 1 with std gain_sigma, offset (B, 3) around 0 with std offset_sigma. (B,)."""
    return 0.5 * (((gain - 1.0) / gain_sigma).pow(2).sum(-1) + (offset / offset_sigma).pow(2).sum(-1))


def truncate_latent(latent: torch.Tensor, max_abs: float) -> torch.Tensor:
    """The truncation that keeps a texture latent near its prior (GANFit's author: too flexible a latent
    reconstructs anything): every coordinate, in the prior's std units, clamped to [-max_abs, max_abs]
    (inf: no truncation). (B, D) -> (B, D)."""
    if not math.isfinite(max_abs):
        return latent
    return latent.clamp(-max_abs, max_abs)


def sh_least_squares(albedo: torch.Tensor, normals: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                     reference: torch.Tensor, ridge: float = 1e-2) -> torch.Tensor:
    """SH lighting that best explains target = albedo * (sh_basis(n) @ L) in least squares, per channel, with a
    ridge pulling L towards `reference` (a closed-form start for the joint stage; Ramamoorthi & Hanrahan 2001's
    irradiance model).

    Args:
        albedo, normals, target: (B, N, 3) per pixel; weights: (B, N) >= 0.
        reference: (B, 9, 3); ridge: ridge weight relative to the mean diagonal of the normal equations.
    Returns:
        (B, 9, 3) radiance coefficients.
    """
    basis = sh_basis(normals)  # (B, N, 9)
    out = []
    for c in range(3):
        a = basis * albedo[..., c : c + 1]  # (B, N, 9)
        aw = a * weights[..., None]
        ata = aw.transpose(1, 2) @ a
        atb = (aw * target[..., c : c + 1]).sum(1)  # (B, 9)
        lam = ridge * ata.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)  # (B,)
        eye = torch.eye(9, dtype=a.dtype, device=a.device)
        lhs = ata + lam[:, None, None] * eye
        rhs = atb + lam[:, None] * reference[..., c]
        out.append(torch.linalg.solve(lhs, rhs[..., None])[..., 0])
    return torch.stack(out, -1)


def random_pose(batch: int, yaw_deg: float, pitch_deg: float, generator: torch.Generator,
                dtype=torch.float32, device=None) -> torch.Tensor:
    """(B, 3, 3) rotations Ry(yaw) Rx(pitch), yaw and pitch uniform in [-yaw_deg, yaw_deg] and
    [-pitch_deg, pitch_deg] (GANFit's id-hat renders, sec. 3.5)."""
    u = torch.rand(batch, 2, generator=generator, dtype=torch.float64) * 2 - 1
    angles = torch.stack([u[:, 0] * yaw_deg, u[:, 1] * pitch_deg, torch.zeros(batch, dtype=torch.float64)], -1)
    return matrix_from_euler(angles).to(dtype=dtype, device=device)


def random_lighting(batch: int, generator: torch.Generator, ambient: tuple[float, float] = (0.8, 1.2),
                    directional: float = 0.5, dtype=torch.float32, device=None) -> torch.Tensor:
    """(B, 9, 3) white SH lights drawn from a simple prior: a uniform ambient level in `ambient` plus a
    directional light of strength uniform in [0, directional] from a random direction in the front
    hemisphere (z > 0, camera space)."""
    r = torch.rand(batch, 2, generator=generator, dtype=torch.float64)
    d = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    d[:, 2] = d[:, 2].abs() + 0.5
    level = ambient[0] + (ambient[1] - ambient[0]) * r[:, 0]
    sh = default_sh(batch, dtype=torch.float64) * level[:, None, None]
    sh = sh + sh_directional(d, 1.0) * (directional * r[:, 1])[:, None, None]
    return sh.to(dtype=dtype, device=device)
