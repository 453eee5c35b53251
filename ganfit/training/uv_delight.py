"""Lighting removed from a photo's UV unwrap, for a texture corpus of albedo-like UVs (issue 12).

A fitted photo is modelled as the joint stage renders it (`ganfit.fitting.texture_blend`):

    photo(x) ~ albedo(x) * E(n(x); L),

E the SH irradiance of the fitted camera-space normal n (Ramamoorthi & Hanrahan, SIGGRAPH 2001;
`ganfit.render.shading.sh_shading`) under 9 x 3 SH coefficients L. The landmark fit gives the shape but no
light and no albedo, so the light is estimated with a **mean albedo**: constant over the face's skin (per
channel, the photo's median skin colour), the facial features (eyes, brows, nose, lips, whose albedo is far
from the mean) left out. `estimate_lighting` solves

    min_L  sum_v w_v || colour_v - a0 * E(n_v; L) ||^2  (+ ridge towards an ambient light)

over the visible skin vertices with the joint stage's closed form (`sh_least_squares`), then re-weights
twice (iteratively re-weighted least squares): vertices whose log ratio to the fitted shading lies more than
`outlier_log` from the median (hair, shadows cast by the nose or glasses, highlights) lose their weight,
so that they do not bend the light. `delight` divides the unwrap by the fitted shading per texel
(`texture_blend.albedo_estimate` over `texture_blend.uv_shading`): the result keeps the photo's skin tone
(a0 is the photo's own level: a global light colour cannot be told from skin colour) and its detail, without
the light's direction. Where the shading is dark (grazing light, self-shadow) the division amplifies noise,
so the texel's validity falls towards 0 below `min_shading` x the median shading.

`brightness_asymmetry` measures what remains: the mean log ratio of the luminance of mirror texel pairs
(the UV layouts here are mirror-symmetric about the vertical centre line) over the texels both sides see.
A face lit from one side gives |asymmetry| ~ 0.2-0.5; de-lit, it should fall towards what faces have
themselves (~0.05). `skin_tone_ita` is the individual typology angle (Chardon et al., 1991) of the skin,
ITA = atan((L* - 50) / b*) in degrees, a label-free skin-tone measure for the corpus table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..fitting.stages.joint_terms import sh_least_squares
from ..fitting.texture_blend import albedo_estimate, uv_shading
from ..render.shading import default_sh, sh_shading
from ..render.uv_layout import UVLayout

__all__ = ["DelightOptions", "Delit", "estimate_lighting", "delight", "brightness_asymmetry", "skin_tone_ita",
           "srgb_to_lab", "ITA_CATEGORIES", "ita_category"]

#: skin-tone categories of the ITA (degrees), lightest first (Del Bino & Bernerd, 2013)
ITA_CATEGORIES = (("very light", 55.0), ("light", 41.0), ("intermediate", 28.0), ("tan", 10.0),
                  ("brown", -30.0), ("dark", -float("inf")))


@dataclass(frozen=True)
class DelightOptions:
    """Settings of `estimate_lighting` and `delight`.

    ridge: pull of the SH solve towards an ambient light (relative to the normal equations' mean diagonal).
    iterations: re-weighting passes after the first solve.
    outlier_log: vertices whose log(colour / fitted shading) is further than this from the median lose their
        weight (smoothly, to 0 at twice it).
    min_shading: texels whose shading is below this fraction of the median shading are divided by it at
        most (clamped) and their validity ramps to 0 (from twice it).
    """

    ridge: float = 1e-2
    iterations: int = 2
    outlier_log: float = 0.25
    min_shading: float = 0.3


@dataclass
class Delit:
    """Result of `delight` (numpy float32).

    albedo: (H, W, 3) the unwrap divided by the fitted shading (0 where unseen; not clipped).
    shading: (H, W, 3) the fitted irradiance per texel, scaled so that a0 * shading models the photo.
    validity: (H, W) in [0, 1]: the unwrap's visibility x the shading's confidence.
    lighting: (9, 3) the SH coefficients; level: (3,) the constant albedo a0 they were fitted with.
    """

    albedo: np.ndarray
    shading: np.ndarray
    validity: np.ndarray
    lighting: np.ndarray
    level: np.ndarray


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 at or below `lo`, 1 at or above `hi`, linear in between."""
    return np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)


