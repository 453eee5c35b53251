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

Large photos: `pixels` holds at most `WORKING_MAX_PIXELS` (4096 x 4096). A larger photo is decoded into a
downscaled working copy (area-averaged, aspect kept); `Image.original_size` is the photo's own size and
`Image.scale` the copy's pixels per photo pixel, so results can stay in the photo's coordinates. JPEGs are
decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (Pillow's `draft`), which costs almost nothing; other
formats are decoded at full size first, so they are refused above `MAX_DECODE_PIXELS`.
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
from PIL import ImageFile

from .._atomic import atomic_open
from ..errors import ImageError

logger = logging.getLogger(__name__)

MIN_SIDE = 32
"""Smallest accepted width or height in pixels."""
MAX_SIDE = 20_000
"""Largest accepted width or height in pixels."""
MAX_PIXELS = 400_000_000
"""Largest accepted width * height."""
WORKING_MAX_PIXELS = 4096 * 4096
"""Most pixels of `Image.pixels`; larger photos are downscaled to this many (see the module docstring).
Nothing after decoding gains from more: the detector searches at most 1024 px (4096 in its upsample
passes), landmarks are predicted on a crop where the face is 256 px wide, the UV texture is 768 px, the
occlusion z-buffer 512 px and the overlay 1024 px, so a face filling a fifth of the copy's width still
feeds the texture at full detail. The float32 copy takes 201 MB (a 20000 x 20000 photo would take 4.8 GB)."""
MAX_DECODE_PIXELS = 100_000_000
"""Largest width * height of a photo that cannot be decoded downscaled (every format but JPEG): it is
decoded at full size first (4 bytes a pixel, twice with transparency) before the working copy is made."""
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
    original_size: (width, height) of the upright photo (or array). `pixels` is a downscaled working copy
        of it when the photo has more than `WORKING_MAX_PIXELS`; None (the default) means the pixels' size.
    """

    pixels: np.ndarray
    path: str | None
    orientation_applied: int
    source_mode: str
    source_bits: int
    original_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.original_size is None:
            object.__setattr__(self, "original_size", (self.width, self.height))

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) pixels of `pixels` per pixel of the original photo: (1.0, 1.0) unless it was downscaled.
        A point (x, y) of the photo (pixel edges: the photo spans [0, W] x [0, H]) is at
        (x * scale[0], y * scale[1]) in `pixels`."""
        width, height = self.original_size
        return self.width / width, self.height / height

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
    A photo (or array) of more than `WORKING_MAX_PIXELS` pixels comes back downscaled to that many;
    `Image.original_size` and `Image.scale` say from what.
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
            mode, bits, stored = pil.mode, _pillow_bits(pil), pil.size
            target = working_size(stored)
            box = _draft(pil, target, path) if target is not None else None
            _decode_fully(pil, path)
            orientation = _exif_orientation(pil, path)
            if target is not None:
                pil = _downscale(pil, target, box)
                logger.info("%s: %dx%d px, working on a %dx%d copy (results stay in the photo's pixels)",
                            path, *stored, *target)
            pixels = _pillow_to_rgb(_transpose(pil, orientation), path)
    original = stored[::-1] if orientation in _SWAPS_SIDES else stored
    return _finish(pixels, str(path), orientation, mode, bits, original)


def working_size(size: tuple[int, int]) -> tuple[int, int] | None:
    """(width, height) of the working copy of an image of `size` = (width, height), or None when it has
    at most `WORKING_MAX_PIXELS` pixels and is used as it is."""
    width, height = size
    if width * height <= WORKING_MAX_PIXELS:
        return None
    factor = (WORKING_MAX_PIXELS / (width * height)) ** 0.5
    return max(1, int(width * factor)), max(1, int(height * factor))


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


def _draft(pil: PILImage.Image, target: tuple[int, int], path: Path) -> tuple[float, float, float, float] | None:
    """Ask the decoder for a reduced decode no smaller than `target` (JPEG: 1/2, 1/4 or 1/8 scale).
    Returns the box of the photo in the decoded image's pixels, or None when decoding at full size
    (refused above `MAX_DECODE_PIXELS`)."""
    drafted = pil.draft(pil.mode, target)  # a no-op returning None for formats without reduced decoding
    if drafted is not None:
        return drafted[1]
    width, height = pil.size
    if width * height > MAX_DECODE_PIXELS:
        kind = pil.format or "image"
        raise ImageError(
            f"{path} is too large to decode ({width}x{height}, {width * height / 1e6:.0f} megapixels): a {kind} "
            f"is decoded at full size and may have at most {MAX_DECODE_PIXELS // 1_000_000} megapixels "
            f"(JPEG up to {MAX_PIXELS // 1_000_000}): downscale it or save it as JPEG"
        )
    return None


def _decode_fully(pil: PILImage.Image, path: Path) -> None:
    """Force a full decode so truncated or corrupt data raises here instead of loading grey."""
    try:
        pil.load()
    except MemoryError as exc:
        raise ImageError(f"not enough memory to decode {path} ({pil.width}x{pil.height})") from exc
    except Exception as exc:  # decoders raise many types (OSError, SyntaxError, zlib.error, ...)
        raise ImageError(f"{path} is truncated or corrupt: {exc}") from exc


_ORIENTATIONS = {
    2: PILImage.Transpose.FLIP_LEFT_RIGHT, 3: PILImage.Transpose.ROTATE_180, 4: PILImage.Transpose.FLIP_TOP_BOTTOM,
    5: PILImage.Transpose.TRANSPOSE, 6: PILImage.Transpose.ROTATE_270, 7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_90,
}
"""EXIF orientation tag -> the transform that makes the stored pixels upright (as `ImageOps.exif_transpose`)."""
_SWAPS_SIDES = (5, 6, 7, 8)


def _exif_orientation(pil: PILImage.Image, path: Path) -> int:
    """The EXIF orientation tag (2-8), or 1 if there is none, it is invalid or the EXIF is unreadable."""
    try:
        tag = int(pil.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception as exc:  # malformed EXIF blocks should not make a good photo unreadable
        logger.warning("ignoring unreadable EXIF data in %s: %s", path, exc)
        return 1
    return tag if tag in _ORIENTATIONS else 1


def _transpose(pil: PILImage.Image, tag: int) -> PILImage.Image:
    """The image rotated/flipped upright for EXIF orientation `tag` (1: as it is)."""
    return pil if tag == 1 else pil.transpose(_ORIENTATIONS[tag])


def _downscale(pil: PILImage.Image, size: tuple[int, int], box: tuple[float, float, float, float] | None) -> PILImage.Image:
    """The decoded image area-averaged to `size` (width, height); `box`: the photo's extent in its pixels
    (None: all of it). Palette, bilevel, LAB and HSV images are converted to RGB(A) or L first (Pillow
    would resize the first two by nearest pixel, the last two channel by channel); Pillow averages RGBA
    and LA premultiplied, so the hidden colour of transparent pixels does not bleed."""
    if pil.mode in ("P", "PA") or "transparency" in pil.info:
        pil = pil.convert("RGBA" if pil.mode == "PA" or "transparency" in pil.info else "RGB")
    elif pil.mode == "1":
        pil = pil.convert("L")
    elif pil.mode in ("LAB", "HSV"):
        pil = pil.convert("RGB")
    try:
        return pil.resize(size, PILImage.Resampling.BOX, box=box)
    except MemoryError as exc:
        raise ImageError(f"not enough memory to downscale {pil.width}x{pil.height} px") from exc


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
    size = (array.shape[1], array.shape[0])
    _check_size(size, "image array")
    mode, bits = _ARRAY_MODES[array.shape[2]], array.dtype.itemsize * 8
    target = working_size(size)
    if target is None:
        pixels = _array_rgb(array, mode)
    else:
        pixels = _area_downscale(array, target, lambda rows: _array_rgb(rows, mode))
        logger.info("image array: %dx%d px, working on a %dx%d copy", *size, *target)
    return _finish(pixels, None, 1, mode, 1 if array.dtype == bool else bits, size)


def _array_rgb(array: np.ndarray, mode: str) -> np.ndarray:
    """(H, W, C) array of `mode` -> (H, W, 3) float32 RGB in [0, 1] (alpha composited)."""
    values = _array_to_unit(array)
    color = values[..., :3] if values.shape[2] >= 3 else values[..., :1]
    if mode in ("LA", "RGBA"):
        return _composite(_gray_to_rgb(color[..., 0]) if mode == "LA" else color, values[..., -1])
    return _gray_to_rgb(color[..., 0]) if mode == "L" else color


_STRIP_PIXELS = 4_000_000
"""Input pixels converted to float at a time by `_area_downscale` (48 MB of float32 RGB)."""


def _area_downscale(array: np.ndarray, size: tuple[int, int], convert) -> np.ndarray:
    """Area-average an (H, W, C) array to `size` = (w, h) as (h, w, 3) float32, converting it with
    `convert` ((rows, W, C) -> (rows, W, 3) float32) a strip of rows at a time, so no full-size float
    copy is made. Each output pixel is the mean of the input area it covers (pixel edges map exactly:
    x_out = x_in * w / W)."""
    height, width = array.shape[:2]
    (w, h), cols, rows = size, _area_weights(width, size[0]), _area_weights(height, size[1])
    out = np.zeros((h, w * 3), np.float32)
    step = max(1, _STRIP_PIXELS // width)
    for r0 in range(0, height, step):
        strip = convert(array[r0 : r0 + step])  # (s, W, 3)
        s = strip.shape[0]
        i0, i1 = max(0, int(r0 * h / height) - 1), min(h, int((r0 + s) * h / height) + 2)  # rows it reaches
        down = rows[i0:i1, r0 : r0 + s] @ strip.reshape(s, width * 3)  # (b, W * 3)
        b = i1 - i0
        across = cols @ down.reshape(b, width, 3).transpose(1, 0, 2).reshape(width, b * 3)  # (w, b * 3)
        out[i0:i1] += across.reshape(w, b, 3).transpose(1, 0, 2).reshape(b, w * 3)
    return np.clip(out.reshape(h, w, 3), 0.0, 1.0)


def _area_weights(n_in: int, n_out: int):
    """(n_out, n_in) scipy CSR matrix of area-averaging weights for n_out <= n_in: output pixel i covers
    input [i, i + 1) * n_in / n_out, so each input pixel overlaps at most two outputs (rows sum to 1)."""
    from scipy.sparse import csr_matrix

    ratio = n_in / n_out
    p = np.arange(n_in, dtype=np.float64)
    first = np.minimum((p / ratio).astype(np.int64), n_out - 1)  # the output holding the input's left edge
    split = np.minimum((first + 1) * ratio, p + 1.0)  # where the input leaves it
    weights = np.concatenate([split - p, p + 1.0 - split]) / ratio
    outputs = np.concatenate([first, np.minimum(first + 1, n_out - 1)])
    return csr_matrix((weights.astype(np.float32), (outputs, np.tile(np.arange(n_in), 2))), shape=(n_out, n_in))


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


def _finish(pixels: np.ndarray, path: str | None, orientation: int, mode: str, bits: int,
            original_size: tuple[int, int]) -> Image:
    """Package (H, W, 3) pixels as a read-only, contiguous float32 `Image` of a photo of `original_size`."""
    out = np.ascontiguousarray(pixels, dtype=np.float32)
    out.setflags(write=False)
    return Image(pixels=out, path=path, orientation_applied=orientation, source_mode=mode, source_bits=bits,
                 original_size=(int(original_size[0]), int(original_size[1])))
