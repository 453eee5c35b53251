"""Tests of ganfit.render.shading: SH basis and irradiance, Phong."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganfit.render.shading import (
    SH_BAND_FACTORS,
    PhongLight,
    default_sh,
    phong_shading,
    sh_basis,
    sh_directional,
    sh_shading,
)


def sphere_quadrature(n_theta: int = 10, n_phi: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre in cos(theta) x uniform phi: exact for polynomials of degree <= 2 n_theta - 1 on S^2.

    Returns unit directions (N, 3) and weights (N,) summing to 4 pi (float64).
    """
    x, w = np.polynomial.legendre.leggauss(n_theta)
    phi = np.arange(n_phi) * 2 * np.pi / n_phi
    c, p = np.meshgrid(x, phi, indexing="ij")
    s = np.sqrt(1 - c**2)
    dirs = np.stack([s * np.cos(p), s * np.sin(p), c], -1).reshape(-1, 3)
    weights = (w[:, None] * np.full(n_phi, 2 * np.pi / n_phi)[None]).reshape(-1)
    return torch.from_numpy(dirs), torch.from_numpy(weights)


def random_dirs(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)


# ----------------------------------------------------------------------------- SH basis
def test_sh_basis_orthonormal_by_quadrature():
    dirs, weights = sphere_quadrature()
    assert torch.allclose(weights.sum(), torch.tensor(4 * math.pi, dtype=torch.float64))
    y = sh_basis(dirs, convolved=False)  # (N, 9)
    gram = (y * weights[:, None]).T @ y
    assert torch.allclose(gram, torch.eye(9, dtype=torch.float64), atol=1e-10)


def test_sh_basis_convolved_gram_is_band_factors_squared():
    dirs, weights = sphere_quadrature()
    y = sh_basis(dirs)  # default: convolved with the Lambertian kernel
    gram = (y * weights[:, None]).T @ y
    a = torch.tensor([SH_BAND_FACTORS[band] for band in (0, 1, 1, 1, 2, 2, 2, 2, 2)], dtype=torch.float64)
    assert torch.allclose(gram, torch.diag(a**2), atol=1e-9)
    assert SH_BAND_FACTORS == pytest.approx((math.pi, 2 * math.pi / 3, math.pi / 4))


def test_sh_basis_known_values_and_shapes():
    n = torch.tensor([0.0, 0.0, 1.0])
    y = sh_basis(n, convolved=False)
    expected = torch.tensor([0.282095, 0, 0.488603, 0, 0, 0, 0.630784, 0, 0])
    assert torch.allclose(y, expected, atol=1e-6)
    n = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = sh_basis(n, convolved=False)
    assert torch.allclose(y[0, [3, 6, 8]], torch.tensor([0.488603, -0.315392, 0.546274]), atol=1e-6)
    assert torch.allclose(y[1, [1, 6, 8]], torch.tensor([0.488603, -0.315392, -0.546274]), atol=1e-6)
    assert sh_basis(torch.zeros(2, 5, 7, 3)).shape == (2, 5, 7, 9)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        sh_basis(torch.zeros(4, 2))


# ----------------------------------------------------------------------------- SH shading
def test_directional_light_irradiance_matches_band_limited_clamped_cosine():
    light = torch.tensor([0.3, 0.5, 0.8], dtype=torch.float64)
    coeffs = sh_directional(light, torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64))  # (1, 9, 3)
    assert coeffs.shape == (1, 9, 3)
    normals = random_dirs(2000)[None]
    e = sh_shading(normals, coeffs)  # (1, 2000, 3)
    cos = normals[0] @ torch.nn.functional.normalize(light, dim=0)
    # The exact band-0..2 projection of max(0, cos) (R&H 2001): 1/4 + cos/2 + 5/32 (3 cos^2 - 1).
    band_limited = 0.25 + 0.5 * cos + 5.0 / 32.0 * (3 * cos**2 - 1)
    assert torch.allclose(e[0, :, 0], band_limited, atol=1e-10)
    assert torch.allclose(e[0], band_limited[:, None] * torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64), atol=1e-10)
    lambert = cos.clamp_min(0)
    err = (e[0, :, 0] - lambert).abs()
    assert err.max() < 0.1  # 0.094 at the terminator
    assert err.mean() < 0.05


def test_default_sh_is_uniform_unit_irradiance():
    normals = random_dirs(100)[None].float()
    assert torch.allclose(sh_shading(normals, default_sh()), torch.ones(1, 100, 3), atol=1e-6)
    e = sh_shading(normals, default_sh(1, ambient=0.5, frontal=0.3))
    assert torch.allclose(e, (0.5 + 0.3 * normals[..., 2:3]).expand(-1, -1, 3), atol=1e-6)
    assert default_sh(4).shape == (4, 9, 3)


