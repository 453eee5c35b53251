"""Face models by name: the embedded default and models loaded from user files."""
from __future__ import annotations

from pathlib import Path

from ..errors import AssetError, ModelFormatError
from .morphable import MorphableModel

#: registered model names -> the asset that provides their files.
BUILTIN_MODELS = {"bfm-3ddfa": "bfm-3ddfa"}


def load_model(name_or_path: str | Path = "bfm-3ddfa", *, landmarks=None, fetch: bool = False) -> MorphableModel:
    """A face model by registered name (``"bfm-3ddfa"``) or from a file/folder in any supported format.

    Args:
        name_or_path: a name from `BUILTIN_MODELS`, or a path (.npz, BFM .mat/.h5, FLAME .pkl,
            an ICT-FaceKit folder).
        landmarks: 68 landmark vertex indices (array, or a .txt/.json/.npy file) for formats that do not
            carry them (BFM 2009/2017, FLAME; the CLI's ``--model-landmarks``); for the others, and for
            the built-in models, they replace the model's own landmark vertices.
        fetch: fetch a missing built-in model's asset instead of raising.
    Raises:
        AssetError: an unknown name or a missing path. ModelFormatError: a file that is corrupt or not
            the format its name says (``"corrupt or not a ... file"``), or one that needs landmarks.
    """
    key = str(name_or_path)
    if key in BUILTIN_MODELS:
        from ..assets import asset_path

        directory = asset_path(BUILTIN_MODELS[key], fetch=fetch)
        from .loaders import load_model_file

        return load_model_file(directory, format="bfm3ddfa", landmarks=landmarks)
    path = Path(key).expanduser()
    if not path.exists():
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise AssetError(f"face model {key!r} is neither a registered name ({known}) nor an existing file or folder")
    from .loaders import load_model_file

    model = load_model_file(path, landmarks=landmarks)
    if not isinstance(model, MorphableModel):
        raise ModelFormatError(f"{path}: loader returned no face model")
    return model
