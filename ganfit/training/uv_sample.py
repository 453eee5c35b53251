"""One photo -> one corpus sample: read, filter, fit, de-light, complete (used by `uv_dataset`).

`SampleMaker(fitter, resolution, filters)` holds what is built once per face model and resolution (the UV
layout with its mirror map, the face and skin regions per vertex and per texel); `SampleMaker.make(photo,
duplicates)` returns a `Sample`: the manifest entry (every measure taken, accepted or not) and, when
accepted, the arrays to write. The steps, each rejecting with a reason code of `uv_filters.REASONS`:

1. read the bytes (sha256), decode (`ganfit.io.images.load_image`), perceptual hash -> duplicates;
2. detect faces; a second face at least `second_face_ratio` x the largest's width -> several_faces;
3. the face crop's width, colourfulness and sharpness -> small_face, grayscale, blurry;
4. the landmark fit (`Fitter.fit` with the detected landmarks) -> fit error, pose, visibility filters;
5. the unwrap at the corpus resolution (`texture_blend.unwrap_mesh`), lighting estimated from the fitted
   vertices with a mean albedo and divided out (`uv_delight`), left/right asymmetry before and after,
   skin tone (ITA) of the de-lit skin;
6. completion of the unseen texels by symmetry + Poisson fill (`ganfit.render.uv_complete.complete`) of
   the de-lit texture, with the de-lighting's validity as the weight.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GanfitError, ImageError, NoFaceError
from .uv_delight import DelightOptions, brightness_asymmetry, delight, estimate_lighting, skin_tone_ita
from .uv_filters import DuplicateIndex, FilterConfig, colourfulness, face_crop, perceptual_hash, sharpness
from .uv_sources import SourcePhoto

log = logging.getLogger(__name__)

__all__ = ["Sample", "SampleMaker"]


@dataclass
class Sample:
    """What `SampleMaker.make` found: `entry` (manifest fields; ``reason`` / ``message`` when rejected) and,
    when accepted, `uv` (R, R, 3) float32 in [0, 1] (completed, de-lit), `mask` (R, R) validity in [0, 1],
    `raw` (R, R, 3) the photo's unwrap before de-lighting and `delit` after it, before completion (both 0
    where unseen)."""

    entry: dict[str, Any]
    uv: np.ndarray | None = None
    mask: np.ndarray | None = None
    raw: np.ndarray | None = None
    delit: np.ndarray | None = None

    @property
    def accepted(self) -> bool:
        return self.uv is not None


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


class SampleMaker:
    """Per-photo sample making for one fitter, resolution and filter set (module doc).

    fitter: a `Fitter` (its face model, detector and landmark stage are used; give it ``texture_size=0``,
        the unwrap is done here at `resolution`). delight_options: None turns de-lighting off (the
        photo's colours are completed as they are).
    """

    def __init__(self, fitter, resolution: int, filters: FilterConfig,
                 delight_options: DelightOptions | None = DelightOptions()) -> None:
        from ..fitting.photo_texture import PhotoTexture
        from ..fitting.texture_blend import FEATURE_REGIONS  # left out of the light fit and the skin measures

        self.fitter = fitter
        self.filters = filters
        self.delight_options = delight_options
        model = fitter.model
        self.model = model
        self.layout = PhotoTexture(model, texture_size=int(resolution)).layout
        self.triangles = np.asarray(model.triangles, np.int64)
        nv = model.num_vertices
        face = np.asarray(model.regions.get("face", np.ones(nv, bool)), bool)
        features = np.zeros(nv, bool)
        for name in FEATURE_REGIONS:
            if name in model.regions:
                features |= np.asarray(model.regions[name], bool)
        self.skin_vertices = face & ~features
        h, w = self.layout.resolution

        def to_uv(mask: np.ndarray) -> np.ndarray:
            out = np.zeros(h * w, np.float32)
            out[self.layout.texels.numpy()] = np.asarray(self.layout.interpolation @ mask.astype(np.float32))
            return out.reshape(h, w) > 0.5

        self.face_uv = to_uv(face) if face.any() else self.layout.coverage
        self.skin_uv = to_uv(self.skin_vertices)

    # ------------------------------------------------------------------ one photo
    def make(self, photo: SourcePhoto, duplicates: DuplicateIndex) -> Sample:
        from ..io.images import load_image
        from ..perception.detect import select_face

        f = self.filters
        src = photo.source
        entry: dict[str, Any] = {"key": photo.key, **src.provenance(), "path": src.repo_path(photo.rel),
                                 "identity": src.identity_of(photo.rel), "labels": src.labels_of(photo.rel)}

        def reject(reason: str, message: str) -> Sample:
            entry.update(reason=reason, message=message)
            return Sample(entry)

        try:
            data = photo.file.read_bytes()
        except OSError as exc:
            return reject("unreadable", f"cannot read the file: {exc.strerror or exc}")
        entry["sha256"] = sha = hashlib.sha256(data).hexdigest()
        try:
            image = load_image(photo.file)
        except ImageError as exc:
            return reject("unreadable", str(exc))
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the run
            return reject("unreadable", f"{type(exc).__name__}: {exc}")
        pixels = image.pixels
        entry["image_size"] = [image.width, image.height]
        phash = perceptual_hash(pixels)
        entry["phash"] = f"{phash:016x}"
        dup = duplicates.find(sha, phash)
        if dup:
            return reject("duplicate", dup)
        # ---- faces
        try:
            detections = self.fitter.detector.detect(pixels)
        except Exception as exc:  # noqa: BLE001 - one photo's failure must not stop the run
            log.warning("detection in %s failed: %s", photo.key, exc, exc_info=not isinstance(exc, GanfitError))
            return reject("fit_failed", f"{type(exc).__name__}: {exc}")
        entry["faces_detected"] = len(detections)
        if not detections:
            return reject("no_face", "the detector found no face")
        chosen = select_face(detections, self.fitter.config.face_index, source=photo.key)
        widths = sorted((float(d.box[2] - d.box[0]) for d in detections), reverse=True)
        if len(widths) > 1:
            entry["second_face_ratio"] = _round(widths[1] / max(widths[0], 1e-6), 3)
        entry["face_box_px"] = [round(float(v), 1) for v in chosen.box]
        lm = np.asarray(chosen.landmarks, np.float64)
        extent = lm.max(0) - lm.min(0)
        face_size = float(np.sqrt(max(extent[0], 1e-6) * max(extent[1], 1e-6)))
        crop = face_crop(pixels, lm)
        entry.update(face_width_px=_round(extent[0], 1), face_size_px=_round(face_size, 2),
                     colourfulness=_round(colourfulness(crop)), sharpness=_round(sharpness(crop)))
        failed = f.judge(entry)
        if failed:
            return reject(*failed)
        # ---- fit
        try:
            result = self.fitter.fit(pixels, landmarks=[chosen.landmarks])
        except NoFaceError as exc:
            return reject("no_face", str(exc))
        except Exception as exc:  # noqa: BLE001
            log.warning("fit of %s failed: %s", photo.key, exc, exc_info=not isinstance(exc, GanfitError))
            return reject("fit_failed", f"{type(exc).__name__}: {exc}")
        err = float(result.reprojection_error_px()[0])
        yaw, pitch, roll = (float(a) for a in result.params.euler_deg()[0].tolist())
        entry.update(fit_error_px=_round(err, 3), fit_error_rel=_round(err / face_size, 5), yaw_deg=_round(yaw, 2),
                     pitch_deg=_round(pitch, 2), roll_deg=_round(roll, 2))
        failed = f.judge(entry)
        if failed:
            return reject(*failed)
        return self._texture(entry, result.meshes[0], pixels)

    def _texture(self, entry: dict[str, Any], mesh, pixels: np.ndarray) -> Sample:
        from ..fitting.texture_blend import unwrap_mesh
        from ..render.unwrap import UVTexture
        from ..render.uv_complete import complete

        f = self.filters
        raw = unwrap_mesh(self.layout, self.triangles, mesh, pixels, (1.0, 1.0))
        visible = float((raw.mask[self.face_uv] > 0.5).mean())
        entry["visible_fraction"] = _round(visible)
        failed = f.judge(entry)
        if failed:
            entry.update(reason=failed[0], message=failed[1])
            return Sample(entry)
        if self.delight_options is not None and mesh.colors is not None and mesh.normals_camera is not None:
            normals = mesh.normals_camera.detach().cpu().numpy()
            weights = (np.asarray(mesh.visible, bool) & self.skin_vertices).astype(np.float32)
            try:
                light, level = estimate_lighting(np.asarray(mesh.colors), normals, weights, self.delight_options)
            except ValueError as exc:
                entry.update(reason="fit_failed", message=f"no visible skin to estimate the light from ({exc})")
                return Sample(entry)
            d = delight(raw.texture, raw.mask, self.layout, normals, light, level, self.delight_options)
            texture, validity = np.clip(d.albedo, 0.0, 1.0), d.validity
            entry["lighting_sh"] = np.round(light, 4).tolist()
            entry["albedo_level"] = np.round(level, 4).tolist()
        else:
            texture, validity = raw.texture, raw.mask
        # before and after on the same texels: both sides seen with validity > 0.5, on the skin
        entry["asymmetry_photo"] = _round(brightness_asymmetry(raw.texture, validity, self.skin_uv))
        entry["asymmetry_delit"] = _round(brightness_asymmetry(texture, validity, self.skin_uv))
        failed = f.judge(entry)
        if failed:
            entry.update(reason=failed[0], message=failed[1])
            return Sample(entry)
        seen = np.where(validity[..., None] > 0, texture, 0.0).astype(np.float32)
        uv, _ = complete(UVTexture(texture=seen, mask=validity.astype(np.float32), coverage=raw.coverage),
                         self.layout.mirror, layout=self.layout)
        uv = np.clip(uv, 0.0, 1.0).astype(np.float32)
        entry["skin_ita"] = _round(skin_tone_ita(uv, self.skin_uv & (validity > 0.5)), 2)
        return Sample(entry, uv=uv, mask=validity.astype(np.float32), raw=raw.texture, delit=seen)
