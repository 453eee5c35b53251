"""Progressive GAN UV texture model (Karras et al., "Progressive Growing of GANs for Improved Quality,
Stability, and Variation", ICLR 2018), used by GANFit (Gecer et al., CVPR 2019) as the texture prior.

Architecture (paper, section 2-4 and table 2):

- **Generator**: latent z (D = 512 by default) -> pixel norm -> dense to a (C, h0, w0) block (h0 = w0 = 4
  for square textures) -> 3x3 conv; then one block per doubling of resolution: nearest-neighbour 2x
  upsampling, two 3x3 convs. Every conv is followed by leaky ReLU (0.2) and **pixel norm** (section 4.2).
  Each level has a 1x1 "toRGB" conv (linear, no activation).
- **Discriminator**: the mirror image: a 1x1 "fromRGB" conv per level, blocks of two 3x3 convs and 2x2
  average pooling, then the **minibatch standard deviation** layer (section 3: one extra feature map with
  the average over features and pixels of the per-location std across a group of samples), a 3x3 conv,
  and two dense layers to one score.
- **Equalized learning rate** (section 4.1): every weight is stored as N(0, 1) and multiplied at run time
  by He's constant ``gain / sqrt(fan_in)`` (gain sqrt(2) before leaky ReLU; 1 for the linear toRGB conv
  and the discriminator's output layer), so Adam's per-parameter step is equally large for every layer.
- **Fade-in** (section 2, figure 2): while a new level ``k`` is introduced, the output is
  ``(1 - alpha) * upsample(toRGB_{k-1}(h_{k-1})) + alpha * toRGB_k(block_k(h_{k-1}))``, alpha rising 0 -> 1
  during training (the discriminator fades in its new fromRGB + block the same way).
- Channel schedule: ``min(fmap_max, fmap_base / 2**stage)`` with stage = log2(side) - 1 (side = the short
  side of the level's resolution), at least `fmap_min`: fmap_base 8192, fmap_max 512 gives 512 channels up
  to 32x32, 256 at 64, 128 at 128, 64 at 256, 32 at 512. Tests use tiny widths (fmap_base 64, max 32).

Resolution: any power-of-two multiple of the base block, up to 512 (``max_resolution`` 256 gives 256x256;
a non-square (H, W) such as (256, 512) gives a (4, 8) base block). UV textures in ganfit are square.

`TexturePGGAN` wraps a trained `Generator` as a `TextureModel` (see `base.py`):

- ``decode(z) = clamp((G(z) + 1) / 2, 0, 1)``. The generator was trained against real textures scaled to
  [-1, 1] with a linear toRGB (as in the paper), so its in-distribution outputs already lie in that range
  and the clamp is the identity there. A tanh would instead compress colours the network learned to
  reproduce linearly (tanh(0.9) = 0.72: highlights and dark hair would darken/lighten). The clamp's zero
  gradient touches only texels already outside the valid colour range.
- ``latent_prior(z) = 0.5 * (||z|| - sqrt(D))**2`` (a *norm* prior). The generator pixel-normalises its
  latent, so G(z) = G(c z) for every c > 0: it sees only the direction of z. Under z ~ N(0, I) the
  direction is uniform (every direction is equally likely) and the norm concentrates at ~sqrt(D). The
  classic 0.5 ||z||**2 therefore cannot prefer one texture over another; its gradient is purely radial
  and only shrinks z towards 0, where the pixel norm's 1/||z|| blows up (ill-conditioned steps for the
  fitter's Adam and, at z = 0, NaN-prone). The norm prior keeps z on the shell where the prior's mass
  lies, which keeps the optimisation well conditioned and the latent a typical sample, without
  pretending to a preference between textures that the model does not have.
- ``sample(n)`` draws z ~ N(0, I).

Files: `TexturePGGAN.save` writes one ``torch.save`` file holding a dict of tensors (the generator's state)
plus JSON-able metadata (config, resolution, level and alpha reached, UV layout id, training metadata);
`TexturePGGAN.load` reads it with ``torch.load(weights_only=True)`` (no pickled code). It also accepts
a training checkpoint written by `ganfit.training.texture_gan` (it takes the smoothed generator from it).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..._atomic import atomic_open
from ...errors import ConfigError, ModelFormatError

__all__ = [
    "Discriminator",
    "EqualizedConv2d",
    "EqualizedLinear",
    "Generator",
    "GeneratorConfig",
    "MinibatchStdDev",
    "PixelNorm",
    "TexturePGGAN",
    "FORMAT",
    "TRAIN_FORMAT",
    "load_checkpoint_file",
]

FORMAT = "ganfit-pggan-generator"
"""The ``format`` entry of files written by `TexturePGGAN.save`."""
TRAIN_FORMAT = "ganfit-pggan-train"
"""The ``format`` entry of training checkpoints (`ganfit.training.texture_gan`)."""
FORMAT_VERSION = 1
MAX_SIDE = 512
LRELU_SLOPE = 0.2
HE_GAIN = math.sqrt(2.0)


# --------------------------------------------------------------------------- layers
def _scaled_weight(layer: nn.Module) -> torch.Tensor:
    """``layer.weight * layer.scale``; when the weight is frozen (requires_grad False, as in fitting) the product
    is cached until the weight changes (its storage or version), the same numbers without a multiply of the whole
    weight on every call (about a fifth of a 32 px generator's forward and backward on a CPU)."""
    w = layer.weight
    if w.requires_grad or torch.is_inference_mode_enabled():
        return w * layer.scale
    key = (w.data_ptr(), w._version, w.dtype, w.device, layer.scale)
    cached = layer.__dict__.get("_scaled_cache")
    if cached is None or cached[0] != key:
        cached = (key, w.detach() * layer.scale)
        layer.__dict__["_scaled_cache"] = cached
    return cached[1]


class EqualizedLinear(nn.Module):
    """Dense layer with equalized learning rate: weight ~ N(0, 1) stored, scaled by
    ``gain / sqrt(in_features)`` at run time. x: (B, in) -> (B, out)."""

    def __init__(self, in_features: int, out_features: int, gain: float = HE_GAIN) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _scaled_weight(self), self.bias)


