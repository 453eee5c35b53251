"""The blended texture of a joint fit (ganfit.fitting.texture_blend) and the overlay's joint panels
(ganfit.fitting.joint_overlay, ganfit.io.overlay)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from ganfit.fitting.texture_blend import (
    BlendOptions,
    albedo_estimate,
    blend_textures,
    explained_weight,
    model_texture_uv,
    uv_shading,
)
from ganfit.render.shading import default_sh
from ganfit.render.uv_layout import uv_layout

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.png"
S = 64
GAIN, OFFSET = np.array([1.1, 0.95, 0.9], np.float32), np.array([0.02, 0.01, 0.0], np.float32)


def synthetic_case():
    """A known albedo with detail, a smooth shading, its photo = gain * albedo * shading + offset seen on the
    left 40 columns of a 40-row chart, a dark occluder patch in the seen part, and a model texture that is the
    albedo blurred, brighter and with no detail (so a plain paste would leave a seam)."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S
    albedo = np.stack([0.70 + 0.05 * np.sin(40 * xx) * np.cos(31 * yy), 0.52 + 0.04 * np.sin(37 * yy),
                       0.42 + 0.03 * np.cos(29 * xx)], -1).astype(np.float32)
    shading = np.stack([0.6 + 0.5 * xx, 0.55 + 0.5 * xx, 0.5 + 0.45 * xx + 0.1 * yy], -1).astype(np.float32)
    coverage = np.zeros((S, S), bool)
    coverage[12:52, 2:62] = True
    seen = coverage.copy()
    seen[:, 42:] = False
    photo = np.clip(GAIN * albedo * shading + OFFSET, 0, 1) * seen[..., None]
    occluder = np.zeros((S, S), bool)
    occluder[20:30, 12:22] = True
    photo[occluder] = (0.12, 0.09, 0.06)  # hair
    model = np.clip(np.stack([np.full((S, S), v) for v in albedo.reshape(-1, 3).mean(0)], -1) + 0.12, 0, 1)
    model = (model + 0.02 * xx[..., None]).astype(np.float32)
    return albedo, shading, photo.astype(np.float32), seen.astype(np.float32), model, coverage, occluder


def test_albedo_estimate_inverts_the_image_model():
    albedo, shading, *_ = synthetic_case()
    photo = GAIN * albedo * shading + OFFSET
    np.testing.assert_allclose(albedo_estimate(photo, shading, GAIN, OFFSET), albedo, atol=1e-5)


def test_blend_recovers_the_albedo_rejects_the_occluder_and_has_no_seam():
    albedo, shading, photo, mask, model, coverage, occluder = synthetic_case()
    out = blend_textures(photo, mask, shading, model, coverage, gain=GAIN, offset=OFFSET)
    tex = out.texture
    assert tex.shape == (S, S, 3) and tex.dtype == np.float32 and np.isfinite(tex).all()
    assert tex.min() >= 0 and tex.max() <= 1
    # seen, explained and away from the occluder's grown rim and the feather: the known albedo
    from scipy import ndimage

    core = (mask > 0) & ~ndimage.binary_dilation(occluder, iterations=4)
    core[:, 36:] = False
    assert np.abs(tex[core] - albedo[core]).max() < 0.01
    assert (out.weight[core] == 1).all()
    # the occluder is rejected: not its colour, but close to the albedo around it
    assert out.explained[occluder].max() < 0.05 and out.weight[occluder].max() < 0.05
    assert np.abs(tex[occluder] - albedo[occluder]).mean() < 0.05
    assert np.abs(tex[occluder] - photo[occluder]).min(1).min() > 0.2
    # no seam: across the seen / unseen boundary the texture changes no faster than the model and albedo do
    rows = slice(14, 50)
    step = np.abs(np.diff(tex[rows, 30:50], axis=1)).max()
    own = max(np.abs(np.diff(albedo[rows], axis=1)).max(), np.abs(np.diff(model[rows], axis=1)).max())
    assert step < own + 0.01
    paste = np.where(mask[..., None] > 0, albedo, model)  # what a plain paste would do at the seam
    assert np.abs(np.diff(paste[rows, 30:50], axis=1)).max() > step + 0.05
    # far from the photo: the model texture's gradients, with the photo's level carried over smoothly
    far = np.diff(tex[rows, 55:61], axis=1)
    np.testing.assert_allclose(far, np.diff(model[rows, 55:61], axis=1), atol=0.01)
    # outside the chart: the chart padded, then the model texture
    np.testing.assert_allclose(tex[4, 30], tex[12, 30])
    np.testing.assert_allclose(tex[0, 30], model[0, 30])


def test_nothing_seen_gives_the_model_texture():
    albedo, shading, photo, mask, model, coverage, _ = synthetic_case()
    out = blend_textures(photo, np.zeros_like(mask), shading, model, coverage)
    np.testing.assert_allclose(out.texture, model)
    assert out.weight.max() == 0


