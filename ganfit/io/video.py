"""Video files: streaming decode into upright RGB frames, probing, and H.264 encoding. Uses PyAV (FFmpeg).

Reading (`VideoReader`, `read_frames`) decodes one frame at a time; nothing holds more than the frame
being yielded, so a clip of any length runs in constant memory.

- Times: `VideoFrame.time_s` is the frame's presentation time stamp (pts * time base) in seconds from the
  start of the stream, so variable-frame-rate video (phones record it) keeps its real timing; a frame
  without a pts gets the previous time plus one nominal frame interval.
- Rotation: phones store portrait video as landscape pixels plus a display matrix (MP4/MOV `tkhd`) or,
  in older files and other containers, a `rotate` tag (clockwise degrees; Matroska keeps it as `ROTATE`).
  The pixels are turned upright here (quarter turns; a flip in the display matrix is not applied), so the
  frames, `VideoInfo.width`/`height` and every later stage see the picture as a player shows it.
  `VideoInfo.rotation` records the counter-clockwise quarter turn that was applied (0, 90, 180 or 270).
- Selection: `start`/`end` are seconds (half-open, [start, end)), `every` keeps every n-th frame of that
  range and `max_frames` stops after so many. `VideoFrame.index` always counts every decoded frame from the
  start of the stream (frames before `start` are decoded, not converted), so it is the same whatever the
  selection.
- Damage: a truncated or corrupt file yields every frame that decodes, then the reader sets
  `stopped_early` and `error` (where it stopped and why) and issues a `VideoTruncatedWarning`; a file that
  gives no frame at all raises `VideoError`. The stream's own frame count (or duration) is the
  reference, so a file cut between two packets is noticed too.
- Wrong input: a missing file, a file FFmpeg cannot read, a file without a video stream, or an image
  raise `VideoError` with a message saying what to do (an image: "use `ganfit fit`"). `is_video_path`
  lets the photo path say the opposite ("this is a video: use `ganfit fit-video`").

Writing (`write_video`) encodes H.264 (libx264; FFmpeg's own MPEG-4 part 2 encoder where libx264 is
missing) in MP4, MOV, MKV or AVI, atomically: a temporary file beside the target, renamed when complete.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_temporary
from ..errors import OutputError, VideoError
from .images import _float_to_uint8

logger = logging.getLogger(__name__)

AV_INSTALL_HINT = "pip install av"
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".asf", ".mpg", ".mpeg",
    ".m2v", ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".ogv", ".mxf", ".y4m",
})
"""File name endings taken as video when the content cannot be sniffed (e.g. the file does not exist yet)."""
_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis", b"jpx ", b"jp2 "})
"""ISO base-media `ftyp` major brands of still-image formats (HEIF/AVIF/JPEG 2000), which share MP4's box."""
_WRITE_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
"""Container written for each accepted output suffix."""
_IMAGE_CONTAINERS = ("image2", "_pipe")
"""FFmpeg demuxers of still images (`image2`, `png_pipe`, `jpeg_pipe`, ...)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as `probe` finds it.

    path: the file.
    frames: number of video frames the container declares, or None when it does not say (MKV, WebM, TS).
    fps: average frame rate (frames per second); for variable-frame-rate video only nominal.
    duration_s: length of the video stream in seconds (the container's, when the stream has none), or None.
    width, height: size of the upright frames in pixels (after `rotation`).
    codec: FFmpeg's decoder name ("h264", "hevc", "vp9", "mpeg4", ...).
    rotation: counter-clockwise quarter turn (0, 90, 180, 270) applied to the stored pixels to make them upright.
    has_audio: the file also holds an audio stream (ignored here).
    """

    path: str
    frames: int | None
    fps: float | None
    duration_s: float | None
    width: int
    height: int
    codec: str
    rotation: int
    has_audio: bool = False


@dataclass(frozen=True)
class VideoFrame:
    """One decoded, upright frame.

    index: position of the frame in the stream, counting every decoded frame from 0.
    time_s: presentation time in seconds from the start of the stream.
    pixels: (H, W, 3) uint8 RGB, upright, read-only (copy it to modify). `ganfit.io.images.load_image`
        turns it into the float `Image` the photo pipeline uses; the detector takes it as it is.
    """

    index: int
    time_s: float
    pixels: np.ndarray


