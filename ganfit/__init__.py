"""ganfit: textured 3D face reconstruction by fitting a 3D Morphable Model and a GAN texture (GANFit)."""
__version__ = "0.1.0"

from .errors import GanfitError  # noqa: E402
from .fitting import FitConfig, Fitter, FitResult  # noqa: E402
from .model.morphable import MorphableModel  # noqa: E402
from .model.registry import load_model  # noqa: E402

__all__ = ["__version__", "GanfitError", "FitConfig", "Fitter", "FitResult", "MorphableModel", "load_model"]
