"""The 3D Morphable Model: a linear model of face shape and expression (Blanz & Vetter, SIGGRAPH 1999).

    vertices = mean + shape_basis @ (shape * shape_std) + expression_basis @ (expression * expression_std)

Coefficients are given in units of their standard deviation, so the Gaussian prior on them is simply
``0.5 * ||shape||^2`` (GANFit, Gecer et al. CVPR 2019, eq. 6). Geometry is in millimetres, right-handed,
y up, the face looking down +z.

Arrays are stored as numpy (the source of truth, saved exactly by `save_npz`) and handed out as torch
tensors on the device and dtype asked for, cached per (device, dtype).
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import torch

from ..errors import ModelFormatError

NPZ_FORMAT_VERSION = 1

_ARRAY_FIELDS = (
    "mean",
    "shape_basis",
    "shape_std",
    "expression_basis",
    "expression_std",
    "triangles",
    "uv",
    "uv_triangles",
    "landmark_indices",
    "texture_mean",
    "texture_basis",
    "texture_std",
)

#: arrays every .npz model has (the others are optional).
_REQUIRED_NPZ = ("mean", "shape_basis", "shape_std", "expression_basis", "expression_std", "triangles",
                 "landmark_indices")


def _index_text(index: np.ndarray) -> str:
    """``[i, j, k]`` for an index tuple, as numpy writes it."""
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


@dataclass(eq=False)
class MorphableModel:
    """A linear face model.

    Attributes:
        name: short identifier, e.g. ``"bfm-3ddfa"``.
        mean: (V, 3) float32 mean shape in millimetres.
        shape_basis: (V, 3, Ks) identity basis, millimetres per unit coefficient (before `shape_std`).
        shape_std: (Ks,) standard deviation of each identity coefficient.
        expression_basis: (V, 3, Ke) expression basis.
        expression_std: (Ke,) standard deviation of each expression coefficient.
        triangles: (F, 3) int64 vertex indices, counter-clockwise seen from outside (outward normals).
        uv: (V, 2) float32 texture coordinates in [0, 1] (v up, OBJ convention), or (T, 2) when
            `uv_triangles` is given (a separate UV topology with seams), or None.
        uv_triangles: (F, 3) int64 indices into `uv` per triangle corner, or None (then `uv` is per vertex).
        landmark_indices: (68,) int64 vertex index of each iBUG-68 landmark.
        regions: name -> (V,) bool mask; at least ``"face"`` (the skin of the face).
        texture_mean / texture_basis / texture_std: optional linear per-vertex colour model,
            (V, 3) in [0, 1], (V, 3, Kt), (Kt,).
        meta: JSON-serialisable provenance (source, licence, units, loader).
    """

    name: str
    mean: np.ndarray
    shape_basis: np.ndarray
    shape_std: np.ndarray
    expression_basis: np.ndarray
    expression_std: np.ndarray
    triangles: np.ndarray
    landmark_indices: np.ndarray
    uv: np.ndarray | None = None
    uv_triangles: np.ndarray | None = None
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    texture_mean: np.ndarray | None = None
    texture_basis: np.ndarray | None = None
    texture_std: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean = np.ascontiguousarray(self.mean, dtype=np.float32)
        self.shape_basis = np.ascontiguousarray(self.shape_basis, dtype=np.float32)
        self.shape_std = np.ascontiguousarray(self.shape_std, dtype=np.float32)
        self.expression_basis = np.ascontiguousarray(self.expression_basis, dtype=np.float32)
        self.expression_std = np.ascontiguousarray(self.expression_std, dtype=np.float32)
        self.triangles = np.ascontiguousarray(self.triangles, dtype=np.int64)
        self.landmark_indices = np.ascontiguousarray(self.landmark_indices, dtype=np.int64)
        if self.uv is not None:
            self.uv = np.ascontiguousarray(self.uv, dtype=np.float32)
        if self.uv_triangles is not None:
            self.uv_triangles = np.ascontiguousarray(self.uv_triangles, dtype=np.int64)
        self.regions = {k: np.ascontiguousarray(v, dtype=bool) for k, v in self.regions.items()}
        for name in ("texture_mean", "texture_basis", "texture_std"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.ascontiguousarray(value, dtype=np.float32))
        self._cache: dict = {}
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise `ModelFormatError` if the arrays do not fit together, hold NaN or infinity, or a standard
        deviation (shape_std, expression_std, texture_std) is zero or negative; the message names the
        array and the first bad index."""
        v = self.mean.shape[0] if self.mean.ndim else 0

        def need(cond: bool, what: str) -> None:
            if not cond:
                raise ModelFormatError(f"face model {self.name!r}: {what}")

        need(self.mean.ndim == 2 and self.mean.shape[1] == 3, f"mean must be (V, 3), got {self.mean.shape}")
        need(
            self.shape_basis.ndim == 3 and self.shape_basis.shape[:2] == (v, 3),
            f"shape_basis must be (V={v}, 3, K), got {self.shape_basis.shape}",
        )
        need(self.shape_std.shape == (self.shape_basis.shape[2],), "shape_std must have one entry per component")
        need(
            self.expression_basis.ndim == 3 and self.expression_basis.shape[:2] == (v, 3),
            f"expression_basis must be (V={v}, 3, K), got {self.expression_basis.shape}",
        )
        need(
            self.expression_std.shape == (self.expression_basis.shape[2],),
            "expression_std must have one entry per component",
        )
        need(self.triangles.ndim == 2 and self.triangles.shape[1] == 3, "triangles must be (F, 3)")
        if self.triangles.size:
            need(self.triangles.min() >= 0 and self.triangles.max() < v, "triangle index out of range")
        need(self.landmark_indices.shape == (68,), f"need 68 landmark indices, got {self.landmark_indices.shape}")
        need(
            self.landmark_indices.min() >= 0 and self.landmark_indices.max() < v, "landmark index out of range"
        )
        for name in ("mean", "shape_basis", "shape_std", "expression_basis", "expression_std", "uv",
                     "texture_mean", "texture_basis", "texture_std"):
            arr = getattr(self, name)
            if arr is not None and arr.size and not np.isfinite(arr).all():
                first = np.argwhere(~np.isfinite(arr))[0]
                need(False, f"{name}{_index_text(first)} is {arr[tuple(first)]}; every value must be finite: "
                     "the model file is corrupt or was converted wrongly (re-convert it from the original)")
        for name in ("shape_std", "expression_std", "texture_std"):
            arr = getattr(self, name)
            if arr is not None and arr.size and not (arr > 0).all():
                i = int(np.flatnonzero(~(arr > 0))[0])
                need(False, f"{name}[{i}] is {arr[i]:g}; every standard deviation must be positive: the model "
                     "file is corrupt or this field holds something else (re-convert it from the original)")
        if self.uv is not None:
            if self.uv_triangles is None:
                need(self.uv.shape == (v, 2), f"per-vertex uv must be (V={v}, 2), got {self.uv.shape}")
            else:
                need(self.uv_triangles.shape == self.triangles.shape, "uv_triangles must match triangles")
                need(self.uv.ndim == 2 and self.uv.shape[1] == 2, "uv must be (T, 2)")
                if self.uv_triangles.size:
                    need(0 <= self.uv_triangles.min() and self.uv_triangles.max() < self.uv.shape[0],
                         "uv_triangles index out of range")
        for key, mask in self.regions.items():
            need(mask.shape == (v,), f"region {key!r} must be a (V,) mask")
        if self.texture_mean is not None:
            need(self.texture_mean.shape == (v, 3), "texture_mean must be (V, 3)")
            need(self.texture_basis is not None and self.texture_basis.shape[:2] == (v, 3), "texture_basis must be (V, 3, Kt)")
            need(
                self.texture_std is not None and self.texture_std.shape == (self.texture_basis.shape[2],),
                "texture_std must have one entry per texture component",
            )

    # ------------------------------------------------------------------ sizes
    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_shape(self) -> int:
        return int(self.shape_basis.shape[2])

    @property
    def num_expression(self) -> int:
        return int(self.expression_basis.shape[2])

    @property
    def num_texture(self) -> int:
        return 0 if self.texture_basis is None else int(self.texture_basis.shape[2])

    # ------------------------------------------------------------------ tensors
    def tensors(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The model's arrays as tensors on `device`/`dtype` (cached). Bases are pre-scaled by their std.

        Returns a dict with ``mean (V*3,)``, ``shape (V*3, Ks)``, ``expression (V*3, Ke)``,
        ``triangles (F, 3)``, ``landmarks (68,)``.
        """
        key = (str(torch.device(device)), dtype)
        if key not in self._cache:
            v = self.num_vertices
            self._cache[key] = {
                "mean": torch.as_tensor(self.mean.reshape(v * 3), device=device, dtype=dtype),
                "shape": torch.as_tensor(
                    (self.shape_basis * self.shape_std).reshape(v * 3, -1), device=device, dtype=dtype
                ),
                "expression": torch.as_tensor(
                    (self.expression_basis * self.expression_std).reshape(v * 3, -1), device=device, dtype=dtype
                ),
                "triangles": torch.as_tensor(self.triangles, device=device),
                "landmarks": torch.as_tensor(self.landmark_indices, device=device),
            }
        return self._cache[key]

    def vertices(self, shape: torch.Tensor, expression: torch.Tensor | None = None) -> torch.Tensor:
        """Deformed vertices.

        Args:
            shape: (B, Ks') identity coefficients in standard deviations; Ks' <= Ks uses the first Ks'.
            expression: (B, Ke') expression coefficients in standard deviations, or None for neutral.
        Returns:
            (B, V, 3) vertices in millimetres, on the device and dtype of `shape`.
        """
        if shape.ndim != 2:
            raise ValueError(f"shape coefficients must be (B, K), got {tuple(shape.shape)}")
        t = self.tensors(shape.device, shape.dtype)
        b = shape.shape[0]
        if shape.shape[1] > self.num_shape:
            raise ValueError(f"model {self.name!r} has {self.num_shape} shape components, got {shape.shape[1]}")
        flat = t["mean"].expand(b, -1) + shape @ t["shape"][:, : shape.shape[1]].T
        if expression is not None:
            if expression.ndim != 2 or expression.shape[0] != b:
                raise ValueError(f"expression coefficients must be (B={b}, K), got {tuple(expression.shape)}")
            if expression.shape[1] > self.num_expression:
                raise ValueError(
                    f"model {self.name!r} has {self.num_expression} expression components, got {expression.shape[1]}"
                )
            flat = flat + expression @ t["expression"][:, : expression.shape[1]].T
        return flat.reshape(b, self.num_vertices, 3)

    # ------------------------------------------------------------------ identity
    def checksum(self) -> str:
        """sha256 over every array and the region names (stable across save/load)."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        for name in _ARRAY_FIELDS:
            arr = getattr(self, name)
            h.update(name.encode())
            if arr is not None:
                h.update(str(arr.dtype).encode() + str(arr.shape).encode())
                h.update(np.ascontiguousarray(arr).tobytes())
        for key in sorted(self.regions):
            h.update(key.encode())
            h.update(self.regions[key].tobytes())
        return h.hexdigest()

    def summary(self) -> dict:
        """A small JSON-friendly description (for result files and `ganfit model info`)."""
        return {
            "name": self.name,
            "vertices": self.num_vertices,
            "triangles": int(self.triangles.shape[0]),
            "shape_components": self.num_shape,
            "expression_components": self.num_expression,
            "texture_components": self.num_texture,
            "has_uv": self.uv is not None,
            "regions": sorted(self.regions),
            "sha256": self.checksum(),
            "meta": self.meta,
        }

    # ------------------------------------------------------------------ npz format
    def save_npz(self, path: str | Path) -> None:
        """Save to our `.npz` format (atomic write); `load_npz` gives back an identical model."""
        from .._atomic import atomic_open

        arrays: dict[str, np.ndarray] = {}
        for name in _ARRAY_FIELDS:
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        for key, mask in self.regions.items():
            arrays[f"region/{key}"] = mask
        header = {"format": "ganfit-morphable-model", "version": NPZ_FORMAT_VERSION, "name": self.name, "meta": self.meta}
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        with atomic_open(path, "wb") as fh:
            fh.write(buf.getvalue())

    @classmethod
    def load_npz(cls, path: str | Path) -> "MorphableModel":
        """Load a model written by `save_npz`.

        Fields: ``header`` (JSON: name, meta, version), the arrays named as the attributes, and
        ``region/<name>`` masks.

        Raises:
            ModelFormatError: ``"<path>: corrupt or not a ganfit model file: <why>"`` for an empty,
                truncated or damaged file, one that is not an .npz, a header that is not ganfit's JSON,
                or arrays that cannot be read; the arrays' own checks (`validate`) name the array.
        """

        def bad(why: str) -> ModelFormatError:
            return ModelFormatError(
                f"{path}: corrupt or not a ganfit model file: {why}; write one with `ganfit model convert` "
                "or MorphableModel.save_npz"
            )

        try:
            data = np.load(path, allow_pickle=False)
        except EOFError as exc:
            raise bad("the file is empty") from exc
        except (OSError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
            raise bad(f"not a readable .npz archive ({_reason(exc)})") from exc
        if not isinstance(data, np.lib.npyio.NpzFile):  # a bare .npy array under an .npz name
            raise bad("a single .npy array, not an .npz archive of named arrays")
        with data:
            try:
                if "header" not in data.files:
                    raise bad("no 'header' entry")
                header = json.loads(bytes(data["header"]).decode("utf-8"))
                if not isinstance(header, dict):
                    raise bad("the header is not a JSON object")
                if header.get("format") != "ganfit-morphable-model":
                    raise bad(f"the header says format {header.get('format')!r}")
                version, name, meta = header.get("version", 0), header.get("name"), header.get("meta", {})
                if isinstance(version, bool) or not isinstance(version, int):
                    raise bad(f"the header's version is {version!r}, not an integer")
                if version > NPZ_FORMAT_VERSION:
                    raise ModelFormatError(
                        f"{path}: written by a newer ganfit (format version {version}; this one reads "
                        f"{NPZ_FORMAT_VERSION}); upgrade ganfit"
                    )
                if not isinstance(name, str) or not isinstance(meta, dict):
                    raise bad("the header needs a string 'name' and an object 'meta'")
                missing = [n for n in _REQUIRED_NPZ if n not in data.files]
                if missing:
                    raise bad(f"missing arrays {missing}")
                kwargs = {n: data[n] for n in _ARRAY_FIELDS if n in data.files}
                regions = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("region/")}
            except (ValueError, UnicodeDecodeError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
                what = "the header is not JSON" if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)) else \
                    "an entry cannot be read"
                raise bad(f"{what} ({_reason(exc)})") from exc
        try:
            return cls(name=name, regions=regions, meta=meta, **kwargs)
        except ModelFormatError as exc:
            raise ModelFormatError(f"{path}: {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise bad(f"an array has the wrong type ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    """An exception as a short phrase for a message: its text, or its type when it has none."""
    return str(exc).strip() or type(exc).__name__

__all__ = ["MorphableModel", "NPZ_FORMAT_VERSION"]
