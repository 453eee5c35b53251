"""Decode photos into one canonical form: float32 RGB in [0, 1], upright, shape (H, W, 3).

`load_image` accepts a path or a numpy array and returns an `Image`. Every problem a user can cause
(missing file, not an image, truncated or corrupt data, an image too small or too large, unusable
values) raises `ImageError` with a one-line message saying what is wrong.

Conversions (decided once, here, so every later stage sees the same thing):
- EXIF orientation is applied (the pixels come back upright); `Image.orientation_applied` records the tag.
- Grayscale and bilevel images are replicated to three channels; palette, CMYK, YCbCr, LAB and HSV
  images are converted to RGB by Pillow. Embedded ICC profiles are not applied (values taken as sRGB).
- Alpha (RGBA, LA, PA, premultiplied modes, palette or tRNS transparency) is composited over mid-grey
  (0.5, 0.5, 0.5). Transparent pixels often hold undefined colour (black or leftovers); a neutral grey
  backdrop gives them a defined, low-contrast value that neither detectors nor the photometric loss
  mistake for skin or edges. The original mode stays in `Image.source_mode`.
- 16-bit grayscale (Pillow modes I;16*, and I holding 16-bit data) is divided by 65535; 32-bit integer
  data beyond 16 bits by 2**32 - 1. 16-bit colour PNGs are decoded by Pillow at 8-bit precision
  (`source_bits` still says 16).
- Float data (float TIFF, mode F, or a float array) must already lie in [0, 1]; values outside
  (beyond a 1e-3 rounding tolerance) or NaN/inf raise `ImageError` rather than being silently rescaled.
- Multi-frame files (GIF, multi-page TIFF) give their first frame.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFile, ImageOps

from .._atomic import atomic_open
from ..errors import ImageError

logger = logging.getLogger(__name__)

MIN_SIDE = 32
"""Smallest accepted width or height in pixels."""
MAX_SIDE = 20_000
"""Largest accepted width or height in pixels."""
MAX_PIXELS = 400_000_000
"""Largest accepted width * height."""
ALPHA_BACKGROUND = 0.5
"""Grey level that transparent pixels are composited onto."""
FLOAT_TOLERANCE = 1e-3
"""How far float input may stray outside [0, 1] (rounding) before it is refused."""
EXIF_ORIENTATION_TAG = 0x0112

ImageSource = str | os.PathLike | np.ndarray


@dataclass(frozen=True)
class Image:
    """A decoded photo.

    pixels: (H, W, 3) float32 RGB in [0, 1], upright, read-only (copy it to modify).
    path: the file it came from, or None for an array.
    orientation_applied: the EXIF orientation tag (1-8) whose transform was applied; 1 if none.
    source_mode: Pillow mode of the file ("RGB", "L", "RGBA", "I;16", "CMYK", "P", ...) or, for an
        array, "L", "LA", "RGB" or "RGBA" by channel count.
    source_bits: bits per channel sample in the source (1, 8, 16, 32 or 64).
    """

    pixels: np.ndarray
    path: str | None
    orientation_applied: int
    source_mode: str
    source_bits: int

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def load_image(source: ImageSource) -> Image:
    """Load a photo from a path or an array into an `Image`.

    source: a file path, or an array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)
        with dtype uint8 (0-255), uint16 (0-65535), bool, or float in [0, 1].
    Raises ImageError for anything that cannot be turned into a usable RGB photo.
    """
    if isinstance(source, np.ndarray):
        return _image_from_array(source)
    if isinstance(source, (str, os.PathLike)):
        return _image_from_file(Path(source))
    raise TypeError(f"load_image expects a path or a numpy array, got {type(source).__name__}")


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an image array as an 8-bit PNG, atomically (temp file + rename).

    array: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); uint8, or float in [0, 1] (clipped and
        rounded to 8 bits).
    """
    data = np.asarray(array)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[2] not in (3, 4)):
        raise ValueError(f"save_png needs (H, W), (H, W, 3) or (H, W, 4), got shape {data.shape}")
    if data.dtype != np.uint8:
        data = _float_to_uint8(data.astype(np.float32))
    with atomic_open(path, "wb") as fh:
        PILImage.fromarray(np.ascontiguousarray(data)).save(fh, format="PNG")


