"""Lighting models as pure tensor functions: spherical-harmonics irradiance and Phong.

Spherical harmonics (SH)
------------------------
Real SH of bands 0-2 in the convention of Ramamoorthi & Hanrahan, "An Efficient Representation for
Irradiance Environment Maps" (SIGGRAPH 2001), eq. 3 and 12, for a unit normal n = (x, y, z):

    index  (l, m)   Y_lm(n)
    0      (0,  0)  0.282095                       = 1 / (2 sqrt(pi))
    1      (1, -1)  0.488603 y                     = sqrt(3 / (4 pi)) y
    2      (1,  0)  0.488603 z
    3      (1,  1)  0.488603 x
    4      (2, -2)  1.092548 x y                   = sqrt(15 / (4 pi)) x y
    5      (2, -1)  1.092548 y z
    6      (2,  0)  0.315392 (3 z^2 - 1)           = sqrt(5 / (16 pi)) (3 z^2 - 1)
    7      (2,  1)  1.092548 x z
    8      (2,  2)  0.546274 (x^2 - y^2)           = sqrt(15 / (16 pi)) (x^2 - y^2)

These are orthonormal on the unit sphere (no Condon-Shortley sign flips). The irradiance of a distant
environment with radiance coefficients L_lm is (R&H eq. 7)

    E(n) = sum_lm A_l L_lm Y_lm(n),      A_0 = pi,  A_1 = 2 pi / 3,  A_2 = pi / 4,

the A_l being the SH coefficients of the clamped-cosine (Lambertian) kernel. `sh_basis` returns
``A_l * Y_lm(n)`` by default ("convolved"), so that the coefficients of `sh_shading` are the radiance
coefficients L_lm of the environment, per colour channel. This is the 9-coefficient lighting model of
face fitting (Deep3DFaceRecon, Deng et al. 2019, uses the same bands; its constants differ by signs and
by folding A_l differently, so its `gamma` coefficients are not interchangeable with ours).

The rendered colour is ``albedo * E``: the 1/pi of the Lambertian BRDF is absorbed by the coefficients,
so the ambient environment of `default_sh` (E = 1 for every normal) leaves the albedo unchanged.
Directions are in camera space (x right, y up, z towards the viewer) when used by the `Renderer`.

Phong
-----
`phong_shading` is GANFit's choice (Gecer et al., CVPR 2019, sec. 3.3): one directional or point light
plus an ambient term, colour = albedo * diffuse + specular.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "SH_BAND_FACTORS",
    "PhongLight",
    "default_sh",
    "phong_shading",
    "sh_basis",
    "sh_directional",
    "sh_shading",
]

_C0 = 0.5 / math.sqrt(math.pi)  # 0.282095
_C1 = math.sqrt(3.0 / (4.0 * math.pi))  # 0.488603
_C2 = math.sqrt(15.0 / (4.0 * math.pi))  # 1.092548
_C20 = math.sqrt(5.0 / (16.0 * math.pi))  # 0.315392
_C22 = math.sqrt(15.0 / (16.0 * math.pi))  # 0.546274

#: Lambertian convolution factors A_l of bands 0, 1, 2 (Ramamoorthi & Hanrahan 2001, eq. 8-9).
SH_BAND_FACTORS = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
_BAND_OF = (0, 1, 1, 1, 2, 2, 2, 2, 2)


def sh_basis(normals: torch.Tensor, *, convolved: bool = True) -> torch.Tensor:
    """The 9 real SH basis functions of bands 0-2 at unit directions.

    Args:
        normals: (..., 3) unit vectors (x, y, z). Not renormalised here.
        convolved: multiply each band by its Lambertian factor A_l (pi, 2pi/3, pi/4), so that
            ``sh_basis(n) @ L`` is the irradiance of an environment with SH radiance coefficients L.
            False gives the plain orthonormal Y_lm.
    Returns:
        (..., 9) in the order of the module docstring: (0,0), (1,-1), (1,0), (1,1), (2,-2), (2,-1),
        (2,0), (2,1), (2,2).
    """
    if normals.shape[-1] != 3:
        raise ValueError(f"normals must be (..., 3), got {tuple(normals.shape)}")
    x, y, z = normals.unbind(-1)
    a0, a1, a2 = SH_BAND_FACTORS if convolved else (1.0, 1.0, 1.0)
    c1, c2 = a1 * _C1, a2 * _C2
    return torch.stack(
        [
            torch.full_like(x, a0 * _C0),
            c1 * y,
            c1 * z,
            c1 * x,
            c2 * x * y,
            c2 * y * z,
            (a2 * _C20) * (3.0 * z * z - 1.0),
            c2 * x * z,
            (a2 * _C22) * (x * x - y * y),
        ],
        dim=-1,
    )


def _check_coeffs(coeffs: torch.Tensor) -> torch.Tensor:
    if coeffs.ndim == 2:
        coeffs = coeffs.unsqueeze(0)
    if coeffs.ndim != 3 or coeffs.shape[-2] != 9:
        raise ValueError(f"SH coefficients must be (B, 9, C) (C = 3 colour channels), got {tuple(coeffs.shape)}")
    return coeffs


def sh_shading(normals: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Irradiance E(n) per colour channel from 9 SH radiance coefficients (see the module docstring).

    Args:
        normals: (B, ..., 3) unit normals (background pixels with zero normals get a meaningless
            value: mask them yourself).
        coeffs: (B, 9, C) radiance coefficients L_lm per channel (B may be 1 to broadcast), or (9, C).
    Returns:
        (B, ..., C) irradiance; the colour is ``albedo * E``.
    """
    coeffs = _check_coeffs(coeffs)
    if normals.ndim < 2:
        raise ValueError(f"normals must be (B, ..., 3), got {tuple(normals.shape)}")
    b = normals.shape[0]
    if coeffs.shape[0] not in (1, b):
        raise ValueError(f"SH coefficients have batch {coeffs.shape[0]}, normals have batch {b}")
    basis = sh_basis(normals).reshape(b, -1, 9)
    out = basis @ coeffs.to(basis.dtype)  # (B, N, C)
    return out.reshape(*normals.shape[:-1], coeffs.shape[-1])


