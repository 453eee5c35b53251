"""Reading a UV texture dataset folder (written by `ganfit texture build-dataset`, or any folder of square
``*.png`` / ``*.jpg`` textures) into memory for training and evaluation.

`load_uv_folder(folder, resolution)` returns the textures as a (N, 3, R, R) uint8 tensor and their paths:
the items of ``manifest.json`` when it lists some (``split=`` picks the train or validation split the
builder assigned), else every image that is not a ``*_mask.png``. `manifest_uv_layout(folder)` is the
UV layout id the manifest names.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["load_uv_folder", "manifest_uv_layout", "read_manifest", "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_manifest(folder: str | Path) -> dict:
    """The folder's ``manifest.json`` as a dict ({} when there is none). Raises ConfigError when unreadable."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable manifest ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _uv_files(folder: Path, manifest: dict, split: str | None) -> list[Path]:
    files: list[Path] = []
    if manifest.get("items"):
        for item in manifest["items"]:
            if split is not None and isinstance(item, dict) and item.get("split") != split:
                continue
            rel = (item.get("outputs") or {}).get("uv") if isinstance(item, dict) else None
            if rel and (folder / rel).is_file():
                files.append(folder / rel)
            elif rel:
                log.warning("%s: listed in the manifest but missing; skipped", folder / rel)
        return files
    if split is not None:
        raise ConfigError(f"{folder}: no manifest.json with items, so there is no {split!r} split")
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_mask") and p.is_file())


def manifest_uv_layout(folder: str | Path) -> str | None:
    """The UV layout id a dataset's manifest names (``face_model.uv_layout`` or ``uv_layout``), or None."""
    m = read_manifest(folder)
    return (m.get("face_model") or {}).get("uv_layout") or m.get("uv_layout")


def load_uv_folder(folder: str | Path, resolution: int, limit: int | None = None, *,
                   split: str | None = None) -> tuple[torch.Tensor, list[Path]]:
    """Read a folder of square UV textures into a (N, 3, R, R) uint8 tensor (Lanczos resize to `resolution`).

    split: only the manifest items with this ``split`` ("train", "validation"); None: all.

    Raises ConfigError for a missing or empty folder, unreadable or non-square images.
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"UV texture folder not found: {folder}")
    files = _uv_files(folder, read_manifest(folder), split)
    if limit is not None:
        files = files[:limit]
    if not files:
        which = f" in split {split!r}" if split is not None else ""
        raise ConfigError(f"{folder}: no UV textures{which} (*.png, *.jpg; *_mask.png are skipped); "
                          "build a dataset with `ganfit texture build-dataset`")
    out = torch.empty((len(files), 3, resolution, resolution), dtype=torch.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as im:
                if im.width != im.height:
                    raise ConfigError(f"{path}: UV textures must be square, got {im.width}x{im.height}")
                im = im.convert("RGB")
                if im.width != resolution:
                    im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
                out[i] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read UV texture {path}: {exc}") from exc
    return out, files


