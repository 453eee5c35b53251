"""Differentiable rendering: camera, lighting, rasterizer backends (torch, nvdiffrast) and `Renderer`.

The public names below are imported on first use, so importing `ganfit.render.camera` stays cheap and
nvdiffrast is only imported when its backend is asked for.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Fragments": "ganfit.render.base",
    "Rasterizer": "ganfit.render.base",
    "PinholeCamera": "ganfit.render.camera",
    "clip_from_camera": "ganfit.render.camera",
    "project_points": "ganfit.render.camera",
    "PhongLight": "ganfit.render.shading",
    "default_sh": "ganfit.render.shading",
    "phong_shading": "ganfit.render.shading",
    "sh_basis": "ganfit.render.shading",
    "sh_directional": "ganfit.render.shading",
    "sh_shading": "ganfit.render.shading",
    "Renderer": "ganfit.render.renderer",
    "RenderOutput": "ganfit.render.renderer",
    "RenderInputError": "ganfit.render.renderer",
    "make_rasterizer": "ganfit.render.renderer",
    "TorchRasterizer": "ganfit.render.torch_backend",
    "NvdiffrastRasterizer": "ganfit.render.nvdiffrast_backend",
    "BackendUnavailableError": "ganfit.render.nvdiffrast_backend",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ganfit.render' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