class VideoTruncatedWarning(UserWarning):
    """A video stopped decoding before its end (truncated or corrupt); the frames before it were yielded."""


# ------------------------------------------------------------------------------------------ sniffing


def is_video_path(path: str | os.PathLike) -> bool:
    """True if `path` looks like a video file: by its first bytes when it exists (MP4/MOV, Matroska/WebM,
    AVI, FLV, MPEG-PS/TS, ASF/WMV, Ogg Theora by name), else by its name ending (`VIDEO_SUFFIXES`).

    Cheap (reads at most 400 bytes, no decoding); for telling a user who passed a video to the photo command
    which command to use. HEIF/AVIF photos (which share MP4's `ftyp` box) are not taken for video.
    """
    path = Path(path)
    suffix_says = path.suffix.lower() in VIDEO_SUFFIXES
    try:
        with open(path, "rb") as fh:
            head = fh.read(400)
    except OSError:
        return suffix_says
    sniffed = _sniff_video(head)
    if sniffed is None:
        return suffix_says and not head  # an empty file named like a video: still a (broken) video
    return sniffed or (suffix_says and head.startswith(b"OggS"))


def _sniff_video(head: bytes) -> bool | None:
    """True for the signature of a video container, False for a known non-video one, None when unknown."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return head[8:12] not in _IMAGE_BRANDS
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return True  # QuickTime without ftyp
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska, WebM
        return True
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"AVIX"):
        return True
    if head.startswith(b"RIFF"):
        return False  # WAV, WebP, ...
    if head.startswith(b"FLV\x01"):
        return True
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):  # MPEG program stream, MPEG video
        return True
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:  # MPEG transport stream
        return True
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):  # ASF / WMV
        return True
    if head.startswith(b"YUV4MPEG2"):
        return True
    return None


def _is_image_file(path: Path) -> bool:
    """True if Pillow recognises the file as an image (reads the header only)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path):
            return True
    except Exception:  # UnidentifiedImageError, truncated headers, decompression-bomb guards, ...
        return False


def _image_message(path: Path) -> str:
    return f"{path} is an image, not a video: use `ganfit fit` for photos"


# ------------------------------------------------------------------------------------------- opening


def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a declared dependency
        raise VideoError(f"reading and writing video needs PyAV ({exc}): `{AV_INSTALL_HINT}`") from exc
    return av