def test_highlights_are_rejected_and_features_tolerated():
    albedo, shading, *_ = synthetic_case()
    seen = np.ones((S, S), bool)
    est = albedo.copy()
    est[5:10, 5:10] *= 1.8  # a specular highlight
    est[40:44, 20:40] *= 0.3  # an eyebrow, darker than the smooth model texture
    model = albedo
    w = explained_weight(est, model, seen)
    assert w[5:10, 5:10].max() == 0 and w[40:44, 20:40].max() == 0 and w[20:30, 40:60].min() == 1
    features = np.zeros((S, S), np.float32)
    features[36:48, 16:44] = 1
    w = explained_weight(est, model, seen, features=features)
    assert w[40:44, 20:40].min() == 1 and w[5:10, 5:10].max() == 0
    # clipped photo pixels are not explained
    photo = np.full((S, S, 3), 0.5, np.float32)
    photo[50:55, 50:55, 1] = 1.0
    w = explained_weight(albedo, albedo, seen, photo_uv=photo, options=BlendOptions(grow=0))
    assert w[50:55, 50:55].max() == 0 and w[20, 20] == 1


def test_uv_shading_and_model_texture_in_uv(tiny_model):
    layout = uv_layout(tiny_model.uv, tiny_model.triangles, 32)
    normals = torch.nn.functional.normalize(torch.randn(tiny_model.num_vertices, 3), dim=1)
    e = uv_shading(layout, normals, default_sh(1)[0])  # the ambient light: E = 1
    assert e.shape == (32, 32, 3)
    np.testing.assert_allclose(e[layout.coverage], 1.0, atol=1e-5)
    assert (e[~layout.coverage] == 0).all()
    tex = model_texture_uv(torch.rand(1, 3, 8, 8), (32, 32))
    assert tex.shape == (32, 32, 3) and tex.dtype == np.float32


# ---------------------------------------------------------------------------- on a real joint fit
@pytest.fixture(scope="module")
def joint_fit(one_thread):
    from ganfit import FitConfig, Fitter
    from ganfit.errors import GanfitError
    from ganfit.fitting.stages.joint import JointStageConfig

    cfg = FitConfig(stages=("landmarks", JointStageConfig(iterations=4, warmup_iterations=1)),
                    texture_size=64, quiet=True)
    fitter = Fitter(cfg)
    try:
        return fitter, fitter.fit(PHOTO)
    except GanfitError as exc:  # assets missing
        pytest.skip(f"joint fit needs the fetched assets ({exc})")


@pytest.mark.assets
def test_blend_face_textures_on_a_real_fit(joint_fit):
    from ganfit.fitting.photo_texture import PhotoTexture
    from ganfit.fitting.texture_blend import blend_face_textures
    from ganfit.io.images import load_image

    fitter, result = joint_fit
    img = load_image(PHOTO)
    mesh = result.meshes[0]
    photo_texture = mesh.texture.copy()
    pt = PhotoTexture(fitter.model, texture_size=64)
    meshes = [dataclasses.replace(mesh)]  # a copy: the fit's own mesh stays as it was
    blends = blend_face_textures(pt, meshes, result.joint, [img.pixels], [img.scale])
    b = blends[0]
    tex = meshes[0].texture
    assert tex.shape == (64, 64, 3) and np.isfinite(tex).all() and 0 <= tex.min() and tex.max() <= 1
    assert meshes[0].texture_mask is b.weight and 0.05 < b.weight[pt.layout.coverage].mean() < 1
    assert not np.array_equal(tex, photo_texture) and np.array_equal(mesh.texture, photo_texture)
    # where the photo's albedo is kept, the texture lit by the fit gives the photo back (the unwrap here is the
    # one PhotoTexture made)
    res = result.joint.results[0]
    lit = tex * res.gain[0].numpy() * uv_shading(pt.layout, mesh.normals_camera, res.lighting[0]) + res.offset[0].numpy()
    core = (b.weight >= 1) & (mesh.texture_mask >= 0.99) & (tex.max(-1) < 0.99) & (tex.min(-1) > 0.01)  # not clipped
    err = np.abs(lit[core] - photo_texture[core]).max(-1)
    assert core.sum() > 100 and (err < 1e-3).mean() > 0.9  # (the rest: PhotoTexture's own feathering)


@pytest.mark.assets
def test_overlay_with_a_joint_result_has_the_extra_panels(joint_fit):
    _, result = joint_fit
    panel = result._overlay_panel(0)
    h, w = result.images[0].shape[:2]
    assert panel.shape == (h, 5 * w, 3) and panel.dtype == np.float32
    photo = result.images[0].astype(np.float32)
    photo = photo / 255 if result.images[0].dtype == np.uint8 else photo
    joint_panel, before_after = panel[:, 3 * w:4 * w], panel[:, 4 * w:]
    changed = np.abs(joint_panel - photo).max(-1) > 0.02
    fitted = result.meshes[0].projected.numpy()
    x0, y0 = fitted.min(0).astype(int)
    x1, y1 = fitted.max(0).astype(int)
    assert changed[y0:y1, x0:x1].mean() > 0.3 and not changed[:, : max(1, x0 - 5)].any()  # the face only
    cyan = (before_after[..., 0] < 0.2) & (before_after[..., 1] > 0.7) & (before_after[..., 2] > 0.9)
    red = (before_after[..., 0] > 0.9) & (before_after[..., 1] < 0.3)
    assert cyan.sum() > 50 and red.sum() > 50
