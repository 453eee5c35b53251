"""Photos -> a dataset of UV textures for training a texture model (the GAN or the PCA model).

`build_uv_dataset(photos_dir, out_dir)` fits the face model's geometry to every photo in a folder (the
landmark stage of `Fitter`), unwraps the photo into the face model's UV layout and completes the unseen
parts (`ganfit.render.unwrap`: mirror symmetry + Poisson fill), and writes per accepted photo

- ``NAME.png``: the completed UV texture at `resolution` (antialiased from the fitter's texture size),
  8-bit sRGB, row 0 = top (v up);
- ``NAME_mask.png``: how well the photo saw each texel, 8-bit (0 unseen .. 255 seen frontally);

and at the end ``manifest.json`` (per written item: source, sha256 of the source file, landmark fit
error, visible fraction, yaw/pitch/roll, outputs; per rejected photo: the reason; and the face model's
name and UV layout id, resolution, counts, ganfit version, date).

Which data should a texture GAN train on? **The completed UVs** (``NAME.png``). GANFit (Gecer et al.,
CVPR 2019, sec. 3.1) trains its progressive GAN on complete UV maps, and that is what the fitter needs:
it renders the generated texture at any pose and lighting, so every texel, including those a given photo
did not see, must be a plausible face. A GAN's discriminator judges whole images; trained on raw partial
unwraps it would learn the holes and occlusion boundaries as part of "real" textures, and a loss restricted
to observed texels (masked discriminator) needs a different, less stable training scheme and still gives
the generator no signal where no photo looked. The completion has a cost: completed regions are mirrored
or smooth, so they carry less detail and variance than seen skin. That is why the masks are written too:
they say which texels are photo and which are guesses, for filtering (`min_visible`), for weighting
(`ganfit.model.texture.linear.build_pca` fits its PCA by EM with them), for evaluation on seen texels
only, and for trainers that want to down-weight the guesses. The GAN trainer reads ``NAME.png``.

Rejected (with the reason in the manifest, never an exception): unreadable files, photos without a face,
exact or near duplicates of a photo already in the dataset (same sha256, or perceptual hashes of the
downscaled photos within `duplicate_distance` bits), fits whose landmark reprojection error exceeds
`max_landmark_error` times the face size, and unwraps where the photo shows too little of the face
(fraction of the face region's texels with mask > 0.5 below `min_visible`). Photos with several faces
use the largest (counted in the manifest and logged).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._atomic import atomic_write_text
from ..errors import ConfigError, GanfitError, ImageError, NoFaceError, OutputError

log = logging.getLogger(__name__)

__all__ = ["build_uv_dataset", "DatasetReport", "perceptual_hash", "hash_distance", "IMAGE_EXTENSIONS",
           "MANIFEST_FORMAT", "REASONS"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
                              ".pgm", ".pnm"})
MANIFEST_FORMAT = "ganfit-uv-dataset"
MANIFEST_VERSION = 1

#: reason codes of rejected photos
REASONS = {
    "unreadable": "the file could not be read as an image",
    "duplicate": "an exact or near duplicate of a photo already in the dataset",
    "no_face": "no face was detected",
    "fit_failed": "detection or fitting raised an error",
    "landmark_error": "landmark reprojection error above max_landmark_error x face size",
    "low_visibility": "fraction of the face region seen by the photo below min_visible",
}

DEFAULT_MAX_LANDMARK_ERROR = 0.045
DEFAULT_MIN_VISIBLE = 0.4
DEFAULT_DUPLICATE_DISTANCE = 4


# ------------------------------------------------------------------------------------------ report
@dataclass
class DatasetReport:
    """What `build_uv_dataset` did.

    out_dir: the dataset folder; manifest: path of its manifest.json;
    items: one dict per written UV (as in the manifest); rejected: one dict per rejected photo (``reason``
    is a key of `REASONS`, ``message`` the details); seconds: wall time.
    """

    out_dir: Path
    manifest: Path
    items: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    several_faces: int = 0

    @property
    def written(self) -> int:
        return len(self.items)

    @property
    def by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rejected:
            counts[r["reason"]] = counts.get(r["reason"], 0) + 1
        return dict(sorted(counts.items()))

    @property
    def photos(self) -> int:
        return len(self.items) + len(self.rejected)

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in self.by_reason.items()) or "none"
        return (f"{self.photos} photos: wrote {self.written} UV textures to {self.out_dir}, rejected "
                f"{len(self.rejected)} ({reasons}); {self.several_faces} with several faces (largest used); "
                f"{self.seconds:.1f} s")


# ------------------------------------------------------------------------------------------ hashing
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


# ------------------------------------------------------------------------------------------ helpers
def _walk_images(root: Path, exclude: Path | None) -> list[Path]:
    """Image files under `root` (recursive, sorted, hidden files and folders skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (exclude is None or (here / d).resolve() != exclude))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(here / name)
    return found


