"""Texture models by name: the project's shipped weights (listed in `weights/manifest.json`) or a file.

`load_texture_model("default")` gives the texture GAN this project trained and ships (see
weights/README.md for how little data it saw); a path gives a model file: `.pt` for a `TexturePGGAN`
(from `ganfit texture train`), `.npz` for a `LinearTextureModel` (from `ganfit texture build-pca`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ...errors import AssetError, ModelFormatError
from .base import TextureModel, check_layout

MANIFEST = "manifest.json"


def weights_dir() -> Path:
    """Where shipped weights live: $GANFIT_WEIGHTS, else the `weights/` folder of the source tree."""
    env = os.environ.get("GANFIT_WEIGHTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "weights"


def read_manifest(directory: Path | None = None) -> dict:
    """The weights manifest (format ganfit-weights-manifest)."""
    folder = directory or weights_dir()
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssetError(f"no weights manifest at {path}; set GANFIT_WEIGHTS to the folder with the shipped weights") from None
    except (OSError, ValueError) as exc:
        raise AssetError(f"{path}: unreadable weights manifest ({exc})") from exc
    if data.get("format") != "ganfit-weights-manifest":
        raise AssetError(f"{path}: not a ganfit weights manifest")
    return data


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shipped_weights_path(name: str = "default") -> Path:
    """The file of a shipped model (by manifest name, or "default"), checked against its sha256."""
    folder = weights_dir()
    manifest = read_manifest(folder)
    entries = {e["name"]: e for e in manifest.get("weights", [])}
    key = manifest.get("default_texture_model") if name == "default" else name
    if key not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise AssetError(f"no shipped texture model {name!r} in {folder / MANIFEST} (shipped: {known})")
    entry = entries[key]
    path = folder / entry["file"]
    if not path.is_file():
        raise AssetError(f"shipped weights {path} are missing; restore them from the repository (git checkout weights/)")
    digest = _sha256(path)
    if digest != entry["sha256"]:
        raise AssetError(f"{path}: sha256 {digest[:12]}... does not match the manifest ({entry['sha256'][:12]}...); the file is damaged")
    return path


def load_texture_model(name_or_path: str | Path = "default", *, device: str = "cpu", face_model=None) -> TextureModel:
    """A texture model by shipped name ("default") or file path; checked against `face_model`'s UV layout
    when given (ModelFormatError on a mismatch)."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not path.suffix or not path.exists():
        if path.suffix in (".pt", ".npz"):
            raise AssetError(f"texture model file {path} does not exist")
        path = shipped_weights_path(text)
    if path.suffix == ".npz":
        from .linear import LinearTextureModel

        model = LinearTextureModel.load(path, device=device)
    elif path.suffix == ".pt":
        from .pggan import TexturePGGAN

        model = TexturePGGAN.load(path, device=device)
    else:
        raise ModelFormatError(f"{path}: unknown texture model file type (expected .pt or .npz)")
    if face_model is not None:
        check_layout(model, face_model)
    return model
