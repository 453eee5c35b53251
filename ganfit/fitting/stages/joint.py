"""The joint stage of GANFit (Gecer et al., CVPR 2019, sec. 3.5): from the landmark stage's shape, expression and
pose, Adam optimises the texture latent, SH lighting, a per-channel colour gain and offset, shape, expression,
rotation and translation against the identity, id-hat, content, pixel and landmark terms and the priors
(`joint_energy`). The focal length stays the landmark stage's.

Schedule: `warmup_iterations` with only the texture latent, lighting and colour moving (the geometry is the
landmark stage's, which the early, wrong texture must not pull), then everything; an early stop when the
deterministic part of the energy (all but the random id-hat) has not improved for `plateau_patience`
iterations. Guards: a non-finite term or gradient rolls the variables back to the last finite state, clears
Adam's moments and halves the learning rates; a final landmark error worse than the start by more than the
margin returns the last state within the margin, with a warning.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

import torch

from ...errors import FitError
from ...render.renderer import Renderer
from ...render.shading import default_sh
from ..losses import landmark_weights as default_landmark_weights
from ..params import FitParams
from .joint_energy import JointEnergy, JointTargets, JointVariables
from .joint_terms import CAVITY_COLOUR, robust_pixel_loss, sh_least_squares, truncate_latent
from .joint_loop import JointLoop
from .joint_tie import SubjectTie

__all__ = ["JointRates", "JointStage", "JointStageConfig", "JointStageResult", "JointWeights", "JointInputError"]



class JointInputError(FitError, ValueError):
    """An input of the joint stage has the wrong shape or values."""


@dataclass(frozen=True)
class JointWeights:
    """Weights of the joint stage's terms (see `joint_energy`; the landmark and the two shape priors at 1 are
    the landmark stage's energy, the image terms are weighted against it)."""

    identity: float = 2.0
    identity_hat: float = 1.0
    content: float = 1.0
    pixel: float = 10.0
    landmark: float = 1.0
    shape_prior: float = 1.0
    expression_prior: float = 1.0
    lighting_prior: float = 1.0
    latent_prior: float = 0.01


@dataclass(frozen=True)
class JointRates:
    """Adam learning rates per parameter group (units: std for latent, shape and expression; SH coefficients;
    gain and offset; radians; millimetres)."""

    latent: float = 0.05
    lighting: float = 0.01
    colour: float = 0.005
    shape: float = 0.03
    expression: float = 0.03
    rotation: float = 0.002
    translation: float = 0.3


