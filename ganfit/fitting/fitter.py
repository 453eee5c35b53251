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
from .appearance import FaceAppearance
from .checks import focal_warnings, landmark_fit_warnings, pose_warnings
from .config import FitConfig
from .identity import identity_meshes
from .observations import Observations, build_observations
from .result import FitFailure, FitResult
from .schedule import build_schedule, run_schedule
from .stages.base import Stage, StageOutcome

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

    def __init__(self, config: FitConfig | None = None, *, model: MorphableModel | None = None, detector: Any = None,
                 schedule: Sequence[Stage] | None = None) -> None:
        """`schedule`: the stages to run instead of those of `config.stages` (`ganfit.fitting.schedule`); the
        first starts from `FitState.empty`, so it must fit the pose (a `LandmarksStage`)."""
        self.config = config or FitConfig()
        self.device = resolve_device(self.config.device, float64=True)  # a bad device fails here, before any work
        self._model = model
        self._detector = detector
        self._schedule = None if schedule is None else list(schedule)
        self._appearance: FaceAppearance | None = None
        #: the fit's random numbers (`FitConfig.seed`), re-seeded at the start of every `fit`
        self.generator = torch.Generator(device="cpu").manual_seed(self.config.seed)
        self._model_summary: dict | None = None

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

    @property
    def appearance(self) -> FaceAppearance:
        """Meshes, textures and renders of the fitted faces (`appearance.FaceAppearance`, built once)."""
        if self._appearance is None:
            cfg = self.config
            self._appearance = FaceAppearance(self.model, texture_size=cfg.texture_size, device=self.device, quiet=cfg.quiet)
        return self._appearance

    # ------------------------------------------------------------------ public
    @_on_config_threads
    def fit(self, images: Sequence[Any] | Any, landmarks: Sequence[Any] | Any | None = None, *,
            on_error: str = "raise", subjects: Sequence[Any] | None = None) -> FitResult:
        """Fit every image (a path or an HxWx3 array, or a list of them) as one batch.

        Args:
            images: a path / array, or a list of them.
            landmarks: None (detect), or per image a (68, 2) array of pixel coordinates or a landmark file
                (.pts, .json, .npy, .txt); a single one is accepted for a single image.
            on_error: what an input that cannot be fitted (unreadable, no face, bad landmark file) does:
                "raise" (default) raises its error; "skip" records it in `FitResult.failures` and fits the
                others (the CLI's behaviour). Errors of the configuration or the model always raise.
            subjects: per image a label of the person it shows (any hashable: a name, a number); images with
                one label share one identity (`FitConfig.same_person`: "shared" or "average"), their
                expression, pose and camera stay their own. None: every image its own person.
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
        labels = self._subject_labels(subjects, len(items))
        self.model  # a bad face model fails here, before any slow work (decoding, detection)

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

        frame_subject = None
        if labels is not None:  # the people of the images that loaded, numbered in order of appearance
            order = {label: None for label in (labels[k] for k in index)}
            number = {label: s for s, label in enumerate(order)}
            frame_subject = torch.tensor([number[labels[k]] for k in index], dtype=torch.long)
        obs = build_observations(loaded, targets, detections, convention=cfg.landmark_convention,
                                 jaw_weight=cfg.jaw_weight, landmark_weights=cfg.landmark_weights,
                                 frame_subject=frame_subject, device=self.device)
        outcomes = run_schedule(self.schedule, obs, generator=self.generator, progress=self._stage_bar, timings=timings)
        return self._result(obs, outcomes, index, failures, timings, t_all, people=labels is not None)

    # ------------------------------------------------------------------ steps
    @property
    def schedule(self) -> list[Stage]:
        """The stages `Fitter.fit` runs, in order: the one given to the constructor, or built once from
        `config.stages` (`ganfit.fitting.schedule.build_schedule`)."""
        if self._schedule is None:
            self._schedule = build_schedule(self.config, self.model, self.device)
        return self._schedule

    def _stage_bar(self, stage: Stage):
        """A progress bar of one stage's iterations (no total: each image stops by its own criterion, and a
        total of the iteration limit would jump to the end when the solve converges)."""
        bar = tqdm(total=None, desc=f"fit: {stage.name}", unit="it", disable=self.config.quiet, leave=False)

        def progress(shown: dict[str, str]) -> None:
            bar.update()
            bar.set_postfix(shown)

        return progress, bar.close

    def _result(self, obs: Observations, outcomes: list[StageOutcome], index: list[int], failures: list[FitFailure],
                timings: dict[str, float], t_all: float, people: bool = False) -> FitResult:
        """Meshes, textures, renders and warnings of the fitted state; face.json's stage reports from the
        outcomes (the first stage's history and, when later stages changed it, its parameters)."""
        cfg, loaded = self.config, obs.images
        first, last = outcomes[0], outcomes[-1]
        params, vertex_ids = last.state.to_fit_params(), last.state.landmark_vertices
        joint = next((o.extras["joint"] for o in outcomes if "joint" in o.extras), None)
        appearance = self.appearance
        meshes, fitted = appearance.meshes(params, vertex_ids, loaded, timings, joint=joint,
                                           texture=cfg.texture if joint is not None else "photo")
        warnings = [self._fit_warnings(obs.landmarks[i].cpu(), fitted[i], params, i, img.path or f"image {i}")
                    + [w for o in outcomes for w in o.photo_warnings(i)]
                    for i, img in enumerate(loaded)]
        renders = appearance.renders(params, meshes, obs.sizes, timings)
        identities = identity_meshes(self.model, params.shape, obs.frame_subject, meshes) if people else []
        timings["total"] = time.perf_counter() - t_all
        camera = PinholeCamera(focal=params.focal, principal=params.principal, image_size=obs.sizes.float())
        return FitResult(
            meshes=meshes,
            params=params,
            camera=camera,
            landmarks_target=obs.landmarks.float(),
            landmarks_fitted=fitted,
            history=first.history,
            timings=timings,
            model_info=self._model_info(),
            config=cfg.to_dict(),
            sources=[img.path for img in loaded],
            images=[img.pixels for img in loaded],
            detections=obs.detections,
            landmark_vertices=vertex_ids,
            solver=[{stage.name: o.solver(i) for stage, o in zip(self.schedule, outcomes)} for i in range(len(loaded))],
            landmark_stage_params=first.state.to_fit_params() if len(outcomes) > 1 else None,
            joint=joint,
            renders=renders,
            warnings=warnings,
            input_index=index,
            failures=failures,
            frame_subject=obs.frame_subject.tolist() if people else [],
            identities=identities,
        )

    def _model_info(self) -> dict:
        """Name, checksum and sizes of the face model for face.json (the checksum hashes every array:
        computed once per Fitter)."""
        if self._model_summary is None:
            keep = ("name", "sha256", "vertices", "triangles", "shape_components", "expression_components")
            self._model_summary = {k: v for k, v in self.model.summary().items() if k in keep}
        return dict(self._model_summary)

    def _load(self, item: Any):
        from ..io.images import load_image
        from ..io.video import is_video_path

        try:
            return load_image(item)
        except ImageError:  # only an input that is not a photo pays for the sniffing
            if isinstance(item, (str, Path)) and Path(item).is_file() and is_video_path(item):
                raise ImageError(f"{item} is a video, not a photo: use `ganfit fit-video` (Python: "
                                 "ganfit.fitting.video_fit.fit_video)") from None
            raise

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
    def _subject_labels(subjects: Any, n: int) -> list[Any] | None:
        """Per image its person's label, or None (every image its own person)."""
        if subjects is None:
            return None
        labels = list(subjects)
        if len(labels) != n:
            raise ConfigError(f"got subjects for {len(labels)} images but {n} images; give one label per image")
        try:
            {label: None for label in labels}
        except TypeError:
            raise ConfigError("subjects must be hashable labels (names or numbers), one per image") from None
        return labels

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


def _source_name(item: Any) -> str | None:
    """An input's path for reports (None for an array)."""
    return str(item) if isinstance(item, (str, Path)) else None
