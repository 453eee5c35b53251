"""Face detection with 68 iBUG landmarks, in pixel coordinates of the original image.

Backends (all follow the `FaceDetector` protocol: `detect(pixels) -> list[Detection]`):
- `DlibDetector`: dlib's HOG frontal-face detector + its 68-point shape predictor (the predictor file
  ships in the `face-recognition-models` wheel). Works offline; the default.
- `FanDetector`: the `face-alignment` package (S3FD detector + 2D FAN). More robust to pose and
  occlusion; needs `pip install ganfit[fan]` and its weights in the torch hub cache.

`select_face` picks one detection (largest by default) and `make_detector` builds a backend by name.

Coordinate convention: a box is (x0, y0, x1, y1) in pixel-edge coordinates (the image spans
[0, W] x [0, H]; x1, y1 exclusive) and may extend past the border for faces cut by it. Landmarks are
(x, y) with integer values at pixel centres (pixel (i, j) is at x=j, y=i), float64, subpixel.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image as PILImage

from ..errors import AssetError, ConfigError, NoFaceError
from ..model.landmark_scheme import IBUG68

logger = logging.getLogger(__name__)

NUM_LANDMARKS = IBUG68.num_points  # the detectors give iBUG-68 points (`ganfit.model.landmark_scheme`)
PREDICTOR_ASSET = "dlib-landmarks-68"
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
LANDMARK_FACE_SIZE = 256
"""Face-box width (px) of the crop the shape predictor runs on, whatever the photo's resolution."""
LANDMARK_CROP_MARGIN = 0.5
"""Context kept around the box on each side for the shape predictor, as a fraction of box size."""


@dataclass(frozen=True)
class Detection:
    """One face found in an image.

    box: (4,) float64 x0, y0, x1, y1 in pixels of the original image (pixel edges; x1, y1 exclusive).
    score: detector confidence (backend-specific scale; higher is more confident).
    landmarks: (68, 2) float64 x, y in pixels of the original image (iBUG 68-point order).
    backend: name of the detector that produced it ("dlib", "fan").
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    backend: str

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> np.ndarray:
        """(2,) x, y of the box centre."""
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])

    def scaled(self, sx: float, sy: float) -> "Detection":
        """The same face in the image resized by (sx, sy) (e.g. found in a downscaled working copy,
        mapped back to the photo by 1 / its scale): box edges are scaled, landmarks mapped pixel centre
        to pixel centre."""
        factor = np.array([sx, sy], dtype=np.float64)
        return dataclasses.replace(self, box=np.asarray(self.box, np.float64) * np.tile(factor, 2),
                                   landmarks=(np.asarray(self.landmarks, np.float64) + 0.5) * factor - 0.5)


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces and their 68 landmarks."""

    def detect(self, pixels: np.ndarray) -> list[Detection]:
        """pixels: (H, W, 3) float32 RGB in [0, 1] (uint8 also accepted). Returns every face found."""
        ...


# ---------------------------------------------------------------------------------- asset lookup


def default_predictor_path() -> Path:
    """Path of dlib's 68-point shape predictor (`shape_predictor_68_face_landmarks.dat`).

    Asks `ganfit.assets` (which also verifies the file's checksum) when that package is available;
    otherwise the file is located inside the installed `face_recognition_models` package without
    importing it (that package needs pkg_resources). Raises AssetError if the file is missing.
    """
    try:
        from ganfit.assets import asset_path
    except ImportError:
        return _packaged_predictor_path()
    return Path(asset_path(PREDICTOR_ASSET))


def _packaged_predictor_path() -> Path:
    """The predictor inside the `face-recognition-models` wheel (located via find_spec)."""
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "models" / PREDICTOR_FILE
        if candidate.is_file():
            return candidate
    raise AssetError(
        f"dlib's 68-point landmark model ({PREDICTOR_FILE}) was not found: install it with "
        "`pip install face-recognition-models` or pass predictor_path= to DlibDetector"
    )


