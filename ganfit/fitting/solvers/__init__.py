"""Solvers shared by the fitting stages: batched Levenberg-Marquardt with per-image stopping."""
from .lm import STOP_REASONS, LMReport, LMSettings, LeastSquaresProblem, levenberg_marquardt

__all__ = ["STOP_REASONS", "LMReport", "LMSettings", "LeastSquaresProblem", "levenberg_marquardt"]
