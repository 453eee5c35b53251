"""A video frame's SH light from the known albedo (`fitting.frame_lighting`): a face rendered under a known light
over a background is relit correctly, whatever the background."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ganfit.fitting.frame_lighting import frame_lighting
from ganfit.fitting.params import FitParams
from ganfit.render.renderer import Renderer, make_rasterizer
from ganfit.render.shading import default_sh, sh_directional, sh_shading
from texture_models import smooth_pca_texture

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.assets]


def test_the_frames_light_is_recovered(bfm):
    tex = smooth_pca_texture(bfm).decode(torch.tensor([[1.0, -0.5, 0.3, 0.0, 0.4, -0.2]]))
    rast = make_rasterizer("torch", "cpu")
    g = torch.Generator().manual_seed(0)
    params = FitParams(shape=0.5 * torch.randn(1, bfm.num_shape, generator=g), expression=torch.zeros(1, bfm.num_expression),
                       rotation=torch.tensor([[0.05, 0.3, 0.0]]), translation=torch.tensor([[0.0, 0.0, -650.0]]),
                       focal=torch.tensor([700.0]), principal=torch.tensor([[160.0, 160.0]]))
    light = default_sh(1) * 0.6 + sh_directional(torch.tensor([[-0.6, 0.3, 1.0]]), 0.5)
    with torch.no_grad():
        out = Renderer(bfm, rast, image_size=(320, 320)).render(params, texture=tex, lighting=light)
    a = out.alpha[0][..., None].numpy()
    frame = out.image[0].clamp(0, 1).numpy() + (1 - a) * np.array([0.2, 0.6, 0.3], np.float32)  # green background
    found = frame_lighting(Renderer(bfm, rast, image_size=(128, 128)), tex, params, frame, out.landmarks[0].numpy())
    normals = out.normals[out.alpha > 0.5][None]
    err = (sh_shading(normals, found) - sh_shading(normals, light)).abs().mean()
    err0 = (sh_shading(normals, default_sh(1)) - sh_shading(normals, light)).abs().mean()
    assert float(err) < 0.03 and float(err) < 0.15 * float(err0), (float(err), float(err0))