def estimate_lighting(colors, normals, weights, options: DelightOptions = DelightOptions()) -> tuple[np.ndarray, np.ndarray]:
    """SH light of a photo from its fitted vertices and a constant (mean) albedo (module doc).

    Args:
        colors: (V, 3) the photo's colour at each vertex, in [0, 1].
        normals: (V, 3) camera-space unit vertex normals of the fit.
        weights: (V,) >= 0: which vertices to fit (visible skin; 0 elsewhere).
    Returns:
        (lighting (9, 3), level a0 (3,)) float32. Raises ValueError when no vertex has weight.
    """
    c = torch.as_tensor(np.asarray(colors, np.float32))
    n = torch.as_tensor(np.asarray(normals, np.float32))
    w0 = torch.as_tensor(np.asarray(weights, np.float32))
    if c.ndim != 2 or c.shape[1] != 3 or n.shape != c.shape or w0.shape != c.shape[:1]:
        raise ValueError(f"need colors (V, 3), normals (V, 3), weights (V,); got {tuple(c.shape)}, {tuple(n.shape)}, "
                         f"{tuple(w0.shape)}")
    if not bool((w0 > 0).any()):
        raise ValueError("no vertex to estimate the lighting from (all weights are 0)")
    sel = w0 > 0
    level = c[sel].median(dim=0).values.clamp_min(1e-3)  # (3,)
    albedo = level.expand_as(c)
    reference = default_sh(1)[0].to(torch.float32)  # ambient 1: a0 * E = a0 where the light is uniform
    w = w0.clone()
    light = reference
    for it in range(options.iterations + 1):
        light = sh_least_squares(albedo[None], n[None], c[None], w[None], reference[None], ridge=options.ridge)[0]
        if it == options.iterations:
            break
        shading = sh_shading(n[None], light[None])[0].clamp_min(1e-3)
        r = torch.log((c / shading / level).clamp_min(1e-3)).mean(1)
        dev = (r - r[sel].median()).abs()
        w = w0 * torch.clamp(2.0 - dev / options.outlier_log, 0.0, 1.0)
        if not bool((w > 0).any()):
            w = w0
    return light.numpy().astype(np.float32), level.numpy().astype(np.float32)


def delight(photo_uv: np.ndarray, mask: np.ndarray, layout: UVLayout, normals, lighting, level,
            options: DelightOptions = DelightOptions()) -> Delit:
    """Divide a photo's unwrap by its fitted shading (module doc).

    Args:
        photo_uv: (H, W, 3) the unwrap's colours (`UVTexture.texture`); mask: (H, W) its visibility.
        layout: the face model's UV layout at this resolution; normals: (V, 3) camera-space vertex normals.
        lighting, level: from `estimate_lighting`.
    Returns:
        `Delit`.
    """
    mask = np.asarray(mask, np.float32)
    shading = uv_shading(layout, normals, lighting)  # (H, W, 3)
    seen = mask > 0
    grey = shading.mean(-1)
    ref = float(np.median(grey[seen])) if seen.any() else 1.0
    floor = options.min_shading * max(ref, 1e-3)
    albedo = albedo_estimate(photo_uv, shading, np.ones(3), np.zeros(3), min_shading=floor)
    albedo = np.where(seen[..., None], albedo, 0.0).astype(np.float32)
    validity = mask * _ramp(grey, floor, 2.0 * floor)
    return Delit(albedo=albedo, shading=shading, validity=validity.astype(np.float32),
                 lighting=np.asarray(lighting, np.float32), level=np.asarray(level, np.float32))


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722


def brightness_asymmetry(texture: np.ndarray, weight: np.ndarray, region: np.ndarray | None = None, *,
                         threshold: float = 0.5, centre_band: float = 0.03) -> float | None:
    """Mean log luminance ratio of left to right mirror texels, log(Y(x) / Y(W-1-x)) over the texels of the
    left half whose pair both have `weight` above `threshold` (and lie in `region`); texels within
    `centre_band` x W of the centre line are left out. None when no pair qualifies.

    texture: (H, W, 3) in [0, 1]; weight: (H, W); region: (H, W) bool or None.
    """
    tex = np.asarray(texture, np.float32)
    ok = np.asarray(weight, np.float32) > threshold
    if region is not None:
        ok &= np.asarray(region, bool)
    pair = ok & ok[:, ::-1]
    w = tex.shape[1]
    half = w // 2 - int(round(centre_band * w))
    pair[:, max(half, 0):] = False
    if not pair.any():
        return None
    y = np.maximum(_luminance(tex), 1e-3)
    ratio = np.log(y) - np.log(y[:, ::-1])
    return float(ratio[pair].mean())


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] -> CIELAB (D65 white; L* in 0..100)."""
    c = np.clip(np.asarray(rgb, np.float64), 0.0, 1.0)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def skin_tone_ita(texture: np.ndarray, skin: np.ndarray) -> float | None:
    """Individual typology angle (degrees) of the median CIELAB colour of the `skin` texels (None if none).

    texture: (H, W, 3) sRGB in [0, 1]; skin: (H, W) bool.
    """
    skin = np.asarray(skin, bool)
    if not skin.any():
        return None
    lab = np.median(srgb_to_lab(np.asarray(texture)[skin]), axis=0)
    return float(np.degrees(np.arctan2(lab[0] - 50.0, lab[2])))


def ita_category(ita: float | None) -> str:
    """The `ITA_CATEGORIES` name of an ITA value ("unknown" for None)."""
    if ita is None:
        return "unknown"
    for name, lower in ITA_CATEGORIES:
        if ita > lower:
            return name
    return ITA_CATEGORIES[-1][0]
