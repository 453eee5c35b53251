"""Options and result of texture-GAN training (`ganfit.training.texture_gan.train`): `TrainConfig`, with
the progressive growth schedule it implies (`TrainConfig.phase`), and `TrainResult`."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config_file import read_options_file
from ..errors import ConfigError
from ..model.texture.pggan import GeneratorConfig

__all__ = ["TrainConfig", "TrainResult", "ARCHITECTURE_FIELDS"]

ARCHITECTURE_FIELDS = ("resolution", "latent_dim", "fmap_base", "fmap_max", "fmap_min", "mbstd_group")
#: options that may change on resume without changing the weights
HARMLESS_FIELDS = frozenset({"out", "total_kimg", "swd_every_kimg", "swd_images", "swd_descriptors", "swd_data", "swd_split",
                             "sample_every_kimg", "checkpoint_every_kimg", "sample_grid", "name"})

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Options of `train`.

    data: folder of UV textures (see the module doc). out: run folder (created).
    data_split: train only on the manifest items of this split ("train"; None: every texture).
    resolution: side of the square textures the final level produces (power of two, 8..512).
    latent_dim, fmap_base, fmap_max, fmap_min, mbstd_group: architecture (see `GeneratorConfig`).
    batch_size: minibatch size; batch_size_by_resolution: overrides by level side, e.g. {256: 8, 512: 4}.
    fade_kimg / stable_kimg: thousands of real images shown per fade-in / stabilisation phase.
    total_kimg: training length in thousands of images (default: the end of the growth schedule).
    lr, betas, adam_eps: Adam settings of both networks.
    r1_gamma, r1_interval: R1 weight gamma (penalty gamma/2 * E||grad D(real)||^2) and its lazy interval.
    ema_kimg, ema_rampup: half-life (kimg) of the generator average; its ramp-up fraction (None: none).
    mirror, color_jitter: augmentation (horizontal flip with probability 1/2; gain/offset amplitude).
    seed: seeds initialisation, data order, augmentation and latents.
    swd_every_kimg: SWD interval (0: never); swd_images: reals held for it (a fixed subset of `data`, or
        of `swd_data` when given); swd_descriptors: neighbourhoods per image and level; swd_split: the
        manifest split of `swd_data` (or, without it, of `data`) the SWD reals come from ("validation").
    sample_every_kimg, checkpoint_every_kimg: grid-PNG and checkpoint intervals (0: only at the end).
    sample_grid: the grid's side (sample_grid**2 fixed latents).
    device: "auto" (CUDA when present), "cpu", "cuda", "cuda:N".
    mixed_precision: float16 autocast + GradScaler on CUDA (ignored on CPU).
    uv_layout: UV layout id of the textures (default: the dataset manifest's).
    name: model name written into the exported file.
    """

    data: str = ""
    data_split: str | None = None
    out: str = "runs/texture"
    resolution: int = 256
    latent_dim: int = 512
    fmap_base: int = 8192
    fmap_max: int = 512
    fmap_min: int = 1
    mbstd_group: int = 4
    batch_size: int = 16
    batch_size_by_resolution: dict[int, int] = field(default_factory=lambda: {256: 8, 512: 4})
    fade_kimg: float = 600.0
    stable_kimg: float = 600.0
    total_kimg: float | None = None
    lr: float = 1e-3
    betas: tuple[float, float] = (0.0, 0.99)
    adam_eps: float = 1e-8
    r1_gamma: float = 10.0
    r1_interval: int = 4
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    mirror: bool = True
    color_jitter: float = 0.05
    seed: int = 0
    swd_every_kimg: float = 50.0
    swd_images: int = 256
    swd_descriptors: int = 128
    swd_data: str | None = None
    swd_split: str | None = None
    sample_every_kimg: float = 20.0
    checkpoint_every_kimg: float = 20.0
    sample_grid: int = 4
    device: str = "auto"
    mixed_precision: bool = True
    uv_layout: str | None = None
    name: str = "pggan"

    def __post_init__(self) -> None:
        self.batch_size_by_resolution = {int(k): int(v) for k, v in dict(self.batch_size_by_resolution or {}).items()}
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.generator_config()  # validates the architecture
        if self.resolution < 8:
            raise ConfigError(f"resolution must be at least 8 (two levels), got {self.resolution}")
        sizes = [self.batch_size, *self.batch_size_by_resolution.values()]
        if min(sizes) < 1:
            raise ConfigError(f"batch sizes must be at least 1, got {sizes}")
        for name in ("fade_kimg", "stable_kimg", "swd_every_kimg", "sample_every_kimg", "checkpoint_every_kimg", "ema_kimg"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.stable_kimg <= 0 and self.fade_kimg <= 0:
            raise ConfigError("fade_kimg and stable_kimg cannot both be 0")
        if self.total_kimg is not None and self.total_kimg <= 0:
            raise ConfigError(f"total_kimg must be positive, got {self.total_kimg}")
        if self.r1_interval < 1 or self.r1_gamma < 0:
            raise ConfigError(f"need r1_interval >= 1 and r1_gamma >= 0, got {self.r1_interval}, {self.r1_gamma}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr must be in (0, 1), got {self.lr}")
        if self.sample_grid < 1 or self.swd_images < 2 or self.swd_descriptors < 1:
            raise ConfigError("sample_grid must be >= 1, swd_images >= 2 and swd_descriptors >= 1")

    # ------------------------------------------------------------------ derived
    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(self.latent_dim, (self.resolution, self.resolution), self.fmap_base, self.fmap_max,
                               self.fmap_min, self.mbstd_group)

    def batch_at(self, side: int) -> int:
        """Minibatch size for a level of side `side`."""
        return self.batch_size_by_resolution.get(int(side), self.batch_size)

    def images_of(self, kimg: float) -> int:
        """`kimg` thousand images as a whole number of images."""
        return int(round(kimg * 1000))

    @property
    def schedule_images(self) -> int:
        """Images until the last level is faded in and stabilised."""
        levels = self.generator_config().max_level
        return self.images_of(self.stable_kimg) + levels * (self.images_of(self.fade_kimg) + self.images_of(self.stable_kimg))

    @property
    def total_images(self) -> int:
        return self.images_of(self.total_kimg) if self.total_kimg is not None else self.schedule_images

    def phase(self, images_seen: int) -> tuple[int, float]:
        """(level, alpha) after `images_seen` real images (see the module doc)."""
        fade, stable = self.images_of(self.fade_kimg), self.images_of(self.stable_kimg)
        t = int(images_seen)
        if t < stable:
            return 0, 1.0
        t -= stable
        for level in range(1, self.generator_config().max_level + 1):
            if t < fade:
                return level, t / fade
            t -= fade
            if t < stable:
                return level, 1.0
            t -= stable
        return self.generator_config().max_level, 1.0

    def check_resume(self, stored: dict[str, Any], source: str | Path) -> None:
        """Check these options against those a run was started with (`stored`, a checkpoint's config).

        Raises ConfigError when an architecture field differs; logs a warning for other changed options
        that change the weights (the run then will not repeat an uninterrupted one exactly).
        """
        for name in ARCHITECTURE_FIELDS:
            if name in stored and stored[name] != getattr(self, name):
                raise ConfigError(
                    f"{source}: the run was started with {name}={stored[name]}, now {name}={getattr(self, name)}; "
                    "resume with the same architecture or use another --out"
                )
        changed = sorted(k for k, v in self.to_dict().items()
                         if k in stored and stored[k] != v and k not in ARCHITECTURE_FIELDS and k not in HARMLESS_FIELDS)
        if changed:
            log.warning("resuming %s with changed options %s (the run will not repeat an uninterrupted one exactly)",
                        source, ", ".join(changed))

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["batch_size_by_resolution"] = {str(k): v for k, v in self.batch_size_by_resolution.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown training options {sorted(unknown)}; known: {', '.join(sorted(cls.__dataclass_fields__))}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a JSON or YAML file of options."""
        data = read_options_file(path, "training config")
        return cls.from_dict(data)


@dataclass
class TrainResult:
    """What `train` returns: where things went and how the run ended."""

    out: Path
    model_path: Path
    step: int
    images_seen: int
    level: int
    alpha: float
    swd_history: list[dict]
    seconds: float


