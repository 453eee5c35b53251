"""Restricted unpickling for model files that hold only numpy data.

Several face-model formats ship as Python pickles (3DDFA's `param_whitening.pkl`, FLAME's
`generic_model.pkl`). `pickle.load` would run whatever code such a file names; these unpicklers resolve
only numpy's array-rebuilding helpers (and what a subclass allows on top), so a file cannot run code.
"""
from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

from ..errors import ModelFormatError

#: (module, name) as written in a pickle -> the modules to look the name up in (numpy 2 renamed
#: numpy.core to numpy._core; pickles from either version must load under both).
NUMPY_GLOBALS: dict[tuple[str, str], tuple[str, ...]] = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "numpy.core.multiarray"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "numpy.core.numeric"),
    ("numpy", "ndarray"): ("numpy",),
    ("numpy", "dtype"): ("numpy",),
}


def resolve_numpy_global(module: str, name: str) -> Any | None:
    """The numpy object a pickle names, or None if (module, name) is not an allowed numpy global."""
    targets = NUMPY_GLOBALS.get((module, name))
    if targets is None:
        return None
    for target in targets:
        try:
            return getattr(importlib.import_module(target), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {name} in {targets}")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers of numpy arrays; any other global raises `pickle.UnpicklingError`.
    Subclasses allow more by overriding `find_extra`."""

    def find_class(self, module: str, name: str) -> Any:
        found = resolve_numpy_global(module, name)
        if found is not None:
            return found
        return self.find_extra(module, name)

    def find_extra(self, module: str, name: str) -> Any:
        """Globals beyond numpy's; the base class allows none."""
        raise pickle.UnpicklingError(f"refusing global {module}.{name}: only numpy arrays are allowed")


def load_numpy_pickle(path: str | Path) -> Any:
    """Unpickle a file that may hold only numpy arrays (in dicts, lists, tuples).

    Raises:
        ModelFormatError: unreadable, truncated, or asks for anything but numpy arrays.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise ModelFormatError(f"{path}: not a pickle of numpy arrays ({exc})") from exc