def sh_directional(direction: torch.Tensor, color: torch.Tensor | float = 1.0) -> torch.Tensor:
    """SH radiance coefficients of a distant directional light (a delta in `direction`).

    Its irradiance ``sh_shading(n, c)`` approximates ``color * max(0, n . l)``; the band-limited
    approximation differs from it by at most about 0.1 * color (largest near the terminator).

    Args:
        direction: (B, 3) or (3,) direction TOWARDS the light (normalised here).
        color: (B, C), (C,) or scalar intensity per channel (default white, C = 3).
    Returns:
        (B, 9, C) coefficients L_lm = color * Y_lm(l).
    """
    if not torch.is_tensor(direction):
        direction = torch.tensor(direction, dtype=torch.get_default_dtype())
    if direction.ndim == 1:
        direction = direction.unsqueeze(0)
    if direction.shape[-1] != 3 or direction.ndim != 2:
        raise ValueError(f"direction must be (B, 3) or (3,), got {tuple(direction.shape)}")
    l = torch.nn.functional.normalize(direction, dim=-1)
    color = torch.as_tensor(color, dtype=l.dtype, device=l.device)
    if color.ndim == 0:
        color = color.expand(3)
    if color.ndim == 1:
        color = color.unsqueeze(0)
    y = sh_basis(l, convolved=False)  # (B, 9)
    return y[:, :, None] * color[:, None, :]