# ----------------------------------------------------------------------------------------- files


def _image_from_file(path: Path) -> Image:
    """Decode the file at `path`; see `load_image`."""
    _check_file(path)
    with _pillow_limits():
        try:
            pil = PILImage.open(path)
        except PILImage.DecompressionBombError as exc:
            raise ImageError(f"{path} is too large: {exc}") from exc
        except PILImage.UnidentifiedImageError as exc:
            raise ImageError(f"{path} is not an image Pillow can read (unknown or unsupported format)") from exc
        except Warning as exc:  # DecompressionBombWarning, turned into an error by _pillow_limits
            raise ImageError(f"{path} is too large: {exc}") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"cannot read {path}: {exc}") from exc
        with pil:
            _check_size(pil.size, str(path))
            mode, bits = pil.mode, _pillow_bits(pil)
            _decode_fully(pil, path)
            orientation, pil = _apply_exif_orientation(pil, path)
            pixels = _pillow_to_rgb(pil, path)
    return _finish(pixels, str(path), orientation, mode, bits)


def _check_file(path: Path) -> None:
    """Refuse paths that are missing, directories or empty, before handing them to Pillow."""
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is empty (0 bytes)")


@contextlib.contextmanager
def _pillow_limits() -> Iterator[None]:
    """Within the block: Pillow's pixel limit is `MAX_PIXELS`, its bomb warning is an error, and
    truncated files raise. The previous settings are restored on exit (they are Pillow module
    globals, so this is not thread-safe against other code changing them concurrently)."""
    old_max, old_truncated = PILImage.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    PILImage.MAX_IMAGE_PIXELS = MAX_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            yield
    finally:
        PILImage.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_max, old_truncated


def _check_size(size: tuple[int, int], name: str) -> None:
    """Refuse images under `MIN_SIDE` or over `MAX_SIDE` on a side, or over `MAX_PIXELS`."""
    width, height = size
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageError(
            f"{name} is too large ({width}x{height}); the limit is {MAX_SIDE} px per side and "
            f"{MAX_PIXELS // 1_000_000} megapixels: downscale it first"
        )
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(f"{name} is too small ({width}x{height}); each side needs at least {MIN_SIDE} px")


def _pillow_bits(pil: PILImage.Image) -> int:
    """Bits per sample of the file (read from the decoder's raw mode before decoding)."""
    rawmodes = [str(tile.args) for tile in getattr(pil, "tile", []) or []]
    if any(";16" in raw for raw in rawmodes) or pil.mode.startswith("I;16"):
        return 16
    if pil.mode == "1":
        return 1
    if pil.mode in ("I", "F"):
        return 32
    return 8


def _decode_fully(pil: PILImage.Image, path: Path) -> None:
    """Force a full decode so truncated or corrupt data raises here instead of loading grey."""
    try:
        pil.load()
    except MemoryError as exc:
        raise ImageError(f"not enough memory to decode {path} ({pil.width}x{pil.height})") from exc
    except Exception as exc:  # decoders raise many types (OSError, SyntaxError, zlib.error, ...)
        raise ImageError(f"{path} is truncated or corrupt: {exc}") from exc


