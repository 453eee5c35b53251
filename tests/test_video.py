"""ganfit.io.video: streaming decode (times, VFR, rotation, selection), damaged and wrong inputs, writing.

Every video here is written by the tests (with `write_video`, or PyAV directly where the writer has no
option for it) in tmp_path; nothing is read from ../shared.
"""
from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from ganfit.errors import GanfitError, OutputError, VideoError
from ganfit.io.video import (
    VideoFrame,
    VideoInfo,
    VideoReader,
    VideoTruncatedWarning,
    is_video_path,
    probe,
    read_frames,
    write_video,
)

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
WIDTH, HEIGHT, SQUARE = 96, 64, 12


def _position(i: int) -> tuple[int, int]:
    """Top-left corner (x, y) of the white square in frame i."""
    return 4 + 5 * i % (WIDTH - SQUARE - 8), 6 + 2 * i % (HEIGHT - SQUARE - 8)


def _frame(i: int) -> np.ndarray:
    """(HEIGHT, WIDTH, 3) uint8: a dim gradient with a white square at `_position(i)`."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([40 + x // 3, 40 + y // 2, np.full_like(x, 60)], -1).astype(np.uint8)
    x0, y0 = _position(i)
    image[y0:y0 + SQUARE, x0:x0 + SQUARE] = 255
    return image


def _square_centre(pixels: np.ndarray) -> np.ndarray:
    """(x, y) centroid of the bright pixels."""
    ys, xs = np.nonzero(pixels.min(axis=2) > 200)
    return np.array([xs.mean(), ys.mean()])


def _clip(tmp_path: Path, name: str = "clip.mp4", n: int = 12, **kwargs) -> Path:
    path = tmp_path / name
    assert write_video(path, (_frame(i) for i in range(n)), 25.0, **kwargs) == n
    return path


# -------------------------------------------------------------------------------------- round trip


def test_round_trip_frames_times_and_pixels(tmp_path: Path):
    path = _clip(tmp_path, n=12)
    info = probe(path)
    assert isinstance(info, VideoInfo)
    assert (info.frames, info.fps, info.width, info.height, info.rotation) == (12, 25.0, WIDTH, HEIGHT, 0)
    assert info.codec in ("h264", "mpeg4") and not info.has_audio
    assert info.duration_s == pytest.approx(12 / 25, abs=0.041)
    frames = list(read_frames(path))
    assert [f.index for f in frames] == list(range(12))
    assert [f.time_s for f in frames] == pytest.approx([i / 25 for i in range(12)], abs=1e-6)
    for i, frame in enumerate(frames):
        assert isinstance(frame, VideoFrame)
        assert frame.pixels.shape == (HEIGHT, WIDTH, 3) and frame.pixels.dtype == np.uint8
        expected = np.array(_position(i)) + (SQUARE - 1) / 2
        assert np.abs(_square_centre(frame.pixels) - expected).max() < 0.6
    with pytest.raises(ValueError):
        frames[0].pixels[0, 0, 0] = 1


def test_mpeg4_encoder_and_other_containers(tmp_path: Path):
    for name, codec in (("a.mp4", "mpeg4"), ("b.mkv", None), ("c.mov", None), ("d.avi", "mpeg4")):
        path = _clip(tmp_path, name, n=5, codec=codec)
        frames = list(read_frames(path))
        assert len(frames) == 5, name
        assert np.abs(_square_centre(frames[3].pixels) - (np.array(_position(3)) + 5.5)).max() < 1.0, name
    assert probe(tmp_path / "a.mp4").codec == "mpeg4"


def test_variable_frame_rate_times_are_kept(tmp_path: Path):
    times = [0.0, 0.04, 0.08, 0.2, 0.25, 0.5, 0.51, 0.52, 0.9, 1.0]
    path = _clip(tmp_path, n=len(times), times=times)
    frames = list(read_frames(path))
    assert [f.time_s for f in frames] == pytest.approx(times, abs=1e-3)
    assert [f.index for f in frames] == list(range(len(times)))
    assert list(read_frames(path, start=0.3, end=0.9)) and \
        [f.index for f in read_frames(path, start=0.3, end=0.9)] == [5, 6, 7]


def test_selection_every_start_end_max_frames(tmp_path: Path):
    path = _clip(tmp_path, n=20)
    assert [f.index for f in read_frames(path, every=3)] == [0, 3, 6, 9, 12, 15, 18]
    picked = list(read_frames(path, every=2, start=0.2, end=0.6))  # frames 5..14
    assert [f.index for f in picked] == [5, 7, 9, 11, 13]
    assert [f.index for f in read_frames(path, max_frames=4, start=0.4)] == [10, 11, 12, 13]
    # the same frame comes back whatever the selection
    full = {f.index: f.pixels for f in read_frames(path)}
    assert np.array_equal(picked[2].pixels, full[9])
    reader = VideoReader(path, max_frames=3)
    assert len(list(reader)) == 3 and not reader.stopped_early  # a selection that ends early is no damage
    for bad in (dict(every=0), dict(max_frames=0), dict(start=1.0, end=0.5)):
        with pytest.raises(ValueError):
            VideoReader(path, **bad)


def test_reader_streams_and_reiterates(tmp_path: Path):
    path = _clip(tmp_path, n=8)
    reader = VideoReader(path)
    stream = iter(reader)
    first = next(stream)
    assert first.index == 0 and reader.frames_decoded == 1  # decoded on demand, not all up front
    stream.close()
    assert [f.index for f in reader] == list(range(8)) and reader.frames_decoded == 8


# ----------------------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_display_matrix_rotation_is_applied(tmp_path: Path, rotation: int):
    path = _clip(tmp_path, n=3, rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation
    frame = next(read_frames(path))
    upright = np.rot90(_frame(0), k=rotation // 90)  # what a player shows (counter-clockwise turn)
    assert (info.height, info.width) == frame.pixels.shape[:2] == upright.shape[:2]
    assert np.abs(_square_centre(frame.pixels) - _square_centre(upright)).max() < 0.6


def test_portrait_phone_video_comes_out_upright(tmp_path: Path):
    """A phone's portrait clip: landscape pixels, display matrix of -90 degrees (a clockwise quarter turn)."""
    path = _clip(tmp_path, n=2, rotation=-90)
    frame = next(read_frames(path))
    assert frame.pixels.shape[:2] == (WIDTH, HEIGHT)  # portrait
    assert probe(path).rotation == 270
    assert np.abs(_square_centre(frame.pixels) - _square_centre(np.rot90(_frame(0), k=-1))).max() < 0.6


