"""Keyframes of a video for its identity (issue 13): sharp, near-neutral frames spread over the head's yaw, so
the one shape and texture fitted to them see the face from several sides with little expression in the way."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["auto_keyframe_count", "choose_keyframes", "face_sharpness"]


def face_sharpness(pixels: np.ndarray, box: np.ndarray, side: int = 96) -> float:
    """Variance of the Laplacian of the grey face crop resized to `side` px (higher: sharper; Pech-Pacheco
    et al., ICPR 2000); NaN when the box is empty or not finite.

    Args:
        pixels: (H, W, 3) uint8 or float RGB. box: (4,) x0, y0, x1, y1 pixels.
    """
    from PIL import Image

    if not np.isfinite(box).all():
        return math.nan
    h, w = pixels.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, int(math.ceil(box[2]))), min(h, int(math.ceil(box[3])))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return math.nan
    crop = np.asarray(pixels[y0:y1, x0:x1], dtype=np.float32)
    if crop.max() > 1.5:
        crop = crop / 255.0
    grey = crop @ np.array([0.299, 0.587, 0.114], np.float32)
    grey = np.asarray(Image.fromarray(grey).resize((side, side), Image.BILINEAR), np.float32)
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(lap.var())


def auto_keyframe_count(yaw_deg: np.ndarray, usable: np.ndarray) -> int:
    """How many keyframes "auto" takes: one per 15 degrees of the yaw range the video covers, plus one, from 3
    to 8 (fewer when fewer frames are usable)."""
    yaw = np.asarray(yaw_deg, np.float64)[np.asarray(usable, bool)]
    if yaw.size == 0:
        return 0
    span = float(yaw.max() - yaw.min())
    return int(min(yaw.size, max(3, min(8, 1 + math.ceil(span / 15.0)))))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Values -> ranks in [0, 1] (NaN -> 0)."""
    v = np.where(np.isfinite(values), values, -np.inf)
    order = np.argsort(np.argsort(v, kind="stable"), kind="stable")
    return order / max(1, len(v) - 1)


def choose_keyframes(yaw_deg: np.ndarray, sharpness: np.ndarray, expression: np.ndarray, usable: np.ndarray,
                     count: int, *, min_gap: int = 5) -> list[int]:
    """Pick `count` frames for the identity.

    Each usable frame has a quality in [0, 1], the mean of its rank in sharpness and its rank in neutrality
    (a small expression norm). The first pick is the best frame near frontal (quality minus |yaw| / 30 deg);
    each next pick maximises its yaw distance to the frames picked (over the video's yaw range) plus half its
    quality, among frames at least `min_gap` frames from every pick.

    Args:
        yaw_deg: (N,) each frame's yaw from a quick per-frame fit. sharpness: (N,) `face_sharpness`.
        expression: (N,) norm of each frame's expression coefficients. usable: (N,) bool, frames with a face.
        count: keyframes wanted. min_gap: the least distance between two keyframes, in frames.
    Returns:
        The chosen frame positions in increasing order (fewer when fewer frames qualify).
    """
    usable = np.asarray(usable, bool) & np.isfinite(yaw_deg)
    idx = np.flatnonzero(usable)
    if idx.size == 0 or count < 1:
        return []
    yaw = np.asarray(yaw_deg, np.float64)[idx]
    quality = 0.5 * (_ranks(np.asarray(sharpness, np.float64)[idx]) + _ranks(-np.asarray(expression, np.float64)[idx]))
    span = max(float(yaw.max() - yaw.min()), 1.0)
    chosen = [int(np.argmax(quality - np.abs(yaw) / 30.0))]
    while len(chosen) < count:
        far = np.min(np.abs(yaw[:, None] - yaw[chosen][None]), axis=1) / span
        score = far + 0.5 * quality
        near = np.min(np.abs(idx[:, None] - idx[chosen][None]), axis=1) < min_gap
        score[near] = -np.inf
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            break
        chosen.append(best)
    return sorted(int(idx[c]) for c in chosen)
