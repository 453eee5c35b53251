"""Errors a user can cause. Each says what went wrong and what to do about it.

The CLI prints a `GanfitError` as one line (no traceback) and exits non-zero; anything else is a bug.
"""
from __future__ import annotations


class GanfitError(Exception):
    """Base class of every error caused by input, configuration or missing files."""

    exit_code = 2


class ImageError(GanfitError):
    """An image could not be read or has an unusable format."""


class NoFaceError(GanfitError):
    """No face was found where one was expected."""


class LandmarkError(GanfitError):
    """A landmark file or landmark array is unreadable or has the wrong shape."""


class AssetError(GanfitError):
    """A model or weight file is missing, corrupt or fails its checksum."""


class ModelFormatError(GanfitError):
    """A face-model file does not have the fields its format needs."""


class ConfigError(GanfitError):
    """A configuration file or option is invalid."""


class OutputError(GanfitError):
    """An output could not be written."""


class FitError(GanfitError):
    """Optimization failed (for example the parameters became NaN)."""
