"""ganfit.io.images: decoding, conversions, EXIF orientation, size limits and bad inputs."""
from __future__ import annotations

import dataclasses
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageFile

from ganfit.errors import GanfitError, ImageError
from ganfit.io.images import ALPHA_BACKGROUND, WORKING_MAX_PIXELS, Image, load_image, save_png

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def astronaut() -> PILImage.Image:
    with PILImage.open(ASTRONAUT) as im:
        return im.convert("RGB")


def _png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: list[bytes]) -> bytes:
    """A minimal PNG with the given header and unfiltered rows (used to fake huge headers)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------ good input


def test_loads_astronaut_png():
    image = load_image(ASTRONAUT)
    assert isinstance(image, Image)
    assert image.pixels.shape == (512, 512, 3) and image.pixels.dtype == np.float32
    assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0
    assert image.path == str(ASTRONAUT) and image.orientation_applied == 1
    assert image.source_mode == "RGB" and image.source_bits == 8
    assert (image.width, image.height) == (512, 512)


def test_image_is_frozen_and_read_only():
    image = load_image(ASTRONAUT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.path = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        image.pixels[0, 0, 0] = 1.0


def test_grayscale_becomes_rgb(tmp_path: Path):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (40, 1))  # (40, 64)
    PILImage.fromarray(gray).save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    assert image.source_mode == "L" and image.pixels.shape == (40, 64, 3)
    np.testing.assert_allclose(image.pixels[..., 1], gray / 255.0, atol=1e-6)
    assert np.array_equal(image.pixels[..., 0], image.pixels[..., 2])


def test_rgba_is_composited_on_mid_grey(tmp_path: Path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, :10, 3] = 0  # transparent
    rgba[:, 10:20, 3] = 255  # opaque
    rgba[:, 20:, 3] = 51  # 20 % opaque
    PILImage.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.source_mode == "RGBA"
    np.testing.assert_allclose(image.pixels[0, 0], [ALPHA_BACKGROUND] * 3, atol=1e-6)
    np.testing.assert_allclose(image.pixels[0, 15], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(image.pixels[0, 30], [0.2 + 0.8 * 0.5, 0.4, 0.4], atol=1e-6)


def test_16_bit_grayscale_png_scaled_by_65535(tmp_path: Path):
    values = np.array([0, 1, 257, 32768, 65534, 65535], np.uint16)
    data = np.resize(values, (48, 48)).astype(np.uint16)
    PILImage.fromarray(data).save(tmp_path / "g16.png")
    image = load_image(tmp_path / "g16.png")
    assert image.source_bits == 16 and image.source_mode.startswith("I")
    np.testing.assert_allclose(image.pixels[..., 0], data / 65535.0, rtol=0, atol=1e-7)
    assert image.pixels[0, 5, 0] == 1.0 and image.pixels[0, 0, 0] == 0.0
    # 32768 / 65535 is not 0.5 exactly: a /65536 or >>8 bug would show here
    assert abs(float(image.pixels[0, 3, 0]) - 32768 / 65535) < 1e-7


def test_16_bit_colour_png_reports_16_bits(tmp_path: Path):
    rows = [(np.array([[0x1234, 0xFFFF, 0x8000]] * 40, ">u2")).tobytes() for _ in range(40)]
    (tmp_path / "rgb16.png").write_bytes(_png_bytes(40, 40, 16, 2, rows))
    image = load_image(tmp_path / "rgb16.png")
    assert image.source_bits == 16 and image.pixels.shape == (40, 40, 3)
    np.testing.assert_allclose(image.pixels[0, 0], [0x1234 / 65535, 1.0, 0.5], atol=1 / 255)


def test_cmyk_jpeg_converted_to_rgb(tmp_path: Path, astronaut: PILImage.Image):
    astronaut.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    image = load_image(tmp_path / "cmyk.jpg")
    assert image.source_mode == "CMYK" and image.pixels.shape == (512, 512, 3)
    reference = np.asarray(astronaut, np.float32) / 255.0
    assert np.abs(image.pixels - reference).mean() < 0.03


def test_palette_png(tmp_path: Path, astronaut: PILImage.Image):
    palette_image = astronaut.quantize(colors=32)
    palette_image.save(tmp_path / "p.png")
    image = load_image(tmp_path / "p.png")
    assert image.source_mode == "P"
    expected = np.asarray(palette_image.convert("RGB"), np.float32) / 255.0
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)


def test_palette_png_with_transparency(tmp_path: Path):
    index = np.zeros((40, 40), np.uint8)
    index[:, 20:] = 1
    im = PILImage.fromarray(index, "P")
    im.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    im.save(tmp_path / "pt.png", transparency=0)
    image = load_image(tmp_path / "pt.png")
    np.testing.assert_allclose(image.pixels[0, 0], [ALPHA_BACKGROUND] * 3, atol=1e-6)
    np.testing.assert_allclose(image.pixels[0, 30], [0.0, 1.0, 0.0], atol=1e-6)


def test_float_tiff(tmp_path: Path):
    data = np.linspace(0.0, 1.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    PILImage.fromarray(data, "F").save(tmp_path / "f.tif")
    image = load_image(tmp_path / "f.tif")
    assert image.source_mode == "F" and image.source_bits == 32
    np.testing.assert_allclose(image.pixels[..., 2], data, atol=1e-7)


def test_float_tiff_out_of_range_is_refused(tmp_path: Path):
    PILImage.fromarray(np.full((40, 40), 200.0, np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match=r"expected \[0, 1\].*divide by 255"):
        load_image(tmp_path / "f.tif")


@pytest.mark.parametrize(("tag", "stored"), [(6, PILImage.Transpose.ROTATE_90), (8, PILImage.Transpose.ROTATE_270),
                                             (3, PILImage.Transpose.ROTATE_180)])
def test_exif_orientation_applied(tmp_path: Path, astronaut: PILImage.Image, tag: int, stored):
    exif = PILImage.Exif()
    exif[0x0112] = tag
    astronaut.transpose(stored).save(tmp_path / "r.jpg", quality=95, exif=exif)
    image = load_image(tmp_path / "r.jpg")
    assert image.orientation_applied == tag
    reference = np.asarray(astronaut, np.float32) / 255.0
    assert image.pixels.shape == reference.shape
    assert np.abs(image.pixels - reference).mean() < 0.02


def test_large_photo_loads_without_bomb_warning(tmp_path: Path):
    PILImage.new("RGB", (8000, 8000), (10, 200, 30)).save(tmp_path / "big.png", compress_level=1)
    before = PILImage.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(tmp_path / "big.png")
    assert image.pixels.shape == (4096, 4096, 3) and image.original_size == (8000, 8000)  # the working copy
    np.testing.assert_allclose(image.pixels[2048, 2048], [10 / 255, 200 / 255, 30 / 255], atol=1e-6)
    assert PILImage.MAX_IMAGE_PIXELS == before


# ------------------------------------------------------------------------- large photos: working copy

_PEAK_LOAD = """
import resource, sys, time
from ganfit.io.images import load_image
t = time.perf_counter()
image = load_image(sys.argv[1])
try:  # this process's own peak (ru_maxrss can carry the forking parent's over exec)
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(image.pixels.shape[1], image.pixels.shape[0], *image.original_size, *image.scale, peak // 1024,
      round(time.perf_counter() - t, 2))
