"""Follow one face through a stream of video frames: 68 landmarks per frame, smoothed, with flags.

How a frame is processed (`FaceTracker.update`):
1. While a face is being followed, its box for the new frame is predicted from the last landmarks (the
   box of the last detection carried by the scale and shift of the rigid face points, plus the last
   frame's motion) and the landmark predictor runs from that box alone, without searching the frame
   (dlib's shape predictor takes any box: 3 ms against 18 ms for a search at 512 x 512). The result is
   kept ("tracked") if the face patch still looks like the one last detected (normalised correlation of a
   small grey patch) and its size did not jump.
2. The frame is searched for faces ("detect") on keyframes (every `keyframe_interval` frames), when the
   tracked result was rejected, and while no face is followed. The detector searches large frames on a
   downscaled copy and maps boxes and landmarks back (`DlibDetector(max_side=...)`). A detection
   continues the followed face when its box overlaps the predicted one (IoU >= `min_iou`); with several
   people the others are remembered, and a lost face is taken up again only by a detection nearer to where
   it was than to any of them. The first face is `select_face`'s choice (`face_index`, or the largest).
3. The landmarks are smoothed by a one-euro filter (Casiez, Roussel & Vogel, CHI 2012): a low-pass filter
   whose cut-off rises with speed, so still faces stop jittering and moving ones do not lag. The filter
   runs on the frame times, so variable frame rates are honoured, and restarts after a gap.
4. `track_frames` runs the whole stream and then fills the frames without a face: gaps of at most
   `max_gap` frames between two faces are linearly interpolated in time, those at the start or end are
   held at the nearest face; longer gaps stay empty (flag "none", landmarks NaN).

Detectors without a box-only landmark step (`FanDetector`) are searched on every frame; the matching,
smoothing and gap filling are the same.
"""
from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image as PILImage

from ..errors import ConfigError, NoFaceError
from .detect import NUM_LANDMARKS, Detection, FaceDetector, _as_uint8, make_detector, select_face

logger = logging.getLogger(__name__)

RIGID_POINTS = slice(17, 48)
"""iBUG-68 points that move with the head rather than with the expression (brows, nose, eyes): they carry
the last detection's box into a tracked frame."""
PATCH_SIZE = 24
"""Side (px) of the grey face patch compared between a tracked frame and the last detection."""


class FrameFlag(str, enum.Enum):
    """Where a frame's landmarks came from."""

    DETECTED = "detected"  # the detector found the face in this frame
    TRACKED = "tracked"  # predicted from the box carried over from the previous frame
    INTERPOLATED = "interpolated"  # no face here: linear in time between the faces before and after
    HELD = "held"  # no face here: the nearest face's landmarks (a gap at the start or end)
    NONE = "none"  # no face and nothing to fill from (landmarks NaN)

    @property
    def observed(self) -> bool:
        """The landmarks were measured in this frame (detected or tracked), not filled in."""
        return self in (FrameFlag.DETECTED, FrameFlag.TRACKED)


@dataclass(frozen=True)
class OneEuroConfig:
    """Settings of the one-euro filter (Casiez et al. 2012) as the tracker uses it.

    min_cutoff: cut-off frequency (Hz) of a still signal; lower removes more jitter, adds lag when moving.
    beta: how fast the cut-off rises with speed, per face width per second of landmark speed (the speed is
        divided by the face's width, so the setting does not depend on the resolution).
    d_cutoff: cut-off frequency (Hz) of the speed estimate.
    """

    min_cutoff: float = 1.0
    beta: float = 20.0
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.beta >= 0):
            raise ConfigError(f"one-euro filter needs min_cutoff > 0, d_cutoff > 0 and beta >= 0, got {self}")


