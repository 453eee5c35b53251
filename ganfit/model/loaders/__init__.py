"""Loaders for face-model files in their original formats, all giving a `MorphableModel` in mm.

=============  ==========================================  ==========================
format         file                                        loader
=============  ==========================================  ==========================
``npz``        our own ``.npz`` (`MorphableModel.save_npz`)  `MorphableModel.load_npz`
``bfm2009``    ``01_MorphableModel.mat``                   `load_bfm2009`
``bfm_front``  Deep3DFaceRecon ``BFM_model_front.mat``     `load_bfm_front`
``bfm2017``    ``model2017-1_*.h5`` (statismo HDF5)        `load_bfm2017`
``flame``      FLAME ``generic_model.pkl``                 `load_flame`
``ict``        ICT-FaceKit ``FaceXModel/`` folder          `load_ict`
``bfm3ddfa``   folder of 3DDFA's BFM arrays (``u_shp.npy``)  `load_bfm_3ddfa`
=============  ==========================================  ==========================

`load_model_file` picks the format from the extension and, for ``.mat``, from the variable names.
Each loader module's docstring documents the fields, units and standard deviations of its format.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from ...errors import AssetError, ModelFormatError
from ..morphable import MorphableModel
from ._common import not_a_model, read_landmarks
from .bfm2009 import load_bfm2009
from .bfm2017 import load_bfm2017
from .bfm3ddfa import FILES as BFM3DDFA_FILES
from .bfm3ddfa import load_bfm_3ddfa
from .bfm_front import load_bfm_front
from .flame import load_flame
from .ict import INDEX_FILE, load_ict

FORMATS = ("npz", "bfm2009", "bfm_front", "bfm2017", "flame", "ict", "bfm3ddfa")

_LOADERS: dict[str, Callable[..., MorphableModel]] = {
    "bfm2009": load_bfm2009,
    "bfm_front": load_bfm_front,
    "bfm2017": load_bfm2017,
    "flame": load_flame,
    "ict": load_ict,
}

_EXTENSIONS = {".npz": "npz", ".h5": "bfm2017", ".hdf5": "bfm2017", ".pkl": "flame"}


def _mat_format(path: Path) -> str:
    """``bfm2009`` or ``bfm_front`` from the variable names of a .mat file (without loading it)."""
    import scipy.io

    try:
        names = {entry[0] for entry in scipy.io.whosmat(str(path))}
    except NotImplementedError as exc:
        raise ModelFormatError(f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; re-save with -v7") from exc
    except Exception as exc:  # noqa: BLE001 - scipy raises assorted errors on corrupt files
        raise not_a_model(path, "mat", f"not a readable MATLAB .mat file ({exc!r})") from exc
    if "shapeMU" in names or "shapePC" in names:
        return "bfm2009"
    if "meanshape" in names or "idBase" in names:
        return "bfm_front"
    raise not_a_model(
        path, "mat",
        "unknown .mat face model; expected BFM 2009 fields (shapeMU, shapePC, shapeEV, tl) or "
        f"Deep3DFaceRecon BFM_model_front fields (meanshape, idBase, exBase, tri); found {sorted(names)}",
    )


def detect_format(path: str | Path) -> str:
    """The format name (one of `FORMATS`) of a model file or folder.

    Raises:
        AssetError: the path does not exist.
        ModelFormatError: the extension/content is not a known face-model format.
    """
    p = Path(path)
    if not p.exists():
        raise AssetError(f"face model {p} does not exist")
    if p.is_dir() or p.name == INDEX_FILE:
        if p.is_dir() and all((p / f).is_file() for f in BFM3DDFA_FILES):
            return "bfm3ddfa"
        if (p / INDEX_FILE).is_file() or (p / "FaceXModel" / INDEX_FILE).is_file() or p.name == INDEX_FILE:
            return "ict"
        raise ModelFormatError(
            f"{p}: a folder is read only as an ICT-FaceKit FaceXModel folder (with {INDEX_FILE}) or a folder "
            f"of 3DDFA BFM arrays ({', '.join(BFM3DDFA_FILES)})"
        )
    suffix = p.suffix.lower()
    if suffix == ".mat":
        return _mat_format(p)
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise ModelFormatError(
        f"{p}: unknown face-model file type {suffix or '(no extension)'!r}; supported: .npz (ganfit), "
        ".mat (BFM 2009 / BFM_model_front), .h5 (BFM 2017), .pkl (FLAME), an ICT-FaceKit folder"
    )


def load_model_file(
    path: str | Path, *, format: str | None = None, landmarks: Any = None, **options: Any
) -> MorphableModel:
    """Load a face model from any supported file, converted to millimetres.

    Args:
        path: model file or folder.
        format: one of `FORMATS` to skip detection.
        landmarks: 68 landmark vertex indices (array or .txt/.json/.npy file; for FLAME also DECA's
            landmark_embedding.npy). Required for BFM 2009/2017 and FLAME; overrides the file's own
            landmarks for the other formats.
        **options: passed to the format's loader (e.g. ``landmark_index_base=1``, ``name=...``).
    Raises:
        AssetError: missing path. ModelFormatError: unknown format or a missing field (named).
    """
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise ModelFormatError(f"unknown face-model format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not Path(path).exists():
        raise AssetError(f"face model {path} does not exist")
    if fmt in ("npz", "bfm3ddfa"):
        model = MorphableModel.load_npz(path) if fmt == "npz" else load_bfm_3ddfa(path)
        if landmarks is None:
            return model
        base = int(options.get("landmark_index_base", 0))
        lms = read_landmarks(landmarks, model.num_vertices, index_base=base)
        return dataclasses.replace(model, landmark_indices=lms)
    return _LOADERS[fmt](path, landmarks=landmarks, **options)


__all__ = [
    "FORMATS",
    "detect_format",
    "load_model_file",
    "load_bfm2009",
    "load_bfm2017",
    "load_bfm_front",
    "load_flame",
    "load_ict",
    "load_bfm_3ddfa",
]
