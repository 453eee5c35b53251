"""The landmark stage: analytic Jacobian vs autodiff, recovery of known parameters, batching, determinism."""
import numpy as np
import pytest
import torch

from ganfit.errors import FitError
from ganfit.fitting.landmark_energy import EnergyWeights, LandmarkProblem, Layout, jacobian, residuals, weak_perspective_pose
from ganfit.fitting.landmark_stage import solve_landmarks
from ganfit.fitting.losses import face_size, landmark_loss, landmark_residuals, landmark_weights
from ganfit.fitting.metrics import aligned_vertex_error, similarity_align
from ganfit.fitting.synthetic import make_synthetic_faces
from ganfit.render.camera import axis_angle_to_matrix, matrix_from_euler, project_points, transform_points


def _problem(b, targets, focal0, weights, sigma=0.5):
    return LandmarkProblem(
        targets=targets, principal=torch.full((b, 2), 256.0, dtype=torch.float64), focal0=focal0,
        scale=face_size(targets), weights=weights,
        energy=EnergyWeights(landmark_sigma=0.03, w_landmark=1.0, w_shape=0.7, w_expr=2.0, w_focal=1.5, focal_log_sigma=sigma),
    )


@pytest.mark.parametrize("rot_dim", [3, 6])
def test_analytic_jacobian_matches_autodiff(rot_dim, generator):
    b, n, ks, ke = 3, 68, 5, 4
    lay = Layout(ks, ke, rot_dim)
    g = generator
    mean = torch.randn(b, n, 3, generator=g, dtype=torch.float64) * 50
    sb = torch.randn(b, n, 3, ks, generator=g, dtype=torch.float64)
    eb = torch.randn(b, n, 3, ke, generator=g, dtype=torch.float64)
    x = torch.randn(b, lay.size, generator=g, dtype=torch.float64) * 0.3
    x[:, lay.trans.start + 2] = np.log(600.0)
    targets = torch.rand(b, n, 2, generator=g, dtype=torch.float64) * 200 + 150
    w = landmark_weights(0.5)
    p = _problem(b, targets, torch.full((b,), 800.0, dtype=torch.float64), w)
    r, j = jacobian(x, mean, sb, eb, lay, p)
    args = (mean, sb, eb, lay, p)
    assert torch.allclose(r, residuals(x, *args), atol=1e-12)
    full = torch.autograd.functional.jacobian(lambda xx: residuals(xx, *args), x)  # (B, R, B, P)
    auto = torch.stack([full[i, :, i] for i in range(b)])
    assert torch.allclose(j, auto, rtol=1e-7, atol=1e-9)


def test_landmark_loss_values():
    target = torch.zeros(1, 68, 2, dtype=torch.float64)
    target[0, :, 0] = torch.arange(68, dtype=torch.float64)
    target[0, :, 1] = torch.arange(68, dtype=torch.float64) % 5
    proj = target + torch.tensor([3.0, 4.0], dtype=torch.float64)  # every point off by 5 px
    scale = torch.tensor([10.0], dtype=torch.float64)  # the error's std per coordinate, px
    w = torch.ones(68, dtype=torch.float64)
    assert landmark_loss(proj, target, w, scale).item() == pytest.approx(0.5 * 68 * 0.25)  # 0.5 sum (5/10)^2
    w2 = landmark_weights(0.0)
    assert w2[:17].sum() == 0 and w2[17:].sum() == 51
    assert landmark_residuals(proj, target, w2, scale).shape == (1, 136)
    assert landmark_loss(proj, target, w2, scale).item() == pytest.approx(0.5 * 51 * 0.25)


def test_weak_perspective_pose_recovers_rotation(generator):
    pts = torch.randn(1, 40, 3, generator=generator, dtype=torch.float64) * 40
    r = matrix_from_euler(torch.tensor([[25.0, -10.0, 5.0]], dtype=torch.float64))
    t = torch.tensor([[5.0, -3.0, -2000.0]], dtype=torch.float64)  # far away: nearly orthographic
    f = torch.tensor([4000.0], dtype=torch.float64)
    pr = torch.tensor([[256.0, 256.0]], dtype=torch.float64)
    uv = project_points(transform_points(pts, r, t), f, pr)
    r_est, trans = weak_perspective_pose(pts, uv, pr, f)
    angle = torch.arccos(((r_est @ r.transpose(1, 2)).diagonal(dim1=1, dim2=2).sum() - 1) / 2)
    assert np.degrees(angle.item()) < 1.5
    assert torch.exp(trans[0, 2]).item() == pytest.approx(2000.0, rel=0.03)


