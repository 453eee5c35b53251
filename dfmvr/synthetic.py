"""Synthetic multi-view training samples rendered from the face model, with exact supervision.

Each sample is one random person (shape from the prior N(0, shape_scale^2) in standard deviations, a random
smooth UV texture) seen in V views at yaws spread over [-yaw_spread, yaw_spread] (plus jitter, pitch, roll and
camera offsets), each with its own expression (real photos of a person are not synchronised; set
``shared_expression`` for synchronised rigs as in DF-MVR) and its own random SH lighting, over a random smooth
background. Supervision: the exact coefficients, the projected 68 landmarks, the silhouette and the model's
region masks (the labels a face-parsing network learns from).

Still to come (issue 14): textures from the UV corpus / texture models and backgrounds cut from real photos.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ganfit.fitting.params import FitParams
from ganfit.render.camera import matrix_from_euler, matrix_to_axis_angle
from ganfit.render.renderer import Renderer, make_rasterizer
from ganfit.render.shading import default_sh, sh_directional

__all__ = ["SyntheticConfig", "MultiViewBatch", "SyntheticFaces"]


@dataclass(frozen=True)
class SyntheticConfig:
    """How samples are drawn (plain data).

    image_size: S, square renders. yaw_spread_deg: the views' yaws span [-spread, spread]; yaw_jitter_deg,
    pitch_deg, roll_deg: uniform jitter half-widths. shape_scale, expression_scale: prior std multipliers.
    depth_mm (+- depth_jitter_mm): camera distance to the face's centre (its landmarks' centroid, kept on the
    optical axis up to offset_mm of x/y jitter); focal_factor: focal = factor * S px.
    texture_resolution: UV texture side; ambient: range of the uniform light; light_strength: max directional light.
    shared_expression: one expression for all views of a sample.
    """

    image_size: int = 224
    yaw_spread_deg: float = 50.0
    yaw_jitter_deg: float = 8.0
    pitch_deg: float = 10.0
    roll_deg: float = 6.0
    shape_scale: float = 1.0
    expression_scale: float = 1.0
    depth_mm: float = 700.0
    depth_jitter_mm: float = 60.0
    offset_mm: float = 12.0
    focal_factor: float = 2.6
    texture_resolution: int = 64
    ambient: tuple[float, float] = (0.55, 1.0)
    light_strength: float = 0.5
    shared_expression: bool = False

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "SyntheticConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class MultiViewBatch:
    """B samples of V views, S x S pixels.

    images: (B, V, 3, S, S) in [0, 1]; masks: (B, V, S, S) face coverage in [0, 1];
    regions: (B, V, R, S, S) coverage of the model regions named in `region_names`;
    landmarks: (B, V, 68, 2) pixels (x right, y down); shape: (B, Ks); expression: (B, V, Ke) (std units);
    rotation: (B, V, 3) axis-angle, model to camera; yaw_pitch_roll_deg: (B, V, 3); translation: (B, V, 3) mm;
    focal: (B, V) px; principal: (B, V, 2) px; lighting: (B, V, 9, 3) SH; textures: (B, 3, T, T) UV albedo.
    """

    images: torch.Tensor
    masks: torch.Tensor
    regions: torch.Tensor
    region_names: list[str]
    landmarks: torch.Tensor
    shape: torch.Tensor
    expression: torch.Tensor
    rotation: torch.Tensor
    yaw_pitch_roll_deg: torch.Tensor
    translation: torch.Tensor
    focal: torch.Tensor
    principal: torch.Tensor
    lighting: torch.Tensor
    textures: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.images.shape[1])

    def to(self, device: torch.device | str) -> "MultiViewBatch":
        return MultiViewBatch(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in vars(self).items()})


def _uniform(shape, half_width: float, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=g) * 2 - 1) * half_width


def _smooth_noise(n: int, channels: int, side: int, cells: int, g: torch.Generator) -> torch.Tensor:
    """(n, channels, side, side) band-limited noise: a cells x cells grid of N(0, 1) upsampled bicubically."""
    coarse = torch.randn(n, channels, cells, cells, generator=g)
    return F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=True)


class SyntheticFaces:
    """Draws `MultiViewBatch`es from a `MorphableModel` (with UVs) with a torch rasterizer on the CPU.

    ``sample(batch_size, num_views, generator)``: all randomness comes from `generator`, so a seed repeats a batch.
    """

    def __init__(self, model, config: SyntheticConfig | None = None, *, renderer: Renderer | None = None) -> None:
        self.model = model
        self.config = c = config or SyntheticConfig()
        if model.uv is None:
            raise ValueError(f"face model {model.name!r} has no UV coordinates; synthetic faces need a UV texture")
        mean = torch.as_tensor(model.mean, dtype=torch.float32).reshape(-1, 3)
        self._face_centre = mean[torch.as_tensor(model.landmark_indices)].mean(dim=0)  # (3,) mm, model space
        self.renderer = renderer or Renderer(model, make_rasterizer("torch", "cpu"), image_size=(c.image_size, c.image_size))

    def random_textures(self, n: int, g: torch.Generator) -> torch.Tensor:
        """(n, 3, T, T) smooth skin-like UV albedo: a random tone with low- and mid-frequency variation."""
        t = self.config.texture_resolution
        tone = 0.35 + 0.5 * torch.rand(n, 1, 1, 1, generator=g)
        hue = torch.tensor([1.0, 0.78, 0.66])[None, :, None, None] + 0.06 * torch.randn(n, 3, 1, 1, generator=g)
        shade = 1.0 + 0.12 * _smooth_noise(n, 1, t, 4, g) + 0.05 * _smooth_noise(n, 1, t, 16, g)  # brightness, all channels
        tex = tone * hue * shade + 0.02 * _smooth_noise(n, 3, t, 6, g)
        return tex.clamp(0.0, 1.0)

    def random_lighting(self, n: int, g: torch.Generator) -> torch.Tensor:
        """(n, 9, 3) SH radiance: a uniform light in `ambient` plus a white directional light from the front half."""
        c = self.config
        lo, hi = c.ambient
        ambient = lo + (hi - lo) * torch.rand(n, generator=g)
        direction = torch.randn(n, 3, generator=g)
        direction[:, 2] = direction[:, 2].abs() + 0.3
        strength = c.light_strength * torch.rand(n, 1, generator=g) * (0.85 + 0.3 * torch.rand(n, 3, generator=g))
        return default_sh(n) * ambient[:, None, None] + sh_directional(direction, strength)

    def random_backgrounds(self, n: int, g: torch.Generator) -> torch.Tensor:
        """(n, 3, S, S) a random colour with a smooth gradient and texture."""
        s = self.config.image_size
        base = torch.rand(n, 3, 1, 1, generator=g)
        return (base + 0.25 * _smooth_noise(n, 3, s, 3, g) + 0.08 * _smooth_noise(n, 3, s, 12, g)).clamp(0.0, 1.0)

    def random_poses(self, b: int, v: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, V, 3) yaw/pitch/roll degrees (yaws spread over the views) and (B, V, 3) translations in mm."""
        c = self.config
        spread = torch.linspace(-c.yaw_spread_deg, c.yaw_spread_deg, v) if v > 1 else torch.zeros(1)
        yaw = spread[None].expand(b, v) + _uniform((b, v), c.yaw_jitter_deg, g)
        ypr = torch.stack([yaw, _uniform((b, v), c.pitch_deg, g), _uniform((b, v), c.roll_deg, g)], dim=-1)
        trans = torch.stack([_uniform((b, v), c.offset_mm, g), _uniform((b, v), c.offset_mm, g),
                             -c.depth_mm + _uniform((b, v), c.depth_jitter_mm, g)], dim=-1)
        return ypr, trans

    def sample(self, batch_size: int, num_views: int, generator: torch.Generator) -> MultiViewBatch:
        """Render `batch_size` people in `num_views` views each (see the module doc)."""
        if batch_size < 1 or num_views < 1:
            raise ValueError(f"need batch_size >= 1 and num_views >= 1, got {batch_size}, {num_views}")
        c, m, g = self.config, self.model, generator
        b, v, s = batch_size, num_views, c.image_size
        shape = c.shape_scale * torch.randn(b, m.num_shape, generator=g)
        expr_draws = 1 if c.shared_expression else v
        expression = (c.expression_scale * torch.randn(b, expr_draws, m.num_expression, generator=g)).expand(b, v, -1)
        textures = self.random_textures(b, g)
        ypr, translation = self.random_poses(b, v, g)
        lighting = self.random_lighting(b * v, g).reshape(b, v, 9, 3)
        backgrounds = self.random_backgrounds(b * v, g)
        matrix = matrix_from_euler(ypr)
        rotation = matrix_to_axis_angle(matrix)
        # centre the face: the mean face's landmark centroid goes to (jitter_x, jitter_y, -depth) in camera space
        translation = translation - matrix @ self._face_centre
        focal = torch.full((b, v), c.focal_factor * s)
        principal = torch.full((b, v, 2), s / 2.0)
        params = FitParams(shape=shape[:, None].expand(b, v, -1).reshape(b * v, -1),
                           expression=expression.reshape(b * v, -1), rotation=rotation.reshape(b * v, 3),
                           translation=translation.reshape(b * v, 3), focal=focal.reshape(-1), principal=principal.reshape(-1, 2))
        with torch.no_grad():
            out = self.renderer.render(params, texture=textures.repeat_interleave(v, dim=0), lighting=lighting.reshape(b * v, 9, 3))
        alpha = out.alpha[:, None]
        images = (out.image.permute(0, 3, 1, 2) + (1.0 - alpha) * backgrounds).clamp(0.0, 1.0)
        names = sorted(out.regions)
        regions = (torch.stack([out.regions[n] for n in names], dim=1) if names else torch.zeros(b * v, 0, s, s))
        return MultiViewBatch(
            images=images.reshape(b, v, 3, s, s), masks=out.alpha.reshape(b, v, s, s),
            regions=regions.reshape(b, v, len(names), s, s), region_names=names,
            landmarks=out.landmarks.reshape(b, v, -1, 2), shape=shape, expression=expression.contiguous(),
            rotation=rotation, yaw_pitch_roll_deg=ypr, translation=translation, focal=focal, principal=principal,
            lighting=lighting, textures=textures,
        )
