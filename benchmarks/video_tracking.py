"""Video decoding and face tracking speed, and landmark jitter (issue 13, video input).

For each dev sequence's `source_video.mp4` (../shared/faces/dev/sequences, read in place) this
1. decodes every frame with `ganfit.io.video.read_frames` (decode + RGB conversion time per frame, at the
   video's own size);
2. makes a 512 x 512 copy of each frame: a square crop of the frame's short side, fixed for the clip and
   centred on the face found in the first frame, resized to 512 (so the motion in the clip is kept);
3. times, on those 512 x 512 frames, `track_frames` with detection on every frame (keyframe_interval=1,
   "detection only") and with tracking between keyframes (keyframe_interval 10 = the default, and 25);
   fps = frames / wall-clock seconds, median of `--runs` runs, each run with a fresh tracker;
4. times dlib's face search (`DlibDetector.find_boxes`) and its landmark predictor from a given box
   (`DlibDetector.landmarks`) per 512 x 512 frame;
5. measures landmark jitter (`landmark_jitter`: mean |x[t+1] - 2 x[t] + x[t-1]| over frames and the 68
   points, px at 512 x 512) of the raw per-frame detections, of the tracked landmarks before and after
   the one-euro filter, and of per-frame detections after the filter, plus the mean distance of the
   tracked + smoothed landmarks to the per-frame detections (what smoothing and tracking cost in
   agreement with the detector);
6. times decode + tracking end to end at the video's own size (default tracker).
Prints markdown tables (as in benchmarks/RESULTS.md).

    .venv/bin/python benchmarks/video_tracking.py [--runs 3] [--sequences DIR]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit.io.video import probe, read_frames  # noqa: E402
from ganfit.perception.detect import DlibDetector  # noqa: E402
from ganfit.perception.tracking import FaceTracker, TrackerConfig, landmark_jitter, track_frames  # noqa: E402

SEQUENCES = ROOT.parent / "shared" / "faces" / "dev" / "sequences"
SIDE = 512


def square_crops(frames: list[np.ndarray], detector: DlibDetector) -> list[np.ndarray]:
    """(SIDE, SIDE, 3) copies of `frames`: one square crop of the short side, centred on the first frame's
    face (clamped to the frame), resized to SIDE."""
    height, width = frames[0].shape[:2]
    side = min(height, width)
    boxes, _ = detector.find_boxes(frames[0])
    cx, cy = ((boxes[0][0] + boxes[0][2]) / 2, (boxes[0][1] + boxes[0][3]) / 2) if boxes else (width / 2, height / 2)
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    return [np.asarray(Image.fromarray(f[y0:y0 + side, x0:x0 + side]).resize((SIDE, SIDE), Image.Resampling.BILINEAR))
            if side != SIDE or (height, width) != (SIDE, SIDE) else f for f in frames]


def timed_track(frames: list[np.ndarray], detector: DlibDetector, config: TrackerConfig, fps: float, runs: int):
    """(median fps over `runs`, the last run's Track, its tracker's search count)."""
    rates, track, tracker = [], None, None
    for _ in range(runs):
        tracker = FaceTracker(detector, config)
        start = time.perf_counter()
        track = track_frames(frames, tracker=tracker, fps=fps)
        rates.append(len(frames) / (time.perf_counter() - start))
    return statistics.median(rates), track, tracker.searches


def per_call_ms(frames: list[np.ndarray], detector: DlibDetector) -> tuple[float, float]:
    """Median ms of a face search and of landmarks-from-box per frame."""
    search, landmarks = [], []
    for frame in frames:
        start = time.perf_counter()
        boxes, _ = detector.find_boxes(frame)
        search.append(time.perf_counter() - start)
        if boxes:
            start = time.perf_counter()
            detector.landmarks(frame, boxes[0])
            landmarks.append(time.perf_counter() - start)
    return 1000 * statistics.median(search), 1000 * statistics.median(landmarks) if landmarks else float("nan")


def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance (px) of landmarks a, b: (N, 68, 2), over frames where both are known."""
    d = np.linalg.norm(a - b, axis=-1)
    return float(np.nanmean(d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sequences", type=Path, default=SEQUENCES)
    args = parser.parse_args()
    detector = DlibDetector(upsample=0)
    base = TrackerConfig()
    speed_rows, jitter_rows, native_rows = [], [], []
    for video in sorted(args.sequences.glob("*/source_video.mp4")):
        name = video.parent.name
        info = probe(video)
        start = time.perf_counter()
        native = [frame.pixels for frame in read_frames(video)]
        decode_ms = 1000 * (time.perf_counter() - start) / len(native)
        fps = info.fps or 25.0
        frames = square_crops(native, detector)
        det_fps, det_track, det_searches = timed_track(frames, detector, replace(base, keyframe_interval=1, smoothing=None), fps, args.runs)
        trk_fps, trk_track, trk_searches = timed_track(frames, detector, base, fps, args.runs)
        k25_fps, _, k25_searches = timed_track(frames, detector, replace(base, keyframe_interval=25), fps, args.runs)
        search_ms, box_ms = per_call_ms(frames[:: max(1, len(frames) // 40)], detector)
        smoothed_det = track_frames(frames, detector=detector, config=replace(base, keyframe_interval=1), fps=fps)
        counts = trk_track.counts()
        speed_rows.append(
            f"| {name} | {len(frames)} | {info.width}x{info.height} | {decode_ms:.1f} | {search_ms:.1f} | {box_ms:.1f} | "
            f"{det_fps:.1f} | {trk_fps:.1f} ({trk_searches} searches) | {k25_fps:.1f} ({k25_searches}) | "
            f"{counts['detected']}/{counts['tracked']}/{counts['interpolated'] + counts['held']}/{counts['none']} |"
        )
        jitter_rows.append(
            f"| {name} | {landmark_jitter(det_track.raw_landmarks):.2f} | {landmark_jitter(smoothed_det.landmarks):.2f} | "
            f"{landmark_jitter(trk_track.raw_landmarks):.2f} | {landmark_jitter(trk_track.landmarks):.2f} | "
            f"{mean_distance(trk_track.raw_landmarks, det_track.raw_landmarks):.2f} | "
            f"{mean_distance(trk_track.landmarks, det_track.raw_landmarks):.2f} |"
        )
        start = time.perf_counter()
        end_to_end = track_frames(read_frames(video), detector=detector, config=base)
        e2e_fps = len(end_to_end) / (time.perf_counter() - start)
        native_rows.append(f"| {name} | {info.width}x{info.height} | {e2e_fps:.1f} | {end_to_end.counts()['none']} |")
        print(f"{name}: done", file=sys.stderr, flush=True)
        del native, frames
    print("\n**Speed at 512 x 512** (fps = frames per second of `track_frames`, median of "
          f"{args.runs} runs; decode = `read_frames` per frame at the video's own size)\n")
    print("| clip | frames | video size | decode ms/frame | dlib search ms | landmarks from box ms | "
          "detection only fps | tracking fps, K=10 (default) | tracking fps, K=25 | K=10 flags det/trk/filled/none |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(speed_rows))
    print("\n**Landmark jitter** (mean frame-to-frame acceleration, px at 512 x 512; lower is smoother) and "
          "distance to per-frame detections (px)\n")
    print("| clip | detection raw | detection + one-euro | tracked raw | tracked + one-euro (default) | "
          "tracked raw vs detection | tracked + one-euro vs detection |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(jitter_rows))
    print("\n**Decode + track at the video's own size** (default tracker, one run)\n")
    print("| clip | size | fps | frames without a face |")
    print("|---|---|---|---|")
    print("\n".join(native_rows))


if __name__ == "__main__":
    main()
