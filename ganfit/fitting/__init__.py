"""Fitting: parameters, losses (pure functions), stages, the `Fitter` and its results."""
from .config import FitConfig, LossWeights, StageConfig
from .fitter import Fitter, resolve_device
from .params import FitParams
from .result import FaceMesh, FitResult

__all__ = ["FitConfig", "LossWeights", "StageConfig", "Fitter", "resolve_device", "FitParams", "FaceMesh", "FitResult"]