def _open(path: Path) -> tuple[Any, Any]:
    """Open `path` for decoding: (container, its first video stream). Raises VideoError for every input a
    user can get wrong (missing, empty, an image, not a video, no video stream)."""
    if not path.exists():
        raise VideoError(f"video file not found: {path}")
    if path.is_dir():
        raise VideoError(f"{path} is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path} is empty (0 bytes)")
    sniffed = _sniff_video(_head(path))
    if sniffed is not True and _is_image_file(path):
        raise VideoError(_image_message(path))
    av = _import_av()
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        hint = " (an MP4/MOV whose recording was interrupted has no index and cannot be read)" if sniffed else ""
        raise VideoError(f"{path} is not a video FFmpeg can read, or it is corrupt{hint}: {exc}") from exc
    try:
        if any(key in container.format.name for key in _IMAGE_CONTAINERS):
            raise VideoError(_image_message(path))
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
            raise VideoError(f"{path} has no video stream (it holds {kinds}): give a video file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
    except BaseException:
        container.close()
        raise
    return container, stream


def _head(path: Path, size: int = 400) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def _rotation(frame: Any, stream: Any) -> int:
    """Counter-clockwise quarter turn (0, 90, 180, 270) that makes `frame` upright: from its display matrix
    (PyAV's `VideoFrame.rotation`, counter-clockwise), else the stream's `rotate` tag (clockwise)."""
    angle = float(getattr(frame, "rotation", 0) or 0)
    if angle == 0:
        tag = next((value for key, value in stream.metadata.items() if key.lower() == "rotate"), None)
        with contextlib.suppress(TypeError, ValueError):
            angle = -float(tag) if tag is not None else 0.0
    turns = round(angle / 90.0)
    if not math.isclose(angle, 90.0 * turns, abs_tol=1.0):
        logger.warning("video rotation of %.1f degrees is not a quarter turn; using %d", angle, 90 * turns)
    return int(90 * turns) % 360


def _upright(array: np.ndarray, rotation: int) -> np.ndarray:
    """(H, W, 3) stored pixels turned `rotation` degrees counter-clockwise, contiguous."""
    return np.ascontiguousarray(np.rot90(array, k=rotation // 90)) if rotation else array


def _seconds(value: Any, time_base: Any) -> float | None:
    return float(value * time_base) if value is not None and time_base is not None else None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe the video at `path` (decodes its first frame, for the rotation and to check it decodes).

    Raises VideoError when the file is missing, not a video, an image, has no video stream or has no
    decodable frame.
    """
    path = Path(path)
    container, stream = _open(path)
    with contextlib.closing(container):
        first = _first_frame(container, stream, path)
        rotation = _rotation(first, stream)
        duration = _seconds(stream.duration, stream.time_base)
        if duration is None and container.duration is not None:
            duration = container.duration / 1_000_000
        rate = stream.average_rate or stream.guessed_rate
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        return VideoInfo(
            path=str(path), frames=int(stream.frames) or None, fps=float(rate) if rate else None,
            duration_s=duration, width=int(width), height=int(height), codec=stream.codec_context.name,
            rotation=rotation, has_audio=bool(container.streams.audio),
        )


def _first_frame(container: Any, stream: Any, path: Path) -> Any:
    av = _import_av()
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path} is corrupt: no frame could be decoded ({exc})") from exc
    raise VideoError(f"{path} has a video stream but no frame could be decoded (truncated or empty)")


# ------------------------------------------------------------------------------------------- reading


class VideoReader:
    """Frames of a video file, decoded one at a time (see the module docstring for times and rotation).

    path: the video file.
    every: keep every n-th frame of the selected range (1: all).
    start, end: keep frames with `start <= time_s < end` (seconds; None: from the beginning / to the end).
    max_frames: stop after yielding this many frames (None: no limit).

    The file is checked when the reader is made (`info` holds `probe`'s result; errors raise VideoError).
    Each iteration decodes the file afresh. After an iteration: `frames_decoded` counts decoded frames
    (yielded or not), `last_time_s` is the time of the last decoded frame, and `stopped_early` / `error` say
    whether and where decoding stopped before the stream's end (a `VideoTruncatedWarning` says it too).
    Use as a context manager or just iterate; the file is closed when an iteration ends or is abandoned.
    """

    def __init__(self, path: str | os.PathLike, every: int = 1, start: float | None = None,
                 end: float | None = None, max_frames: int | None = None) -> None:
        if int(every) != every or every < 1:
            raise ValueError(f"every must be a whole number >= 1, got {every}")
        if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
            raise ValueError(f"max_frames must be a whole number >= 1 or None, got {max_frames}")
        if start is not None and end is not None and end <= start:
            raise ValueError(f"end ({end} s) must come after start ({start} s)")
        self.path = Path(path)
        self.every, self.start, self.end = int(every), start, end
        self.max_frames = None if max_frames is None else int(max_frames)
        self.info = probe(self.path)
        self.stopped_early = False
        self.error: str | None = None
        self.frames_decoded = 0
        self.last_time_s: float | None = None
        self._container: Any = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file of an iteration in progress (the reader can be iterated again)."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def __iter__(self) -> Iterator[VideoFrame]:
        av = _import_av()
        self.close()
        self.stopped_early, self.error, self.frames_decoded, self.last_time_s = False, None, 0, None
        container, stream = _open(self.path)
        self._container = container
        rotation, step = self.info.rotation, 1.0 / self.info.fps if self.info.fps else 0.0
        origin = _seconds(stream.start_time, stream.time_base) or 0.0
        selected = yielded = 0
        finished = False  # the selection ended (end time or max_frames) before the stream did
        try:
            try:
                for frame in container.decode(stream):
                    time_s = frame.time - origin if frame.time is not None else (
                        self.last_time_s + step if self.last_time_s is not None else 0.0)
                    index = self.frames_decoded
                    self.frames_decoded += 1
                    self.last_time_s = time_s
                    if self.start is not None and time_s < self.start - 1e-9:
                        continue
                    if self.end is not None and time_s >= self.end - 1e-9:
                        finished = True
                        break
                    selected += 1
                    if (selected - 1) % self.every:
                        continue
                    pixels = _upright(frame.to_ndarray(format="rgb24"), rotation)
                    pixels.setflags(write=False)
                    yield VideoFrame(index=index, time_s=float(time_s), pixels=pixels)
                    yielded += 1
                    if self.max_frames is not None and yielded >= self.max_frames:
                        finished = True
                        break
            except av.error.FFmpegError as exc:
                self._stopped(f"decoding failed after frame {self.frames_decoded} "
                              f"({self._at()}): {exc}")
                return
            if not finished:
                self._check_complete()
        finally:
            self.close()

    def _at(self) -> str:
        return f"at {self.last_time_s:.3f} s" if self.last_time_s is not None else "at the start"

    def _check_complete(self) -> None:
        """Mark the read as stopped early when the stream declares more frames than were decoded and the
        last frame is short of the stream's duration (an edit list can hide declared frames: the duration
        decides), or, without a frame count, when the last frame is short of the duration."""
        info, last = self.info, self.last_time_s
        interval = 1.0 / info.fps if info.fps else 0.0
        short_in_time = (info.duration_s is not None and last is not None
                         and last + 2.5 * interval < info.duration_s)
        if info.frames is not None and self.frames_decoded < info.frames and (short_in_time or info.duration_s is None):
            self._stopped(f"only {self.frames_decoded} of the {info.frames} frames the file declares "
                          f"could be decoded (stopped {self._at()})", stacklevel=4)
        elif info.frames is None and short_in_time:
            self._stopped(f"decoding stopped {self._at()} of the {info.duration_s:.3f} s the file declares",
                          stacklevel=4)

    def _stopped(self, reason: str, stacklevel: int = 3) -> None:
        """Record and warn; `stacklevel` makes the warning point at the code iterating the reader."""
        self.stopped_early, self.error = True, reason
        warnings.warn(f"{self.path} is truncated or corrupt: {reason}; the frames before were read",
                      VideoTruncatedWarning, stacklevel=stacklevel)


def read_frames(path: str | os.PathLike, every: int = 1, start: float | None = None, end: float | None = None,
                max_frames: int | None = None) -> Iterator[VideoFrame]:
    """An iterator over the frames of the video at `path`, decoded one at a time; see `VideoReader` for
    the arguments.

    A damaged file yields what decodes, then issues a `VideoTruncatedWarning` (use `VideoReader` to read
    `stopped_early` / `error` as attributes). Raises VideoError at once (not at the first frame) for files
    that are not usable videos.
    """
    return iter(VideoReader(path, every=every, start=start, end=end, max_frames=max_frames))


# ------------------------------------------------------------------------------------------- writing


def video_encoder() -> str:
    """The H.264 encoder this PyAV build has ("libx264"), else FFmpeg's built-in "mpeg4"."""
    av = _import_av()
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, *,
                times: Sequence[float] | None = None, codec: str | None = None, quality: int = 20,
                rotation: int = 0) -> int:
    """Encode `frames` into a video file at `path`, atomically (temp file beside it, renamed at the end).

    frames: an iterable of (H, W, 3) RGB arrays, uint8 or float in [0, 1], all the same size; consumed one
        at a time (pass a generator to keep memory flat). Odd sizes are padded by one edge row/column
        (4:2:0 chroma needs even sides).
    fps: nominal frame rate; the frame times are i / fps unless `times` is given.
    times: (N,) presentation time of each frame in seconds (increasing), for variable-frame-rate output.
    codec: FFmpeg encoder name; default `video_encoder()` (libx264 at constant quality `quality`, CRF).
    quality: libx264 CRF (0 lossless .. 51; 18-23 look transparent) or mpeg4 qscale (2 best .. 31).
    rotation: counter-clockwise quarter turn a player should apply (stored as the display matrix); 0 for
        frames that are already upright. Needs PyAV >= 18 when non-zero.
    The container follows the suffix: .mp4/.m4v (with the index at the front, for streaming), .mov, .mkv,
    .avi. Returns the number of frames written. Raises ValueError for bad frames or options, OutputError
    when the file cannot be written; on any failure the target is left as it was.
    """
    av = _import_av()
    target = Path(path)
    container_format = _WRITE_FORMATS.get(target.suffix.lower())
    if container_format is None:
        raise ValueError(f"cannot write video as {target.suffix or 'a file without suffix'}: use "
                         f"{', '.join(sorted(_WRITE_FORMATS))}")
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    codec = codec or video_encoder()
    tmp = write_temporary(target, b"")
    try:
        options = {"movflags": "+faststart"} if container_format in ("mp4", "mov") else {}
        with av.open(str(tmp), mode="w", format=container_format, options=options) as container:
            count = _encode(av, container, iter(frames), fps, times, codec, quality, rotation)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, av.error.FFmpegError):
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
        if isinstance(exc, av.error.FFmpegError):
            raise OutputError(f"cannot encode {target} with {codec}: {exc}") from exc
        raise
    return count


_TIME_BASE = Fraction(1, 90_000)
"""Time base of variable-frame-rate output (MPEG's 90 kHz clock)."""


def _encode(av: Any, container: Any, frames: Iterator[np.ndarray], fps: float, times: Sequence[float] | None,
            codec: str, quality: int, rotation: int) -> int:
    """Add a stream to `container`, encode every frame and flush; returns the frame count."""
    first = next(frames, None)
    if first is None:
        raise ValueError("write_video got no frames")
    first = _as_rgb8(first, 0)
    height, width = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    if codec == "libx264":
        stream = container.add_stream(codec, rate=rate, options={"crf": str(quality), "preset": "veryfast"})
    else:
        qscale = int(np.clip(quality, 2, 31))  # FFmpeg's -q:v: fixed quantiser, in lambda units (x 118)
        options = {"flags": "+qscale", "global_quality": str(qscale * 118)} if codec == "mpeg4" else {}
        stream = container.add_stream(codec, rate=rate, options=options)
    stream.width, stream.height = width + width % 2, height + height % 2
    stream.pix_fmt = "yuv420p"
    if times is not None:
        stream.codec_context.time_base = _TIME_BASE
        stream.time_base = _TIME_BASE
    if rotation % 360:
        if not hasattr(stream, "set_display_rotation"):
            raise ValueError("writing rotation metadata needs PyAV >= 18: `pip install -U av`")
        stream.set_display_rotation(rotation % 360)
    count, previous_pts = 0, -1
    for i, array in enumerate(_chain(first, frames)):
        pixels = _as_rgb8(array, i) if i else array
        if pixels.shape[:2] != (height, width):
            raise ValueError(f"frame {i} is {pixels.shape[1]}x{pixels.shape[0]}, the first was {width}x{height}")
        if width % 2 or height % 2:
            pixels = np.pad(pixels, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        if times is not None:
            if i >= len(times):
                raise ValueError(f"times has {len(times)} entries but there are more frames")
            pts = round(float(times[i]) / _TIME_BASE)
            if pts <= previous_pts:
                raise ValueError(f"times must increase: frame {i} at {times[i]} s")
            frame.pts, frame.time_base, previous_pts = pts, _TIME_BASE, pts
        for packet in stream.encode(frame):
            container.mux(packet)
        count += 1
    for packet in stream.encode():
        container.mux(packet)
    if times is not None and count != len(times):
        raise ValueError(f"times has {len(times)} entries for {count} frames")
    return count


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _as_rgb8(array: np.ndarray, i: int) -> np.ndarray:
    """Frame `i` as (H, W, 3) uint8: uint8 as it is, float in [0, 1] rounded."""
    data = np.asarray(array)
    if data.ndim != 3 or data.shape[2] != 3:
        raise ValueError(f"frame {i} must be (H, W, 3) RGB, got shape {data.shape}")
    if data.dtype == np.uint8:
        return data
    if np.issubdtype(data.dtype, np.floating):
        return _float_to_uint8(data)
    raise ValueError(f"frame {i} must be uint8 or float in [0, 1], got {data.dtype}")


__all__ = [
    "VIDEO_SUFFIXES",
    "VideoFrame",
    "VideoInfo",
    "VideoReader",
    "VideoTruncatedWarning",
    "is_video_path",
    "probe",
    "read_frames",
    "video_encoder",
    "write_video",
]
