"""Choosing the torch device once, from a user's string, and refusing one that cannot run before any work."""
from __future__ import annotations

import torch

from .errors import ConfigError

#: What a user may ask for, for messages.
CHOICES = "auto, cpu, cuda, cuda:N, mps or xpu"


def resolve_device(name: str | None, *, float64: bool = False) -> torch.device:
    """The torch device for a user's string, checked to exist on this machine.

    Args:
        name: "auto" (or None / empty: CUDA when available, else CPU), "cpu", "cuda", "cuda:N", "mps"
            (Apple GPU) or "xpu" / "xpu:N" (Intel GPU).
        float64: the caller computes in float64 (the fit's landmark stage), which MPS cannot.
    Returns:
        the device.
    Raises:
        ConfigError: a string torch does not know, a device this machine or PyTorch build does not have
            (``cuda:7`` with two GPUs, ``mps`` off a Mac), ``meta`` (shapes only, no data) or another
            backend ganfit does not run on.
    """
    if name is None or not str(name).strip() or str(name).strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(name).strip().lower()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown device {name!r}; use {CHOICES}") from exc
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        _check_count(name, device, "CUDA GPU", torch.cuda.is_available(), torch.cuda.device_count)
        return device
    if device.type == "xpu":
        xpu = getattr(torch, "xpu", None)
        _check_count(name, device, "Intel XPU", xpu is not None and xpu.is_available(),
                     xpu.device_count if xpu is not None else (lambda: 0))
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {name!r} asked for, but this PyTorch build sees no Apple MPS GPU; use --device cpu")
        if device.index not in (None, 0):
            raise ConfigError(f"device {name!r} asked for, but there is one MPS device (mps or mps:0)")
        if float64:
            raise ConfigError(f"device {name!r} cannot run a fit: the landmark stage solves in float64, which MPS "
                              "does not support; use --device cpu")
        return device
    if device.type == "meta":
        raise ConfigError(f"device {name!r} holds shapes without data and cannot compute anything; use {CHOICES}")
    raise ConfigError(f"device {name!r} ({device.type}) is not supported by ganfit; use {CHOICES}")


def _check_count(name: str, device: torch.device, what: str, available: bool, count) -> None:
    """A `ConfigError` when no such device is visible, or its index is past the last one."""
    if not available:
        raise ConfigError(f"device {name!r} asked for, but this PyTorch build sees no {what}; use --device cpu")
    n = int(count())
    if device.index is not None and device.index >= n:
        raise ConfigError(
            f"device {name!r} asked for, but only {n} {what}{'s are' if n != 1 else ' is'} visible "
            f"({device.type}:0{f'..{device.type}:{n - 1}' if n > 1 else ''})"
        )
