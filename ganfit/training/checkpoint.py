"""Resumable training checkpoints: one atomic file holding everything a run needs to continue exactly.

`save_checkpoint(path, fmt, step=..., state=..., config=..., generators=...)` writes one ``torch.save``
file (temp file + fsync + rename, `ganfit._atomic.atomic_open`): an interrupted or failed write leaves the
previous checkpoint as it was. `load_checkpoint(path, fmt)` reads it back (``weights_only=True``: no code
runs on load) and `Checkpoint.restore_rng(generators)` puts the random number generators back, so the step
after a resume is the step an uninterrupted run would have taken (same device, same thread count).

What is saved:

- ``format`` (the caller's string, checked on load), ``version``, ``step``;
- ``config``: the run's options as plain data (the caller's ``to_dict()``);
- ``rng``: the global torch RNG, every CUDA device's RNG (when CUDA is present) and the state of each named
  `torch.Generator` the caller passes (data order, augmentation, latents...). numpy's and Python's global
  generators are not saved: training code here draws its randomness from explicit torch generators;
- the caller's ``state`` entries (module / optimiser / scaler state dicts, tensors, plain data) at the top
  level of the file, so a reader that wants one entry (e.g. the exported generator of a texture-GAN
  checkpoint) need not know this layout.

Used by the texture-GAN trainer (`ganfit.training.texture_gan`) and meant for DF-MVR's training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .._atomic import atomic_open
from ..errors import ModelFormatError

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "rng_state", "cpu_state_dict", "CHECKPOINT_VERSION"]

CHECKPOINT_VERSION = 1
RESERVED = frozenset({"format", "version", "step", "config", "rng"})


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of `module.state_dict()` (safe to save while training goes on)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Snapshot of the global torch RNG, the CUDA RNGs (when CUDA is present) and the named generators."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    format, version, step: as saved; config: the run's options (plain data); rng: see `rng_state`;
    state: the caller's entries (everything else in the file); path: where it was read from.
    """

    format: str
    version: int
    step: int
    config: dict[str, Any]
    rng: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def restore_rng(self, generators: Mapping[str, torch.Generator] | None = None) -> None:
        """Set the global torch RNG, the CUDA RNGs (when the device count matches) and each named generator
        to the saved states. Raises ModelFormatError when a named generator was not saved."""
        try:
            torch.set_rng_state(self.rng["torch"])
            cuda = self.rng.get("cuda") or []
            if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
            saved = self.rng.get("generators", {})
            for name, gen in (generators or {}).items():
                if name not in saved:
                    raise ModelFormatError(f"{self.path}: the checkpoint holds no state for the random generator "
                                           f"{name!r} (it has {sorted(saved)})")
                gen.set_state(saved[name])
        except (KeyError, RuntimeError, TypeError) as exc:
            raise ModelFormatError(f"{self.path}: unusable random-generator state ({type(exc).__name__}: {exc})") from exc


def save_checkpoint(
    path: str | Path,
    fmt: str,
    *,
    step: int,
    state: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
) -> Path:
    """Write a checkpoint atomically (see the module doc); returns its path.

    state: the entries to save (state dicts, tensors, plain data); their names must not be one of
    ``format``, ``version``, ``step``, ``config``, ``rng``. Raises ValueError for such a name,
    OutputError when the folder cannot be written (the old checkpoint then stays as it was).
    """
    clash = RESERVED & set(state)
    if clash:
        raise ValueError(f"checkpoint state entries {sorted(clash)} collide with the checkpoint's own fields")
    payload = {"format": str(fmt), "version": CHECKPOINT_VERSION, "step": int(step), "config": dict(config or {}),
               "rng": rng_state(generators), **state}
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)
    return path


def load_checkpoint(path: str | Path, fmt: str | None = None, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`.

    fmt: the expected ``format`` (None: any). Raises ModelFormatError for a missing, unreadable or
    truncated file, another format, or a newer version than this code writes.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise ModelFormatError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or not RESERVED <= set(data):
        raise ModelFormatError(f"{path} is not a ganfit training checkpoint (no format/step/config/rng entries)")
    if fmt is not None and data["format"] != fmt:
        raise ModelFormatError(f"{path}: a {data['format']!r} checkpoint, expected {fmt!r}")
    if int(data["version"]) > CHECKPOINT_VERSION:
        raise ModelFormatError(f"{path}: checkpoint version {data['version']} is newer than this ganfit reads "
                               f"({CHECKPOINT_VERSION}); update ganfit")
    state = {k: v for k, v in data.items() if k not in RESERVED}
    return Checkpoint(format=data["format"], version=int(data["version"]), step=int(data["step"]),
                      config=dict(data["config"]), rng=dict(data["rng"]), state=state, path=path)
