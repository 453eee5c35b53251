"""`Fitter`: photos in, fitted 3D faces out. It owns the loop and nothing else: the face model, the
detector and the stages are passed in or built once from the config."""
from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .._device import resolve_device
from .._threads import torch_threads
from ..errors import ConfigError, ImageError, LandmarkError, NoFaceError, NothingFittedError
from ..model.morphable import MorphableModel
from ..perception.landmark_file import check_landmark_placement
from ..render.camera import PinholeCamera
from .checks import focal_warnings, landmark_fit_warnings, pose_warnings
from .config import FitConfig
from .landmark_energy import EnergyWeights
from .landmark_stage import LandmarkStage, LandmarkStageResult
from .losses import landmark_weights
from .result import FaceMesh, FitFailure, FitResult

log = logging.getLogger(__name__)


def _on_config_threads(fit):
    """Run `Fitter.fit` on `FitConfig.threads` torch threads (the previous count is restored after it)."""
    @functools.wraps(fit)
    def run(self, *args, **kwargs):
        with torch_threads(self.config.threads):
            return fit(self, *args, **kwargs)
    return run


class Fitter:
    """Fits a face model to one or more photos.

    >>> result = Fitter(FitConfig(device="cpu")).fit(["photo.jpg"])   # doctest: +SKIP
    >>> result.save("out/face.obj")                                     # doctest: +SKIP
    """

    def __init__(self, config: FitConfig | None = None, *, model: MorphableModel | None = None, detector: Any = None) -> None:
        self.config = config or FitConfig()
        self.device = resolve_device(self.config.device, float64=True)  # a bad device fails here, before any work
        self._model = model
        self._detector = detector
        self._stages: dict[str, LandmarkStage] = {}
        self._table_names: dict[str, str] = {}
        self._photo_texture = None
        #: the fit's random numbers (`FitConfig.seed`), re-seeded at the start of every `fit`
        self.generator = torch.Generator(device="cpu").manual_seed(self.config.seed)
        self._model_summary: dict | None = None
        self._joint_stage_obj = None

    @property
    def model(self) -> MorphableModel:
        """The face model (loaded on first use from `config.model`, with `config.model_landmarks`)."""
        if self._model is None:
            from ..model.registry import load_model

            self._model = load_model(self.config.model, landmarks=self.config.model_landmarks)
        return self._model

    @property
    def detector(self):
        """The face detector (built on first use from `config.detector`)."""
        if self._detector is None:
            from ..perception.detect import make_detector

            options = {"upsample": self.config.detector_upsample} if self.config.detector == "dlib" else {}
            self._detector = make_detector(self.config.detector, **options)
        return self._detector

    # ------------------------------------------------------------------ public
    @_on_config_threads
    def fit(self, images: Sequence[Any] | Any, landmarks: Sequence[Any] | Any | None = None, *,
            on_error: str = "raise") -> FitResult:
        """Fit every image (a path or an HxWx3 array, or a list of them) as one batch.

        Args:
            images: a path / array, or a list of them.
            landmarks: None (detect), or per image a (68, 2) array of pixel coordinates or a landmark file
                (.pts, .json, .npy, .txt); a single one is accepted for a single image.
            on_error: what an input that cannot be fitted (unreadable, no face, bad landmark file) does:
                "raise" (default) raises its error; "skip" records it in `FitResult.failures` and fits the
                others (the CLI's behaviour). Errors of the configuration or the model always raise.
        Returns:
            `FitResult` of the inputs that could be fitted (`input_index` says which).
        Raises:
            NothingFittedError: under "skip", when no input could be fitted (its `failures` say why).
        """
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        cfg = self.config
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)  # every fit starts from the seed
        timings: dict[str, float] = {"load": 0.0, "detect": 0.0}
        t_all = time.perf_counter()
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ConfigError("no images given")
        lm_specs = self._landmark_specs(landmarks, len(items))
        model = self.model  # a bad face model fails here, before any slow work (decoding, detection)

        loaded, targets, detections, index, failures = [], [], [], [], []
        bar = tqdm(total=len(items), desc="landmarks", disable=cfg.quiet or len(items) < 2, leave=False)
        for k, (item, spec) in enumerate(zip(items, lm_specs)):
            try:
                img, target, det = self._prepare(item, spec, k, timings)
            except (ImageError, NoFaceError, LandmarkError) as exc:  # this input's fault: others go on
                if on_error == "raise":
                    raise
                source = _source_name(item)
                message = str(exc) if source is None or source in str(exc) else f"{source}: {exc}"
                failures.append(FitFailure(index=k, source=source, error=message, kind=type(exc).__name__))
                log.info("skipped input %d: %s", k, exc)
            else:
                loaded.append(img)
                targets.append(target)
                detections.append(det)
                index.append(k)
            bar.update()
        bar.close()
        if not loaded:
            raise NothingFittedError(failures)

        target_t = torch.as_tensor(np.stack(targets), dtype=torch.float64, device=self.device)
        sizes = torch.tensor([img.original_size for img in loaded], dtype=torch.float64, device=self.device)
        base = None if cfg.landmark_weights is None else torch.tensor(cfg.landmark_weights)
        weights = landmark_weights(cfg.jaw_weight, base)

        t0 = time.perf_counter()
        conventions = [self._convention(det) for det in detections]
        stage_result = self._landmark_stage(target_t, sizes, weights, conventions)
        timings["landmark_stage"] = time.perf_counter() - t0

        params = stage_result.params
        joint = None
        if "joint" in cfg.stages:
            t0 = time.perf_counter()
            joint = self._joint(loaded, target_t, params, stage_result.vertex_ids, weights)
            params = joint.params
            timings["joint_stage"] = time.perf_counter() - t0
        meshes, fitted = self._meshes(model, params, stage_result.vertex_ids, loaded, timings)
        if joint is not None and cfg.texture == "model":
            self._model_textures(meshes, joint)
        warnings = [self._fit_warnings(target_t[i].cpu(), fitted[i], params, i, img.path or f"image {i}")
                    + (joint.warnings[i] if joint is not None else [])
                    for i, img in enumerate(loaded)]
        renders = self._renders(model, params, meshes, sizes, timings)
        timings["total"] = time.perf_counter() - t_all
        camera = PinholeCamera(focal=params.focal, principal=params.principal, image_size=sizes.float())
        return FitResult(
            meshes=meshes,
            params=params,
            camera=camera,
            landmarks_target=target_t.float(),
            landmarks_fitted=fitted,
            history=stage_result.history,
            timings=timings,
            model_info=self._model_info(),
            config=cfg.to_dict(),
            sources=[img.path for img in loaded],
            images=[img.pixels for img in loaded],
            detections=detections,
            landmark_vertices=stage_result.vertex_ids,
            solver=[{"landmarks": {"stop_reason": r, "iterations": n, "convention": c,
                                   "landmark_table": self._table_names[c]},
                     **({} if joint is None else {"joint": {"stop_reason": joint.stop_reason[i],
                                                            "iterations": joint.iterations[i]}})}
                    for i, (r, n, c) in enumerate(zip(stage_result.stop_reason, stage_result.iterations, conventions))],
            landmark_stage_params=stage_result.params if joint is not None else None,
            joint=joint,
            renders=renders,
            warnings=warnings,
            input_index=index,
            failures=failures,
        )

    # ------------------------------------------------------------------ steps
    def _convention(self, detection) -> str:
        """The landmark convention of one image: the config's, or under "auto" the detector's (2d for
        landmarks the user gave)."""
        if self.config.landmark_convention != "auto":
            return self.config.landmark_convention
        return "3d" if detection is not None and detection.backend == "fan3d" else "2d"

    def _model_info(self) -> dict:
        """Name, checksum and sizes of the face model for face.json (the checksum hashes every array:
        computed once per Fitter)."""
        if self._model_summary is None:
            keep = ("name", "sha256", "vertices", "triangles", "shape_components", "expression_components")
            self._model_summary = {k: v for k, v in self.model.summary().items() if k in keep}
        return dict(self._model_summary)

    def _table(self, convention: str):
        """The landmark-to-vertex table: under "auto" the calibrated one for 2d landmarks when this model
        has one (`ganfit.model.landmark_table`), else the model's own vertices."""
        from ..model.landmark_table import calibrated_table, model_table

        table = calibrated_table(self.model) if self.config.landmark_table == "auto" and convention == "2d" else None
        return table or model_table(self.model)

    def _stage(self, convention: str) -> LandmarkStage:
        """The landmark stage for a convention, built once per Fitter."""
        cfg = self.config
        if convention not in self._stages:
            contour = None if cfg.contour == "auto" else cfg.contour
            table = self._table(convention)
            self._stages[convention] = LandmarkStage(
                self.model, num_shape=cfg.num_shape, num_expression=cfg.num_expression, rotation=cfg.rotation,
                convention=convention, contour=contour, landmark_vertices=table.vertices, device=self.device)
            self._table_names[convention] = table.name
        return self._stages[convention]

    def _landmark_stage(self, targets: torch.Tensor, sizes: torch.Tensor, weights: torch.Tensor,
                        conventions: list[str]) -> LandmarkStageResult:
        """Run the landmark stage on every image (one solve per landmark convention present)."""
        cfg, stage = self.config, self.config.landmark_stage
        energy = EnergyWeights(landmark_sigma=cfg.landmark_sigma, w_landmark=cfg.weights.landmark,
                               w_shape=cfg.weights.shape_prior, w_expr=cfg.weights.expression_prior,
                               w_focal=cfg.weights.focal_prior, focal_log_sigma=cfg.focal_log_sigma)
        groups = {c: [i for i, ci in enumerate(conventions) if ci == c] for c in dict.fromkeys(conventions)}
        # No total: every image stops by its own criterion, so the count of iterations is not known ahead
        # (a total of the iteration limit would jump to the end when the solve converges).
        bar = tqdm(total=None, desc="fit: landmarks", unit="it", disable=cfg.quiet, leave=False)

        def progress(it: int, entry: dict) -> None:
            if it:
                bar.update()
                bar.set_postfix(px=f"{float(entry['reprojection_px'].mean()):.2f}")

        parts = []
        for convention, idx in groups.items():
            rows = torch.as_tensor(idx, device=targets.device)
            parts.append((idx, self._stage(convention).solve(
                targets[rows], sizes[rows], weights=weights, energy=energy, focal_ratio=cfg.focal_ratio,
                iterations=stage.iterations, rigid_iterations=stage.rigid_iterations, ftol=stage.tolerance,
                optimizer=cfg.optimizer, adam_lr=cfg.adam_lr, adam_iterations=cfg.adam_iterations, progress=progress)))
        bar.close()
        return LandmarkStageResult.merge(parts, targets.shape[0])

    def _load(self, item: Any):
        from ..io.images import load_image

        return load_image(item)

    def _prepare(self, item: Any, spec: Any, k: int, timings: dict[str, float]):
        """Decode input `k` and get its 68 target landmarks (read from `spec`, or detected when `spec` is
        None). Returns (image, (68, 2) float64 landmarks, detection or None); raises the input's error."""
        t0 = time.perf_counter()
        img = self._load(item)
        timings["load"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        if spec is None:
            det = self._detect(img)
            target = np.asarray(det.landmarks, dtype=np.float64)
        else:
            target, name = self._read_landmarks(spec, k)
            check_landmark_placement(target, img.original_size, name)
            det = None
        timings["detect"] += time.perf_counter() - t0
        return img, target, det

    def _landmark_specs(self, landmarks: Any, n: int) -> list[Any]:
        """Per image None (detect) or what the user gave: a landmark file or a (68, 2) array."""
        if landmarks is None:
            return [None] * n
        if isinstance(landmarks, (str, Path)) or (isinstance(landmarks, np.ndarray) and landmarks.ndim == 2):
            landmarks = [landmarks]
        if isinstance(landmarks, torch.Tensor):
            landmarks = list(landmarks.detach().cpu().numpy()) if landmarks.ndim == 3 else [landmarks.detach().cpu().numpy()]
        items = list(landmarks)
        if len(items) != n:
            raise LandmarkError(f"got landmarks for {len(items)} images but {n} images")
        return items

    @staticmethod
    def _read_landmarks(spec: Any, k: int) -> tuple[np.ndarray, str]:
        """(68, 2) landmarks from a file or an array, with a name for messages (the file, or "landmarks
        of image k")."""
        from ..perception.landmark_file import read_landmarks, validate_landmarks

        if isinstance(spec, (str, Path)):
            return read_landmarks(spec), str(spec)
        name = f"landmarks of image {k}"
        return validate_landmarks(np.asarray(spec, dtype=np.float64), 68, name), name

    def _fit_warnings(self, target: torch.Tensor, fitted: torch.Tensor, params, index: int, where: str) -> list[str]:
        """Warnings about one image's fit (`checks`: landmark error, pose, focal length), also logged."""
        cfg = self.config
        size = float(params.principal[index].max()) * 2.0  # the longer image side
        messages = (landmark_fit_warnings(target, fitted, where)
                    + pose_warnings(params.rotation_matrix()[index].detach().cpu().double(), where)
                    + focal_warnings(float(params.focal[index]), cfg.focal_ratio * size, cfg.focal_log_sigma, where))
        for message in messages:
            log.warning(message)
        return messages

    def _detect(self, img):
        from ..perception.detect import select_face

        sx, sy = img.scale  # a large photo's working copy is smaller: detections go back to the photo's pixels
        detections = [d if (sx, sy) == (1.0, 1.0) else d.scaled(1.0 / sx, 1.0 / sy) for d in self.detector.detect(img.pixels)]
        try:
            return select_face(detections, self.config.face_index)
        except NoFaceError as exc:
            where = img.path or "the image"
            raise NoFaceError(f"{where}: {exc}") from None

    def _meshes(self, model: MorphableModel, params, vertex_ids: torch.Tensor, loaded,
                timings: dict[str, float]) -> tuple[list[FaceMesh], torch.Tensor]:
        """Fitted meshes with photo colours and UV textures (`photo_texture.PhotoTexture`), with a progress bar
        naming the step (the first fit also builds the UV layout: ~1.5 s)."""
        bar = tqdm(total=len(loaded), desc="fit: texture", unit="face", disable=self.config.quiet, leave=False)

        def progress(i: int, step: str) -> None:
            bar.update(i - bar.n)
            bar.set_postfix_str(step)

        try:
            out = self._texture(model).meshes(params, vertex_ids, [img.pixels for img in loaded], timings,
                                              photo_scales=[img.scale for img in loaded], progress=progress)
            bar.update(len(loaded) - bar.n)
            return out
        finally:
            bar.close()

    def _joint(self, loaded, targets: torch.Tensor, params, vertex_ids: torch.Tensor, weights: torch.Tensor):
        """The joint stage on every photo (`joint_fit.run_joint_stage`), with a progress bar of its
        iterations and main terms."""
        from .joint_fit import run_joint_stage

        cfg = self.config
        stage = self._joint_stage()
        bar = tqdm(total=None, desc="fit: joint", unit="it", disable=cfg.quiet, leave=False)

        def progress(it: int, terms: dict) -> None:
            bar.update()
            shown = {k: f"{float(terms[k].mean()):.3f}" for k in ("pixel", "identity") if k in terms}
            if "reprojection_px" in terms:
                shown["px"] = f"{float(terms['reprojection_px'].mean()):.2f}"
            bar.set_postfix(shown)

        try:
            return run_joint_stage(stage, loaded, targets, params, vertex_ids, weights, self.generator, progress)
        finally:
            bar.close()

    def _joint_stage(self):
        """The joint stage with its renderer, identity network and texture model, built once per Fitter."""
        if self._joint_stage_obj is None:
            from .stages.setup import build_joint_stage

            cfg = self.config
            self._joint_stage_obj = build_joint_stage(
                self.model, cfg.joint_stage, identity=cfg.identity, identity_weights=cfg.identity_weights,
                texture_model=cfg.texture_model, device=self.device)
        return self._joint_stage_obj

    def _model_textures(self, meshes: list[FaceMesh], joint) -> None:
        """Replace each mesh's photo texture with the joint stage's model texture (albedo), resized to
        `texture_size` (row 0 = top, as the photo unwrap)."""
        size = self.config.texture_size
        for mesh, res in zip(meshes, joint.results):
            if mesh.texture is None:
                continue
            tex = res.texture[:1].float()
            if tex.shape[-1] != size:
                tex = torch.nn.functional.interpolate(tex, size=(size, size), mode="bilinear", align_corners=False)
            mesh.texture = tex[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            mesh.texture_mask = np.ones(mesh.texture.shape[:2], np.float32)

    def _texture(self, model: MorphableModel):
        """The `PhotoTexture` of this fitter's model, built once (it keeps the per-model UV layout,
        mirror maps and rasterizer, so no photo repeats that work)."""
        from .photo_texture import PhotoTexture

        pt = self._photo_texture
        if pt is None or pt.model is not model or pt.texture_size != self.config.texture_size:
            pt = self._photo_texture = PhotoTexture(model, texture_size=self.config.texture_size, device=self.device)
        return pt

    def _renders(self, model: MorphableModel, params, meshes: list[FaceMesh], sizes: torch.Tensor,
                 timings: dict[str, float]) -> list[np.ndarray | None]:
        """Shaded, textured renders of each fitted face at overlay resolution (longer side <= 1024 px),
        as (h, w, 4) premultiplied RGBA float32; None where there is no texture to show."""
        return self._texture(model).renders(params, meshes, sizes, timings)


def _source_name(item: Any) -> str | None:
    """An input's path for reports (None for an array)."""
    return str(item) if isinstance(item, (str, Path)) else None
