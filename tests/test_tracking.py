"""ganfit.perception.tracking: following the astronaut through synthetic sequences, gaps, two faces,
large frames, the one-euro filter; and the tracker fed by a video written and decoded by ganfit.io.video."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from ganfit.errors import ConfigError, NoFaceError
from ganfit.io.video import read_frames, write_video
from ganfit.perception.detect import Detection, DlibDetector
from ganfit.perception.tracking import (
    FaceTracker,
    FrameFlag,
    OneEuroConfig,
    OneEuroFilter,
    Track,
    TrackerConfig,
    box_iou,
    fill_gaps,
    landmark_jitter,
    track_frames,
)

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
GREY = 128


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> DlibDetector:
    with pytest.MonkeyPatch.context() as patch:  # keep ganfit.assets' stamps out of the user's cache
        patch.setenv("GANFIT_HOME", str(tmp_path_factory.mktemp("ganfit-home")))
        return DlibDetector(upsample=0)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    with PILImage.open(ASTRONAUT) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def reference(detector: DlibDetector, astronaut: np.ndarray) -> Detection:
    (found,) = detector.detect(astronaut)
    return found


def _shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`image` moved by (dx, dy) px on a grey canvas of the same size."""
    out = np.full_like(image, GREY)
    h, w = image.shape[:2]
    src = image[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


SHIFTS = [(3 * i - 30, i - 10) for i in range(20)]  # 3.2 px a frame, 80 px/s at 25 fps


def _error(track: Track, reference: Detection, frames: range | list[int] | None = None) -> np.ndarray:
    """(N,) mean landmark distance (px) of each frame to the reference detection moved by SHIFTS."""
    truth = np.stack([reference.landmarks + np.array(s, float) for s in SHIFTS])
    errors = np.linalg.norm(track.landmarks - truth, axis=-1).mean(axis=1)
    return errors if frames is None else errors[list(frames)]


# ------------------------------------------------------------------------------------ one face


def test_translated_astronaut_is_tracked(detector, astronaut, reference):
    frames = [_shifted(astronaut, dx, dy) for dx, dy in SHIFTS]
    tracker = FaceTracker(detector, TrackerConfig(keyframe_interval=10))
    track = track_frames(frames, tracker=tracker)
    assert len(track) == 20 and track.landmarks.shape == (20, 68, 2) and track.boxes.shape == (20, 4)
    assert track.flags[0] is FrameFlag.DETECTED and track.flags[10] is FrameFlag.DETECTED
    assert track.counts()["tracked"] == 18 and tracker.searches == 2  # the predictor ran from the box alone
    raw = np.linalg.norm(track.raw_landmarks - (np.stack([reference.landmarks + s for s in SHIFTS])), axis=-1)
    assert raw.mean() < 1.0
    assert _error(track, reference).max() < 2.0  # smoothed: the one-euro filter barely lags the motion
    assert np.allclose(track.time_s, np.arange(20) / 25.0) and list(track.index) == list(range(20))
    assert track[5].flag is FrameFlag.TRACKED and track[5].has_face and math.isnan(track[5].score)


def test_fast_motion_is_followed_without_searching(detector, astronaut, reference):
    """20 px a frame (a quarter of the face's width): the box is carried forward with the last motion."""
    shifts = [(20 * i - 200, 0) for i in range(20)]
    tracker = FaceTracker(detector, TrackerConfig(smoothing=None))
    track = track_frames([_shifted(astronaut, dx, dy) for dx, dy in shifts], tracker=tracker)
    assert tracker.searches == 2 and track.counts()["tracked"] == 18
    truth = np.stack([reference.landmarks + np.array(s, float) for s in shifts])
    assert np.linalg.norm(track.raw_landmarks - truth, axis=-1).mean() < 0.8


def test_blanked_frames_are_flagged_and_interpolated(detector, astronaut, reference):
    blank = {8, 9, 10}
    frames = [np.full_like(astronaut, GREY) if i in blank else _shifted(astronaut, dx, dy)
              for i, (dx, dy) in enumerate(SHIFTS)]
    tracker = FaceTracker(detector)
    causal = [tracker.update(f, time_s=i / 25.0, index=i) for i, f in enumerate(frames)]
    assert [i for i, r in enumerate(causal) if r.flag is FrameFlag.NONE] == sorted(blank)
    assert np.isnan(causal[9].landmarks).all()
    track = track_frames(frames, detector=detector)
    assert [i for i, f in enumerate(track.flags) if f is FrameFlag.INTERPOLATED] == sorted(blank)
    assert track.flags[11] is FrameFlag.DETECTED  # tracking lost -> the face is searched for and found again
    assert _error(track, reference, sorted(blank)).max() < 3.0  # linear motion: interpolation is right
    assert np.isnan(track.raw_landmarks[9]).all() and track.has_face.all()


def test_gaps_at_the_ends_are_held_and_long_gaps_stay_empty(tmp_path: Path, detector, astronaut):
    frames = [np.full_like(astronaut, GREY)] * 2 + [astronaut] * 3 + [np.full_like(astronaut, GREY)] * 6
    track = track_frames(frames, detector=detector, config=TrackerConfig(max_gap=4))
    assert track.flags[:2] == (FrameFlag.HELD,) * 2 and track.flags[2:5] == (FrameFlag.DETECTED,) + (FrameFlag.TRACKED,) * 2
    assert np.allclose(track.landmarks[0], track.landmarks[2])
    assert track.flags[5:] == (FrameFlag.NONE,) * 6 and np.isnan(track.landmarks[5:]).all()
    assert track.counts() == {"detected": 1, "tracked": 2, "interpolated": 0, "held": 2, "none": 6}
    saved = tmp_path / "track.npz"
    np.savez(saved, **track.as_arrays())
    with np.load(saved) as data:
        again = Track.from_arrays(data)
    assert again.flags == track.flags and np.array_equal(again.landmarks, track.landmarks, equal_nan=True)
    assert np.array_equal(again.index, track.index) and np.array_equal(again.boxes, track.boxes, equal_nan=True)
    with pytest.raises(NoFaceError, match="no face found in any of the 3 video frames"):
        track_frames([np.full_like(astronaut, GREY)] * 3, detector=detector)


def test_fill_gaps_interpolates_in_time(detector, astronaut):
    """Variable frame rate: the filled frame sits at its time between the neighbours, not half-way."""
    tracker = FaceTracker(detector, TrackerConfig(smoothing=None))
    a = tracker.update(_shifted(astronaut, -20, 0), time_s=0.0, index=0)
    gap = tracker.update(np.full_like(astronaut, GREY), time_s=0.1, index=1)
    b = tracker.update(_shifted(astronaut, 20, 0), time_s=0.4, index=2)
    filled = fill_gaps([a, gap, b], max_gap=1)
    assert filled[1].flag is FrameFlag.INTERPOLATED
    assert np.allclose(filled[1].landmarks, 0.75 * a.landmarks + 0.25 * b.landmarks)
    assert fill_gaps([a, gap, b], max_gap=0)[1].flag is FrameFlag.NONE


# ---------------------------------------------------------------------------------- two faces


def _two_faces(astronaut: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(256, 512, 3) canvas with the astronaut's face twice, the left larger, moving apart by i px each;
    returns (canvas, shift of the left face, shift of the right face)."""
    crop = astronaut[40:296, 100:356]  # the face fills ~90 px of this 256 px crop
    small = np.asarray(PILImage.fromarray(crop).resize((210, 210), PILImage.Resampling.BILINEAR))
    canvas = np.full((256, 512, 3), GREY, np.uint8)
    left, right = np.array([-2 * i, i // 2]), np.array([2 * i, i // 2])
    canvas[:, :256] = _shifted(crop, *left)
    canvas[20:230, 280:490] = _shifted(small, *right)
    return canvas, left, right


@pytest.mark.parametrize("face_index, side", [(None, "left"), (0, "left"), (1, "right")])
def test_two_faces_the_chosen_one_is_followed(detector, astronaut, face_index, side):
    frames, shifts = [], []
    for i in range(12):
        canvas, left, right = _two_faces(astronaut, i)
        frames.append(canvas)
        shifts.append(left if side == "left" else right)
    track = track_frames(frames, detector=detector, config=TrackerConfig(face_index=face_index, keyframe_interval=4))
    assert track.has_face.all()
    x = track.raw_landmarks[..., 0]
    assert (x < 256).all() if side == "left" else (x > 280).all()
    motion = track.raw_landmarks.mean(axis=1) - track.raw_landmarks[0].mean(axis=0)  # (N, 2)
    expected = np.array(shifts, float) - shifts[0]
    assert np.abs(motion - expected).max() < 2.0


def test_lost_face_is_not_swapped_for_the_other_person(detector, astronaut):
    """While the followed (left) face is hidden, the right one stays unused; the left is taken up again."""
    frames = []
    for i in range(12):
        canvas, _, _ = _two_faces(astronaut, 0)
        if 4 <= i <= 6:
            canvas[:, :256] = GREY
        frames.append(canvas)
    track = track_frames(frames, detector=detector, config=TrackerConfig(face_index=0, smoothing=None))
    assert [f for f in track.flags[4:7]] == [FrameFlag.INTERPOLATED] * 3
    assert track.flags[7] is FrameFlag.DETECTED
    assert (track.landmarks[..., 0] < 256).all()


# ------------------------------------------------------------------------------ large frames


def test_large_frame_is_searched_downscaled_and_landmarked_at_full_size(detector, astronaut, reference):
    big = np.asarray(PILImage.fromarray(astronaut).resize((2048, 2048), PILImage.Resampling.BICUBIC))
    frame = np.full((2160, 3840, 3), GREY, np.uint8)
    frame[56:2104, 896:2944] = big
    tracker = FaceTracker(config=TrackerConfig(detect_max_side=960, smoothing=None))
    assert tracker.detector.max_side == 960  # type: ignore[attr-defined]
    result = tracker.update(frame)
    assert result.flag is FrameFlag.DETECTED
    expected = (reference.landmarks + 0.5) * 4 - 0.5 + np.array([896, 56])
    assert np.linalg.norm(result.landmarks - expected, axis=1).mean() < 6.0  # 1.5 px of the 512 px photo
    assert tracker.update(frame).flag is FrameFlag.TRACKED


# ---------------------------------------------------------------------- detectors without boxes


class _SearchOnly:
    """A detector with `detect` only (as FanDetector): the tracker must search every frame."""

    def __init__(self, inner: DlibDetector) -> None:
        self.inner, self.calls = inner, 0

    def detect(self, pixels: np.ndarray) -> list[Detection]:
        self.calls += 1
        return self.inner.detect(pixels)


def test_detector_without_box_landmarks_is_searched_every_frame(detector, astronaut, reference):
    wrapped = _SearchOnly(detector)
    frames = [_shifted(astronaut, dx, dy) for dx, dy in SHIFTS[:6]]
    track = track_frames(frames, detector=wrapped, config=TrackerConfig(smoothing=None))
    assert wrapped.calls == 6 and track.flags == (FrameFlag.DETECTED,) * 6
    truth = np.stack([reference.landmarks + s for s in SHIFTS[:6]])
    assert np.linalg.norm(track.landmarks - truth, axis=-1).mean() < 1.0


# ------------------------------------------------------------------------------ video to track


def test_track_a_decoded_video(tmp_path: Path, detector, astronaut, reference):
    path = tmp_path / "astronaut.mp4"
    write_video(path, (_shifted(astronaut, dx, dy) for dx, dy in SHIFTS[:10]), 25.0, quality=16)
    track = track_frames(read_frames(path), detector=detector)
    assert list(track.index) == list(range(10)) and track.time_s[3] == pytest.approx(0.12)
    truth = np.stack([reference.landmarks + s for s in SHIFTS[:10]])
    assert np.linalg.norm(track.raw_landmarks - truth, axis=-1).mean() < 1.5


# ------------------------------------------------------------------------------- one-euro filter


def _filtered(signal: np.ndarray, times: np.ndarray, config: OneEuroConfig, scale: float = 100.0) -> np.ndarray:
    f = OneEuroFilter(config.min_cutoff, config.beta, config.d_cutoff)
    return np.stack([f(x, t, scale=scale) for x, t in zip(signal, times)])


def test_one_euro_removes_jitter_of_a_still_face():
    rng = np.random.default_rng(0)
    times = np.arange(100) / 25.0
    noisy = 200.0 + rng.normal(0.0, 1.0, (100, 68, 2))  # 1 px noise on a 100 px face
    smooth = _filtered(noisy, times, OneEuroConfig())
    assert landmark_jitter(smooth) < 0.35 * landmark_jitter(noisy)
    assert smooth[20:].std() < 0.6 * noisy[20:].std()


def test_one_euro_follows_motion_with_little_lag():
    times = np.arange(100) / 25.0
    config = OneEuroConfig()
    step = np.where(np.arange(100) >= 50, 220.0, 200.0)[:, None, None] * np.ones((1, 68, 2))
    out = _filtered(step, times, config)
    assert abs(out[50, 0, 0] - 220.0) < 3.0 and abs(out[52, 0, 0] - 220.0) < 1.0  # 20 px step
    ramp = 200.0 + 80.0 * times[:, None, None] * np.ones((1, 68, 2))  # 0.8 face widths a second
    assert np.abs(_filtered(ramp, times, config)[10:] - ramp[10:]).max() < 0.6
    slow = _filtered(ramp, times, OneEuroConfig(beta=0.0))  # a plain 1 Hz low-pass lags by ~13 px
    assert np.abs(slow[30:] - ramp[30:]).mean() > 10.0


def test_one_euro_edge_cases():
    f = OneEuroFilter(1.0, 0.0, 1.0)
    first = f(np.array([[1.0, 2.0]]), 0.0)
    assert np.array_equal(first, [[1.0, 2.0]])  # the first sample passes
    assert np.array_equal(f(np.array([[5.0, 5.0]]), 0.0), first)  # a repeated time changes nothing
    with pytest.raises(ValueError):
        f(np.zeros((3, 2)), 1.0)
    f.reset()
    assert np.array_equal(f(np.array([[9.0, 9.0]]), 5.0), [[9.0, 9.0]])
    with pytest.raises(ConfigError):
        OneEuroConfig(min_cutoff=0.0)


# ------------------------------------------------------------------------------------- helpers


def test_config_validation_and_iou():
    for bad in (dict(keyframe_interval=0), dict(min_iou=0.0), dict(max_gap=-1), dict(face_index=-1),
                dict(max_scale_change=0.5), dict(min_similarity=2.0)):
        with pytest.raises(ConfigError):
            TrackerConfig(**bad)
    a = np.array([0.0, 0.0, 10.0, 10.0])
    assert box_iou(a, a) == 1.0 and box_iou(a, a + 20) == 0.0
    assert box_iou(a, np.array([5.0, 0.0, 15.0, 10.0])) == pytest.approx(50 / 150)
    assert landmark_jitter(np.zeros((2, 68, 2))) != landmark_jitter(np.zeros((2, 68, 2)))  # NaN: too short
    steady = np.arange(10)[:, None, None] * np.ones((1, 68, 2))
    assert landmark_jitter(steady) == 0.0