@dataclass(frozen=True)
class JointStageConfig:
    """The joint stage's settings (an entry of `FitConfig.stages`, named "joint").

    iterations: most Adam iterations; warmup_iterations: the first ones move only latent, lighting, colour.
    resolution: side of the face crop rendered and compared (px); crop_margin: crop side / dlib chip side.
    weights, rates: `JointWeights`, `JointRates`.
    landmark_sigma, jaw_weight: the landmark term's definition, as `FitConfig`'s (jaw_weight is used when `run`
        gets no landmark weights); a `Fitter` sets both from its `FitConfig`, so the two stages' landmark terms agree.
    lighting_sigma, gain_sigma, offset_sigma: prior stds (irradiance units; gain; [0, 1] colour units).
    latent_truncation: per-coordinate bound of the texture latent in prior std units (inf: none).
    latent_candidates: random latents tried at the start; the best by the pixel term starts the fit.
    init_lighting: start from the least-squares SH light of the photo (else the ambient default).
    content_layers, pixel_regions, pixel_keep: see `JointEnergy`.
    id_hat_yaw, id_hat_pitch, id_hat_expression, id_hat_light: the id-hat sampler (degrees, std units, strength).
    id_hat_every: the id-hat render (and its identity pass) on every k-th iteration only; in between its last
        value stands in, a constant, in the history and the total (1: every iteration).
    id_hat_resolution: side of the id-hat's own render (px; the face as large in it as in the crop; 0: resolution).
    grad_clip: per-group gradient norm bound (OSTeC, Gecer et al. 2021, clips at 2.0; 0 = off).
    plateau_patience, plateau_tolerance: stop after this many iterations without a relative improvement of
        the deterministic energy by tolerance (0 patience: never).
    landmark_margin, landmark_margin_px: the largest accepted landmark error at the end,
        start * (1 + margin) + margin_px.
    max_rollbacks: non-finite steps tolerated before the stage gives up (keeping the last finite state).
    hole_colour: linear RGB painted into the render's enclosed holes (the mesh's open mouth, nostrils, ear
        canals) before it is composited over the photo, so the photo's own mouth never shows through the face
        (`joint_terms.fill_holes`); None: the photo shows through them (the behaviour before the fix).
    same_person: how the photos of one person share shape and texture latent here (`joint_fit`): "shared"
        (default: tied, one optimisation) or "average" (GANFit: each photo on its own, then refitted around the
        mean shape and latent). Chosen by benchmarks/same_person.py (RESULTS.md "Several photos of one
        person", the render over grey against a held-back photo): dlib gap 0.065 shared, 0.041 average (0.069
        for each photo's own texture); averaging two GAN latents gives a blander texture the refit cannot fix.

    Defaults measured 2026-12-04 (benchmarks/joint.py, RESULTS.md "Joint stage (first slice)", 2-core CPU, one
    thread): 260-330 ms per iteration at 224 px with dlib and the id-hat, so 60 iterations = 16-20 s per photo;
    then (RESULTS.md "Joint stage speed"): resolution 160 (was 224), id_hat_every 4 at id_hat_resolution 128
    (was every iteration at the crop's 224) make the stage ~1.6x faster (example + 2 dev photos, same seed:
    15.4-17.6 s -> 9.9-10.3 s) for the same pixel term (+-0.001), landmark error (+-0.002 px) and identity
    1 - cos within +0.005 (0.055 -> 0.059, 0.040 -> 0.045, 0.038 -> 0.039); every 2nd at 160 px with a 192 px
    crop was slower for the same quality, 40 iterations instead of 60 lost more (pixel +7 %, identity +25 %);
    the term weights are first guesses (the landmark and shape priors at their probabilistic 1; pixel 10,
    identity 2, id-hat 1, content 1), not yet tuned: geometry barely moves under them.
    A sweep of the geometry (RESULTS.md "Joint stage: can it move the shape?", 13 photos of 5 people, 40
    iterations) kept these defaults: shape/expression rate 0.03 -> 0.3 moves the shape only ~0.1 mm and the
    same/different-person ratio 0.631 -> 0.606 (0.625 at the start), non-monotone in the rate (0.1: 0.633,
    1.0: 0.692 with NME +0.16 %) and gone with a 5-iteration warm-up (0.630): noise, not a win; a weaker
    landmark term (0.3, 0.1) shrinks every shape toward the mean (NME +0.3-0.5 %), weaker shape/expression
    priors (0.5, 0.1) inflate them (NME 1.55 -> 1.40 / 1.07 %, but the ratio 0.632 / 0.715); identity 5-10 raises
    the identity gap (0.077 -> 0.092-0.099) without touching the shape.
    """

    name: Literal["joint"] = "joint"
    iterations: int = 60
    warmup_iterations: int = 20
    resolution: int = 160
    crop_margin: float = 1.3
    weights: JointWeights = field(default_factory=JointWeights)
    rates: JointRates = field(default_factory=JointRates)
    landmark_sigma: float = 0.02
    jaw_weight: float = 0.5
    lighting_sigma: float = 0.3
    gain_sigma: float = 0.1
    offset_sigma: float = 0.05
    latent_truncation: float = 3.0
    latent_candidates: int = 8
    init_lighting: bool = True
    content_layers: tuple[int, ...] = (1, 2, 3)
    pixel_regions: tuple[str, ...] = ("face",)
    pixel_keep: float = 0.9
    id_hat_yaw: float = 30.0
    id_hat_pitch: float = 15.0
    id_hat_expression: float = 0.7
    id_hat_light: float = 0.5
    id_hat_every: int = 4
    id_hat_resolution: int = 128
    grad_clip: float = 2.0
    plateau_patience: int = 15
    plateau_tolerance: float = 2e-3
    landmark_margin: float = 0.3
    landmark_margin_px: float = 0.5
    max_rollbacks: int = 5
    hole_colour: tuple[float, float, float] | None = CAVITY_COLOUR
    same_person: Literal["shared", "average"] = "shared"

    def __post_init__(self) -> None:
        from ...errors import ConfigError

        if self.same_person not in ("shared", "average"):
            raise ConfigError(f"joint stage same_person must be shared or average, got {self.same_person!r}")
        if self.name != "joint":
            raise ConfigError(f"a JointStageConfig is named joint, got {self.name!r}")
        if self.iterations < 0 or self.warmup_iterations < 0:
            raise ConfigError("joint stage iterations must be >= 0")
        if self.id_hat_every < 1:
            raise ConfigError(f"id_hat_every must be >= 1, got {self.id_hat_every}")
        if self.id_hat_resolution and self.id_hat_resolution < 32:
            raise ConfigError(f"id_hat_resolution must be 0 (the crop's) or >= 32 px, got {self.id_hat_resolution}")
        if self.resolution < 32:
            raise ConfigError(f"joint stage resolution must be >= 32 px, got {self.resolution}")
        if not 0 < self.pixel_keep <= 1:
            raise ConfigError(f"pixel_keep must be in (0, 1], got {self.pixel_keep}")
        if min(asdict(self.rates).values()) < 0 or min(asdict(self.weights).values()) < 0:
            raise ConfigError("joint stage weights and learning rates must be >= 0")


