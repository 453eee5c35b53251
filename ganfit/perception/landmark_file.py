"""Read 2D landmarks a user supplies instead of (or to check) the detector.

Formats, chosen by file extension:
- `.pts`  iBUG / 300-W: `version: 1`, `n_points: 68`, then `{`, one `x y` per line, `}`.
          300-W annotations are 1-based (the first pixel centre is 1, 1), as menpo assumes; by default
          1 is subtracted on reading and added on writing, so arrays are 0-based everywhere in ganfit.
- `.json` a list of [x, y] pairs, or an object with a "landmarks" key holding such a list.
- `.npy`  a numeric array of shape (N, 2).
- `.txt`  one `x y` pair per line (whitespace or comma separated; blank lines and `#` comments skipped).

Points are (x, y) in pixels of the image they belong to, with pixel (row i, column j) centred at
x=j, y=i (the detector's convention), in iBUG 68-point order.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._atomic import atomic_write_text
from ..errors import LandmarkError

SUPPORTED_SUFFIXES = (".pts", ".json", ".npy", ".txt")

#: the smallest landmark spread (bounding-box diagonal, pixels) accepted as a face
MIN_LANDMARK_SPAN_PX = 10.0


def read_landmarks(path: str | os.PathLike, expected: int | None = 68, pts_one_based: bool = True) -> np.ndarray:
    """Read a landmark file; returns (N, 2) float64 x, y (N == expected unless expected is None).

    pts_one_based: for `.pts` files, subtract 1 (300-W convention). Ignored for other formats.
    Raises LandmarkError if the file is missing or unreadable, has an unsupported extension, the
    wrong number of points, or NaN/infinite values.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise LandmarkError(
            f"unsupported landmark file {path}: use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if path.is_dir():
        raise LandmarkError(f"landmark file {path} is a folder, not a file")
    if not path.is_file():
        raise LandmarkError(f"landmark file not found: {path}")
    try:
        points = reader(path)
    except LandmarkError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise LandmarkError(f"cannot read landmark file {path}: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise LandmarkError(f"landmark file {path} is malformed: {exc}") from exc
    points = validate_landmarks(points, expected, str(path))
    if path.suffix.lower() == ".pts" and pts_one_based:
        points = points - 1.0
    return points


def write_pts(path: str | os.PathLike, landmarks: np.ndarray, pts_one_based: bool = True) -> None:
    """Write (N, 2) landmarks as an iBUG `.pts` file, atomically.

    pts_one_based: add 1 to every coordinate (300-W convention), the inverse of `read_landmarks`.
    """
    points = validate_landmarks(np.asarray(landmarks, dtype=np.float64), None, "landmarks")
    if pts_one_based:
        points = points + 1.0
    lines = ["version: 1", f"n_points: {len(points)}", "{"]
    lines += [f"{x:.6f} {y:.6f}" for x, y in points]
    lines += ["}", ""]
    atomic_write_text(path, "\n".join(lines))


# --------------------------------------------------------------------------------------- readers


def _read_pts(path: Path) -> np.ndarray:
    """Parse an iBUG `.pts` file into (N, 2); checks `n_points` against the listed points."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    try:
        start, end = lines.index("{"), lines.index("}")
    except ValueError:
        raise LandmarkError(f"{path} is not a .pts file: it needs a '{{' line, the points, and a '}}' line") from None
    header = dict(_header_entry(line) for line in lines[:start])
    points = np.array([_pair(line) for line in lines[start + 1 : end]], dtype=np.float64).reshape(-1, 2)
    declared = header.get("n_points")
    if declared is not None and int(declared) != len(points):
        raise LandmarkError(f"{path} declares n_points: {declared} but lists {len(points)} points")
    return points


def _header_entry(line: str) -> tuple[str, str]:
    """'n_points: 68' -> ('n_points', '68')."""
    key, sep, value = line.partition(":")
    if not sep:
        raise ValueError(f"unexpected header line {line!r} (expected 'key: value')")
    return key.strip().lower(), value.strip()


def _pair(line: str) -> tuple[float, float]:
    """'12.5 40' or '12.5, 40' -> (12.5, 40.0)."""
    fields = line.replace(",", " ").split()
    if len(fields) != 2:
        raise ValueError(f"expected 'x y' on each line, got {line!r}")
    return float(fields[0]), float(fields[1])


def _read_json(path: Path) -> np.ndarray:
    """A JSON list of [x, y] pairs, or {"landmarks": [[x, y], ...]} -> (N, 2)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LandmarkError(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        if "landmarks" not in data:
            raise LandmarkError(f"{path} holds a JSON object without a 'landmarks' key")
        data = data["landmarks"]
    if not isinstance(data, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in data):
        raise LandmarkError(f"{path}: expected a list of [x, y] pairs")
    return np.array(data, dtype=np.float64).reshape(-1, 2)


def _read_npy(path: Path) -> np.ndarray:
    """A numeric .npy array of shape (N, 2) (pickles are refused)."""
    array = np.load(path, allow_pickle=False)
    if not np.issubdtype(array.dtype, np.number):
        raise LandmarkError(f"{path} holds a {array.dtype} array, not numbers")
    return array.astype(np.float64)


def _read_txt(path: Path) -> np.ndarray:
    """One 'x y' pair per line -> (N, 2)."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return np.array([_pair(line) for line in lines if line], dtype=np.float64).reshape(-1, 2)


_READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".pts": _read_pts,
    ".json": _read_json,
    ".npy": _read_npy,
    ".txt": _read_txt,
}


def validate_landmarks(points: np.ndarray, expected: int | None, name: str) -> np.ndarray:
    """Check shape (N, 2), the count and finiteness; returns float64 (N, 2)."""
    if points.ndim != 2 or points.shape[1] != 2:
        raise LandmarkError(f"{name}: landmarks must have shape (N, 2), got {points.shape}")
    if expected is not None and len(points) != expected:
        raise LandmarkError(f"{name} has {len(points)} landmarks; expected {expected} (iBUG 68-point order)")
    if not np.isfinite(points).all():
        bad = int((~np.isfinite(points)).any(axis=1).sum())
        raise LandmarkError(f"{name} has {bad} landmark(s) with NaN or infinite coordinates")
    return points.astype(np.float64, copy=False)


def check_landmark_placement(points: np.ndarray, image_size: tuple[int, int], name: str = "landmarks") -> None:
    """Check that given landmarks can belong to a face in an image of `image_size` = (width, height).

    A face may run off the photo's edge (a tight crop cuts the jaw), so only gross mistakes are refused:
    fewer than half of the points inside the image (landmarks of another image, or a flipped x/y
    order), or all points within `MIN_LANDMARK_SPAN_PX` of each other (normalised [0, 1]
    coordinates, or a placeholder array). Raises LandmarkError saying which.

    Args:
        points: (N, 2) x, y pixels, finite.
        image_size: (width, height) of the image in pixels.
    """
    pts = np.asarray(points, dtype=np.float64)
    w, h = image_size
    span = float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))
    if span < MIN_LANDMARK_SPAN_PX:
        hint = (" They look normalised to [0, 1]: multiply x by the image width and y by its height."
                if pts.min() >= 0 and pts.max() <= 1 else "")
        raise LandmarkError(
            f"{name}: the landmarks span only {span:.2g} px (a face needs at least {MIN_LANDMARK_SPAN_PX:g}); landmarks must be "
            f"pixel coordinates of the image.{hint}"
        )
    inside = (pts[:, 0] >= -0.5) & (pts[:, 0] <= w - 0.5) & (pts[:, 1] >= -0.5) & (pts[:, 1] <= h - 0.5)
    if inside.sum() * 2 < len(pts):
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        raise LandmarkError(
            f"{name}: only {int(inside.sum())} of {len(pts)} landmarks lie inside the {w}x{h} image (they span x {lo[0]:.0f} to "
            f"{hi[0]:.0f}, y {lo[1]:.0f} to {hi[1]:.0f}); are they for this image, in (x, y) pixel order?"
        )