class OneEuroFilter:
    """The one-euro filter (Casiez, Roussel & Vogel, "1€ Filter: A Simple Speed-based Low-pass Filter for
    Noisy Input in Interactive Systems", CHI 2012) on arrays of points.

    Each call takes a sample x of shape (..., D) (e.g. (68, 2) landmarks) at time t (seconds) and returns
    the filtered sample, same shape. Every point gets its own cut-off, from the length of its filtered
    velocity over the last axis (the paper's scalar filter, with the vector speed of each point):
        alpha(fc) = 1 / (1 + 1 / (2 pi fc dt)),   dx' = lowpass(alpha(d_cutoff), (x - x_prev) / dt)
        fc = min_cutoff + beta * |dx'| / scale,   x' = lowpass(alpha(fc), x)
    `scale` (per call) divides the speed, so beta can be given per face width. The first sample (and the
    first after `reset`) passes unchanged. A sample with dt <= 0 (a repeated time) returns the last output.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        OneEuroConfig(min_cutoff, beta, d_cutoff)  # validates
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next sample passes unchanged."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"sample shape {x.shape} differs from the filter's {self._x.shape}")
        dt = float(t) - self._t
        if dt <= 0:
            return self._x.copy()
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = a_d * (x - self._x) / dt + (1.0 - a_d) * self._dx
        speed = np.linalg.norm(self._dx, axis=-1, keepdims=True) if x.ndim else np.abs(self._dx)
        cutoff = self.min_cutoff + self.beta * speed / max(float(scale), 1e-12)
        a = self._alpha(cutoff, dt)
        self._x = a * x + (1.0 - a) * self._x
        self._t = float(t)
        return self._x.copy()


@dataclass(frozen=True)
class TrackerConfig:
    """How `FaceTracker` follows a face.

    keyframe_interval: search the frame for faces every this many frames (1: every frame, no tracking).
    face_index: which face to follow when several are found at the start: None the largest, i the i-th
        from the left (as `select_face`).
    min_iou: a detection continues the followed face when its box overlaps the predicted box by at least
        this intersection-over-union.
    min_similarity: a tracked frame is kept when its grey face patch correlates with the last detection's
        by at least this (normalised cross-correlation, -1..1); else the frame is searched.
    max_scale_change: a tracked frame is rejected when the face's size changed by more than this factor
        since the previous frame.
    smoothing: one-euro filter settings, or None for raw landmarks.
    max_gap: longest run of frames without a face that is filled (interpolated between faces, or held at
        the start/end); longer runs stay "none". 0 fills nothing.
    detect_max_side: frames with a longer side are searched on a copy downscaled to it (the default
        detector's `max_side`); landmarks are still predicted at full resolution.
    detect_upsample: the default detector's extra passes at twice the resolution when a search finds
        nothing (small faces); each costs about 4x a search, on every frame without a face.
    """

    keyframe_interval: int = 10
    face_index: int | None = None
    min_iou: float = 0.3
    min_similarity: float = 0.5
    max_scale_change: float = 1.3
    smoothing: OneEuroConfig | None = field(default_factory=OneEuroConfig)
    max_gap: int = 15
    detect_max_side: int = 1024
    detect_upsample: int = 0

    def __post_init__(self) -> None:
        if int(self.keyframe_interval) != self.keyframe_interval or self.keyframe_interval < 1:
            raise ConfigError(f"keyframe_interval must be a whole number >= 1, got {self.keyframe_interval}")
        if not 0.0 < self.min_iou <= 1.0:
            raise ConfigError(f"min_iou must be in (0, 1], got {self.min_iou}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ConfigError(f"min_similarity must be in [-1, 1], got {self.min_similarity}")
        if self.max_scale_change < 1.0:
            raise ConfigError(f"max_scale_change must be >= 1, got {self.max_scale_change}")
        if int(self.max_gap) != self.max_gap or self.max_gap < 0:
            raise ConfigError(f"max_gap must be a whole number >= 0, got {self.max_gap}")
        if self.face_index is not None and self.face_index < 0:
            raise ConfigError(f"face_index must be >= 0 or None, got {self.face_index}")


@dataclass(frozen=True)
class TrackedFrame:
    """One frame's result.

    index: the frame's index in the video (as given to the tracker).
    time_s: its time in seconds.
    flag: where the landmarks came from (`FrameFlag`).
    landmarks: (68, 2) float64 x, y in the frame's pixels (smoothed, or filled in); NaN when flag is NONE.
    raw_landmarks: (68, 2) the measured landmarks before smoothing; NaN unless the flag is DETECTED/TRACKED.
    box: (4,) x0, y0, x1, y1 of the face (pixel edges); NaN when flag is NONE.
    score: the detector's score on DETECTED frames, else NaN.
    """

    index: int
    time_s: float
    flag: FrameFlag
    landmarks: np.ndarray
    raw_landmarks: np.ndarray
    box: np.ndarray
    score: float = math.nan

    @property
    def has_face(self) -> bool:
        """Landmarks are available (measured or filled in)."""
        return self.flag is not FrameFlag.NONE


@dataclass(frozen=True)
class Track:
    """The result of `track_frames`: one face over N frames, as arrays.

    index: (N,) int64 frame indices; time_s: (N,) float64 seconds.
    flags: (N,) the `FrameFlag` of each frame.
    landmarks: (N, 68, 2) float64 smoothed and filled landmarks; NaN on frames flagged NONE.
    raw_landmarks: (N, 68, 2) measured landmarks before smoothing; NaN where not measured.
    boxes: (N, 4) float64 face boxes; NaN on frames flagged NONE.
    scores: (N,) detector scores on DETECTED frames, else NaN.
    """

    index: np.ndarray
    time_s: np.ndarray
    flags: tuple[FrameFlag, ...]
    landmarks: np.ndarray
    raw_landmarks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.flags)

    def __getitem__(self, i: int) -> TrackedFrame:
        return TrackedFrame(index=int(self.index[i]), time_s=float(self.time_s[i]), flag=self.flags[i],
                            landmarks=self.landmarks[i], raw_landmarks=self.raw_landmarks[i], box=self.boxes[i],
                            score=float(self.scores[i]))

    def __iter__(self) -> Iterator[TrackedFrame]:
        return (self[i] for i in range(len(self)))

    def counts(self) -> dict[str, int]:
        """How many frames carry each flag, e.g. {"detected": 3, "tracked": 25, ...} (every flag listed)."""
        return {flag.value: sum(f is flag for f in self.flags) for flag in FrameFlag}

    @property
    def has_face(self) -> np.ndarray:
        """(N,) bool: landmarks available (flag other than NONE)."""
        return np.array([f is not FrameFlag.NONE for f in self.flags], dtype=bool)

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The track as plain arrays (for `np.savez`): index, time_s, flags (N,) str, landmarks, raw_landmarks,
        boxes, scores; `from_arrays` reads them back."""
        return {"index": self.index, "time_s": self.time_s, "flags": np.array([f.value for f in self.flags], dtype=str),
                "landmarks": self.landmarks, "raw_landmarks": self.raw_landmarks, "boxes": self.boxes,
                "scores": self.scores}

    @classmethod
    def from_arrays(cls, arrays: Any) -> "Track":
        """A Track from `as_arrays`' mapping (or an opened .npz holding it)."""
        return cls(index=np.asarray(arrays["index"], np.int64), time_s=np.asarray(arrays["time_s"], np.float64),
                   flags=tuple(FrameFlag(str(v)) for v in arrays["flags"]),
                   landmarks=np.asarray(arrays["landmarks"], np.float64),
                   raw_landmarks=np.asarray(arrays["raw_landmarks"], np.float64),
                   boxes=np.asarray(arrays["boxes"], np.float64), scores=np.asarray(arrays["scores"], np.float64))

    @classmethod
    def from_frames(cls, frames: Sequence[TrackedFrame]) -> "Track":
        """Stack per-frame results into a Track."""
        n = len(frames)
        return cls(
            index=np.array([f.index for f in frames], dtype=np.int64),
            time_s=np.array([f.time_s for f in frames], dtype=np.float64),
            flags=tuple(f.flag for f in frames),
            landmarks=np.stack([f.landmarks for f in frames]) if n else np.zeros((0, NUM_LANDMARKS, 2)),
            raw_landmarks=np.stack([f.raw_landmarks for f in frames]) if n else np.zeros((0, NUM_LANDMARKS, 2)),
            boxes=np.stack([f.box for f in frames]) if n else np.zeros((0, 4)),
            scores=np.array([f.score for f in frames], dtype=np.float64),
        )


@runtime_checkable
class BoxLandmarker(Protocol):
    """A detector that can also predict landmarks from a given box without searching (`DlibDetector`)."""

    def find_boxes(self, pixels: np.ndarray) -> tuple[list[np.ndarray], list[float]]: ...

    def landmarks(self, pixels: np.ndarray, box: np.ndarray) -> np.ndarray: ...


# -------------------------------------------------------------------------------------- geometry


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of boxes a, b: (4,) x0, y0, x1, y1."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _width(box: np.ndarray) -> float:
    return float(box[2] - box[0])


def _carry_box(box: np.ndarray, ref_points: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, float]:
    """`box` (4,) of the face whose landmarks were `ref_points` (68, 2), moved to where `points` (68, 2) are:
    scale and shift of the rigid points (least squares, no rotation). Returns (box, scale)."""
    ref, cur = ref_points[RIGID_POINTS], points[RIGID_POINTS]
    ref_mean, cur_mean = ref.mean(axis=0), cur.mean(axis=0)
    spread = float(((ref - ref_mean) ** 2).sum())
    scale = math.sqrt(float(((cur - cur_mean) ** 2).sum()) / spread) if spread > 0 else 1.0
    corners = box.reshape(2, 2)
    return ((corners - ref_mean) * scale + cur_mean).reshape(4), scale


def _patch(pixels: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """(PATCH_SIZE**2,) zero-mean, unit-norm grey patch of `box` in `pixels` (H, W, 3), or None when the box
    lies outside the frame or the patch is flat."""
    height, width = pixels.shape[:2]
    x0, y0 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
    x1, y1 = min(width, int(math.ceil(box[2]))), min(height, int(math.ceil(box[3])))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    crop = pixels[y0:y1, x0:x1]
    step = max(1, min(x1 - x0, y1 - y0) // (4 * PATCH_SIZE))  # cheap pre-reduction of big faces
    crop = _as_uint8(crop[::step, ::step])
    grey = PILImage.fromarray(crop).convert("L").resize((PATCH_SIZE, PATCH_SIZE), PILImage.Resampling.BILINEAR)
    values = np.asarray(grey, dtype=np.float64).ravel()
    values -= values.mean()
    norm = float(np.linalg.norm(values))
    return values / norm if norm > 1e-6 * values.size else None


def _similarity(a: np.ndarray | None, b: np.ndarray | None) -> float:
    return float(a @ b) if a is not None and b is not None else 0.0


# --------------------------------------------------------------------------------------- tracker


@dataclass
class _Followed:
    """State of the face being followed."""

    box: np.ndarray  # (4,) box of the face in the last frame it was seen
    landmarks: np.ndarray  # (68, 2) raw landmarks there
    ref_box: np.ndarray  # (4,) box of the last detection
    ref_landmarks: np.ndarray  # (68, 2) its landmarks
    ref_patch: np.ndarray | None  # its grey patch
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (2,) box-centre motion per frame
    active: bool = True  # seen in the previous frame


class FaceTracker:
    """Follows one face frame by frame; see the module docstring for the method.

    detector: a `FaceDetector`; default the dlib detector with `config.detect_max_side` and
        `config.detect_upsample`. One with `find_boxes` and `landmarks(pixels, box)` (`BoxLandmarker`,
        as `DlibDetector`) is tracked between keyframes; any other is searched on every frame.
    config: `TrackerConfig`.

    `update` is causal (each result depends only on the frames so far): frames without a face come back
    flagged NONE; `track_frames` fills them afterwards.
    """

    def __init__(self, detector: FaceDetector | None = None, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        if detector is None:
            detector = make_detector("dlib", max_side=self.config.detect_max_side,
                                     upsample=self.config.detect_upsample)
        self.detector = detector
        self._box_landmarks = isinstance(detector, BoxLandmarker)
        smoothing = self.config.smoothing
        self._filter = OneEuroFilter(smoothing.min_cutoff, smoothing.beta, smoothing.d_cutoff) if smoothing else None
        self.reset()

    def reset(self) -> None:
        """Forget the followed face and the filter state (e.g. before another video)."""
        self._followed: _Followed | None = None
        self._others: list[np.ndarray] = []  # boxes of the other faces at the last search
        self._since_search = 0
        self._count = 0
        self.searches = 0  # frames on which the detector searched for faces
        if self._filter is not None:
            self._filter.reset()

    # ------------------------------------------------------------------------------ one frame

    def update(self, pixels: np.ndarray, time_s: float | None = None, index: int | None = None) -> TrackedFrame:
        """Process the next frame. pixels: (H, W, 3) uint8 (or float in [0, 1]) RGB.
        time_s: its time in seconds (default index / 25); index: its index (default: frames seen so far)."""
        if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"update() needs (H, W, 3) RGB pixels, got shape {getattr(pixels, 'shape', None)}")
        index = self._count if index is None else int(index)
        time_s = index / 25.0 if time_s is None else float(time_s)
        self._count += 1
        followed = self._followed
        tracked = self._track(pixels) if followed is not None and followed.active and self._box_landmarks else None
        search = tracked is None or self._since_search + 1 >= self.config.keyframe_interval
        flag, result, score = FrameFlag.TRACKED, tracked, math.nan
        if search:
            found = self._search(pixels)
            if found is not None:
                flag, result, score = FrameFlag.DETECTED, (found.box, found.landmarks), found.score
        self._since_search = 0 if search else self._since_search + 1
        if result is None:
            if self._followed is not None:
                self._followed.active = False
            if self._filter is not None:
                self._filter.reset()
            return TrackedFrame(index=index, time_s=time_s, flag=FrameFlag.NONE,
                                landmarks=np.full((NUM_LANDMARKS, 2), np.nan),
                                raw_landmarks=np.full((NUM_LANDMARKS, 2), np.nan), box=np.full(4, np.nan))
        box, raw = result
        self._remember(pixels, box, raw, detected=flag is FrameFlag.DETECTED)
        smoothed = self._filter(raw, time_s, scale=_width(box)) if self._filter is not None else raw.copy()
        return TrackedFrame(index=index, time_s=time_s, flag=flag, landmarks=smoothed, raw_landmarks=raw.copy(),
                            box=np.asarray(box, np.float64).copy(), score=score)

    def _predicted_box(self) -> np.ndarray:
        followed = self._followed
        assert followed is not None
        shift = followed.velocity if followed.active else np.zeros(2)
        return followed.box + np.tile(shift, 2)

    def _track(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Landmarks from the predicted box, or None when the result does not look like the face."""
        followed = self._followed
        assert followed is not None
        try:
            points = self.detector.landmarks(pixels, self._predicted_box())  # type: ignore[attr-defined]
        except ValueError:  # the box left the frame
            return None
        box, _ = _carry_box(followed.ref_box, followed.ref_landmarks, points)
        _, step = _carry_box(followed.ref_box, followed.landmarks, points)
        limit = self.config.max_scale_change
        if not (1.0 / limit <= step <= limit) or not np.isfinite(points).all():
            logger.debug("tracked face changed size by %.2f: searching", step)
            return None
        similarity = _similarity(_patch(pixels, box), followed.ref_patch)
        if similarity < self.config.min_similarity:
            logger.debug("tracked face patch correlates %.2f with the last detection: searching", similarity)
            return None
        return box, points

    def _search(self, pixels: np.ndarray) -> Detection | None:
        """Search the frame; return the detection of the followed face (or the face to start following)."""
        self.searches += 1
        if self._box_landmarks:
            boxes, scores = self.detector.find_boxes(pixels)  # type: ignore[attr-defined]
            candidates = [Detection(box=b, score=s, landmarks=np.empty((0, 2)), backend="boxes")
                          for b, s in zip(boxes, scores, strict=True)]
        else:
            candidates = list(self.detector.detect(pixels))
        chosen = self._choose(candidates)
        self._others = [d.box for d in candidates if d is not chosen]
        if chosen is None:
            return None
        if self._box_landmarks:
            backend = getattr(self.detector, "backend", "dlib")
            chosen = replace(chosen, landmarks=self.detector.landmarks(pixels, chosen.box),  # type: ignore[attr-defined]
                             backend=backend)
        return chosen

    def _choose(self, candidates: list[Detection]) -> Detection | None:
        """The candidate that is the followed face: overlapping its predicted box; after it was lost, the
        nearest to where it was unless another known face is nearer; at the start, `select_face`'s."""
        if not candidates:
            return None
        followed = self._followed
        if followed is None:
            index = self.config.face_index
            if index is not None and index >= len(candidates):
                return None  # not enough faces in this frame to pick face number `index`
            return select_face(candidates, index, source="the video frame")
        predicted = self._predicted_box()
        best = max(candidates, key=lambda d: box_iou(d.box, predicted))
        if box_iou(best.box, predicted) >= self.config.min_iou:
            return best
        if followed.active:
            return None  # the faces found are someone else, or the followed one moved too far
        last = _centre(followed.box)
        near = min(candidates, key=lambda d: float(np.linalg.norm(d.center - last)))
        ratio = near.width / max(_width(followed.box), 1e-6)
        distance = float(np.linalg.norm(near.center - last))
        if not 0.5 <= ratio <= 2.0:
            return None
        if any(float(np.linalg.norm(near.center - _centre(other))) < distance for other in self._others):
            return None
        return near

    def _remember(self, pixels: np.ndarray, box: np.ndarray, landmarks: np.ndarray, *, detected: bool) -> None:
        followed = self._followed
        if followed is not None and followed.active:
            velocity = _centre(box) - _centre(followed.box)
        else:
            velocity = np.zeros(2)
        if detected or followed is None:
            self._followed = _Followed(box=np.asarray(box, np.float64), landmarks=landmarks,
                                       ref_box=np.asarray(box, np.float64), ref_landmarks=landmarks,
                                       ref_patch=_patch(pixels, box), velocity=velocity)
        else:
            followed.box, followed.landmarks, followed.velocity, followed.active = box, landmarks, velocity, True


# ---------------------------------------------------------------------------------- whole stream


def fill_gaps(frames: Sequence[TrackedFrame], max_gap: int) -> list[TrackedFrame]:
    """Fill runs of frames flagged NONE of at most `max_gap` frames: between two faces linearly in time
    (INTERPOLATED, landmarks and box), at the start or end with the nearest face (HELD). Longer runs and
    videos without any face stay NONE. Returns a new list; the observed frames are unchanged."""
    out = list(frames)
    have = [i for i, f in enumerate(out) if f.flag is not FrameFlag.NONE]
    if not have or max_gap <= 0:
        return out
    runs: list[tuple[int, int]] = []  # [start, stop) of each run of NONE frames
    i = 0
    while i < len(out):
        if out[i].flag is FrameFlag.NONE:
            j = i
            while j < len(out) and out[j].flag is FrameFlag.NONE:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    for start, stop in runs:
        if stop - start > max_gap:
            continue
        before = out[start - 1] if start > 0 else None
        after = out[stop] if stop < len(out) else None
        for k in range(start, stop):
            frame = out[k]
            if before is not None and after is not None:
                span = after.time_s - before.time_s
                w = (frame.time_s - before.time_s) / span if span > 0 else (k - start + 1) / (stop - start + 1)
                landmarks = (1 - w) * before.landmarks + w * after.landmarks
                box = (1 - w) * before.box + w * after.box
                flag = FrameFlag.INTERPOLATED
            else:
                source = before if before is not None else after
                assert source is not None
                landmarks, box, flag = source.landmarks.copy(), source.box.copy(), FrameFlag.HELD
            out[k] = replace(frame, flag=flag, landmarks=landmarks, box=box)
    return out


def track_frames(frames: Iterable[Any], detector: FaceDetector | None = None, config: TrackerConfig | None = None,
                 fps: float = 25.0, tracker: FaceTracker | None = None) -> Track:
    """Track one face through `frames` and fill the gaps (`fill_gaps` with `config.max_gap`).

    frames: an iterable of `ganfit.io.video.VideoFrame` (index, time_s and pixels are used) or of (H, W, 3)
        arrays (index = position, time = index / fps); consumed one at a time, no frame is kept.
    detector, config: as `FaceTracker`; or pass a ready `tracker` (reset first).
    Raises NoFaceError when no frame has a face.
    """
    if tracker is None:
        tracker = FaceTracker(detector, config)
    else:
        tracker.reset()
    results: list[TrackedFrame] = []
    for position, frame in enumerate(frames):
        if isinstance(frame, np.ndarray):
            results.append(tracker.update(frame, time_s=position / fps, index=position))
        else:
            results.append(tracker.update(frame.pixels, time_s=frame.time_s, index=frame.index))
    if not any(r.flag is not FrameFlag.NONE for r in results):
        raise NoFaceError(
            f"no face found in any of the {len(results)} video frames: use a video where the face is visible, "
            "roughly frontal and at least about 80 px wide"
        )
    return Track.from_frames(fill_gaps(results, tracker.config.max_gap))


def landmark_jitter(landmarks: np.ndarray) -> float:
    """Mean frame-to-frame acceleration of landmarks, px: mean over frames and points of
    |x[t+1] - 2 x[t] + x[t-1]|. landmarks: (N, P, 2); runs containing NaN frames are skipped.
    Lower is smoother (a still face scores 0, steady motion too)."""
    points = np.asarray(landmarks, np.float64)
    if points.ndim != 3 or points.shape[0] < 3:
        return math.nan
    accel = points[2:] - 2 * points[1:-1] + points[:-2]  # (N-2, P, 2)
    norms = np.linalg.norm(accel, axis=-1)  # (N-2, P)
    valid = np.isfinite(norms).all(axis=1)
    return float(norms[valid].mean()) if valid.any() else math.nan


__all__ = [
    "BoxLandmarker",
    "FaceTracker",
    "FrameFlag",
    "OneEuroConfig",
    "OneEuroFilter",
    "Track",
    "TrackedFrame",
    "TrackerConfig",
    "box_iou",
    "fill_gaps",
    "landmark_jitter",
    "track_frames",
]
