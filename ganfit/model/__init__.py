"""Face models: the linear 3D Morphable Model, its loaders and geometry helpers."""
from .morphable import MorphableModel
from .registry import BUILTIN_MODELS, load_model

__all__ = ["MorphableModel", "load_model", "BUILTIN_MODELS"]
