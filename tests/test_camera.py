import math

import pytest
import torch

from ganfit.render.camera import (
    PinholeCamera, axis_angle_to_matrix, euler_from_matrix, matrix_from_euler, matrix_to_axis_angle,
    matrix_to_rotation_6d, project_points, rotation_6d_to_matrix, rotation_matrix, transform_points,
)


def test_axis_angle_matches_known_rotation():
    r = axis_angle_to_matrix(torch.tensor([[0.0, math.pi / 2, 0.0]], dtype=torch.float64))[0]
    expected = torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=torch.float64)
    assert torch.allclose(r, expected, atol=1e-12)


def test_axis_angle_round_trip_and_orthonormal(generator):
    aa = torch.randn(50, 3, generator=generator, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(50, 1, generator=generator, dtype=torch.float64) * 3.0
    r = axis_angle_to_matrix(aa)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(50, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(50, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(matrix_to_axis_angle(r), aa, atol=1e-9)


def test_axis_angle_gradient_finite_at_zero():
    aa = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,))
    aa2 = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa2,))


def test_6d_round_trip(generator):
    r = axis_angle_to_matrix(torch.randn(10, 3, generator=generator, dtype=torch.float64))
    assert torch.allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(r)), r, atol=1e-12)
    assert rotation_matrix(torch.randn(4, 6, dtype=torch.float64)).shape == (4, 3, 3)
    with pytest.raises(ValueError):
        rotation_matrix(torch.zeros(2, 4))


def test_euler_round_trip():
    ypr = torch.tensor([[30.0, -10.0, 5.0], [-60.0, 20.0, -8.0]], dtype=torch.float64)
    assert torch.allclose(euler_from_matrix(matrix_from_euler(ypr)), ypr, atol=1e-9)


def test_positive_yaw_turns_face_towards_plus_x():
    # a point on the nose (+z) moves to +x in camera space when yawing by +90 degrees
    r = matrix_from_euler(torch.tensor([[90.0, 0.0, 0.0]], dtype=torch.float64))
    p = transform_points(torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64), r, torch.zeros(1, 3, dtype=torch.float64))
    assert torch.allclose(p, torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64), atol=1e-12)


def test_projection_analytic():
    pts = torch.tensor([[[10.0, 20.0, -100.0], [0.0, 0.0, -50.0]]], dtype=torch.float64)
    uv = project_points(pts, torch.tensor([500.0], dtype=torch.float64), torch.tensor([[320.0, 240.0]], dtype=torch.float64))
    # u = cx + f x / -z; v = cy - f y / -z (image y points down, camera y up)
    assert torch.allclose(uv[0, 0], torch.tensor([320 + 50.0, 240 - 100.0], dtype=torch.float64))
    assert torch.allclose(uv[0, 1], torch.tensor([320.0, 240.0], dtype=torch.float64))
    cam = PinholeCamera(torch.tensor([500.0]), torch.tensor([[320.0, 240.0]]), torch.tensor([[640.0, 480.0]]))
    assert cam.field_of_view_deg()[0] == pytest.approx(math.degrees(2 * math.atan(320 / 500)), rel=1e-5)
    assert cam.to_dict(0)["image_size"] == [640, 480]


def test_clip_space_agrees_with_projection(generator):
    from ganfit.render.camera import clip_from_camera

    pts = torch.randn(2, 20, 3, generator=generator, dtype=torch.float64) * 30
    pts[..., 2] -= 600
    focal = torch.tensor([800.0, 1200.0], dtype=torch.float64)
    principal = torch.tensor([[320.0, 240.0], [300.0, 250.0]], dtype=torch.float64)
    uv = project_points(pts, focal, principal)
    clip = clip_from_camera(pts, focal, principal, (640, 480))
    ndc = clip[..., :3] / clip[..., 3:]
    assert torch.allclose((ndc[..., 0] + 1) * 320, uv[..., 0], atol=1e-9)
    assert torch.allclose((1 - ndc[..., 1]) * 240, uv[..., 1], atol=1e-9)
    assert ((ndc[..., 2] > -1) & (ndc[..., 2] < 1)).all()
    near = clip_from_camera(torch.tensor([[[0.0, 0.0, -10.0]]], dtype=torch.float64), focal[:1], principal[:1], (640, 480))
    assert (near[..., 2] / near[..., 3]).item() == pytest.approx(-1.0)


def test_axis_angle_jacobian_matches_autodiff(generator):
    from ganfit.render.camera import axis_angle_jacobian

    aa = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    aa[0] = 0.0
    aa[1] = torch.tensor([1e-7, 0.0, 0.0])
    aa[2] *= 3.0
    auto = torch.stack([torch.autograd.functional.jacobian(axis_angle_to_matrix, a[None])[0, :, :, 0] for a in aa])
    assert torch.allclose(axis_angle_jacobian(aa), auto, atol=1e-6)