"""


def test_20000px_jpeg_decodes_into_a_small_working_copy(tmp_path: Path):
    # a 400-megapixel JPEG (the largest accepted): decoded at 1/4 scale by libjpeg, then area-averaged
    # to 4096 x 4096; a full decode would take 1.6 GB in Pillow and 4.8 GB as float32
    import subprocess
    import sys

    path = tmp_path / "huge.jpg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
        canvas = PILImage.new("L", (20_000, 20_000), 90)  # 400 MB here, for a moment
        canvas.paste(200, (0, 0, 10_000, 20_000))  # left half bright
        canvas.save(path, quality=80)
        del canvas
    out = subprocess.run([sys.executable, "-c", _PEAK_LOAD, str(path)], capture_output=True, text=True, check=True)
    w, h, ow, oh, sx, sy, peak_mb, seconds = out.stdout.split()
    assert (int(w), int(h), int(ow), int(oh)) == (4096, 4096, 20_000, 20_000)
    assert float(sx) == float(sy) == 4096 / 20_000
    assert int(peak_mb) < 700, f"peak memory {peak_mb} MB"  # ~450 MB measured: the 1/4-scale decode + copies
    image = load_image(path)
    np.testing.assert_allclose(image.pixels[100, [100, 2047, 2048, 4000]].mean(1), [200 / 255, 200 / 255, 90 / 255, 90 / 255], atol=0.01)


@pytest.mark.parametrize(("tag", "stored"), [(6, PILImage.Transpose.ROTATE_90), (5, PILImage.Transpose.TRANSPOSE)])
def test_large_photo_orientation_and_original_size(tmp_path: Path, tag: int, stored):
    # upright 6000 x 3000 (more than WORKING_MAX_PIXELS), stored sideways with an EXIF orientation tag
    upright = np.zeros((3000, 6000), np.uint8)
    upright[:1000, :2000] = 255  # a bright block at the top left of the upright photo
    exif = PILImage.Exif()
    exif[0x0112] = tag
    PILImage.fromarray(upright).transpose(stored).save(tmp_path / "r.jpg", quality=95, exif=exif)
    image = load_image(tmp_path / "r.jpg")
    assert image.original_size == (6000, 3000) and image.orientation_applied == tag
    assert image.pixels.shape[0] * image.pixels.shape[1] <= WORKING_MAX_PIXELS
    sx, sy = image.scale
    assert abs(sx - sy) < 1e-3 and image.width == round(6000 * sx)
    # the block's corner maps by the scale: pixel edges x -> x * scale
    row, col = image.pixels[..., 0].mean(1), image.pixels[..., 0].mean(0)
    assert abs(int((row > 0.2).sum()) - 1000 * sy) <= 2 and abs(int((col > 0.1).sum()) - 2000 * sx) <= 2


@pytest.mark.parametrize("kind", ["rgba", "palette", "16bit"])
def test_large_png_working_copy_matches_the_photo_downscaled(tmp_path: Path, astronaut: PILImage.Image, kind: str):
    # 4400 x 4000 = 17.6 megapixels, just over WORKING_MAX_PIXELS; the same pixels as an array take the
    # exact area-averaging path: the file's copy (Pillow's BOX filter) must agree with it
    big = astronaut.resize((4400, 4000), PILImage.Resampling.NEAREST)
    array = np.asarray(big)
    if kind == "rgba":
        array = np.dstack([array, np.full((4000, 4400), 255, np.uint8)])
        array[:, :2201] = 0  # transparent, hidden colour black: it must not bleed into the visible half
        im = PILImage.fromarray(array, "RGBA")
    elif kind == "palette":
        im = big.convert("P", palette=PILImage.Palette.ADAPTIVE, colors=255)
        array = np.asarray(im.convert("RGB"))
    elif kind == "16bit":
        array = np.asarray(big.convert("L"), np.uint16) * 257
        im = PILImage.fromarray(array)
    else:
        im = big
    im.save(tmp_path / "big.png", compress_level=0)
    image, expected = load_image(tmp_path / "big.png"), load_image(array)
    assert image.pixels.shape == expected.pixels.shape == (3905, 4295, 3) and image.original_size == (4400, 4000)
    assert np.abs(image.pixels - expected.pixels).mean() < 0.003, kind


def test_large_array_is_area_averaged():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (8192, 8192), dtype=np.uint8)  # 2 x 2 blocks: exactly 4096 x 4096
    image = load_image(array)
    assert image.original_size == (8192, 8192) and image.scale == (0.5, 0.5)
    expected = array.reshape(4096, 2, 4096, 2).mean((1, 3)) / 255.0
    np.testing.assert_allclose(image.pixels[..., 1], expected, atol=1e-5)
    gray = load_image(np.full((4000, 4400), 40_000, np.uint16))  # not a whole ratio: 4295 x 3905
    assert gray.pixels.shape == (3905, 4295, 3) and np.allclose(gray.pixels, 40_000 / 65535, atol=1e-6)


def test_large_non_jpeg_refused_with_the_limit(tmp_path: Path):
    # 12000 x 9000 = 108 megapixels: fine as a JPEG, but a PNG is decoded at full size first
    (tmp_path / "big.png").write_bytes(_png_bytes(12_000, 9_000, 8, 2, [bytes(36_000)]))
    with pytest.raises(ImageError, match=r"too large to decode \(12000x9000, 108 megapixels\).*at most 100 megapixels.*JPEG") as info:
        load_image(tmp_path / "big.png")
    assert "\n" not in str(info.value)


def test_pillow_globals_are_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # a caller's own (smaller) pixel limit and truncated-file setting are overridden only inside
    # load_image and are back afterwards
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    PILImage.new("RGB", (64, 64)).save(tmp_path / "ok.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tmp_path / "ok.png").pixels.shape == (64, 64, 3)
    PILImage.effect_noise((64, 64), 40).convert("RGB").save(tmp_path / "n.jpg")
    (tmp_path / "t.jpg").write_bytes((tmp_path / "n.jpg").read_bytes()[:-300])
    with pytest.raises(ImageError, match="truncated"):
        load_image(tmp_path / "t.jpg")
    assert PILImage.MAX_IMAGE_PIXELS == 1000 and ImageFile.LOAD_TRUNCATED_IMAGES is True


# ------------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path: Path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")


def test_directory(tmp_path: Path):
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_empty_file(tmp_path: Path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")


def test_text_file_named_jpg(tmp_path: Path):
    (tmp_path / "notes.jpg").write_text("this is not a photo\n" * 20)
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "notes.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_file(tmp_path: Path, astronaut: PILImage.Image, fmt: str, keep: float):
    full = tmp_path / f"full.{fmt.lower()}"
    astronaut.save(full, fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(cut)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_corrupt_file(tmp_path: Path, astronaut: PILImage.Image, fmt: str):
    full = tmp_path / f"full.{fmt.lower()}"
    astronaut.save(full, fmt)
    data = bytearray(full.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff" * 64 if fmt == "JPEG" else bytes(64)
    full.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="corrupt"):
        load_image(full)


def test_too_small(tmp_path: Path):
    PILImage.new("RGB", (20, 100)).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match=r"too small \(20x100\).*32"):
        load_image(tmp_path / "small.png")


@pytest.mark.parametrize(("width", "height"), [(25_000, 40), (30_000, 30_000)])
def test_too_large_refused_before_decoding(tmp_path: Path, width: int, height: int):
    # header claims a huge image; only a tiny row of data follows (never decoded)
    (tmp_path / "huge.png").write_bytes(_png_bytes(width, height, 8, 0, [bytes(4)]))
    before = PILImage.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "huge.png")
    assert PILImage.MAX_IMAGE_PIXELS == before


def test_errors_are_ganfit_errors_with_one_line_messages(tmp_path: Path):
    with pytest.raises(GanfitError) as info:
        load_image(tmp_path / "missing.png")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------- arrays


@pytest.mark.parametrize(
    ("array", "expected", "mode", "bits"),
    [
        (np.full((40, 50), 51, np.uint8), 0.2, "L", 8),
        (np.full((40, 50, 1), 51, np.uint8), 0.2, "L", 8),
        (np.full((40, 50, 3), 65535, np.uint16), 1.0, "RGB", 16),
        (np.full((40, 50, 3), 0.25, np.float64), 0.25, "RGB", 64),
        (np.full((40, 50, 3), 0.75, np.float32), 0.75, "RGB", 32),
    ],
)
def test_arrays(array: np.ndarray, expected: float, mode: str, bits: int):
    image = load_image(array)
    assert image.pixels.shape == (40, 50, 3) and image.pixels.dtype == np.float32
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    assert (image.path, image.source_mode, image.source_bits, image.orientation_applied) == (None, mode, bits, 1)


def test_rgba_array_composited():
    array = np.zeros((40, 40, 4), np.uint8)
    array[..., 1] = 255
    array[:20, :, 3] = 255
    pixels = load_image(array).pixels
    np.testing.assert_allclose(pixels[0, 0], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(pixels[30, 0], [ALPHA_BACKGROUND] * 3, atol=1e-6)


def test_array_not_modified_and_not_aliased():
    array = np.full((40, 40, 3), 0.5, np.float32)
    image = load_image(array)
    array[:] = 0.0
    assert float(image.pixels.min()) == 0.5


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((40, 40, 2, 1), np.uint8), "shape"),
        (np.zeros((40, 40, 5), np.uint8), "shape"),
        (np.zeros((40, 40, 3), np.int64), "dtype int64"),
        (np.full((40, 40, 3), 255.0, np.float32), "divide by 255"),
        (np.full((40, 40, 3), np.nan, np.float32), "NaN"),
        (np.full((40, 40, 3), -0.5, np.float32), r"expected \[0, 1\]"),
        (np.zeros((10, 40, 3), np.uint8), "too small"),
        (np.zeros((0, 0, 3), np.uint8), "too small"),
    ],
)
def test_bad_arrays(array: np.ndarray, message: str):
    with pytest.raises(ImageError, match=message):
        load_image(array)


def test_wrong_source_type():
    with pytest.raises(TypeError):
        load_image([[0, 1], [2, 3]])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ save


def test_save_png_round_trip(tmp_path: Path):
    pixels = load_image(ASTRONAUT).pixels
    save_png(tmp_path / "out.png", pixels)
    again = load_image(tmp_path / "out.png").pixels
    assert np.abs(again - pixels).max() <= 0.5 / 255 + 1e-6
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_save_png_uint8_and_gray(tmp_path: Path):
    gray = np.tile(np.arange(64, dtype=np.uint8), (40, 1))
    save_png(tmp_path / "g.png", gray)
    with PILImage.open(tmp_path / "g.png") as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), gray)


def test_save_png_bad_shape_leaves_nothing(tmp_path: Path):
    with pytest.raises(ValueError):
        save_png(tmp_path / "bad.png", np.zeros((4, 4, 2)))
    assert list(tmp_path.iterdir()) == []