def default_sh(
    batch_size: int = 1,
    *,
    ambient: float = 1.0,
    frontal: float = 0.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Initial lighting: a uniform white environment, optionally plus a soft frontal light.

    With the defaults the irradiance is exactly `ambient` (= 1) for every normal, so the render shows
    the albedo unchanged; `frontal` adds a band-1 term, brighter for normals facing the camera (+z).

    Returns:
        (batch_size, 9, 3) radiance coefficients.
    """
    coeffs = torch.zeros(batch_size, 9, 3, device=device, dtype=dtype)
    coeffs[:, 0, :] = ambient / (SH_BAND_FACTORS[0] * _C0)
    if frontal:
        # E gains frontal * n_z: A_1 * C1 * L_10 = frontal.
        coeffs[:, 2, :] = frontal / (SH_BAND_FACTORS[1] * _C1)
    return coeffs


@dataclass(frozen=True)
class PhongLight:
    """One directional or point light plus ambient light (GANFit's illumination model).

    Give exactly one of `direction` and `position`. Values may be floats or tensors (tensors with
    ``requires_grad`` are optimised like any parameter); per-image values have a leading batch axis.

    direction: (3,) or (B, 3) direction TOWARDS the light (normalised when used), camera space.
    position: (3,) or (B, 3) point-light position, camera space, millimetres.
    color: scalar, (3,) or (B, 3) light colour/intensity.
    ambient: scalar, (3,) or (B, 3) ambient colour.
    specular: scalar or (B,) specular strength (0 turns specular off).
    shininess: scalar or (B,) Phong exponent.
    """

    direction: torch.Tensor | tuple | None = None
    position: torch.Tensor | tuple | None = None
    color: torch.Tensor | float | tuple = 1.0
    ambient: torch.Tensor | float | tuple = 0.3
    specular: torch.Tensor | float = 0.0
    shininess: torch.Tensor | float = 20.0

    def __post_init__(self) -> None:
        if (self.direction is None) == (self.position is None):
            raise ValueError("PhongLight needs exactly one of `direction` (directional light) or `position` (point light)")


def _per_batch(value, ref: torch.Tensor, channels: int) -> torch.Tensor:
    """A light parameter as (B or 1, 1, ..., 1, channels) broadcastable against ref (B, ..., 3)."""
    t = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    if t.ndim == 0:
        t = t.expand(channels)
    if t.ndim == 1:
        if t.shape[0] == channels:
            t = t.unsqueeze(0)
        elif channels == 1:
            t = t.unsqueeze(-1)
        else:
            raise ValueError(f"light parameter must have {channels} channels, got {tuple(t.shape)}")
    if t.ndim != 2 or t.shape[-1] != channels or t.shape[0] not in (1, ref.shape[0]):
        raise ValueError(f"light parameter must be scalar, ({channels},) or (B, {channels}), got {tuple(t.shape)}")
    return t.reshape(t.shape[0], *([1] * (ref.ndim - 2)), channels)


def phong_shading(
    normals: torch.Tensor,
    view_dirs: torch.Tensor,
    light: PhongLight,
    *,
    points: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Phong reflection with one light plus ambient.

        diffuse  = ambient + color * max(0, n . l)
        specular = specular * color * max(0, r . v) ^ shininess,  r = 2 (n . l) n - l,  (0 where n . l <= 0)

    The colour is ``albedo * diffuse + specular``.

    Args:
        normals: (B, ..., 3) unit normals.
        view_dirs: (B, ..., 3) unit directions from the surface TOWARDS the camera.
        light: a `PhongLight`; parameters broadcast over the batch.
        points: (B, ..., 3) surface positions, needed for a point light (l = normalize(position - p)).
    Returns:
        diffuse: (B, ..., 3) (ambient included), specular: (B, ..., 3).
    """
    if normals.shape[-1] != 3 or normals.ndim < 2:
        raise ValueError(f"normals must be (B, ..., 3), got {tuple(normals.shape)}")
    if view_dirs.shape != normals.shape:
        raise ValueError(f"view_dirs must match normals {tuple(normals.shape)}, got {tuple(view_dirs.shape)}")
    if light.direction is not None:
        l = torch.nn.functional.normalize(_per_batch(light.direction, normals, 3), dim=-1)
    else:
        if points is None:
            raise ValueError("a point light needs the surface `points`")
        if points.shape != normals.shape:
            raise ValueError(f"points must match normals {tuple(normals.shape)}, got {tuple(points.shape)}")
        l = torch.nn.functional.normalize(_per_batch(light.position, normals, 3) - points, dim=-1)
    color = _per_batch(light.color, normals, 3)
    ambient = _per_batch(light.ambient, normals, 3)
    n_dot_l = (normals * l).sum(-1, keepdim=True)
    lit = n_dot_l.clamp_min(0.0)
    diffuse = ambient + color * lit
    ks = _per_batch(light.specular, normals, 1)
    shininess = _per_batch(light.shininess, normals, 1)
    reflected = 2.0 * n_dot_l * normals - l
    r_dot_v = (reflected * view_dirs).sum(-1, keepdim=True).clamp_min(0.0)
    # pow with a zero base has an infinite/NaN gradient for exponents < 1: keep the base positive.
    spec = torch.where(
        (n_dot_l > 0) & (r_dot_v > 0), r_dot_v.clamp_min(1e-12) ** shininess, torch.zeros_like(r_dot_v)
    )
    specular = ks * color * spec
    return diffuse, specular
