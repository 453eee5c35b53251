"""dfmvr.synthetic: batch shapes, repeatability with a seed, yaw spread, and that the exact landmarks land on
the rendered face (inside its silhouette) in every view."""
from __future__ import annotations

import pytest
import torch

from dfmvr.synthetic import MultiViewBatch, SyntheticConfig, SyntheticFaces

pytestmark = pytest.mark.usefixtures("one_thread")
S = 64


@pytest.fixture(scope="module")
def faces(bfm):
    return SyntheticFaces(bfm, SyntheticConfig(image_size=S))


@pytest.fixture(scope="module")
def batch(faces):
    return faces.sample(2, 3, torch.Generator().manual_seed(0))


def test_shapes(batch, bfm):
    assert isinstance(batch, MultiViewBatch) and (batch.batch_size, batch.num_views) == (2, 3)
    assert batch.images.shape == (2, 3, 3, S, S) and batch.masks.shape == (2, 3, S, S)
    assert batch.regions.shape == (2, 3, len(bfm.regions), S, S) and batch.region_names == sorted(bfm.regions)
    assert batch.landmarks.shape == (2, 3, 68, 2)
    assert batch.shape.shape == (2, bfm.num_shape) and batch.expression.shape == (2, 3, bfm.num_expression)
    assert batch.rotation.shape == (2, 3, 3) and batch.translation.shape == (2, 3, 3)
    assert batch.lighting.shape == (2, 3, 9, 3) and batch.focal.shape == (2, 3) and batch.principal.shape == (2, 3, 2)
    assert 0.0 <= float(batch.images.min()) and float(batch.images.max()) <= 1.0
    assert 0.1 < float(batch.masks.mean()) < 0.9  # a face, and background around it
    # yaws spread over the views; per-view expressions differ (not synchronised)
    yaw = batch.yaw_pitch_roll_deg[..., 0]
    assert bool((yaw[:, 0] < -30).all() and (yaw[:, 2] > 30).all())
    assert (batch.expression[:, 0] - batch.expression[:, 1]).abs().max() > 0.1


def test_seed_repeats_a_batch(faces, batch):
    again = faces.sample(2, 3, torch.Generator().manual_seed(0))
    for name, value in vars(batch).items():
        if torch.is_tensor(value):
            assert torch.equal(value, getattr(again, name)), name
    other = faces.sample(2, 3, torch.Generator().manual_seed(1))
    assert not torch.equal(other.images, batch.images)


def test_landmarks_land_on_the_face(batch):
    lm = batch.landmarks
    assert bool(((lm >= 0) & (lm <= S - 1)).all())
    idx = lm.round().long().clamp(0, S - 1)
    b = torch.arange(2)[:, None, None]
    v = torch.arange(3)[None, :, None]
    near = torch.nn.functional.max_pool2d(batch.masks, 3, 1, 1)  # within a pixel of the face
    on_face = near[b, v, idx[..., 1], idx[..., 0]] > 0.5
    assert float(on_face.float().mean(dim=-1).min()) >= 0.9  # far-side contour points sit on the silhouette at 50+ deg
    frontal = near[:, 1][b[:, 0], idx[:, 1, :, 1], idx[:, 1, :, 0]] > 0.5
    assert float(frontal.float().mean()) >= 0.97
    # the landmarks move with the face: the frontal view's landmarks are not on the side views' faces' places
    assert (lm[:, 0] - lm[:, 1]).norm(dim=-1).mean() > 3.0


def test_shared_expression_option(bfm):
    faces = SyntheticFaces(bfm, SyntheticConfig(image_size=32, shared_expression=True))
    b = faces.sample(1, 2, torch.Generator().manual_seed(2))
    assert torch.equal(b.expression[:, 0], b.expression[:, 1])
    with pytest.raises(ValueError, match="num_views"):
        faces.sample(1, 0, torch.Generator())
