"""Which photos go into a UV corpus: the filters' thresholds (`FilterConfig`), the photo measures they test
(`face_crop`, `colourfulness`, `sharpness`) and duplicate detection (`perceptual_hash`, `DuplicateIndex`).

Every measure is written into the sample's manifest entry, accepted or not, so thresholds can be re-set
from a build's measured distributions (`benchmarks/uv_corpus.py`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["FilterConfig", "REASONS", "THRESHOLD_REASONS", "face_crop", "colourfulness", "sharpness", "perceptual_hash", "hash_distance",
           "DuplicateIndex"]

#: reason codes of rejected photos, in the order the filters run
REASONS = {
    "identity_cap": "max_per_identity photos of this person are already in the corpus",
    "unreadable": "the file could not be read as an image",
    "duplicate": "an exact or near duplicate of a photo already in the corpus",
    "no_face": "no face was detected",
    "several_faces": "a second face at least second_face_ratio x as wide as the largest (whose photo is it?)",
    "small_face": "the face (landmarks' bounding-box width) narrower than min_face_px",
    "grayscale": "the face crop's mean chroma below min_colourfulness (a black-and-white photo)",
    "blurry": "the face crop's sharpness below min_sharpness",
    "fit_failed": "detection or fitting raised an error",
    "landmark_error": "landmark reprojection error above max_landmark_error x face size",
    "pose": "|yaw| above max_yaw_deg or |pitch| above max_pitch_deg",
    "low_visibility": "fraction of the face region seen by the photo below min_visible",
    "uneven_light": "left/right brightness asymmetry after de-lighting above max_residual_asymmetry (hard "
                    "shadows, occluders: light the SH model cannot remove)",
}


#: the reasons `FilterConfig.judge` gives from recorded measures (re-judged when a build resumes)
THRESHOLD_REASONS = frozenset({"several_faces", "small_face", "grayscale", "blurry", "landmark_error", "pose",
                               "low_visibility", "uneven_light"})


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the corpus filters (REASONS says what each rejects).

    The defaults were set on 264 photos of the corpus sources (UTKFace, LFW, MEBeauty, London; a build with
    every filter off, 2026-12-06; benchmarks/RESULTS.md "UV corpus"):

    max_landmark_error: mean landmark reprojection error / face size, where face size is sqrt(w x h) of
        the detected landmarks' bounding box (the AFLW2000-3D NME's normalisation). The fixed landmark
        stage fits those photos within 0.9-2.6 % (median 1.5 %, 99th percentile 2.3 %); 3 % keeps them all
        and rejects only fits clearly worse than any seen there. (The earlier 4.5 % was set on the landmark
        stage before issue 9, when fits of 2-5 % were common.)
    min_visible: fraction of the face region's texels with visibility above 0.5 (measured 0.40-0.69,
        median 0.59; 0.4 rejects faces cut by the photo's border or seen from the side).
    duplicate_distance: photos whose 64-bit perceptual hashes differ in at most this many bits from an
        accepted photo's are near duplicates (-1: only byte-identical ones).
    second_face_ratio: reject when a second detected face is at least this fraction of the largest's width
        (whose face is it, whose identity?); smaller background faces are ignored and the largest is used.
        Where LFW has a second face it is 0.7-0.9 x as wide: such photos are rejected.
    min_face_px: the landmarks' bounding-box width in the photo's pixels (measured 82-470, 5th percentile
        91; at 80 px a 256 px UV has about 2 texels per photo pixel across the face).
    min_colourfulness: mean (max - min) of R, G, B over the face crop, in [0, 1]: black-and-white photos
        measured 0-0.009, a tinted (sepia-like) monochrome one 0.039, colour photos 0.055 at the lowest
        (of ~1,000 looked at) and 0.12 at the 5th percentile.
    min_sharpness: `sharpness` of the face crop (Laplacian std / grey std at 128 px): measured 0.07-1.0,
        median 0.24; below 0.09 (the lowest ~3 %) faces were visibly blurred or upscaled from a few pixels.
    max_yaw_deg, max_pitch_deg: pose limits of the fit (issue 12: |yaw| within about 30 degrees).
    max_residual_asymmetry: |mean log luminance ratio| of mirror texel pairs after de-lighting
        (`uv_delight.brightness_asymmetry`). On the first 495 accepted photos of the corpus build it fell
        from a median of 0.16 in the photo to 0.028 de-lit; above 0.25 (4.4 % of them) the de-lit UVs
        still show a dark half: cast shadows, hair over one side, light the SH model cannot remove.
    max_per_identity: accept at most this many photos of one person (None: no cap), so that the few people
        with hundreds of photos (LFW: George W. Bush 530, Colin Powell 236) do not dominate the corpus.
    """

    max_landmark_error: float = 0.03
    min_visible: float = 0.4
    duplicate_distance: int = 4
    second_face_ratio: float = 0.5
    min_face_px: float = 80.0
    min_colourfulness: float = 0.05
    min_sharpness: float = 0.09
    max_yaw_deg: float = 30.0
    max_pitch_deg: float = 30.0
    max_residual_asymmetry: float = 0.25
    max_per_identity: int | None = None

    def __post_init__(self) -> None:
        if not self.max_landmark_error > 0:
            raise ConfigError(f"max_landmark_error must be > 0, got {self.max_landmark_error}")
        if not 0 <= self.min_visible <= 1:
            raise ConfigError(f"min_visible must be between 0 and 1, got {self.min_visible}")
        if not 0 < self.second_face_ratio <= 1 and self.second_face_ratio != float("inf"):
            raise ConfigError(f"second_face_ratio must be in (0, 1] (inf: never), got {self.second_face_ratio}")
        for name in ("min_face_px", "min_colourfulness", "min_sharpness", "max_residual_asymmetry"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.max_per_identity is not None and self.max_per_identity < 1:
            raise ConfigError(f"max_per_identity must be at least 1 (None: no cap), got {self.max_per_identity}")
        if not (0 < self.max_yaw_deg <= 180 and 0 < self.max_pitch_deg <= 180):
            raise ConfigError(f"pose limits must be in (0, 180], got {self.max_yaw_deg}, {self.max_pitch_deg}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def judge(self, entry: dict[str, Any]) -> tuple[str, str] | None:
        """The first threshold filter (in `REASONS` order) that a sample's recorded measures fail, as
        (reason, message), or None. Measures missing from `entry` (not taken yet) are not judged, so this
        serves both while a sample is made and for records of an earlier build (re-judged on resume)."""
        e = entry.get
        if e("second_face_ratio") is not None and e("second_face_ratio") >= self.second_face_ratio:
            return "several_faces", (f"{e('faces_detected')} faces; the second is {100 * e('second_face_ratio'):.0f} % as "
                                     f"wide as the largest (limit {100 * self.second_face_ratio:.0f} %)")
        if e("face_width_px") is not None and e("face_width_px") < self.min_face_px:
            return "small_face", f"face {e('face_width_px'):.0f} px wide, below {self.min_face_px:.0f} px"
        if e("colourfulness") is not None and e("colourfulness") < self.min_colourfulness:
            return "grayscale", f"mean chroma {e('colourfulness'):.3f} below {self.min_colourfulness}"
        if e("sharpness") is not None and e("sharpness") < self.min_sharpness:
            return "blurry", f"sharpness {e('sharpness'):.4f} below {self.min_sharpness}"
        if "fit_error_rel" in entry and not (e("fit_error_rel") is not None and e("fit_error_rel") <= self.max_landmark_error):
            rel = e("fit_error_rel")
            return "landmark_error", (f"landmark error {'not finite' if rel is None else f'{100 * rel:.1f} %'} of the face "
                                      f"size, above {100 * self.max_landmark_error:.1f} %")
        yaw, pitch = e("yaw_deg"), e("pitch_deg")
        if yaw is not None and pitch is not None and (abs(yaw) > self.max_yaw_deg or abs(pitch) > self.max_pitch_deg):
            return "pose", f"yaw {yaw:.0f}, pitch {pitch:.0f} degrees; limits {self.max_yaw_deg:.0f}, {self.max_pitch_deg:.0f}"
        if e("visible_fraction") is not None and e("visible_fraction") < self.min_visible:
            return "low_visibility", (f"the photo shows {100 * e('visible_fraction'):.0f} % of the face region, below "
                                      f"{100 * self.min_visible:.0f} %")
        if e("asymmetry_delit") is not None and abs(e("asymmetry_delit")) > self.max_residual_asymmetry:
            return "uneven_light", (f"left/right brightness asymmetry {e('asymmetry_delit'):+.2f} after de-lighting, above "
                                    f"{self.max_residual_asymmetry}")
        return None


# ------------------------------------------------------------------------------------------ photo measures
def face_crop(pixels: np.ndarray, landmarks: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """The photo inside the landmarks' bounding box grown by `margin` of its size, clipped to the photo.

    pixels: (H, W, 3) float [0, 1]; landmarks: (68, 2) pixels (x, y). Returns (h, w, 3), at least 1 x 1.
    """
    lm = np.asarray(landmarks, np.float64)
    lo, hi = lm.min(0), lm.max(0)
    pad = margin * (hi - lo)
    h, w = pixels.shape[:2]
    x0, y0 = (int(np.clip(np.floor(v), 0, s - 1)) for v, s in zip(lo - pad, (w, h)))
    x1, y1 = (int(np.clip(np.ceil(v), 1, s)) for v, s in zip(hi + pad, (w, h)))
    return pixels[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]


def colourfulness(crop: np.ndarray) -> float:
    """Mean over the pixels of max(R, G, B) - min(R, G, B); 0 for a grey image. (h, w, 3) in [0, 1]."""
    c = np.asarray(crop, np.float32)
    return float((c.max(-1) - c.min(-1)).mean())


def sharpness(crop: np.ndarray, size: int = 128) -> float:
    """Standard deviation of the Laplacian of the grey crop resized to `size` x `size` (area filter), divided
    by the grey crop's standard deviation: focus and resolution in one number, independent of the photo's
    size and of its contrast (a dark or flat photo is not counted as blurred). (h, w, 3) in [0, 1]."""
    from PIL import Image
    from scipy import ndimage

    c = np.asarray(crop, np.float32)
    grey = c[..., 0] * 0.299 + c[..., 1] * 0.587 + c[..., 2] * 0.114
    small = np.asarray(Image.fromarray(np.ascontiguousarray(grey), mode="F").resize((size, size), Image.Resampling.BOX),
                       dtype=np.float64)
    return float(ndimage.laplace(small, mode="reflect")[2:-2, 2:-2].std() / max(small.std(), 1e-3))


# ------------------------------------------------------------------------------------------ duplicates
def perceptual_hash(pixels: np.ndarray) -> int:
    """64-bit DCT perceptual hash (pHash) of an (H, W, 3) float [0, 1] photo.

    The grey image is reduced to 32 x 32 (area average), its 2-D DCT taken, and each of the 8 x 8 lowest
    frequencies becomes one bit: above the median of those 64 (DC excluded from the median). Resizing,
    recompression and small colour changes move a few bits; a mirrored photo flips the sign of every
    odd horizontal frequency and so differs in many.
    """
    from PIL import Image
    from scipy.fft import dctn

    arr = np.asarray(pixels, dtype=np.float32)
    grey = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    small = np.asarray(Image.fromarray(np.ascontiguousarray(grey), mode="F").resize((32, 32), Image.Resampling.BOX),
                       dtype=np.float64)
    low = dctn(small, type=2, norm="ortho")[:8, :8].reshape(-1)
    med = np.median(low[1:])
    bits = low > med
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def hash_distance(a: int, b: int) -> int:
    """Number of differing bits between two `perceptual_hash` values."""
    return bin(int(a) ^ int(b)).count("1")


class DuplicateIndex:
    """The accepted photos' sha256 and perceptual hashes; `find` says whether a new photo duplicates one.
    Near-duplicate search is one vectorised XOR + popcount over all hashes (~1 ms for 30,000)."""

    def __init__(self, distance: int) -> None:
        self.distance = int(distance)
        self._sha: dict[str, str] = {}
        self._hashes = np.zeros(1024, np.uint64)  # grown by doubling; the first len(self) are used
        self._names: list[str] = []

    def __len__(self) -> int:
        return len(self._names)

    def add(self, sha256: str, phash: int, name: str) -> None:
        self._sha.setdefault(sha256, name)
        n = len(self._names)
        if n == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros(n, np.uint64)])
        self._hashes[n] = np.uint64(phash)
        self._names.append(name)

    def find(self, sha256: str, phash: int) -> str | None:
        """None, or a message naming the photo this one duplicates."""
        if sha256 in self._sha:
            return f"same bytes as {self._sha[sha256]}"
        if self.distance < 0 or not len(self._names):
            return None
        d = np.bitwise_count(self._hashes[: len(self._names)] ^ np.uint64(phash))
        i = int(np.argmin(d))
        if int(d[i]) <= self.distance:
            return f"near duplicate of {self._names[i]} (perceptual hashes {int(d[i])} of 64 bits apart)"
        return None