def test_recovers_known_parameters_tiny_model(tiny_model, generator):
    m = tiny_model
    b = 4
    shape = torch.randn(b, m.num_shape, generator=generator, dtype=torch.float64)
    expr = torch.randn(b, m.num_expression, generator=generator, dtype=torch.float64)
    rot = matrix_from_euler(torch.tensor([[20.0, 5.0, 3.0], [-35.0, -10.0, 0.0], [0.0, 15.0, -5.0], [45.0, 0.0, 8.0]], dtype=torch.float64))
    trans = torch.tensor([[10.0, -5.0, -700.0], [-20.0, 0.0, -600.0], [0.0, 10.0, -800.0], [5.0, 5.0, -650.0]], dtype=torch.float64)
    focal = torch.full((b,), 1.6 * 512, dtype=torch.float64)
    cam = transform_points(m.vertices(shape, expr), rot, trans)
    proj = project_points(cam, focal, torch.full((b, 2), 256.0, dtype=torch.float64))
    targets = proj[:, torch.as_tensor(m.landmark_indices)]
    res = solve_landmarks(m, targets.float(), torch.full((b, 2), 512.0), contour="static", w_shape=1e-9, w_expr=1e-9,
                          focal_log_sigma=0.0, iterations=60, ftol=1e-12)
    p = res.params
    assert max(res.history[-1]["reprojection_px"]) < 0.05
    assert torch.allclose(p.shape.double(), shape, atol=0.05)
    assert torch.allclose(p.expression.double(), expr, atol=0.05)
    assert torch.allclose(p.rotation_matrix().double(), rot, atol=2e-3)
    assert torch.allclose(p.translation.double(), trans, atol=1.0)
    # energy never increases (LM accepts only improving steps)
    totals = np.array([h["total"] for h in res.history])
    assert (np.diff(totals, axis=0) <= 0).all()
    assert set(res.stop_reason) <= {"converged", "damping_bound"}


def test_batch_equals_single_and_deterministic(tiny_model, generator):
    m = tiny_model
    targets = torch.rand(3, 68, 2, generator=generator) * 100 + 200
    sizes = torch.full((3, 2), 512.0)
    batch = solve_landmarks(m, targets, sizes, contour="static").params
    again = solve_landmarks(m, targets, sizes, contour="static").params
    assert torch.equal(batch.shape, again.shape) and torch.equal(batch.translation, again.translation)
    for i in range(3):  # each image stops by its own criterion: the batch gives what each image gives alone
        single = solve_landmarks(m, targets[i : i + 1], sizes[i : i + 1], contour="static").params
        assert torch.allclose(single.shape, batch.shape[i : i + 1], atol=1e-6)
        assert torch.allclose(single.translation, batch.translation[i : i + 1], rtol=1e-6)


def test_nan_landmarks_raise(tiny_model):
    t = torch.zeros(1, 68, 2)
    t[0, 3, 0] = float("nan")
    with pytest.raises(FitError):
        solve_landmarks(tiny_model, t, torch.tensor([[512.0, 512.0]]))


def test_adam_baseline_lowers_energy(tiny_model, generator):
    targets = torch.rand(2, 68, 2, generator=generator) * 100 + 200
    res = solve_landmarks(tiny_model, targets, torch.full((2, 2), 512.0), contour="static", optimizer="adam", adam_iterations=60)
    assert np.mean(res.history[-1]["total"]) < np.mean(res.history[0]["total"])


def test_similarity_align_removes_similarity(generator):
    a = torch.randn(2, 30, 3, generator=generator, dtype=torch.float64)
    r = axis_angle_to_matrix(torch.tensor([[0.3, 0.2, -0.1], [1.0, 0.0, 0.5]], dtype=torch.float64))
    b = 2.5 * a @ r.transpose(1, 2) + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert torch.allclose(similarity_align(a, b), b, atol=1e-9)
    assert aligned_vertex_error(a, b).max() < 1e-9