def test_sh_shading_batch_and_shape_checks():
    normals = random_dirs(24).float().reshape(2, 3, 4, 3)
    coeffs = torch.randn(2, 9, 3)
    out = sh_shading(normals, coeffs)
    assert out.shape == (2, 3, 4, 3)
    assert torch.allclose(out[1], sh_basis(normals[1]) @ coeffs[1], atol=1e-5)
    assert sh_shading(normals, coeffs[:1]).shape == (2, 3, 4, 3)  # broadcast a single lighting
    with pytest.raises(ValueError, match=r"\(B, 9, C\)"):
        sh_shading(normals, torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="batch"):
        sh_shading(normals, torch.zeros(3, 9, 3))


def test_sh_shading_gradcheck():
    normals = random_dirs(5)[None].requires_grad_(True)
    coeffs = torch.randn(1, 9, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sh_shading, (normals, coeffs))


# ----------------------------------------------------------------------------- Phong
def test_phong_plane_at_known_angle_gives_analytic_diffuse():
    angle = math.radians(60.0)
    normal = torch.tensor([0.0, 0.0, 1.0]).expand(1, 4, 4, 3)
    view = normal.clone()
    light = PhongLight(direction=(math.sin(angle), 0.0, math.cos(angle)), color=(1.0, 0.8, 0.5), ambient=0.2)
    diffuse, specular = phong_shading(normal, view, light)
    expected = 0.2 + torch.tensor([1.0, 0.8, 0.5]) * math.cos(angle)
    assert torch.allclose(diffuse, expected.expand(1, 4, 4, 3), atol=1e-6)
    assert torch.all(specular == 0)  # specular strength defaults to 0
    # A plane facing away from the light: ambient only.
    back = PhongLight(direction=(0.0, 0.0, -1.0), ambient=(0.1, 0.2, 0.3))
    diffuse, _ = phong_shading(normal, view, back)
    assert torch.allclose(diffuse, torch.tensor([0.1, 0.2, 0.3]).expand(1, 4, 4, 3))


def test_phong_specular_peak_and_falloff():
    angle = math.radians(30.0)
    normal = torch.tensor([[[0.0, 0.0, 1.0]]])
    light = PhongLight(direction=(math.sin(angle), 0.0, math.cos(angle)), ambient=0.0, specular=0.5, shininess=10.0)
    mirror = torch.tensor([[[-math.sin(angle), 0.0, math.cos(angle)]]])
    _, spec = phong_shading(normal, mirror, light)
    assert torch.allclose(spec, torch.full((1, 1, 3), 0.5), atol=1e-6)
    off = math.radians(10.0)
    view = torch.tensor([[[-math.sin(angle + off), 0.0, math.cos(angle + off)]]])
    _, spec = phong_shading(normal, view, light)
    assert torch.allclose(spec, torch.full((1, 1, 3), 0.5 * math.cos(off) ** 10), atol=1e-6)


def test_phong_point_light_and_batched_parameters():
    normal = torch.tensor([0.0, 0.0, 1.0]).expand(2, 3, 3)
    points = torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 100.0, 0.0]]).expand(2, 3, 3)
    light = PhongLight(position=torch.tensor([[0.0, 0.0, 100.0], [0.0, 0.0, 200.0]]), color=torch.tensor([[1.0] * 3, [2.0] * 3]), ambient=0.0)
    diffuse, _ = phong_shading(normal, normal, light, points=points)
    assert torch.allclose(diffuse[0, :, 0], torch.tensor([1.0, 1 / math.sqrt(2), 1 / math.sqrt(2)]), atol=1e-6)
    assert torch.allclose(diffuse[1, :, 0], 2 * torch.tensor([1.0, 2 / math.sqrt(5), 2 / math.sqrt(5)]), atol=1e-6)
    with pytest.raises(ValueError, match="points"):
        phong_shading(normal, normal, light)


def test_phong_light_needs_exactly_one_of_direction_and_position():
    with pytest.raises(ValueError, match="exactly one"):
        PhongLight()
    with pytest.raises(ValueError, match="exactly one"):
        PhongLight(direction=(0, 0, 1), position=(0, 0, 1))


def test_phong_gradients_are_finite_including_grazing_specular():
    normals = random_dirs(50)[None].requires_grad_(True)
    view = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(1, 50, 3)
    direction = torch.tensor([0.2, 0.3, 1.0], dtype=torch.float64, requires_grad=True)
    light = PhongLight(direction=direction, ambient=0.1, specular=0.3, shininess=0.5)
    diffuse, specular = phong_shading(normals, view, light)
    (diffuse.sum() + specular.sum()).backward()
    assert torch.isfinite(normals.grad).all() and torch.isfinite(direction.grad).all()
    assert direction.grad.abs().sum() > 0