# -------------------------------------------------------------------------------------- helpers


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) float [0, 1] or uint8 -> contiguous (H, W, 3) uint8 (one float32 temporary)."""
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    tmp = np.multiply(pixels, np.float32(255.0), dtype=np.float32)
    tmp += np.float32(0.5)
    np.clip(tmp, 0, 255, out=tmp)
    return tmp.astype(np.uint8)


def _check_pixels(pixels: np.ndarray) -> None:
    """Refuse anything but an (H, W, 3) float or uint8 array."""
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] != 3:
        shape = getattr(pixels, "shape", None)
        raise ValueError(f"detect() needs (H, W, 3) RGB pixels, got shape {shape}; use ganfit.io.images.load_image")
    if pixels.dtype != np.uint8 and not np.issubdtype(pixels.dtype, np.floating):
        raise ValueError(f"detect() needs float32 in [0, 1] or uint8 pixels, got {pixels.dtype}")


def _resized_uint8(pixels: np.ndarray, size: tuple[int, int], *, antialias: bool = True) -> np.ndarray:
    """Resize (H, W, 3) float/uint8 pixels to `size` = (width, height); returns uint8 (h, w, 3).

    Only the pixels needed are converted from float (converting a whole 12-megapixel float image
    costs more than detecting faces in it). With `antialias` (for the landmark crop, where detail
    matters) large reductions first take every k-th pixel with k at most half the reduction, so
    Pillow's filter still averages >= 2 samples per output pixel; the shift this introduces is below
    one output pixel. Without it (for face detection, whose 8 x 8-pixel gradient histograms do not
    need the finest detail) a reduction of 2x or more takes the nearest pixel for each output pixel.
    """
    height, width = pixels.shape[:2]
    if (width, height) == size:
        return _as_uint8(pixels)
    ratio = min(width / size[0], height / size[1])
    if not antialias and ratio >= 2.0:
        rows = np.minimum(((np.arange(size[1]) + 0.5) * (height / size[1])).astype(np.int64), height - 1)
        cols = np.minimum(((np.arange(size[0]) + 0.5) * (width / size[0])).astype(np.int64), width - 1)
        return _as_uint8(pixels[rows[:, None], cols[None, :]])
    step = max(1, int(ratio // 2))
    small = _as_uint8(pixels[::step, ::step])
    return np.asarray(PILImage.fromarray(small).resize(size, PILImage.Resampling.BILINEAR))


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


# ------------------------------------------------------------------------------------------ dlib


class DlibDetector:
    """dlib HOG face detector + 68-point shape predictor.

    predictor_path: the shape predictor file; default `default_predictor_path()`.
    max_side: images larger than this (longest side, px) are searched on a copy downscaled to it.
        HOG finds faces of about 80 px and up, so at the default a face must span roughly 8 % of the
        longest side on the first pass.
    upsample: how many extra passes, each at twice the previous resolution, to try when a pass finds
        nothing (small faces). A pass first uses real detail of the original image, then dlib's own
        pyramid upsampling. 0 disables; 1 (default) halves the smallest findable face for the cost of
        ~4x the first pass, paid only on images where nothing was found.
    threshold: dlib's adjust_threshold; raise it for fewer false positives, lower it for more faces.
    confident_score: when a pass finds a face scoring at least this, the weaker detections of that
        pass are dropped as likely false positives (on photos, real faces mostly score 0.5-3 and
        spurious ones 0-0.3, often as large as the real face); a lone weak face is still kept.
        None keeps everything above `threshold`.
    landmark_face_size: landmarks are predicted on a crop rescaled so the face box is this wide,
        then mapped back; this gives the same behaviour at 512 px and at 8000 px.
    """

    backend = "dlib"

    def __init__(
        self,
        predictor_path: str | Path | None = None,
        max_side: int = 1024,
        upsample: int = 1,
        threshold: float = 0.0,
        confident_score: float | None = 0.3,
        landmark_face_size: int = LANDMARK_FACE_SIZE,
    ) -> None:
        if max_side < 80:
            raise ConfigError(f"max_side must be at least 80 px (dlib's smallest face), got {max_side}")
        if upsample < 0:
            raise ConfigError(f"upsample must be >= 0, got {upsample}")
        import dlib  # imported here so `Detection` and `select_face` work without dlib

        path = Path(predictor_path) if predictor_path is not None else default_predictor_path()
        if not path.is_file():
            raise AssetError(f"dlib shape predictor not found at {path}: pass an existing predictor_path")
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as exc:
            raise AssetError(f"cannot load the dlib shape predictor {path} (corrupt or wrong file?): {exc}") from exc
        self._detector = dlib.get_frontal_face_detector()
        self._rectangle = dlib.rectangle
        self.max_side, self.upsample, self.threshold = max_side, upsample, threshold
        self.confident_score = confident_score
        self.landmark_face_size = landmark_face_size

    def detect(self, pixels: np.ndarray) -> list[Detection]:
        """Every face in `pixels` (H, W, 3) float32 [0, 1] or uint8, with 68 landmarks each."""
        _check_pixels(pixels)
        boxes, scores = self.find_boxes(pixels)
        return [
            Detection(box=box, score=score, landmarks=self.landmarks(pixels, box), backend=self.backend)
            for box, score in zip(boxes, scores, strict=True)
        ]

    def find_boxes(self, pixels: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        """Face boxes ((4,) x0, y0, x1, y1 in original pixels) and scores, from the first pass that
        finds any; see `upsample`."""
        height, width = pixels.shape[:2]
        base = min(1.0, self.max_side / max(height, width))
        for attempt in range(self.upsample + 1):
            wanted = base * 2.0**attempt
            scale = min(1.0, wanted)
            dlib_upsample = round(math.log2(wanted / scale))
            size = _scaled_size(width, height, scale)
            image = _resized_uint8(pixels, size, antialias=False)
            rects, scores, _ = self._detector.run(image, dlib_upsample, self.threshold)
            if len(rects):
                logger.debug("dlib found %d face(s) at scale %.3f, upsample %d", len(rects), scale, dlib_upsample)
                factor = np.array([width / size[0], height / size[1]] * 2)
                found = [
                    (np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], float) * factor, float(s))
                    for r, s in zip(rects, scores, strict=True)
                ]
                found = self._drop_weak(found)
                return [box for box, _ in found], [score for _, score in found]
        return [], []

    def _drop_weak(self, found: list[tuple[np.ndarray, float]]) -> list[tuple[np.ndarray, float]]:
        """Keep only detections scoring >= `confident_score` if any does; otherwise keep all."""
        if self.confident_score is None:
            return found
        confident = [item for item in found if item[1] >= self.confident_score]
        if confident and len(confident) < len(found):
            logger.debug("dropped %d weak detection(s) beside confident ones", len(found) - len(confident))
        return confident or found

    def landmarks(self, pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
        """68 landmarks (68, 2) float64 in original pixels for the face in `box` (4,).

        Runs the shape predictor on a crop around the box, rescaled so the box is
        `landmark_face_size` px wide, and maps the points back.
        """
        height, width = pixels.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in box)
        margin = LANDMARK_CROP_MARGIN * max(x1 - x0, y1 - y0)
        cx0, cy0 = max(0, math.floor(x0 - margin)), max(0, math.floor(y0 - margin))
        cx1, cy1 = min(width, math.ceil(x1 + margin)), min(height, math.ceil(y1 + margin))
        if cx1 - cx0 < 2 or cy1 - cy0 < 2:
            raise ValueError(f"face box {box} lies outside the {width}x{height} image")
        scale = self.landmark_face_size / max(x1 - x0, 1.0)
        size = _scaled_size(cx1 - cx0, cy1 - cy0, scale)
        crop = _resized_uint8(pixels[cy0:cy1, cx0:cx1], size)
        sx, sy = size[0] / (cx1 - cx0), size[1] / (cy1 - cy0)
        rect = self._rectangle(
            round((x0 - cx0) * sx), round((y0 - cy0) * sy), round((x1 - cx0) * sx) - 1, round((y1 - cy0) * sy) - 1
        )
        shape = self._predictor(crop, rect)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        # pixel centre (i) in the crop -> edge (i + 0.5) -> original edge / s -> original centre - 0.5
        points[:, 0] = (points[:, 0] + 0.5) / sx - 0.5 + cx0
        points[:, 1] = (points[:, 1] + 0.5) / sy - 0.5 + cy0
        return points


# ------------------------------------------------------------------------------------------- FAN

FAN_INSTALL_HINT = "pip install ganfit[fan]"


class FanDetector:
    """face-alignment (Bulat & Tzimiropoulos 2017): S3FD face detector + 2D-FAN or 3D-FAN 68 landmarks.

    landmarks: "2d" (2D-FAN: the jaw line on the visible outline, as 300-W) or "3d" (3D-FAN: the image
        position of fixed face points, hidden ones included, as AFLW2000-3D; backend name "fan3d").
    device: torch device string ("cpu", "cuda", "cuda:1").
    max_side: images larger than this are searched and landmarked on a downscaled copy.
    allow_download: let face-alignment download its weights (about 250 MB) into the torch hub cache;
        by default missing weights raise AssetError saying where to put them.
    Raises AssetError if the package, its dependencies or its weights are missing.
    """

    backend = "fan"

    def __init__(self, device: str = "cpu", max_side: int = 1024, allow_download: bool = False, landmarks: str = "2d") -> None:
        if landmarks not in ("2d", "3d"):
            raise ConfigError(f"FanDetector landmarks must be 2d or 3d, got {landmarks!r}")
        self.backend = "fan" if landmarks == "2d" else "fan3d"
        try:
            import face_alignment
            from face_alignment.api import models_urls as fan_urls
            from face_alignment.detection.sfd.sfd_detector import models_urls as sfd_urls
        except ImportError as exc:
            raise AssetError(
                f"the 'fan' detector needs the face-alignment package and its dependencies "
                f"({exc}): `{FAN_INSTALL_HINT}`, or use the 'dlib' detector"
            ) from exc
        if not allow_download:
            _check_fan_weights([fan_urls["2DFAN-4" if landmarks == "2d" else "3DFAN-4"], sfd_urls["s3fd"]]
                               + ([fan_urls["depth"]] if landmarks == "3d" and "depth" in fan_urls else []))
        self._model = _build_fan(face_alignment, device, landmarks)
        self.max_side = max_side

    def detect(self, pixels: np.ndarray) -> list[Detection]:
        """Every face in `pixels` (H, W, 3) float32 [0, 1] or uint8, with 68 landmarks each."""
        _check_pixels(pixels)
        height, width = pixels.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        size = _scaled_size(width, height, scale)
        image = _resized_uint8(pixels, size)
        landmarks, _, boxes = self._model.get_landmarks_from_image(image, return_bboxes=True)
        if not landmarks:
            return []
        sx, sy = width / size[0], height / size[1]
        return [
            Detection(
                box=np.asarray(box[:4], float) * np.array([sx, sy, sx, sy]),
                score=float(box[4]) if len(box) > 4 else 1.0,
                landmarks=(np.asarray(points, float)[:, :2] + 0.5) * np.array([sx, sy]) - 0.5,
                backend=self.backend,
            )
            for points, box in zip(landmarks, boxes, strict=True)
        ]


def _build_fan(face_alignment: Any, device: str, landmarks: str = "2d") -> Any:
    """Construct face_alignment.FaceAlignment (2D or 3D landmarks, S3FD) without torch.compile where supported."""
    kind = face_alignment.LandmarksType.TWO_D if landmarks == "2d" else face_alignment.LandmarksType.THREE_D
    try:
        try:
            return face_alignment.FaceAlignment(kind, device=device, face_detector="sfd", compile=False)
        except TypeError:  # versions without the `compile` option
            return face_alignment.FaceAlignment(kind, device=device, face_detector="sfd")
    except OSError as exc:  # download refused or failed, unreadable weight file
        raise AssetError(f"face-alignment could not load its weights: {exc}") from exc


def _check_fan_weights(urls: Sequence[str]) -> None:
    """Raise AssetError naming each weight file missing from the torch hub cache."""
    import torch.hub

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    missing = [(url, checkpoints / url.rsplit("/", 1)[-1]) for url in urls]
    missing = [(url, path) for url, path in missing if not path.is_file()]
    if missing:
        listing = "; ".join(f"download {url} to {path}" for url, path in missing)
        raise AssetError(f"face-alignment weights are missing: {listing} (or pass allow_download=True)")


# ------------------------------------------------------------------------------------- selection


def select_face(detections: Sequence[Detection], face_index: int | None = None, source: str = "the image") -> Detection:
    """Choose one face.

    face_index None: the largest box (area); a warning names it when there are several.
    face_index i: the i-th face counting left to right by box centre (0 = leftmost).
    source: what the detections came from (a path), for messages.
    Raises NoFaceError if there is no face, or no face number `face_index`.
    """
    if not detections:
        raise NoFaceError(
            f"no face found in {source}: use a photo where the face is visible, roughly frontal and "
            "at least about 80 px wide; for small faces raise --detector-upsample (dlib; "
            "FitConfig.detector_upsample, default 1), or try --detector fan or a landmark file (--landmarks)"
        )
    ordered = sorted(detections, key=lambda d: float(d.center[0]))
    if face_index is not None:
        if not 0 <= face_index < len(ordered):
            raise NoFaceError(
                f"face_index {face_index} asked for, but {source} has {len(ordered)} face(s) "
                f"(indices 0-{len(ordered) - 1}, left to right)"
            )
        chosen = ordered[face_index]
        logger.info(
            "using face %d of %d (left to right) in %s, box %s", face_index, len(ordered), source, _fmt_box(chosen)
        )
        return chosen
    chosen = max(ordered, key=lambda d: d.area)
    if len(ordered) > 1:
        index = next(i for i, d in enumerate(ordered) if d is chosen)
        logger.warning(
            "%d faces found in %s; using the largest, face_index=%d (left to right), box %s; "
            "pass face_index to choose another",
            len(ordered), source, index, _fmt_box(chosen),
        )
    return chosen


def _fmt_box(detection: Detection) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in detection.box) + "]"


# --------------------------------------------------------------------------------------- factory

def _fan3d(**kwargs: Any) -> FaceDetector:
    return FanDetector(landmarks="3d", **kwargs)


_DETECTORS: dict[str, Callable[..., FaceDetector]] = {"dlib": DlibDetector, "fan": FanDetector, "fan3d": _fan3d}


def make_detector(name: str = "dlib", **kwargs: Any) -> FaceDetector:
    """Build a detector by name: "dlib" (`DlibDetector`), "fan" (`FanDetector`, 2D-FAN) or "fan3d"
    (`FanDetector(landmarks="3d")`); kwargs go to it."""
    try:
        factory = _DETECTORS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown face detector {name!r}: choose one of {', '.join(sorted(_DETECTORS))}") from None
    return factory(**kwargs)


__all__ = [
    "Detection",
    "DlibDetector",
    "FaceDetector",
    "FanDetector",
    "default_predictor_path",
    "make_detector",
    "select_face",
]