@pytest.mark.assets
def test_synthetic_recovery_embedded_model(bfm):
    """Random faces from the priors, yaw +-60, pitch +-20, 1 px noise: the benchmark's setting, small."""
    syn = make_synthetic_faces(bfm, 8, torch.Generator().manual_seed(7))
    res = solve_landmarks(bfm, syn.landmarks.float(), torch.full((8, 2), 512.0))
    fitted = bfm.vertices(res.params.shape.double(), res.params.expression.double())
    err = aligned_vertex_error(fitted, syn.vertices, torch.as_tensor(bfm.regions["face"]))
    proj_err = np.mean(res.history[-1]["reprojection_px"])
    assert err.mean() < 2.5, err
    assert proj_err < 2.0
    yaw_err = (res.params.euler_deg()[:, 0].double() - syn.yaw_pitch_roll[:, 0]).abs()
    assert yaw_err.median() < 5.0


def test_landmark_nme():
    from ganfit.fitting.metrics import landmark_nme

    target = torch.tensor([[[0.0, 0.0], [40.0, 0.0], [40.0, 90.0], [0.0, 90.0]]])  # face size sqrt(40 * 90) = 60
    shift = torch.tensor([3.0, 4.0])  # 5 px at every point
    assert torch.allclose(landmark_nme(target + shift, target), torch.tensor([5.0 / 60], dtype=torch.float64))
    assert landmark_nme(target, target).item() == 0.0


def _fitted_landmarks(model, res):
    verts = model.vertices(res.params.shape, res.params.expression)
    cam = transform_points(verts, res.params.rotation_matrix(), res.params.translation)
    return project_points(cam, res.params.focal, res.params.principal).gather(1, res.vertex_ids[..., None].expand(-1, -1, 2))


@pytest.mark.assets
@pytest.mark.parametrize("convention", ["2d", "3d"])
def test_landmark_conventions_at_large_yaw(bfm, convention):
    """Turned faces (|yaw| 55-80 deg): landmarks of either convention fit with that convention recover pose,
    shape and the clean landmarks; fitted with the other convention they do not (the hidden jaw of 3d
    landmarks is not on the outline, and the outline of 2d landmarks is not a fixed vertex)."""
    from ganfit.fitting.metrics import landmark_nme

    syn = make_synthetic_faces(bfm, 8, torch.Generator().manual_seed(3), yaw_deg=80, yaw_min_deg=55, convention=convention)
    mask = torch.as_tensor(bfm.regions["face"])
    errors = {}
    for fit_convention in ("2d", "3d"):
        res = solve_landmarks(bfm, syn.landmarks.float(), torch.full((8, 2), 512.0), convention=fit_convention,
                              weights=landmark_weights(0.5), landmark_sigma=0.01)
        fitted = bfm.vertices(res.params.shape.double(), res.params.expression.double())
        yaw = (res.params.euler_deg()[:, 0].double() - syn.yaw_pitch_roll[:, 0]).abs()
        errors[fit_convention] = (aligned_vertex_error(fitted, syn.vertices, mask).mean(), yaw.median(),
                                  landmark_nme(_fitted_landmarks(bfm, res), syn.landmarks_clean).mean())
    other = "3d" if convention == "2d" else "2d"
    mm, yaw, nme = errors[convention]
    assert mm < 1.6 and yaw < 1.5 and nme < 0.01, errors
    assert errors[other][0] > 2 * mm and errors[other][2] > 3 * nme, errors


def test_convention_3d_refuses_the_sliding_contour(tiny_model):
    with pytest.raises(ValueError, match="3d"):
        solve_landmarks(tiny_model, torch.rand(1, 68, 2) * 100 + 200, torch.full((1, 2), 512.0), convention="3d", contour="dynamic")


def test_energy_does_not_depend_on_image_size(bfm):
    """The same face photographed at 2x the resolution (landmarks and image size doubled) gets the same
    shape: landmark errors are measured in face sizes, the focal prior in image sizes."""
    syn = make_synthetic_faces(bfm, 3, torch.Generator().manual_seed(11), noise_px=2.0)
    a = solve_landmarks(bfm, syn.landmarks, torch.full((3, 2), 512.0))
    b = solve_landmarks(bfm, 2.0 * syn.landmarks + 0.5, torch.full((3, 2), 1024.0))  # pixel centres: x' = 2x + 0.5
    assert torch.allclose(a.params.shape, b.params.shape, atol=2e-3)
    assert torch.allclose(a.params.focal * 2.0, b.params.focal, rtol=1e-3)
    assert a.params.shape.norm() > 0.5
