"""Errors a user can cause. Each says what went wrong and what to do about it.

The CLI prints a `GanfitError` as one line (no traceback) and exits non-zero; anything else is a bug.

Exit codes of the ``ganfit`` command: `EXIT_OK` (0) everything done; `EXIT_SOME_FAILED` (1) some inputs
failed, the others were done and written; `EXIT_ERROR` (2) nothing was done (bad options, model, output
path, or every input failed); `EXIT_INTERRUPTED` (130) Ctrl-C.
"""
from __future__ import annotations

from typing import Any, Sequence

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class GanfitError(Exception):
    """Base class of every error caused by input, configuration or missing files."""

    exit_code = 2


class ImageError(GanfitError):
    """An image could not be read or has an unusable format."""


class VideoError(GanfitError):
    """A video could not be read (missing, not a video, no video stream, nothing decodable), or an image
    was given where a video is expected."""


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


class NothingFittedError(GanfitError):
    """None of the inputs could be fitted; `failures` holds each one's error (`FitFailure`)."""

    def __init__(self, failures: Sequence[Any]) -> None:
        self.failures = list(failures)
        first = str(self.failures[0]) if self.failures else "no inputs"
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        super().__init__(f"no input could be fitted: {first}{more}")

    def __reduce__(self):  # pickled whole (a worker process raises it to the batch driver), not by its message
        return (type(self), (self.failures,))