def _apply_exif_orientation(pil: PILImage.Image, path: Path) -> tuple[int, PILImage.Image]:
    """Rotate/flip by the EXIF orientation tag. Returns (tag applied or 1, upright image)."""
    try:
        tag = int(pil.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception as exc:  # malformed EXIF blocks should not make a good photo unreadable
        logger.warning("ignoring unreadable EXIF data in %s: %s", path, exc)
        return 1, pil
    if tag not in range(2, 9):
        return 1, pil
    upright = ImageOps.exif_transpose(pil)
    return tag, upright


def _pillow_to_rgb(pil: PILImage.Image, path: Path) -> np.ndarray:
    """Convert a decoded Pillow image of any mode to (H, W, 3) float32 in [0, 1]."""
    mode = pil.mode
    if mode.startswith("I") or mode == "F":
        return _gray_to_rgb(_scale_wide(np.asarray(pil), mode, str(path)))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in pil.info:
        rgba = _uint8_to_unit(np.asarray(pil.convert("RGBA")))
        return _composite(rgba[..., :3], rgba[..., 3])
    return _uint8_to_unit(np.asarray(pil if mode == "RGB" else pil.convert("RGB")))


def _scale_wide(data: np.ndarray, mode: str, name: str) -> np.ndarray:
    """Scale one-channel 16/32-bit integer or float data to float32 [0, 1]. data: (H, W)."""
    if mode == "F":
        return _check_float(data.astype(np.float32), name)
    values = data.astype(np.float64)
    top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) <= 65535 else 2.0**32 - 1
    return np.clip(values / top, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------- arrays

_ARRAY_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _image_from_array(array: np.ndarray) -> Image:
    """Convert an in-memory array; see `load_image`."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in _ARRAY_MODES:
        raise ImageError(f"image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {array.shape}")
    _check_size((array.shape[1], array.shape[0]), "image array")
    mode, bits = _ARRAY_MODES[array.shape[2]], array.dtype.itemsize * 8
    values = _array_to_unit(array)
    color = values[..., :3] if values.shape[2] >= 3 else values[..., :1]
    if mode in ("LA", "RGBA"):
        pixels = _composite(_gray_to_rgb(color[..., 0]) if mode == "LA" else color, values[..., -1])
    else:
        pixels = _gray_to_rgb(color[..., 0]) if mode == "L" else color
    return _finish(pixels, None, 1, mode, 1 if array.dtype == bool else bits)


def _array_to_unit(array: np.ndarray) -> np.ndarray:
    """Scale an array by its dtype to float32 [0, 1]. array: (H, W, C) -> (H, W, C)."""
    if array.dtype == np.uint8:
        return _uint8_to_unit(array)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        return _check_float(array.astype(np.float32), "image array")
    raise ImageError(
        f"unsupported image array dtype {array.dtype}: use uint8 (0-255), uint16 (0-65535) or float in [0, 1]"
    )


# ---------------------------------------------------------------------------------------- shared


def _check_float(values: np.ndarray, name: str) -> np.ndarray:
    """Refuse NaN/inf or values outside [0, 1] (beyond `FLOAT_TOLERANCE`); clip the rest."""
    if not np.isfinite(values).all():
        raise ImageError(f"{name} contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < -FLOAT_TOLERANCE or high > 1.0 + FLOAT_TOLERANCE:
        hint = " (it looks like 0-255 data: divide by 255)" if 1.0 < high <= 255.0 and low >= 0 else ""
        raise ImageError(f"{name} has float values in [{low:g}, {high:g}]; expected [0, 1]{hint}")
    return np.clip(values, 0.0, 1.0)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3) by replicating the channel."""
    return np.repeat(gray[..., None], 3, axis=2)


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite straight-alpha colour over `ALPHA_BACKGROUND` grey. rgb: (H, W, 3), alpha: (H, W)."""
    a = alpha[..., None]
    return rgb * a + np.float32(ALPHA_BACKGROUND) * (1.0 - a)


def _uint8_to_unit(data: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], same shape, in one pass with a single full-size allocation."""
    return np.divide(data, np.float32(255.0), dtype=np.float32)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8, rounded and clipped."""
    return np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _finish(pixels: np.ndarray, path: str | None, orientation: int, mode: str, bits: int) -> Image:
    """Package (H, W, 3) pixels as a read-only, contiguous float32 `Image`."""
    out = np.ascontiguousarray(pixels, dtype=np.float32)
    out.setflags(write=False)
    return Image(pixels=out, path=path, orientation_applied=orientation, source_mode=mode, source_bits=bits)
