"""Fitting configuration: typed dataclasses with defaults, loadable from YAML or JSON.

No loss or model reads a config; the `Fitter` reads it once and passes plain values down.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from .._config_file import read_options_file
from ..errors import ConfigError
from .stages.joint import JointStageConfig

STAGES = ("landmarks", "joint")


@dataclass
class LossWeights:
    """Multipliers of the terms of the fitting energy (GANFit, Gecer et al. CVPR 2019, eq. 7), in standard
    units: 1 is the term's probabilistic weight (see `ganfit.fitting.landmark_energy`).

    landmark: the 68-landmark term, a Gaussian likelihood with standard deviation `FitConfig.landmark_sigma`
        (in face sizes) per coordinate.
    shape_prior / expression_prior: the Gaussian priors 0.5*||c||^2 on coefficients in std units (1 = the
        model's own prior; larger pulls towards the mean face).
    focal_prior: 0.5*((log f - log f0) / sigma)^2 with sigma = `FitConfig.focal_log_sigma`.
    """

    landmark: float = 1.0
    shape_prior: float = 1.0
    expression_prior: float = 1.0
    focal_prior: float = 1.0


@dataclass
class LandmarkStageConfig:
    """The landmark stage (`ganfit.fitting.stages.LandmarksStage`): shape, expression, pose and focal length
    from the 68 landmarks. An entry of `FitConfig.stages`.

    iterations: the most Levenberg-Marquardt iterations of the full solve (each image stops earlier when
        an accepted step lowers its energy by less than `tolerance`, relative); rigid_iterations: the most
        of the rigid warm-up (pose only) before it.
    optimizer: "lm" (Levenberg-Marquardt on the landmark residuals: fast and exact for this small
        least-squares problem) or "adam" (first order; slower, kept for comparison), with `adam_lr` and
        `adam_iterations`.
    weights: the multipliers of its energy's terms (`LossWeights`).
    """

    name: Literal["landmarks"] = "landmarks"
    iterations: int = 50
    rigid_iterations: int = 2
    tolerance: float = 1e-6
    optimizer: Literal["lm", "adam"] = "lm"
    adam_lr: float = 0.02
    adam_iterations: int = 400
    weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        if self.name != "landmarks":
            raise ConfigError(f"a LandmarkStageConfig is named landmarks, got {self.name!r}")
        if self.iterations < 1 or self.rigid_iterations < 0 or self.adam_iterations < 1:
            raise ConfigError("the landmark stage's iterations and adam_iterations must be >= 1 (rigid_iterations >= 0)")
        if not self.tolerance >= 0:
            raise ConfigError("the landmark stage's tolerance must be >= 0")
        if not self.adam_lr > 0:
            raise ConfigError(f"the landmark stage's adam_lr must be > 0, got {self.adam_lr}")


#: an entry of `FitConfig.stages`
StageSettings = Union[LandmarkStageConfig, JointStageConfig]
#: the settings type of each stage name
STAGE_TYPES: dict[str, type] = {"landmarks": LandmarkStageConfig, "joint": JointStageConfig}


@dataclass
class FitConfig:
    """Everything a fit needs to know. Load with `FitConfig.from_file`, override with `replace`.

    device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    seed: seed of the fit's random choices, drawn from one `torch.Generator` (`Fitter.generator`) that the
        stages share. The landmark stage makes none: it is deterministic, so today every seed gives the
        same result (tested); the joint stage's random renders (GANFit's id-hat) will draw from it.
    model: name of a registered face model ("bfm-3ddfa") or a path to a model file.
    model_landmarks: a file of the model's 68 landmark vertex indices (.txt, .json or .npy; for FLAME also
        DECA's landmark_embedding.npy), needed by models without iBUG-68 landmarks (BFM 2009/2017, FLAME);
        for the others it replaces the model's own. None: the model's own.
    stages: the stages to run, in order (`ganfit.fitting.schedule`), each a typed settings object that owns
        its iterations and weights: `LandmarkStageConfig` ("landmarks": shape, expression, pose and focal length
        from the 68 landmarks; Levenberg-Marquardt, ~0.1 s) then optionally `JointStageConfig` ("joint": GANFit's
        joint stage: texture latent, SH lighting, colour gain/offset, shape, expression and pose against
        identity, id-hat, content, pixel and landmark terms; Adam, ~6-12 s per photo on a 2-core CPU). The
        joint stage needs the landmark stage before it. An entry may also be given as a stage's name
        ("joint": its defaults) or a mapping of a name and settings, `{name: joint, iterations: 30}` (YAML
        `stages: [landmarks, {name: joint, iterations: 30}]`); either becomes the typed object. Default: the
        landmark stage only. With the shipped 32 x 32 texture GAN the joint stage raises the identity of the
        render (RESULTS.md "Joint stage: identity, shape and ablation") but moves the shape by nothing
        measurable and its texture is blurred, while it multiplies the fit time by ~5; it becomes the default
        when a texture model worth fitting ships (issue 12). `stage(name)` and `stage_names` read the list.
    identity: the joint stage's face-recognition network: "dlib" (offline default, dlib's face-descriptor
        ResNet), "arcface" (an insightface pack or an arcface_torch checkpoint: `identity_weights`, else the
        registered insightface-buffalo-l / antelopev2 asset, else the packs insightface keeps in
        ~/.insightface/models: buffalo_l, antelopev2, any other with one recognition .onnx;
        `ganfit.perception.identity.find_arcface_weights`), "none" (identity, id-hat and content terms off).
    identity_weights: a weights file or folder for the identity network (None: its default).
    texture_model: the joint stage's texture model: "default" (the shipped texture GAN, see weights/README)
        or a .pt (texture GAN from `ganfit texture train`) / .npz (PCA from `ganfit texture build-pca`).
    texture: what face_texture.png holds: "photo" (default: the photo unwrapped onto the fitted mesh and
        completed by symmetry), "model" (the joint stage's fitted model texture, albedo without lighting) or
        "blend" (GANFit's output texture: the photo's albedo, its colours divided by the fitted shading, where
        the photo sees the surface and the fit explains it, Poisson-blended into the model texture elsewhere;
        `ganfit.fitting.texture_blend`). "model" and "blend" need the joint stage. "photo" stays the default
        with it: beside the shipped 32 x 32 texture GAN the blend's unseen parts (sides, neck) are that
        GAN's blotchy texture, which looks worse than the symmetry-completed photo.
    same_person: how the landmark stage fits several photos of one person (`Fitter.fit(..., subjects=...)`,
        `ganfit fit --same-person`): "average" (default; GANFit's: the mean of the photos' own shapes, then
        each photo's expression, pose and focal length refitted with it fixed) or "shared" (one shape fitted
        to every photo together, with each photo's expression, pose and focal length; `landmark_shared`).
        Chosen by benchmarks/same_person.py (RESULTS.md "Several photos of one person", 9 people x 3 photos,
        each held back in turn, the other two fitted): the shape's distance to the held-back photo's fit
        over its distance to other people's is 0.572 for average, 0.580 for shared and 0.624 for the photos'
        own fits, at a landmark error of 1.68 / 1.67 / 1.61 %. The joint stage has its own setting
        (`JointStageConfig.same_person`, default "shared": its benchmark row favours it).
    rotation: "axis_angle" or "6d" (Zhou et al. CVPR 2019) parametrisation of the head rotation.
    num_shape / num_expression: how many model components to fit (None = all).
    landmark_convention: which model points the landmarks are. "2d": the jaw line follows the visible
        outline (dlib, 300-W, 2D-FAN); "3d": every point, the jaw included, is a fixed point of the face,
        also when hidden (AFLW2000-3D, 3D-FAN). "auto": the detector's ("fan3d": 3d, others: 2d), and 2d
        for landmarks the user gives.
    contour: jaw-line correspondence: "auto" (the convention's: dynamic for 2d, static for 3d),
        "dynamic" (jaw-line landmarks slide along the silhouette, Zhu et al. CVPR 2015), "static" (fixed
        vertices) or "off" (jaw line ignored).
    landmark_table: which model vertex each landmark is. "auto": for 2d landmarks the table calibrated on
        real photos for this model and dlib's points (`ganfit.model.landmark_table`), when one ships, else
        the model's own landmark vertices; "model": always the model's own.
    landmark_sigma: standard deviation of the landmark error per coordinate, as a fraction of the face size
        (sqrt of the landmarks' bounding-box area): detector noise plus the difference between the
        detector's points and the model's landmark vertices. It sets how far the shape may follow the
        landmarks against the model's prior. The default 0.02 (with all shape components and the
        calibrated table) was chosen by `benchmarks/landmark_3d.py` (RESULTS.md, "3D shape of the landmark
        stage"): both 3D measures are lowest there. A fit's distance to the same person's consensus
        shape is 1.63 mm, against 1.71 at 0.01, 1.79 at 0.03 and 2.15 for the mean face. The synthetic
        error with dlib-level landmark noise is 1.36 mm, against 1.48 at 0.03 and 2.27 for the mean face.
        Weaker priors fit held-out 2D landmarks better and 3D worse; the pre-issue-9 default was 0.0077.
    jaw_weight: relative weight of the 17 jaw-line landmarks (the others have weight 1).
    landmark_weights: optional 68 per-landmark weights (multiplied with `jaw_weight` on the jaw).
    focal_ratio: prior mean of the focal length as a multiple of the image's longer side.
    focal_log_sigma: prior standard deviation of log focal length; 0 fixes the focal length.
    detector: "dlib" (offline default), "fan" (face-alignment's 2D-FAN) or "fan3d" (its 3D-FAN: 3d
        convention), both if installed with their weights.
    detector_upsample: how many extra passes, each at twice the resolution, the dlib detector makes when it
        finds no face (`DlibDetector.upsample`): 0 none; 1 (default) finds faces half the ~80 px the first
        pass needs (it searches photos at 1024 px across), each further pass halving that again for ~4x
        the time of the last; at most 3. The FAN detectors have no such passes and ignore it.
    face_index: which face to fit when a photo has several (None = the largest).
    texture_size: side of the square UV texture unwrapped from the photo (0 = no texture; the mesh
        still gets per-vertex colours).
    threads: torch intra-op CPU threads during `Fitter.fit` (set for the fit, restored afterwards;
        None: leave torch's setting alone). The default 1 was measured on the demo (`ganfit fit
        examples/astronaut.png`, 2-core CPU, 2026-12-04, fit time without start-up, 3-4 runs each): idle
        machine 2.3-2.6 s on 1 thread and 2.3-2.6 s on 2; one core busy 2.5-2.8 s against 2.7-3.9 s;
        both cores busy 3.9-4.5 s against 5.1-10.8 s. The work between the solves (colour sampling,
        unwrap, render) is too small for a second thread to pay for its synchronisation, and a busy
        machine makes each thread wait for the slowest. Raise it for large batches on an idle many-core
        machine; it does not affect work on a GPU. The joint stage (`ganfit.fitting.stages`, not yet run
        by `Fitter.fit`) may gain from 2: 237-301 ms per iteration against 288-381 on 1 thread, idle
        machine, 30 iterations of `benchmarks/joint.py` on the example, two runs each; measure again
        when it joins the fit.
    """

    device: str = "auto"
    seed: int = 0
    model: str = "bfm-3ddfa"
    model_landmarks: str | None = None
    stages: tuple[StageSettings, ...] = field(default_factory=lambda: (LandmarkStageConfig(),))
    rotation: Literal["axis_angle", "6d"] = "axis_angle"
    num_shape: int | None = None
    num_expression: int | None = None
    landmark_convention: Literal["auto", "2d", "3d"] = "auto"
    contour: Literal["auto", "dynamic", "static", "off"] = "auto"
    landmark_table: Literal["auto", "model"] = "auto"
    landmark_sigma: float = 0.02
    jaw_weight: float = 0.5
    landmark_weights: tuple[float, ...] | None = None
    focal_ratio: float = 1.6
    focal_log_sigma: float = 0.5
    detector: Literal["dlib", "fan", "fan3d"] = "dlib"
    detector_upsample: int = 1
    face_index: int | None = None
    texture_size: int = 768
    threads: int | None = 1
    identity: Literal["dlib", "arcface", "none"] = "dlib"
    identity_weights: str | None = None
    texture_model: str = "default"
    texture: Literal["photo", "model", "blend"] = "photo"
    same_person: Literal["shared", "average"] = "average"
    quiet: bool = False

    def __post_init__(self) -> None:
        self.stages = tuple(_stage_settings(entry, i) for i, entry in enumerate(_as_sequence(self.stages)))
        names = self.stage_names
        if not names:
            raise ConfigError("at least one stage is needed")
        if names[0] != "landmarks" or len(set(names)) != len(names):
            raise ConfigError(f"stages must start with landmarks, each at most once (landmarks or landmarks,joint); "
                              f"got {','.join(names)}")
        _check_choice("identity", self.identity, ("dlib", "arcface", "none"))
        _check_choice("texture", self.texture, ("photo", "model", "blend"))
        _check_choice("same_person", self.same_person, ("shared", "average"))
        if self.texture in ("model", "blend") and "joint" not in names:
            raise ConfigError("texture model is the joint stage's texture: add the joint stage, or use texture photo")
        _check_choice("rotation", self.rotation, ("axis_angle", "6d"))
        _check_choice("landmark_convention", self.landmark_convention, ("auto", "2d", "3d"))
        _check_choice("contour", self.contour, ("auto", "dynamic", "static", "off"))
        _check_choice("detector", self.detector, ("dlib", "fan", "fan3d"))
        _check_choice("landmark_table", self.landmark_table, ("auto", "model"))
        if self.model_landmarks is not None:
            self.model_landmarks = str(self.model_landmarks)  # a Path from Python; kept JSON-friendly
            if not self.model_landmarks.strip():
                raise ConfigError("model_landmarks must name a file (or be null for the model's own landmarks)")
        if self.landmark_convention == "3d" and self.contour == "dynamic":
            raise ConfigError("contour dynamic slides the jaw along the outline, which 3d landmarks do not follow; "
                              "use contour auto, static or off with landmark_convention 3d")
        if not self.landmark_sigma > 0:
            raise ConfigError(f"landmark_sigma must be > 0 (a fraction of the face size), got {self.landmark_sigma}")
        if self.landmark_weights is not None:
            self.landmark_weights = tuple(float(w) for w in self.landmark_weights)
            if len(self.landmark_weights) != 68 or min(self.landmark_weights) < 0:
                raise ConfigError("landmark_weights needs 68 non-negative numbers")
        if self.focal_ratio <= 0 or self.focal_log_sigma < 0:
            raise ConfigError("focal_ratio must be > 0 and focal_log_sigma >= 0")
        if self.texture_size < 0 or 0 < self.texture_size < 16 or self.texture_size > 8192:
            raise ConfigError("texture_size must be 0 (no texture) or between 16 and 8192")
        for name in ("num_shape", "num_expression"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be >= 0")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads must be a whole number >= 1 (or null for torch's own setting), got {self.threads!r}")
        if isinstance(self.detector_upsample, bool) or not isinstance(self.detector_upsample, int) or not 0 <= self.detector_upsample <= 3:
            raise ConfigError(f"detector_upsample must be 0, 1, 2 or 3 (extra detector passes), got {self.detector_upsample!r}")

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The names of `stages`, in order ("landmarks", "joint")."""
        return tuple(stage.name for stage in self.stages)

    def stage(self, name: str) -> StageSettings | None:
        """The settings of the stage called `name`, or None when the schedule has no such stage."""
        return next((stage for stage in self.stages if stage.name == name), None)

    def with_stages(self, names: Any, **changes: Any) -> "FitConfig":
        """A copy running the stages `names` (a list, or "landmarks,joint") in order, with `changes` to other
        options: each stage keeps its settings from this config when it has that stage (a `--config` file's
        joint settings survive `--stages landmarks,joint`), else gets its defaults."""
        return self.replace(stages=tuple(self.stage(n) or n for n in _as_sequence(names)), **changes)

    def with_stage(self, name: str, **changes: Any) -> "FitConfig":
        """A copy with `changes` applied to the settings of stage `name` (which the schedule must have)."""
        current = self.stage(name)
        if current is None:
            raise ConfigError(f"the schedule has no {name} stage (stages: {','.join(self.stage_names)})")
        return self.replace(stages=tuple(dataclasses.replace(s, **changes) if s is current else s for s in self.stages))

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FitConfig":
        """Build from a (possibly partial) nested dict; unknown keys are an error naming the key."""
        for key, where in MOVED_OPTIONS.items():
            if key in data:
                raise ConfigError(f"config option '{key}' moved into the schedule: {where}")
        return _from_dict(cls, data, "")

    @classmethod
    def from_file(cls, path: str | Path) -> "FitConfig":
        """Load a YAML (.yaml/.yml) or JSON (.json) file holding a (partial) FitConfig."""
        data = read_options_file(path, "config")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "FitConfig":
        """A copy with `changes` applied (nested dataclasses replaced whole)."""
        return dataclasses.replace(self, **changes)


#: options of older configs (before the schedule held typed stages) and where they went
MOVED_OPTIONS = {
    "landmark_stage": "stages: [{name: landmarks, iterations: 50, ...}, ...]",
    "joint_stage": "stages: [landmarks, {name: joint, iterations: 60, weights: {...}, ...}]",
    "weights": "stages: [{name: landmarks, weights: {shape_prior: 1.0, ...}}, ...]",
    **{key: f"stages: [{{name: landmarks, {key}: ...}}, ...]" for key in ("optimizer", "adam_lr", "adam_iterations")},
}


def _as_sequence(stages: Any) -> tuple[Any, ...]:
    """`stages` as a tuple of entries: a comma-separated string ("landmarks,joint") or a sequence."""
    if isinstance(stages, str):
        return tuple(s.strip() for s in stages.split(",") if s.strip())
    if isinstance(stages, (dict, LandmarkStageConfig, JointStageConfig)):
        return (stages,)
    try:
        return tuple(stages)
    except TypeError:
        raise ConfigError(f"stages must be a list of stages, got {stages!r}") from None


def _stage_settings(entry: Any, index: int) -> StageSettings:
    """One entry of `FitConfig.stages` as its typed settings: kept if typed, a name's defaults, or a mapping
    of a name and settings read like any config section (unknown keys are errors naming the key)."""
    if isinstance(entry, (LandmarkStageConfig, JointStageConfig)):
        return entry
    if isinstance(entry, str):
        if entry not in STAGE_TYPES:
            raise ConfigError(f"unknown stage {entry!r}; available: {', '.join(STAGES)}")
        return STAGE_TYPES[entry]()
    if isinstance(entry, dict):
        settings = dict(entry)
        name = settings.get("name")
        if name not in STAGE_TYPES:
            raise ConfigError(f"a stage given as a mapping needs a name, one of {', '.join(STAGES)}; got {name!r}")
        return _from_dict(STAGE_TYPES[name], settings, f"stages.{name}.")
    raise ConfigError(f"stages[{index}] must be a stage name, a mapping with a name, or stage settings; got {entry!r}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config option '{prefix}{unknown[0]}'; known: {', '.join(sorted(known))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"config option {prefix}{key} must be a mapping")
            kwargs[key] = _from_dict(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"invalid config: {exc}") from exc


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Check a scalar against its annotation (int/float/str/bool/tuple/Literal/Optional)."""
    origin, args = get_origin(hint), get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"config option {name} may not be null")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config option {name} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config option {name} must be a list")
        return tuple(value)
    if args and type(None) in args:  # Optional[X] / X | None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config option {name} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config option {name} must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config option {name} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config option {name} must be a string")
        return value
    return value
