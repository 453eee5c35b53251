"""ganfit: textured 3D face reconstruction by fitting a 3D Morphable Model and a GAN texture (GANFit).

The public names below are imported on first use, so `import ganfit` (and `ganfit assets ...`) stays
fast and does not load torch until a model or fitter is needed.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GanfitError": "ganfit.errors",
    "FitConfig": "ganfit.fitting.config",
    "Fitter": "ganfit.fitting.fitter",
    "FitResult": "ganfit.fitting.result",
    "MorphableModel": "ganfit.model.morphable",
    "load_model": "ganfit.model.registry",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ganfit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