@dataclass
class JointStageResult:
    """Output of `JointStage.run`.

    params: fitted `FitParams` (image camera; focal and principal as given). latent: (B, D) texture latent;
    lighting: (B, 9, 3) SH; gain, offset: (B, 3); texture: (B, 3, Hu, Wu) the model texture of the latent.
    history: one dict per iteration, term -> B values (the weighted terms' raw values, ``total``,
    ``reprojection_px``, ``lr_scale``), the last entry the returned state. stop_reason: per image
    ("plateau", "iteration_limit", "diverged"); iterations: Adam steps taken; warnings: per image;
    seconds: wall time of the run.
    """

    params: FitParams
    latent: torch.Tensor
    lighting: torch.Tensor
    gain: torch.Tensor
    offset: torch.Tensor
    texture: torch.Tensor
    history: list[dict[str, list[float]]] = field(default_factory=list)
    stop_reason: list[str] = field(default_factory=list)
    iterations: int = 0
    warnings: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0

    def term(self, name: str, index: int = 0) -> list[float]:
        """One term's values over the iterations for image `index`."""
        return [h[name][index] for h in self.history]


class JointStage:
    """The joint stage for one face model and its collaborators (built by the caller; none is created here).

    Args:
        model: the `MorphableModel`.
        renderer: a `Renderer` of the model; its rasterizer renders the crop (at `config.resolution`).
        identity_net: an `IdentityNet` (dlib ResNet, ArcFace) or None (identity, id-hat and content off).
        texture_model: a `TextureModel` in the model's UV layout (PGGAN or linear).
        config: `JointStageConfig`.
        device: where the stage runs.
    """

    def __init__(self, model, renderer: Renderer, identity_net, texture_model,
                 config: JointStageConfig | None = None, device: str | torch.device = "cpu") -> None:
        self.model, self.identity_net, self.texture_model = model, identity_net, texture_model
        self.config = config or JointStageConfig()
        self.device = torch.device(device)
        res = (self.config.resolution, self.config.resolution)
        self.renderer = renderer if tuple(renderer.image_size) == res else Renderer(
            model, renderer.rasterizer, image_size=res, near=renderer.near, far=renderer.far,
            texture_filter=renderer.texture_filter)
        c = self.config
        hat = c.id_hat_resolution or c.resolution
        hat_renderer = self.renderer if hat == c.resolution else Renderer(
            model, renderer.rasterizer, image_size=(hat, hat), near=renderer.near, far=renderer.far,
            texture_filter=renderer.texture_filter)
        self.energy = JointEnergy(model, self.renderer, identity_net, texture_model, content_layers=c.content_layers,
                                  pixel_regions=c.pixel_regions, pixel_keep=c.pixel_keep, lighting_sigma=c.lighting_sigma,
                                  gain_sigma=c.gain_sigma, offset_sigma=c.offset_sigma, id_hat_yaw=c.id_hat_yaw,
                                  id_hat_pitch=c.id_hat_pitch, id_hat_expression=c.id_hat_expression,
                                  id_hat_light=c.id_hat_light, id_hat_renderer=hat_renderer,
                                  hole_colour=c.hole_colour)

    @property
    def weights(self) -> dict[str, float]:
        w = asdict(self.config.weights)
        if self.identity_net is None:
            w.update({k: 0.0 for k in ("identity", "identity_hat", "content")})
        return w

    def with_fixed_identity(self) -> "JointStage":
        """This stage with the shape and texture latent held (their learning rates 0): the second pass of
        GANFit's averaged identity, which refits each photo's expression, pose, light and colour around it."""
        from dataclasses import replace

        c = self.config
        return JointStage(self.model, self.renderer, self.identity_net, self.texture_model,
                          replace(c, rates=replace(c.rates, shape=0.0, latent=0.0)), self.device)

    # ------------------------------------------------------------------ inputs
    def _images(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            raise JointInputError(f"images must be a float (B, H, W, 3) or (B, 3, H, W) tensor, got "
                                  f"{getattr(images, 'shape', type(images).__name__)}")
        if images.shape[1] != 3 and images.shape[-1] == 3:
            images = images.permute(0, 3, 1, 2)
        if images.shape[1] != 3:
            raise JointInputError(f"images must have 3 colour channels, got shape {tuple(images.shape)}")
        lo, hi = (float(x) for x in torch.aminmax(images.detach()))
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
            raise JointInputError(f"images must hold values in [0, 1], found [{lo:g}, {hi:g}] (0-255 data: divide by 255)")
        return images.to(self.device, torch.float32).contiguous()

    def initial_variables(self, params: FitParams, targets: JointTargets, generator: torch.Generator, *,
                          latent: torch.Tensor | None = None, lighting: torch.Tensor | None = None) -> JointVariables:
        """Start: the landmark stage's geometry, the best of `latent_candidates` random latents by the pixel
        term, and the least-squares SH light of the photo (`joint_terms.sh_least_squares`). A given `latent`
        (B, D) replaces the candidates (still bounded by `latent_truncation`; nothing drawn from `generator`),
        a given `lighting` (B, 9, 3) the least-squares light."""
        c, b = self.config, params.batch_size
        p = params.to(self.device, torch.float32)
        light = default_sh(b, device=self.device)
        one = torch.ones(b, 3, device=self.device)
        z0 = self.texture_model.sample(b, generator).to(self.device) if latent is None else latent.to(self.device, torch.float32)
        v = JointVariables(latent=z0, lighting=light, gain=one,
                           offset=torch.zeros_like(one), shape=p.shape, expression=p.expression,
                           rotation=p.rotation, translation=p.translation)
        with torch.no_grad():
            if latent is None and c.latent_candidates > 1:
                best, best_loss = v.latent, None
                for _ in range(c.latent_candidates):
                    z = self.texture_model.sample(b, generator).to(self.device)
                    trial = JointVariables(**{**dict(v.items()), "latent": truncate_latent(z, c.latent_truncation)})
                    loss = self._pixel(trial, targets)
                    better = loss < best_loss if best_loss is not None else torch.ones_like(loss, dtype=torch.bool)
                    best = torch.where(better[:, None], trial.latent, best)
                    best_loss = loss if best_loss is None else torch.minimum(loss, best_loss)
                v.latent = best
            v.latent = truncate_latent(v.latent, c.latent_truncation)
            if lighting is not None:
                v.lighting = lighting.to(self.device, torch.float32).clone()
            elif c.init_lighting:
                img, out = self.energy.render(v, targets)  # lit by the ambient default: the albedo
                mask = self.energy.pixel_mask(out)
                n = out.normals.flatten(1, 2)
                v.lighting = sh_least_squares(img.permute(0, 2, 3, 1).flatten(1, 2), n,
                                              targets.photo.permute(0, 2, 3, 1).flatten(1, 2), mask.flatten(1), light)
        return v

    def _pixel(self, v: JointVariables, t: JointTargets) -> torch.Tensor:
        img, out = self.energy.render(v, t)
        return robust_pixel_loss(self.energy.over(img, out, t.photo), t.photo, self.energy.pixel_mask(out), self.config.pixel_keep)

    # ------------------------------------------------------------------ run
    def run(self, images: torch.Tensor, target_landmarks: torch.Tensor, params: FitParams, vertex_ids: torch.Tensor, *,
            generator: torch.Generator, landmark_weights: torch.Tensor | None = None,
            progress: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
            latent: torch.Tensor | None = None, lighting: torch.Tensor | None = None,
            frame_subject: torch.Tensor | None = None, sliding_jaw: bool = False) -> JointStageResult:
        """Fit B photos from the landmark stage's result.

        Args:
            images: (B, H, W, 3) or (B, 3, H, W) float RGB in [0, 1].
            target_landmarks: (B, 68, 2) detected landmarks, pixels.
            params: the landmark stage's `FitParams` (its focal and principal point are kept).
            vertex_ids: (B, 68) model vertex of each landmark (`LandmarkStageResult.vertex_ids`), kept fixed.
            generator: the fit's random numbers (latent candidates, id-hat poses); same seed, same result.
            landmark_weights: (68,) or (B, 68); default ones with the jaw at `config.jaw_weight`.
            progress: called after every iteration with (iteration, {term: (B,) tensor}).
            latent: (B, D) start texture latent instead of the best random candidate (see `initial_variables`).
            lighting: (B, 9, 3) start SH lighting instead of the least-squares light.
            frame_subject: (B,) long, each photo's person: photos of one person share their shape and texture
                latent (`joint_tie`: the first photo's start values, the summed gradients);
                expression, pose, lighting and colour stay per photo. None: every photo its own person.
            sliding_jaw: the jaw-line landmarks follow the outline as the pose moves (2d landmarks, as the
                landmark stage's dynamic contour); False keeps them on `vertex_ids` (3d landmarks).
        """
        t_start = time.perf_counter()
        c = self.config
        imgs = self._images(images)
        b = imgs.shape[0]
        lms = target_landmarks.to(self.device, torch.float32)
        if lms.shape != (b, 68, 2) or not torch.isfinite(lms).all():
            raise JointInputError(f"target_landmarks must be finite (B={b}, 68, 2), got {tuple(target_landmarks.shape)}")
        if params.batch_size != b or vertex_ids.shape != (b, 68):
            raise JointInputError(f"params and vertex_ids must be for {b} images, got {params.batch_size} and {tuple(vertex_ids.shape)}")
        w_lm = default_landmark_weights(c.jaw_weight) if landmark_weights is None else landmark_weights
        weights = self.weights
        p32 = params.to(self.device, torch.float32)
        targets = self.energy.prepare(imgs, lms, p32, vertex_ids.to(self.device), w_lm.to(self.device, torch.float32),
                                      c.landmark_sigma, default_sh(b, device=self.device), c.crop_margin,
                                      weights["content"] > 0, sliding_jaw=sliding_jaw)
        d = self.texture_model.latent_dim
        if latent is not None and (latent.shape != (b, d) or not torch.isfinite(latent).all()):
            raise JointInputError(f"latent must be finite (B={b}, {d}), got {tuple(latent.shape)}")
        if lighting is not None and (lighting.shape != (b, 9, 3) or not torch.isfinite(lighting).all()):
            raise JointInputError(f"lighting must be finite (B={b}, 9, 3), got {tuple(lighting.shape)}")
        v = self.initial_variables(p32, targets, generator, latent=latent, lighting=lighting)
        tie = None
        if frame_subject is not None:
            if torch.as_tensor(frame_subject).shape != (b,):
                raise JointInputError(f"frame_subject must be ({b},), got {tuple(torch.as_tensor(frame_subject).shape)}")
            tie = SubjectTie(frame_subject).to(self.device)
            v.shape, v.latent = tie.share(v.shape), tie.share(v.latent)
        leaves = {k: t.detach().clone().requires_grad_(True) for k, t in v.items()}
        rates = asdict(c.rates)
        lr_of = {"latent": rates["latent"], "lighting": rates["lighting"], "gain": rates["colour"],
                 "offset": rates["colour"], "shape": rates["shape"], "expression": rates["expression"],
                 "rotation": rates["rotation"], "translation": rates["translation"]}
        opt = torch.optim.Adam([{"params": [leaves[k]], "lr": lr_of[k], "name": k} for k in leaves])
        runner = JointLoop(self, targets, generator, weights, progress, tie)
        final, reason, steps = runner.optimise(leaves, opt, c)
        result_v, warnings = runner.landmark_guard(final)
        history = runner.history
        # the returned state's terms as the last history entry
        with torch.no_grad():
            runner.record(result_v, runner.evaluate(result_v, with_id_hat=False), runner.lr_scale)
        latent = result_v.latent
        texture = self.texture_model.decode(latent).detach()
        out_params = FitParams(result_v.shape, result_v.expression, result_v.rotation, result_v.translation,
                               p32.focal, p32.principal).to(dtype=params.shape.dtype)
        warnings = [w + runner.warnings for w in warnings]
        return JointStageResult(params=out_params, latent=latent, lighting=result_v.lighting, gain=result_v.gain,
                                offset=result_v.offset, texture=texture, history=history,
                                stop_reason=[reason] * b, iterations=steps, warnings=warnings,
                                seconds=time.perf_counter() - t_start)
