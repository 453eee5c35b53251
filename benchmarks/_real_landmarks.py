"""Real landmark sets for the landmark-stage benchmarks (never part of the package or its tests).

- LFW (deep-funneled, from github:braun-steven/dfi-tensorflow, `data/lfw-deepfunneled/`; research use; see
  ../shared/faces/SOURCES.md): dlib's 68 landmarks of every photo of the people with two or more photos,
  detected once and cached (`detect_lfw`). People are split by a hash of their name into half "A"
  (calibration: `calibrate_landmarks.py`) and half "B" (evaluation: `landmark_3d.py`), so no person is in both.
- The dev corpus (../shared/faces/dev): video frames (`sequences/`) and multi-view sets (`multiview/`, the
  synthetic ffhq-uv set left out), one person each.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit.errors import GanfitError  # noqa: E402
from ganfit.io.images import load_image  # noqa: E402
from ganfit.perception.detect import make_detector, select_face  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LFW_COMMIT = "0a86d9a0c4e0c208f03766075a0fbaead1374e3e"


@dataclass
class LandmarkSet:
    """landmarks (N, 68, 2) px; sizes (N, 2) image (W, H); person (N,) str; path (N,) str."""

    landmarks: np.ndarray
    sizes: np.ndarray
    person: np.ndarray
    path: np.ndarray

    def subset(self, mask: np.ndarray) -> "LandmarkSet":
        return LandmarkSet(self.landmarks[mask], self.sizes[mask], self.person[mask], self.path[mask])

    def __len__(self) -> int:
        return len(self.person)


def half(name: str) -> str:
    """"A" or "B": a fixed split of people by the sha1 of their name."""
    return "A" if hashlib.sha1(name.encode()).digest()[0] % 2 == 0 else "B"


def detect_lfw(root: Path, cache: Path) -> LandmarkSet:
    """dlib landmarks of every LFW photo of a person with >= 2 photos (the face nearest the centre)."""
    if cache.is_file():
        d = np.load(cache)
        return LandmarkSet(d["landmarks"], d["sizes"], d["people"], d["paths"])
    det = make_detector("dlib")
    lms, sizes, people, paths = [], [], [], []
    t0 = time.time()
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            continue
        for f in files:
            try:
                img = load_image(str(f))
                found = det.detect(img.pixels)
            except GanfitError:
                continue
            if not found:
                continue
            centre = np.array(img.pixels.shape[1::-1]) / 2.0
            best = min(found, key=lambda d_: float(np.linalg.norm(d_.center - centre)))
            lms.append(best.landmarks)
            sizes.append(img.pixels.shape[1::-1])
            people.append(person.name)
            paths.append(str(f.relative_to(root)))
    print(f"detected {len(lms)} LFW faces in {time.time() - t0:.0f} s", file=sys.stderr)
    out = LandmarkSet(np.array(lms), np.array(sizes), np.array(people), np.array(paths))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, landmarks=out.landmarks, sizes=out.sizes, people=out.person, paths=out.path)
    return out


def load_lfw(cache: Path, root: Path | None = None) -> LandmarkSet:
    """The cached LFW landmarks (detected from `root` when the cache is missing)."""
    if not cache.is_file():
        if root is None or not root.is_dir():
            raise SystemExit(f"no LFW landmark cache at {cache}; pass --lfw-root with the LFW folders to build it")
        return detect_lfw(root, cache)
    d = np.load(cache)
    sizes = d["sizes"] if "sizes" in d.files else np.full((len(d["people"]), 2), 250)
    return LandmarkSet(d["landmarks"], sizes, d["people"], d["paths"])


def dev_sets(faces: Path, per_set: int = 12) -> LandmarkSet:
    """Video frames and multi-view sets of the dev corpus, one person per folder."""
    det = make_detector("dlib")
    lms, sizes, people, paths = [], [], [], []
    folders = [d for sub in ("sequences", "multiview") if (faces / sub).is_dir() for d in sorted((faces / sub).iterdir())]
    for d in folders:
        if not d.is_dir() or d.name.startswith("ffhq"):
            continue
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        files = files[:: max(1, len(files) // per_set)][:per_set]
        for f in files:
            try:
                img = load_image(str(f))
                chosen = select_face(det.detect(img.pixels), None)
            except GanfitError:
                continue
            lms.append(chosen.landmarks)
            sizes.append(img.pixels.shape[1::-1])
            people.append(d.name)
            paths.append(str(f))
    return LandmarkSet(np.array(lms), np.array(sizes), np.array(people), np.array(paths))
