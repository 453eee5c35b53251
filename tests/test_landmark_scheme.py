"""Landmark schemes as data (`ganfit.model.landmark_scheme`): the iBUG-68 layout's groups, contour and static
points drive the jaw weights, the contour candidates and the landmark stage; a scheme's indices are checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ganfit.fitting.contour import build_contour_candidates
from ganfit.fitting.landmark_stage import LandmarkStage
from ganfit.fitting.losses import landmark_weights
from ganfit.fitting.synthetic import make_synthetic_faces
from ganfit.model.landmark_scheme import IBUG68, LandmarkScheme


def test_ibug68_is_the_300w_layout():
    parts = [i for g in IBUG68.groups.values() for i in g]
    assert sorted(parts) == list(range(68))  # every point in exactly one group
    assert IBUG68.contour == IBUG68.group("jaw") == tuple(range(17)) and IBUG68.static_contour == (7, 8, 9)
    assert IBUG68.inner == tuple(range(17, 68))
    with pytest.raises(ValueError, match="indices must lie"):
        LandmarkScheme("bad", 5, groups={"a": (0, 5)})
    with pytest.raises(ValueError, match="static contour"):
        LandmarkScheme("bad", 5, contour=(0, 1), static_contour=(3,))


def test_the_scheme_sets_the_jaw_weights_and_the_contour(tiny_model):
    w = landmark_weights(0.25)
    assert torch.equal(w[:17], torch.full((17,), 0.25, dtype=torch.float64)) and bool((w[17:] == 1).all())
    chin_only = LandmarkScheme("ibug68-chin", 68, groups=IBUG68.groups, contour=IBUG68.contour, static_contour=(8,))
    default = build_contour_candidates(tiny_model)
    chin = build_contour_candidates(tiny_model, scheme=chin_only)
    assert default.points == chin.points == IBUG68.contour
    # points 7 and 9 slide under the chin-only scheme when the model has outline candidates for them
    assert (default.sides[[7, 8, 9]] == 0).all() and chin.sides[8] == 0
    x = tiny_model.mean[tiny_model.landmark_indices[[7, 9]], 0]
    assert all((chin.sides[j] != 0) == (abs(float(xj)) > 1e-6) for j, xj in zip((7, 9), x))


def test_the_landmark_stage_takes_its_scheme(tiny_model):
    syn = make_synthetic_faces(tiny_model, 2, torch.Generator().manual_seed(0), noise_px=0.0, yaw_deg=20)
    stage = LandmarkStage(tiny_model, scheme=IBUG68)
    res = stage.solve(syn.landmarks, torch.full((2, 2), 512.0, dtype=torch.float64))
    assert res.vertex_ids.shape == (2, 68) and np.isfinite(res.params.shape.numpy()).all()
    with pytest.raises(ValueError, match="98 vertex ids"):
        LandmarkStage(tiny_model, scheme=LandmarkScheme("wflw98", 98))
