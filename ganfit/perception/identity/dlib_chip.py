"""Differentiable re-implementation of dlib's face-chip alignment (``get_face_chip_details`` +
``extract_image_chip``, ``dlib/image_transforms/interpolation.h``), the crop dlib's face-recognition
network expects: 150x150 pixels, padding 0.25.

What dlib does, and what is reproduced here:
1. Template: for 68 landmarks, dlib's mean face for points 17-67 (eyebrows 17-26 and inner/outer
   lower lip 55-59, 65-67 are then dropped, leaving the 33 points 27-54 and 60-64), mapped into the
   chip as ``(padding + p) / (2 padding + 1) * size``; for 5 landmarks, dlib's 5-point template.
2. ``find_similarity_transform(template, landmarks)``: the least-squares similarity (Umeyama) from chip
   to image, ``x_img = s R x_chip + t``; computed here in closed form (the same optimum).
3. ``chip_details``: angle of R, scale s, centre ``c = s R (size/2, size/2) + t`` and the rectangle
   ``centered_drect(c, size s, size s)``, whose corners (``width - 1`` apart) are mapped to the chip's
   corner pixels. So chip pixel (u, v) samples the image at
   ``c + R ((u / (size - 1) - 1/2) w, (v / (size - 1) - 1/2) w)`` with ``w = size s - 1``.
4. ``extract_image_chips``: when the rectangle is more than about twice the chip size, dlib first
   shrinks the region around the face with ``pyramid_down<2>`` (5x5 [1 4 6 4 1]^2 / 256 filter, every
   other pixel, output pixel i centred on input pixel 2 i + 2) as often as needed, and maps the
   rectangle down with its ``rect_down`` (``p / 2 - (1.25, 0.75)``); the crop the pyramid runs on is the
   rotated rectangle grown by a margin and clipped to the image, rounded to whole pixels.
5. Bilinear interpolation; a sample whose 2x2 neighbourhood is not entirely inside the image is black.

dlib stores pyramid levels and chip pixels as uint8, truncating (not rounding) each value, which
darkens its chips by half a grey level per truncation on average. `rounding` chooses how to treat that:
"mean" (default) subtracts that mean error (0.5 / 255) wherever dlib truncates, so chips stay smooth
functions of the pixels and landmarks and match dlib's on average; "exact" truncates as dlib does in
the forward pass (gradients pass straight through), matching dlib's chips to the grey level; "none"
ignores it (chips about 0.5 grey levels brighter than dlib's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FACE_CHIP_SIZE = 150
FACE_CHIP_PADDING = 0.25

_MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
)
_MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
)
MEAN_FACE_68 = np.stack([_MEAN_FACE_X, _MEAN_FACE_Y], axis=1)
"""(51, 2) dlib's mean positions of iBUG points 17-67 in a unit square (x right, y down)."""

TEMPLATE_INDICES_68 = np.array([i for i in range(17, 68) if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67)])
"""(33,) the iBUG landmark indices dlib aligns with: 27-54 (nose, eyes, upper mouth) and 60-64."""