class EqualizedConv2d(nn.Module):
    """Conv with equalized learning rate: weight ~ N(0, 1) stored, scaled by
    ``gain / sqrt(in_channels * k * k)`` at run time; 'same' padding. x: (B, Cin, H, W) -> (B, Cout, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = HE_GAIN) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, _scaled_weight(self), self.bias, padding=self.padding)


class PixelNorm(nn.Module):
    """Pixelwise feature vector normalisation (paper eq. in section 4.2):
    ``b = a / sqrt(mean_c(a**2) + eps)``, so every pixel's feature vector has unit mean square. x: (B, C, ...)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + self.eps)


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation (paper section 3): appends one feature map.

    The batch is split into groups of ``G = min(group_size, B)`` samples (B must be divisible by G;
    sample i belongs to group ``i % (B // G)``). For each group: the std over the group of every feature
    at every pixel (``sqrt(var + 1e-8)``, biased variance), averaged over features and pixels, gives one
    value, replicated over the group's samples and all pixels. x: (B, C, H, W) -> (B, C + 1, H, W).
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        self.group_size = group_size
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(self.group_size, b)
        if b % g:
            g = math.gcd(b, g)  # largest group size that divides the batch
        y = x.reshape(g, b // g, c, h, w).float()
        y = y - y.mean(dim=0, keepdim=True)
        y = torch.sqrt(y.square().mean(dim=0) + self.eps)  # (B/G, C, H, W)
        y = y.mean(dim=(1, 2, 3)).to(x.dtype)  # (B/G,)
        y = y.reshape(1, b // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(b, 1, h, w)
        return torch.cat([x, y], dim=1)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling. (B, C, H, W) -> (B, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling. (B, C, H, W) -> (B, C, H/2, W/2)."""
    return F.avg_pool2d(x, 2)


# --------------------------------------------------------------------------- config
def _as_hw(resolution) -> tuple[int, int]:
    if isinstance(resolution, int):
        return (resolution, resolution)
    hw = tuple(int(r) for r in resolution)
    if len(hw) != 2:
        raise ConfigError(f"resolution must be an int or (H, W), got {resolution!r}")
    return hw  # type: ignore[return-value]


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a `Generator` / `Discriminator` pair.

    latent_dim: D. resolution: (H, W) of the highest level; both powers of two, short side >= 4,
        long side <= 512, the base block is (H, W) / 2**levels with the short side 4.
    fmap_base, fmap_max, fmap_min: channels at a level = clamp(fmap_base / 2**stage, fmap_min, fmap_max),
        stage = log2(short side of the level) - 1.
    mbstd_group: group size of the discriminator's minibatch-stddev layer.
    """

    latent_dim: int = 512
    resolution: tuple[int, int] = (256, 256)
    fmap_base: int = 8192
    fmap_max: int = 512
    fmap_min: int = 1
    mbstd_group: int = 4

    def __post_init__(self) -> None:
        h, w = _as_hw(self.resolution)
        object.__setattr__(self, "resolution", (h, w))
        for side in (h, w):
            if side < 4 or side & (side - 1):
                raise ConfigError(f"texture resolution sides must be powers of two >= 4, got {h}x{w}")
        if max(h, w) > MAX_SIDE:
            raise ConfigError(f"texture resolution {h}x{w} is above the supported {MAX_SIDE}x{MAX_SIDE}")
        if self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be positive, got {self.latent_dim}")
        if not (1 <= self.fmap_min <= self.fmap_max) or self.fmap_base < 1:
            raise ConfigError(
                f"need fmap_base >= 1 and 1 <= fmap_min <= fmap_max, got base {self.fmap_base}, "
                f"min {self.fmap_min}, max {self.fmap_max}"
            )
        if self.mbstd_group < 1:
            raise ConfigError(f"mbstd_group must be at least 1, got {self.mbstd_group}")

    @property
    def num_levels(self) -> int:
        """Number of levels; level 0 is the base block, level ``num_levels - 1`` the full resolution."""
        return int(math.log2(min(self.resolution))) - 1

    @property
    def max_level(self) -> int:
        return self.num_levels - 1

    @property
    def base(self) -> tuple[int, int]:
        h, w = self.resolution
        f = 2 ** self.max_level
        return (h // f, w // f)

    def resolution_at(self, level: int) -> tuple[int, int]:
        """(H, W) of the generator's output at `level`."""
        self._check_level(level)
        h0, w0 = self.base
        return (h0 << level, w0 << level)

    def channels_at(self, level: int) -> int:
        stage = int(math.log2(min(self.resolution_at(level)))) - 1
        return int(max(self.fmap_min, min(self.fmap_max, self.fmap_base // (2**stage))))

    def _check_level(self, level: int) -> None:
        if not 0 <= int(level) <= self.max_level:
            raise ConfigError(f"level must be in 0..{self.max_level} for resolution {self.resolution}, got {level}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolution"] = list(self.resolution)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GeneratorConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ModelFormatError(f"unknown generator config fields {sorted(unknown)}")
        d = dict(d)
        if "resolution" in d:
            d["resolution"] = _as_hw(d["resolution"])
        return cls(**d)


# --------------------------------------------------------------------------- networks
class _GBlock(nn.Module):
    """Upsample 2x, conv 3x3, lrelu, pixel norm, conv 3x3, lrelu, pixel norm."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(cin, cout, 3)
        self.conv1 = EqualizedConv2d(cout, cout, 3)
        self.norm = PixelNorm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample2x(x)
        x = self.norm(_lrelu(self.conv0(x)))
        return self.norm(_lrelu(self.conv1(x)))


class _GBase(nn.Module):
    """Pixel-normalised latent -> dense to (C, h0, w0), lrelu, pixel norm, conv 3x3, lrelu, pixel norm."""

    def __init__(self, latent_dim: int, channels: int, base: tuple[int, int]) -> None:
        super().__init__()
        self.base = base
        self.channels = channels
        self.dense = EqualizedLinear(latent_dim, channels * base[0] * base[1])
        self.conv = EqualizedConv2d(channels, channels, 3)
        self.norm = PixelNorm()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(self.norm(z)).reshape(z.shape[0], self.channels, *self.base)
        x = self.norm(_lrelu(x))
        return self.norm(_lrelu(self.conv(x)))


class Generator(nn.Module):
    """Progressive GAN generator.

    Args:
        latent_dim: D (default 512).
        max_resolution: side (int) or (H, W) of the highest level, up to 512.
        fmap_base, fmap_max, fmap_min: channel schedule (see `GeneratorConfig`).
    ``forward(z (B, D), level, alpha) -> (B, 3, H_level, W_level)`` in the training range [-1, 1] (linear
    output, not clamped); ``level`` in 0..max_level, ``alpha`` in [0, 1] the fade-in of ``level``
    (ignored at level 0).
    """

    def __init__(
        self,
        latent_dim: int = 512,
        max_resolution: int | tuple[int, int] = 256,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        fmap_min: int = 1,
        mbstd_group: int = 4,
    ) -> None:
        super().__init__()
        cfg = GeneratorConfig(latent_dim, _as_hw(max_resolution), fmap_base, fmap_max, fmap_min, mbstd_group)
        self.config = cfg
        ch = [cfg.channels_at(k) for k in range(cfg.num_levels)]
        self.base = _GBase(cfg.latent_dim, ch[0], cfg.base)
        self.blocks = nn.ModuleList([_GBlock(ch[k - 1], ch[k]) for k in range(1, cfg.num_levels)])
        self.to_rgb = nn.ModuleList([EqualizedConv2d(c, 3, 1, gain=1.0) for c in ch])

    @classmethod
    def from_config(cls, cfg: GeneratorConfig) -> "Generator":
        return cls(cfg.latent_dim, cfg.resolution, cfg.fmap_base, cfg.fmap_max, cfg.fmap_min, cfg.mbstd_group)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def max_level(self) -> int:
        return self.config.max_level

    def features(self, z: torch.Tensor, level: int) -> torch.Tensor:
        """Features after the block of `level` (no fade): (B, C_level, H_level, W_level)."""
        x = self.base(z)
        for k in range(1, level + 1):
            x = self.blocks[k - 1](x)
        return x

    def forward(self, z: torch.Tensor, level: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latent must be (B, {self.latent_dim}), got {tuple(z.shape)}")
        level = self.max_level if level is None else int(level)
        self.config._check_level(level)
        alpha = float(alpha)
        if level == 0:
            return self.to_rgb[0](self.base(z))
        prev = self.features(z, level - 1)
        x = self.blocks[level - 1](prev)
        new = self.to_rgb[level](x)
        if alpha >= 1.0:
            return new
        old = upsample2x(self.to_rgb[level - 1](prev))
        return old + max(alpha, 0.0) * (new - old)


class _DBlock(nn.Module):
    """Conv 3x3, lrelu, conv 3x3, lrelu, 2x2 average pooling."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(cin, cin, 3)
        self.conv1 = EqualizedConv2d(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _lrelu(self.conv0(x))
        return downsample2x(_lrelu(self.conv1(x)))


class _DFinal(nn.Module):
    """Minibatch stddev, conv 3x3, lrelu, dense, lrelu, dense to one score."""

    def __init__(self, channels: int, base: tuple[int, int], group: int) -> None:
        super().__init__()
        self.mbstd = MinibatchStdDev(group)
        self.conv = EqualizedConv2d(channels + 1, channels, 3)
        self.dense0 = EqualizedLinear(channels * base[0] * base[1], channels)
        self.dense1 = EqualizedLinear(channels, 1, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _lrelu(self.conv(self.mbstd(x)))
        x = _lrelu(self.dense0(x.flatten(1)))
        return self.dense1(x)


class Discriminator(nn.Module):
    """Progressive GAN discriminator, the mirror image of `Generator` (same `GeneratorConfig`).

    ``forward(images (B, 3, H_level, W_level), level, alpha) -> (B,)`` raw scores (logits).
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        ch = [config.channels_at(k) for k in range(config.num_levels)]
        self.from_rgb = nn.ModuleList([EqualizedConv2d(3, c, 1) for c in ch])
        # blocks[k - 1] maps level k (C_k channels) down to level k - 1 (C_{k-1} channels).
        self.blocks = nn.ModuleList([_DBlock(ch[k], ch[k - 1]) for k in range(1, config.num_levels)])
        self.final = _DFinal(ch[0], config.base, config.mbstd_group)

    def forward(self, images: torch.Tensor, level: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        level = self.config.max_level if level is None else int(level)
        self.config._check_level(level)
        want = self.config.resolution_at(level)
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != want:
            raise ValueError(f"discriminator at level {level} needs (B, 3, {want[0]}, {want[1]}), got {tuple(images.shape)}")
        alpha = float(alpha)
        x = _lrelu(self.from_rgb[level](images))
        if level > 0:
            x = self.blocks[level - 1](x)
            if alpha < 1.0:
                old = _lrelu(self.from_rgb[level - 1](downsample2x(images)))
                x = old + max(alpha, 0.0) * (x - old)
            for k in range(level - 1, 0, -1):
                x = self.blocks[k - 1](x)
        return self.final(x).squeeze(1)


# --------------------------------------------------------------------------- texture model
def load_checkpoint_file(path: str | os.PathLike) -> dict:
    """``torch.load(path, weights_only=True)`` with errors a user can act on (ModelFormatError)."""
    p = Path(path)
    if not p.is_file():
        raise ModelFormatError(f"texture model file not found: {p}")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ModelFormatError(f"{p} is not a readable ganfit texture-GAN file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, TRAIN_FORMAT):
        raise ModelFormatError(
            f"{p} is not a ganfit texture-GAN file (expected format {FORMAT!r} or {TRAIN_FORMAT!r}); "
            "write one with `ganfit texture train`"
        )
    return data


class TexturePGGAN(nn.Module):
    """A trained progressive-GAN generator as a `TextureModel`.

    Args:
        generator: the `Generator`.
        uv_layout: `uv_layout_id` of the face model's UV layout the textures belong to.
        level: the level decoded (default: the generator's highest); ``alpha`` its fade-in (1: fully in).
        name: identifier. meta: JSON-able training metadata kept in the file.
    Attributes: name, latent_dim (D), resolution ((H, W) of `decode`'s output), uv_layout.
    """

    def __init__(
        self,
        generator: Generator,
        uv_layout: str,
        *,
        level: int | None = None,
        alpha: float = 1.0,
        name: str = "pggan",
        meta: dict | None = None,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.level = generator.max_level if level is None else int(level)
        generator.config._check_level(self.level)
        self.alpha = float(alpha)
        self.uv_layout = str(uv_layout)
        self.name = str(name)
        self.meta = dict(meta or {})

    @property
    def latent_dim(self) -> int:  # type: ignore[override]
        return self.generator.latent_dim

    @property
    def resolution(self) -> tuple[int, int]:  # type: ignore[override]
        return self.generator.config.resolution_at(self.level)

    def __repr__(self) -> str:
        h, w = self.resolution
        return f"TexturePGGAN(name={self.name!r}, latent_dim={self.latent_dim}, resolution={h}x{w}, uv_layout={self.uv_layout!r})"

    # ------------------------------------------------------------------ TextureModel
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 3, H, W) textures in [0, 1]: ``clamp((G(z) + 1) / 2, 0, 1)`` (see the module doc)."""
        raw = self.generator(latent, self.level, self.alpha)
        return ((raw + 1.0) * 0.5).clamp(0.0, 1.0)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decode(latent)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, D) latents z ~ N(0, I), on the model's device."""
        device = next(self.generator.parameters()).device
        gen_device = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn(int(n), self.latent_dim, generator=generator, device=gen_device)
        return z.to(device)

    def latent_prior(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,) ``0.5 * (||z|| - sqrt(D))**2``: keeps z on the shell of N(0, I)'s typical set
        (the generator sees only z's direction; see the module doc)."""
        norm = torch.linalg.vector_norm(latent, dim=-1)
        return 0.5 * (norm - math.sqrt(self.latent_dim)) ** 2

    # ------------------------------------------------------------------ files
    def to_file_dict(self) -> dict:
        """What `save` writes: tensors + JSON-able entries only."""
        h, w = self.resolution
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "config": self.generator.config.to_dict(),
            "state": {k: v.detach().cpu().clone() for k, v in self.generator.state_dict().items()},
            "resolution": [h, w],
            "level": self.level,
            "alpha": self.alpha,
            "uv_layout": self.uv_layout,
            "meta_json": json.dumps(self.meta, sort_keys=True),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to `path` atomically (one ``torch.save`` file)."""
        with atomic_open(path, "wb") as fh:
            torch.save(self.to_file_dict(), fh)

    @classmethod
    def from_file_dict(cls, data: dict, source: str = "<dict>") -> "TexturePGGAN":
        if data.get("format") == TRAIN_FORMAT:
            if "export" not in data:
                raise ModelFormatError(f"{source}: training checkpoint has no generator entry 'export'")
            data = data["export"]
        if data.get("format") != FORMAT:
            raise ModelFormatError(f"{source}: not a ganfit texture-GAN generator (format {data.get('format')!r})")
        if int(data.get("version", 0)) > FORMAT_VERSION:
            raise ModelFormatError(f"{source}: written by a newer ganfit (format version {data['version']}); upgrade ganfit")
        missing = [k for k in ("config", "state", "level", "uv_layout") if k not in data]
        if missing:
            raise ModelFormatError(f"{source}: texture-GAN file lacks {missing}")
        cfg = GeneratorConfig.from_dict(dict(data["config"]))
        gen = Generator.from_config(cfg)
        try:
            gen.load_state_dict(data["state"])
        except RuntimeError as exc:
            raise ModelFormatError(f"{source}: generator weights do not match its config: {exc}") from exc
        try:
            meta = json.loads(data.get("meta_json", "{}"))
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{source}: unreadable metadata: {exc}") from exc
        return cls(gen, data["uv_layout"], level=int(data["level"]), alpha=float(data.get("alpha", 1.0)),
                   name=str(data.get("name", "pggan")), meta=meta)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        resolution: int | tuple[int, int] | None = None,
        uv_layout: str | None = None,
        device: torch.device | str = "cpu",
    ) -> "TexturePGGAN":
        """Load a file written by `save` (or a training checkpoint).

        resolution, uv_layout: when given, the file must match them, else ModelFormatError naming both.
        The model comes back in eval mode with its weights frozen (``requires_grad`` off): fitting
        optimises the latent only. Call ``model.requires_grad_(True)`` to fine-tune it.
        """
        model = cls.from_file_dict(load_checkpoint_file(path), str(path))
        model._check_compatible(resolution, uv_layout, str(path))
        return model.to(device).eval().requires_grad_(False)

    def load_weights(self, path: str | os.PathLike) -> "TexturePGGAN":
        """Load a file's generator into this model in place. The file must have the same resolution,
        UV layout and architecture, else ModelFormatError naming both."""
        other = self.from_file_dict(load_checkpoint_file(path), str(path))
        other._check_compatible(self.resolution, self.uv_layout, str(path))
        if other.generator.config != self.generator.config:
            raise ModelFormatError(
                f"{path}: generator architecture {other.generator.config.to_dict()} differs from this model's "
                f"{self.generator.config.to_dict()}"
            )
        device = next(self.generator.parameters()).device
        self.generator.load_state_dict({k: v.to(device) for k, v in other.generator.state_dict().items()})
        self.level, self.alpha, self.meta = other.level, other.alpha, other.meta
        return self

    def _check_compatible(self, resolution, uv_layout, source: str) -> None:
        if resolution is not None and tuple(_as_hw(resolution)) != tuple(self.resolution):
            want = _as_hw(resolution)
            raise ModelFormatError(
                f"{source}: texture model resolution {self.resolution[0]}x{self.resolution[1]} does not match "
                f"the expected {want[0]}x{want[1]}"
            )
        if uv_layout is not None and uv_layout != self.uv_layout:
            raise ModelFormatError(
                f"{source}: texture model UV layout {self.uv_layout} does not match the expected layout {uv_layout}; "
                "use a texture model trained for this face model"
            )