def test_rotate_tag_is_applied(tmp_path: Path):
    """Matroska keeps an old-style `rotate` tag (clockwise degrees) as stream metadata."""
    path = tmp_path / "tagged.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.metadata["rotate"] = "90"
        for i in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert probe(path).rotation == 270  # 90 clockwise = 270 counter-clockwise
    frame = next(read_frames(path))
    assert np.abs(_square_centre(frame.pixels) - _square_centre(np.rot90(_frame(0), k=-1))).max() < 0.6


# -------------------------------------------------------------------------------------- damaged input


def _textured(i: int) -> np.ndarray:
    """A frame with detail, so each frame takes a sizeable share of the file."""
    rng = np.random.default_rng(i)
    return np.repeat(np.repeat(rng.integers(0, 255, (HEIGHT // 4, WIDTH // 4, 3), dtype=np.uint8), 4, 0), 4, 1)


@pytest.mark.parametrize("name", ["cut.mp4", "cut.mkv"])
def test_truncated_file_decodes_a_prefix_and_says_where_it_stopped(tmp_path: Path, name: str):
    whole = tmp_path / ("whole" + Path(name).suffix)
    write_video(whole, (_textured(i) for i in range(30)), 25.0)
    data = whole.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: int(len(data) * 0.6)])
    reader = VideoReader(cut)
    with pytest.warns(VideoTruncatedWarning, match="truncated or corrupt"):
        frames = list(reader)
    assert 3 <= len(frames) < 30
    assert [f.index for f in frames] == list(range(len(frames)))
    assert reader.stopped_early and reader.error and "stopped at" in reader.error
    complete = VideoReader(whole)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(complete)) == 30 and not complete.stopped_early and complete.error is None


def test_file_cut_before_any_frame_is_an_error(tmp_path: Path):
    whole = _clip(tmp_path, n=5)
    cut = tmp_path / "head.mp4"
    cut.write_bytes(whole.read_bytes()[:300])
    with pytest.raises(VideoError, match="head.mp4"):
        VideoReader(cut)


def test_no_video_stream(tmp_path: Path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        samples = (np.sin(np.arange(8000) / 5) * 3000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 8000, 0, Fraction(1, 8000)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(VideoError, match="no video stream .*audio"):
        probe(path)


def test_not_a_video_image_missing_empty(tmp_path: Path):
    text = tmp_path / "notes.mp4"
    text.write_text("these are not the frames you are looking for\n" * 20)
    with pytest.raises(VideoError, match="not a video"):
        read_frames(text)  # at once, before the first frame is asked for
    with pytest.raises(VideoError, match="is an image.*ganfit fit"):
        probe(ASTRONAUT)
    with pytest.raises(VideoError, match="not found"):
        VideoReader(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe(tmp_path / "empty.mp4")
    with pytest.raises(VideoError, match="directory"):
        probe(tmp_path)
    assert issubclass(VideoError, GanfitError)


def test_is_video_path_sniffs_content(tmp_path: Path):
    mp4, mkv = _clip(tmp_path, "a.mp4", n=2), _clip(tmp_path, "b.mkv", n=2)
    renamed = tmp_path / "clip.jpg"
    renamed.write_bytes(mp4.read_bytes())
    assert is_video_path(mp4) and is_video_path(mkv) and is_video_path(renamed)
    assert not is_video_path(ASTRONAUT)
    heic = tmp_path / "photo.mp4"  # HEIF photos share MP4's ftyp box; the brand tells them apart
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    assert not is_video_path(heic)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert not is_video_path(text)
    assert is_video_path(tmp_path / "not-yet.MOV") and not is_video_path(tmp_path / "not-yet.png")


# ------------------------------------------------------------------------------------------ writing


def test_write_is_atomic(tmp_path: Path):
    target = _clip(tmp_path, "out.mp4", n=4)
    before = target.read_bytes()

    def failing():
        yield _frame(0)
        yield _frame(1)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_video(target, failing(), 25.0)
    with pytest.raises(ValueError, match="frame 1"):
        write_video(target, [_frame(0), np.zeros((10, 10, 3), np.uint8)], 25.0)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary left behind
    with pytest.raises(OutputError):
        write_video(tmp_path / "missing-folder" / "x.mp4", [_frame(0)], 25.0)


def test_write_checks_its_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="cannot write video as .gif"):
        write_video(tmp_path / "x.gif", [_frame(0)], 25.0)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "x.mp4", [], 25.0)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "x.mp4", [_frame(0)], 0)
    with pytest.raises(ValueError, match="increase"):
        write_video(tmp_path / "x.mp4", [_frame(0), _frame(1)], 25.0, times=[0.0, 0.0])
    assert not (tmp_path / "x.mp4").exists()


def test_write_float_frames_and_odd_sizes(tmp_path: Path):
    odd = _frame(0)[:63, :95].astype(np.float32) / 255.0
    path = tmp_path / "odd.mp4"
    write_video(path, [odd, odd], 10.0)
    frame = next(read_frames(path))
    assert frame.pixels.shape == (64, 96, 3)  # padded by one edge row and column
    assert np.abs(_square_centre(frame.pixels) - (np.array(_position(0)) + 5.5)).max() < 0.6
