"""Choosing the torch device once, from a user's string."""
from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(name: str | None) -> torch.device:
    """"auto" (or empty) -> CUDA when available, else CPU; anything else is checked to exist."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this PyTorch build sees no CUDA GPU; use --device cpu")
    return device