MEAN_FACE_5 = np.array([
    [0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])
"""(5, 2) dlib's template for its 5-point landmarks (eye corners and the bottom of the nose)."""


def chip_template(num_landmarks: int, size: int = FACE_CHIP_SIZE,
                  padding: float = FACE_CHIP_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """The landmark indices dlib aligns with and their template positions in chip pixels.

    Returns (indices (K,), points (K, 2) float64): K = 33 for 68 landmarks, 5 for 5 landmarks.
    """
    if num_landmarks == 68:
        idx, unit = TEMPLATE_INDICES_68, MEAN_FACE_68[TEMPLATE_INDICES_68 - 17]
    elif num_landmarks == 5:
        idx, unit = np.arange(5), MEAN_FACE_5
    else:
        raise ValueError(f"dlib's face chips need 68 (iBUG) or 5 (dlib) landmarks, got {num_landmarks}")
    if padding < 0 or size < 2:
        raise ValueError(f"need padding >= 0 and size >= 2, got padding={padding}, size={size}")
    return idx, (padding + unit) / (2 * padding + 1) * size


@dataclass(frozen=True)
class FaceChipDetails:
    """dlib's chip_details for a batch, as differentiable float64 tensors.

    center: (B, 2) image position of the chip centre (x, y).
    scale: (B,) image pixels per chip pixel of the similarity (dlib's `scale`).
    cos, sin: (B,) rotation from chip to image axes (cos, sin of dlib's `angle`).
    size: chip side in pixels.
    """

    center: torch.Tensor
    scale: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    size: int

    @property
    def angle(self) -> torch.Tensor:
        """(B,) radians."""
        return torch.atan2(self.sin, self.cos)

    @property
    def extent(self) -> torch.Tensor:
        """(B,) distance in image pixels between the first and last chip pixel centres along a row:
        ``size * scale - 1`` (dlib's rectangle width minus one)."""
        return self.size * self.scale - 1.0

    def chip_to_image(self) -> torch.Tensor:
        """(B, 2, 3) affine map of chip pixel coordinates (u, v, 1) to image pixels (x, y), as dlib
        samples the chip from the full-resolution image (no pyramid)."""
        k = self.extent / (self.size - 1)
        a, b = self.cos * k, self.sin * k
        half = (self.size - 1) / 2.0
        tx = self.center[:, 0] - half * (a - b)
        ty = self.center[:, 1] - half * (b + a)
        return torch.stack([torch.stack([a, -b, tx], -1), torch.stack([b, a, ty], -1)], 1)


def face_chip_details(landmarks: torch.Tensor, size: int = FACE_CHIP_SIZE,
                      padding: float = FACE_CHIP_PADDING) -> FaceChipDetails:
    """dlib's ``get_face_chip_details(shape, size, padding)`` for a batch.

    landmarks: (B, 68, 2) iBUG or (B, 5, 2) dlib-5 points, x, y in pixels (integer at pixel centres).
    The similarity is the least-squares fit of the template to the landmarks (dlib uses Umeyama's
    method; for 2-D similarities its optimum has the closed form used here). Differentiable.
    """
    if landmarks.ndim != 3 or landmarks.shape[2] != 2:
        raise ValueError(f"landmarks must be (B, N, 2), got shape {tuple(landmarks.shape)}")
    idx, template = chip_template(landmarks.shape[1], size, padding)
    pts = landmarks[:, torch.as_tensor(idx, device=landmarks.device)].to(torch.float64)   # (B, K, 2)
    tpl = torch.as_tensor(template, dtype=torch.float64, device=landmarks.device)       # (K, 2)
    tpl_mean, pts_mean = tpl.mean(0), pts.mean(1)
    a, q = tpl - tpl_mean, pts - pts_mean[:, None]
    denom = (a**2).sum()
    # complex least squares: q ~ (p_re + i p_im) a
    p_re = (a[:, 0] * q[..., 0] + a[:, 1] * q[..., 1]).sum(-1) / denom
    p_im = (a[:, 0] * q[..., 1] - a[:, 1] * q[..., 0]).sum(-1) / denom
    scale = torch.sqrt(p_re**2 + p_im**2)
    half = torch.full((2,), size / 2.0, dtype=torch.float64, device=landmarks.device)
    rel = half - tpl_mean  # chip centre relative to the template's mean
    center = pts_mean + torch.stack([p_re * rel[0] - p_im * rel[1], p_im * rel[0] + p_re * rel[1]], -1)
    return FaceChipDetails(center=center, scale=scale, cos=p_re / scale, sin=p_im / scale, size=size)


# ------------------------------------------------------------------------------------ sampling


def pyramid_down2(images: torch.Tensor, rounding: str = "none") -> torch.Tensor:
    """dlib's ``pyramid_down<2>``: 5x5 binomial filter ([1 4 6 4 1] / 16 each way), every other
    pixel, no border: (B, C, H, W) -> (B, C, (H - 3) // 2, (W - 3) // 2); output pixel (i, j) is
    centred on input pixel (2 i + 2, 2 j + 2). rounding: how to treat dlib's truncation of each level
    to uint8 ("exact", "mean", "none"; see the module notes). Images with a side <= 8 give an empty
    result (as dlib)."""
    b, c, h, w = images.shape
    if h <= 8 or w <= 8:
        return images.new_zeros(b, c, 0, 0)
    k = images.new_tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    x = F.conv2d(images.reshape(b * c, 1, h, w), k.view(1, 1, 1, 5), stride=(1, 2))
    x = F.conv2d(x, k.view(1, 1, 5, 1), stride=(2, 1))
    x = x.reshape(b, c, x.shape[-2], x.shape[-1])
    return _truncate(x, rounding, 1e-3)


ROUNDING_MODES = ("mean", "exact", "none")


def _truncate(values: torch.Tensor, rounding: str, eps: float) -> torch.Tensor:
    """Where dlib truncates a value to uint8: "exact" floors to 1/255 steps in the forward pass
    (identity gradient), "mean" subtracts the truncation's mean error (half a step), "none" does
    nothing."""
    if rounding == "mean":
        return values - 0.5 / 255.0
    if rounding == "exact":
        q = torch.floor(values.detach() * 255.0 + eps) / 255.0
        return values + (q - values).detach()
    return values


def _sample_bilinear(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dlib's ``interpolate_bilinear`` for a batch: images (N, C, H, W); x, y (N, S) float64 pixel
    positions. Returns (N, C, S) in images' dtype; a sample without its full 2x2 neighbourhood inside
    the image is 0, as in dlib."""
    n, c, h, w = images.shape
    if h < 2 or w < 2:
        return images.new_zeros(n, c, x.shape[1])
    left, top = torch.floor(x.detach()), torch.floor(y.detach())
    valid = ((left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)).to(images.dtype)
    fx = (x - left).to(images.dtype)[:, None]
    fy = (y - top).to(images.dtype)[:, None]
    idx = top.clamp(0, h - 2).long() * w + left.clamp(0, w - 2).long()
    corners = torch.cat([idx, idx + 1, idx + w, idx + w + 1], dim=1)  # (N, 4S): one gather
    vals = torch.gather(images.reshape(n, c, h * w), 2, corners[:, None].expand(n, c, corners.shape[1]))
    tl, tr, bl, br = vals.chunk(4, dim=2)
    top_row = tl + fx * (tr - tl)
    bottom_row = bl + fx * (br - bl)
    return (top_row + fy * (bottom_row - top_row)) * valid[:, None]


def _lround(v: float) -> int:
    """C's lround: halves away from zero."""
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def _rect_area(width_minus_one: float) -> float:
    """Area of a square dlib drectangle whose right - left is `width_minus_one`."""
    return (width_minus_one + 1.0) ** 2 if width_minus_one >= 0 else 0.0


def pyramid_plan(center: tuple[float, float], extent: float, cos: float, sin: float, size: int,
                 image_size: tuple[int, int], pyramid: bool = True) -> tuple[tuple[int, int, int, int], int]:
    """How dlib's ``extract_image_chips`` samples one chip: the integer crop (x0, y0, x1, y1,
    inclusive) of the image its pyramid runs on, and the pyramid level (-1: the crop itself,
    L >= 0: after L + 1 halvings). center, extent (= size * scale - 1), cos, sin: the chip details;
    image_size: (H, W). The crop is empty (x1 < x0) when the face lies outside the image."""
    height, width = image_size
    chip_area = float(size * size)
    depth, grow, ext = 0, 2.0, extent / 2.0
    if pyramid:
        while _rect_area(ext) > chip_area:
            ext /= 2.0
            depth += 1
            grow = grow * 2 + 2
    level = depth - 1 if pyramid and _rect_area(extent / 2.0) > chip_area else -1
    # the rotated rectangle's bounding box, grown by `grow`, clipped to the image, rounded
    half = extent / 2.0
    dx = abs(cos) * half + abs(sin) * half
    dy = abs(sin) * half + abs(cos) * half
    cx, cy = center
    x0, y0 = max(cx - dx - grow, 0.0), max(cy - dy - grow, 0.0)
    x1, y1 = min(cx + dx + grow, width - 1.0), min(cy + dy + grow, height - 1.0)
    return (_lround(x0), _lround(y0), _lround(x1), _lround(y1)), level


def extract_face_chips(images: torch.Tensor, landmarks: torch.Tensor, size: int = FACE_CHIP_SIZE,
                       padding: float = FACE_CHIP_PADDING, pyramid: bool = True,
                       rounding: str = "mean") -> torch.Tensor:
    """dlib's ``extract_image_chip(img, get_face_chip_details(shape, size, padding))``, batched and
    differentiable with respect to the pixels (and the landmarks).

    images: (B, C, H, W) float, values in [0, 1] (dlib's 0-255 divided by 255).
    landmarks: (B, 68, 2) or (B, 5, 2) x, y in pixels of `images` (integer values at pixel centres).
    pyramid: shrink large faces with dlib's image pyramid first, as dlib does (False: always sample
        the full-resolution image; then large faces alias).
    rounding: "mean" (default; smooth, matches dlib's uint8 truncation on average), "exact"
        (truncates as dlib: forward values match dlib's, straight-through gradients) or "none".
    Returns (B, C, size, size) in images' dtype.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    if landmarks.shape[0] != images.shape[0]:
        raise ValueError(f"batch sizes differ: {images.shape[0]} images, {landmarks.shape[0]} landmark sets")
    details = face_chip_details(landmarks.to(images.device), size, padding)
    bsz, ch, height, width = images.shape
    grid = torch.arange(size, dtype=torch.float64, device=images.device) / (size - 1) - 0.5
    gv, gu = torch.meshgrid(grid, grid, indexing="ij")  # (size, size): row v, column u
    gu, gv = gu.reshape(1, -1), gv.reshape(1, -1)
    ext = details.extent[:, None]
    du, dv = gu * ext, gv * ext                                            # (B, S) chip offsets
    rot_x = details.cos[:, None] * du - details.sin[:, None] * dv
    rot_y = details.sin[:, None] * du + details.cos[:, None] * dv
    centers, extents = details.center.tolist(), details.extent.tolist()
    coses, sines = details.cos.tolist(), details.sin.tolist()
    plans = [pyramid_plan(tuple(centers[i]), extents[i], coses[i], sines[i], size, (height, width), pyramid)
             for i in range(bsz)]

    results: list[torch.Tensor | None] = [None] * bsz
    # level -1: dlib samples the crop around the face, which never cuts a sample's neighbourhood
    # (the crop is the rotated chip rectangle grown by >= 1.5 px, clipped to the image), so sampling
    # the whole image is the same and can be batched.
    direct = [i for i, ((x0, y0, x1, y1), level) in enumerate(plans) if level < 0 and x1 >= x0 and y1 >= y0]
    if direct:
        sel = torch.as_tensor(direct, device=images.device)
        src = images if len(direct) == bsz else images.index_select(0, sel)
        x = details.center[sel, 0:1] + rot_x[sel]
        y = details.center[sel, 1:2] + rot_y[sel]
        for j, sampled in zip(direct, _sample_bilinear(src, x, y).unbind(0)):
            results[j] = sampled
    rest = [i for i in range(bsz) if results[i] is None]
    per_image = images.unbind(0) if rest else ()
    for i in rest:
        (x0, y0, x1, y1), level = plans[i]
        if x1 < x0 or y1 < y0:  # the face lies outside the image
            results[i] = images.new_zeros(ch, size * size)
            continue
        source = per_image[i][None, :, y0:y1 + 1, x0:x1 + 1]
        c, scale = details.center[i] - details.center.new_tensor([x0, y0]), 1.0
        for _ in range(level + 1):
            source = pyramid_down2(source, rounding)
            c = c / 2.0 - c.new_tensor([1.25, 0.75])
            scale /= 2.0
        x = c[0] + rot_x[i:i + 1] * scale
        y = c[1] + rot_y[i:i + 1] * scale
        results[i] = _sample_bilinear(source, x, y)[0]
    out = torch.stack(results).reshape(bsz, ch, size, size)
    return _truncate(out, rounding, 1e-4)


__all__ = [
    "FACE_CHIP_PADDING", "FACE_CHIP_SIZE", "FaceChipDetails", "MEAN_FACE_5", "MEAN_FACE_68", "ROUNDING_MODES",
    "TEMPLATE_INDICES_68", "chip_template", "extract_face_chips", "face_chip_details", "pyramid_down2",
    "pyramid_plan",
]
