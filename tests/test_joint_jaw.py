"""The joint stage's jaw line for 2d landmarks: the 17 jaw points follow the face's outline at the current
pose, as the landmark stage's dynamic contour does (else a turned face's jaw landmarks pull on the wrong
vertices)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ganfit.fitting.params import FitParams
from ganfit.fitting.stages import JointStage, JointStageConfig, JointVariables
from ganfit.fitting.synthetic import make_synthetic_faces
from ganfit.render.camera import matrix_to_axis_angle
from ganfit.render.renderer import Renderer, make_rasterizer
from ganfit.render.shading import default_sh
from texture_models import smooth_pca_texture

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.assets]


def test_jaw_landmarks_slide_to_the_outline_of_a_turned_face(bfm):
    g = torch.Generator().manual_seed(2)
    syn = make_synthetic_faces(bfm, 2, g, noise_px=0.0, yaw_deg=45, yaw_min_deg=35, dtype=torch.float32)
    params = FitParams(shape=syn.shape.float(), expression=syn.expression.float(),
                       rotation=matrix_to_axis_angle(syn.rotation.double()).float(), translation=syn.translation.float(),
                       focal=syn.focal.float(), principal=torch.full((2, 2), 256.0))
    stage = JointStage(bfm, Renderer(bfm, make_rasterizer("torch", "cpu"), image_size=(64, 64)), None,
                       smooth_pca_texture(bfm), JointStageConfig(resolution=64))
    fixed = torch.as_tensor(bfm.landmark_indices)[None].expand(2, -1)
    photo = torch.full((2, 3, 512, 512), 0.5)
    v = JointVariables(latent=torch.zeros(2, 6), lighting=default_sh(2), gain=torch.ones(2, 3), offset=torch.zeros(2, 3),
                       shape=params.shape, expression=params.expression, rotation=params.rotation,
                       translation=params.translation)
    vertices = bfm.vertices(params.shape, params.expression)
    err = {}
    for sliding in (False, True):
        t = stage.energy.prepare(photo, syn.landmarks.float(), params, fixed, torch.ones(68), 0.02, default_sh(2), 1.3,
                                 False, sliding_jaw=sliding)
        proj = stage.energy.landmarks(v, t, vertices)
        err[sliding] = (proj - syn.landmarks_clean.float()).norm(dim=-1)
    assert float(err[True].max()) < 0.05  # the synthetic detector's own outline points
    assert float(err[False][:, :17].mean()) > 3.0 and float(err[False][:, 17:].max()) < 0.05
    # the jaw's gradient still reaches the geometry through the chosen vertices
    t = stage.energy.prepare(photo, syn.landmarks.float() + 1.0, params, fixed, torch.ones(68), 0.02, default_sh(2), 1.3,
                             False, sliding_jaw=True)
    shape = params.shape.clone().requires_grad_(True)
    proj = stage.energy.landmarks(JointVariables(**{**dict(v.items()), "shape": shape}), t, bfm.vertices(shape, params.expression))
    proj[:, :17].sum().backward()
    assert shape.grad is not None and float(shape.grad.abs().sum()) > 0 and np.isfinite(shape.grad.numpy()).all()