def _output_name(rel: Path, taken: set[str]) -> str:
    """A file-name-safe, unique stem for the photo at `rel` (sub-folders joined with '__')."""
    parts = list(rel.with_suffix("").parts)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(parts)).strip("._") or "photo"
    if name.endswith("_mask"):  # NAME_mask.png is the mask convention; keep UV names distinct from it
        name += "_"
    base, k = name, 2
    while name.lower() in taken:
        name = f"{base}-{k}"
        k += 1
    taken.add(name.lower())
    return name


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    """(H, W) or (H, W, C) float -> (size, size[, C]) with antialiased bilinear filtering."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = t[0, 0] if arr.ndim == 2 else t[0].permute(1, 2, 0)
    return out.clamp(0.0, 1.0).numpy()


def _region_texels(model, resolution: int) -> np.ndarray:
    """(R, R) bool: texels of the model's face region ("face", else the whole UV chart)."""
    from ..model.texture.linear import rasterize_uv_layout

    face, bary = rasterize_uv_layout(model, resolution)
    covered = (face >= 0).numpy()
    region = model.regions.get("face")
    if region is None:
        return covered
    f = face.numpy()[covered]
    weight = (bary.numpy()[covered] * region[model.triangles[f]].astype(np.float64)).sum(1)
    out = np.zeros(covered.shape, bool)
    out[covered] = weight > 0.5
    return out if out.any() else covered


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ------------------------------------------------------------------------------------------ builder
def build_uv_dataset(
    photos_dir: str | Path,
    out_dir: str | Path,
    *,
    fitter=None,
    resolution: int = 256,
    max_landmark_error: float = DEFAULT_MAX_LANDMARK_ERROR,
    min_visible: float = DEFAULT_MIN_VISIBLE,
    duplicate_distance: int = DEFAULT_DUPLICATE_DISTANCE,
    device: str = "auto",
    model: str = "bfm-3ddfa",
    detector: str = "dlib",
    quiet: bool = False,
) -> DatasetReport:
    """Fit every photo under `photos_dir` and write its completed UV texture and mask to `out_dir`.

    Args:
        photos_dir: folder searched recursively for images (`IMAGE_EXTENSIONS`; hidden files skipped;
            `out_dir` is skipped when it lies inside).
        out_dir: created if needed; ``NAME.png``, ``NAME_mask.png`` and ``manifest.json`` are written
            atomically (files of an earlier run with the same names are replaced; the manifest lists
            exactly this run's outputs).
        fitter: a `Fitter` (its model, detector, device and texture size are used); default one built
            from `device`, `model` and `detector` with the fitter's 768 x 768 texture.
        resolution: side of the written square UV textures (at most the fitter's texture size).
        max_landmark_error: reject fits whose mean landmark reprojection error exceeds this fraction of
            the face size, sqrt(width x height) of the detected landmarks' bounding box (the normalisation
            of the AFLW2000-3D NME). The 4.5 % default was set on the landmark stage before issue 9 (150 dev
            photos: 1.1-4.9 %, median 2.3 %), where the two fits above it (an extreme expression, a toddler)
            gave visibly distorted UVs; the fixed stage fits the same photos within 1.0-2.2 % (median 1.4 %).
        min_visible: reject photos where fewer than this fraction of the face region's texels have a
            visibility mask above 0.5. A frontal face sees about 0.6-0.7 of it; turning the same fit
            gives 0.56 at 45 degrees yaw, 0.51 at 60 and 0.46 at 75, so the default 0.4 mostly rejects
            faces cut off by the photo's border or seen from the side.
        duplicate_distance: photos whose perceptual hashes differ in at most this many of 64 bits from
            an accepted photo's are near duplicates (-1: only exact duplicates by sha256).
        quiet: no progress bar.
    Returns:
        `DatasetReport`. Raises only for user errors about the whole run (missing folder, no images,
        unwritable output, a face model without UVs); a bad photo is rejected with its reason instead.
    """
    from .. import __version__
    from ..io.images import load_image, save_png
    from ..model.texture.base import model_uv_layout_id
    from ..perception.detect import select_face
    from ..fitting.config import FitConfig
    from ..fitting.fitter import Fitter

    t_start = time.perf_counter()
    photos_dir, out_dir = Path(photos_dir), Path(out_dir)
    if not photos_dir.is_dir():
        raise ImageError(f"photo folder not found: {photos_dir}")
    if not 0 < max_landmark_error:
        raise ConfigError(f"max_landmark_error must be > 0, got {max_landmark_error}")
    if not 0 <= min_visible <= 1:
        raise ConfigError(f"min_visible must be between 0 and 1, got {min_visible}")
    if fitter is None:
        fitter = Fitter(FitConfig(device=device, model=model, detector=detector, quiet=True, texture_size=max(768, int(resolution))))
    tex_size = int(fitter.config.texture_size)
    if not 16 <= int(resolution) <= max(tex_size, 16):
        raise ConfigError(f"resolution must be between 16 and the fitter's texture size ({tex_size}), got {resolution}")
    resolution = int(resolution)
    face_model = fitter.model
    layout = model_uv_layout_id(face_model)  # raises when the model has no UVs
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    photos = _walk_images(photos_dir, out_dir.resolve())
    if not photos:
        raise ImageError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {photos_dir}")
    region = _region_texels(face_model, tex_size)
    detector_obj = fitter.detector

    report = DatasetReport(out_dir=out_dir, manifest=out_dir / "manifest.json")
    taken: set[str] = set()
    accepted_sha: dict[str, str] = {}
    accepted_hash: list[tuple[int, str]] = []

    def reject(entry: dict, reason: str, message: str) -> None:
        entry.update(reason=reason, message=message)
        report.rejected.append(entry)
        log.info("skipped %s: %s (%s)", entry["source"], reason, message)

    bar = tqdm(photos, desc="UV dataset", unit="photo", disable=quiet)
    complete = False
    try:
        for path in bar:
            rel = path.relative_to(photos_dir)
            entry: dict[str, Any] = {"source": rel.as_posix(), "source_path": str(path.resolve())}
            # ---- read
            try:
                data = path.read_bytes()
            except OSError as exc:
                reject(entry, "unreadable", f"cannot read the file: {exc.strerror or exc}")
                continue
            sha = hashlib.sha256(data).hexdigest()
            entry["sha256"] = sha
            try:
                image = load_image(path)
            except ImageError as exc:
                reject(entry, "unreadable", str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the run
                reject(entry, "unreadable", f"{type(exc).__name__}: {exc}")
                continue
            pixels = image.pixels
            entry["image_size"] = [image.width, image.height]
            # ---- duplicates
            phash = perceptual_hash(pixels)
            entry["phash"] = f"{phash:016x}"
            if sha in accepted_sha:
                reject(entry, "duplicate", f"same bytes as {accepted_sha[sha]}")
                continue
            if duplicate_distance >= 0:
                near = min(((hash_distance(phash, h), src) for h, src in accepted_hash), default=None)
                if near is not None and near[0] <= duplicate_distance:
                    reject(entry, "duplicate", f"near duplicate of {near[1]} (perceptual hashes {near[0]} of 64 bits apart)")
                    continue
            # ---- detect + fit
            try:
                detections = detector_obj.detect(pixels)
                entry["faces_detected"] = len(detections)
                if not detections:
                    reject(entry, "no_face", "the detector found no face")
                    continue
                chosen = select_face(detections, fitter.config.face_index, source=rel.as_posix())
                result = fitter.fit(pixels, landmarks=[chosen.landmarks])
            except NoFaceError as exc:
                reject(entry, "no_face", str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - one photo's failure must not stop the run
                log.warning("fit of %s failed: %s", path, exc, exc_info=not isinstance(exc, GanfitError))
                reject(entry, "fit_failed", f"{type(exc).__name__}: {exc}")
                continue
            if len(detections) > 1:
                report.several_faces += 1
                entry["note"] = f"{len(detections)} faces detected; the largest was used"
            entry["face_box_px"] = [round(float(v), 1) for v in chosen.box]
            lm = np.asarray(chosen.landmarks, dtype=np.float64)
            extent = lm.max(0) - lm.min(0)
            face_size = float(np.sqrt(max(extent[0], 1e-6) * max(extent[1], 1e-6)))
            err = float(result.reprojection_error_px()[0])
            ypr = [float(a) for a in result.params.euler_deg()[0].tolist()]
            entry.update(face_size_px=round(face_size, 2), fit_error_px=round(err, 3),
                         fit_error_rel=round(err / face_size, 5),
                         yaw_deg=round(ypr[0], 2), pitch_deg=round(ypr[1], 2), roll_deg=round(ypr[2], 2))
            mesh = result.meshes[0]
            if mesh.texture is None or mesh.texture_mask is None:
                reject(entry, "fit_failed", "the fitter produced no UV texture")
                continue
            if not np.isfinite(err) or err / face_size > max_landmark_error:
                reject(entry, "landmark_error", f"landmark error {err:.2f} px = {100 * err / face_size:.1f} % of the "
                       f"face size ({face_size:.0f} px), above {100 * max_landmark_error:.1f} %")
                continue
            mask = np.asarray(mesh.texture_mask, dtype=np.float32)
            visible = float((mask[region] > 0.5).mean())
            entry["visible_fraction"] = round(visible, 4)
            if visible < min_visible:
                reject(entry, "low_visibility", f"the photo shows {100 * visible:.0f} % of the face region, "
                       f"below {100 * min_visible:.0f} %")
                continue
            # ---- write
            name = _output_name(rel, taken)
            outputs = {"uv": f"{name}.png", "mask": f"{name}_mask.png"}
            save_png(out_dir / outputs["uv"], _resize(mesh.texture, resolution))
            save_png(out_dir / outputs["mask"], _resize(mask, resolution))
            entry = {"name": name, **entry, "outputs": outputs}
            report.items.append(entry)
            accepted_sha[sha] = rel.as_posix()
            accepted_hash.append((phash, rel.as_posix()))
            bar.set_postfix(written=report.written, rejected=len(report.rejected))
        complete = True
    finally:
        bar.close()
        report.seconds = time.perf_counter() - t_start
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "complete": complete,
            "ganfit_version": __version__,
            "created": _now(),
            "photos_dir": str(photos_dir.resolve()),
            "face_model": {"name": face_model.name, "sha256": face_model.checksum(), "uv_layout": layout},
            "resolution": [resolution, resolution],
            "fitted_texture_size": tex_size,
            "training_data": "NAME.png: completed UV textures (train the GAN / PCA on these); NAME_mask.png: "
                             "visibility of each texel in the photo (0 unseen .. 1 seen frontally)",
            "settings": {
                "stage": "landmarks",
                "detector": fitter.config.detector,
                "device": str(fitter.device),
                "max_landmark_error": max_landmark_error,
                "min_visible": min_visible,
                "visible_threshold": 0.5,
                "duplicate_distance": duplicate_distance,
                "face_size": "sqrt(w*h) of the detected landmarks' bounding box",
            },
            "counts": {"photos": report.photos, "written": report.written, "rejected": len(report.rejected),
                       "by_reason": report.by_reason, "several_faces": report.several_faces},
            "seconds": round(report.seconds, 2),
            "reasons": REASONS,
            "items": report.items,
            "rejected": report.rejected,
        }
        try:
            atomic_write_text(report.manifest, json.dumps(manifest, indent=1))
        except OutputError:
            if complete:
                raise
    if not quiet:
        log.info(report.summary())
    return report
