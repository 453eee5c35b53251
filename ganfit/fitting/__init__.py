"""Fitting: parameters, losses (pure functions), stages, the `Fitter` and its results."""
from .config import FitConfig, LandmarkStageConfig, LossWeights
from .fitter import Fitter, resolve_device
from .params import FitParams
from .result import FaceMesh, FitResult

__all__ = ["FitConfig", "LandmarkStageConfig", "LossWeights", "Fitter", "resolve_device", "FitParams", "FaceMesh", "FitResult"]
