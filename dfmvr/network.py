"""The DF-MVR network (Zhao et al. 2022): MulEn-Unet view encoders, deep fusion with attention-gated skips and a
RedNet-style involution head regressing the face model's coefficients.

Differences from the paper, by design (issue 14): the encoder's weights are shared across views, and the views
are fused by order-invariant pooling (mean and/or max) instead of concatenation, so any number of views works
and permuting the views permutes the per-view outputs only; expression is per view (real photos of one person
are not synchronised); the texture is a latent of configurable size.

Data flow, for B samples of V views:
``views (B, V, 3[+P], H, W) -> shared encoder -> per-level features (B*V, C_l, H_l, W_l)
-> ViewFusion per level -> decoder (upsample, attention-gated fused skips) -> U (B, C_k, H_k, W_k)
-> per view: [U, gate(view feature, U)] -> involution stages -> h_v (B, V, D)
-> identity = MLP(mean/max_v h_v) -> shape, texture; per view MLP([h_v, identity]) -> pose, light, expression``
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from ganfit.render.shading import default_sh

from .blocks import AttentionGate, ConvBlock, InvolutionBottleneck, ViewFusion, fuse_views

__all__ = ["DFMVRConfig", "DFMVROutput", "DFMVRNet"]

_ROTATION_SIZE = {"6d": 6, "axis_angle": 3}


@dataclass(frozen=True)
class DFMVRConfig:
    """Network options (plain data: `to_dict` / `from_dict`).

    num_shape, num_expression: Ks, Ke of the face model (`for_model` fills them in); texture_dim: texture latent size.
    parsing_channels: P extra input channels (face-parsing probabilities), 0 for none.
    input_size: the side the network is meant for (any size works; the shipped weights are trained at it).
    encoder_widths: channels per encoder level; level 0 follows a stem of stride `stem_stride`, each further
        level halves the resolution. decoder_level: the level the decoder stops at (its output U's resolution).
    head_widths, head_blocks: RedNet stages (channels, number of involution bottlenecks); each stage starts
        with stride 2. head_expansion, involution_kernel, group_channels: RedNet's bottleneck ratio, K and
        channels per involution group.
    fusion: "mean", "max" or "mean_max" (order-invariant pooling over views).
    rotation: "6d" (Zhou et al. 2019) or "axis_angle"; depth_mm, translation_scale_mm: the translation is
        (0, 0, -depth_mm) + translation_scale_mm * the network's output.
    """

    num_shape: int = 40
    num_expression: int = 10
    texture_dim: int = 64
    parsing_channels: int = 0
    input_size: int = 224
    encoder_widths: tuple[int, ...] = (16, 24, 48, 96)
    stem_stride: int = 2
    decoder_level: int = 1
    head_widths: tuple[int, ...] = (64, 128)
    head_blocks: tuple[int, ...] = (1, 1)
    head_expansion: int = 2
    involution_kernel: int = 7
    group_channels: int = 16
    mlp_width: int = 128
    fusion: str = "mean_max"
    rotation: str = "6d"
    depth_mm: float = 700.0
    translation_scale_mm: float = 100.0

    def __post_init__(self) -> None:
        if self.rotation not in _ROTATION_SIZE:
            raise ValueError(f"rotation must be one of {sorted(_ROTATION_SIZE)}, got {self.rotation!r}")
        if not 0 <= self.decoder_level < len(self.encoder_widths):
            raise ValueError(f"decoder_level {self.decoder_level} must index encoder_widths {self.encoder_widths}")
        if len(self.head_widths) != len(self.head_blocks) or min(self.head_blocks, default=1) < 1:
            raise ValueError(f"head_widths {self.head_widths} and head_blocks {self.head_blocks} must pair up, >= 1 block each")
        fuse_views(torch.zeros(1, 1, 1), self.fusion)

    # ---------------------------------------------------------------- presets
    @classmethod
    def small(cls, **overrides) -> "DFMVRConfig":
        """The default: trains on a CPU, about 0.5 M parameters."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> "DFMVRConfig":
        """For tests and smoke runs at 32-64 px."""
        base = dict(input_size=64, encoder_widths=(8, 16, 24), stem_stride=2, decoder_level=1, head_widths=(32,),
                    head_blocks=(1,), involution_kernel=3, group_channels=8, mlp_width=64, texture_dim=16)
        return cls(**{**base, **overrides})

    @classmethod
    def paper(cls, **overrides) -> "DFMVRConfig":
        """Published sizes, as far as they could be determined here. MulEn-Unet follows U-Net / Attention U-Net
        widths (64-128-256-512-1024, full-resolution level 0) and the regressor is RedNet-50 (stages of 3, 4, 6, 3
        involution bottlenecks, 256-2048 channels, expansion 4, K = 7, 16 channels per group) at 224 x 224.
        Not confirmed from the paper's text in this repository (no copy of it or its code was reachable): the
        exact encoder widths, where the decoder hands over to the regressor (taken as level 1, 112 x 112) and
        the regressor's stem; the paper concatenates exactly three views where this pools any number."""
        base = dict(encoder_widths=(64, 128, 256, 512, 1024), stem_stride=1, decoder_level=1,
                    head_widths=(256, 512, 1024, 2048), head_blocks=(3, 4, 6, 3), head_expansion=4,
                    involution_kernel=7, group_channels=16, mlp_width=1024, texture_dim=512, fusion="mean_max")
        return cls(**{**base, **overrides})

    @classmethod
    def for_model(cls, model, preset: str = "small", **overrides) -> "DFMVRConfig":
        """A preset ("small", "tiny", "paper") sized for a `MorphableModel`'s shape and expression bases."""
        make = {"small": cls.small, "tiny": cls.tiny, "paper": cls.paper}.get(preset)
        if make is None:
            raise ValueError(f"unknown DF-MVR preset {preset!r} (use 'small', 'tiny' or 'paper')")
        return make(**{"num_shape": model.num_shape, "num_expression": model.num_expression, **overrides})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "DFMVRConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DF-MVR config keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class DFMVROutput:
    """The network's coefficients for B samples of V views.

    shape: (B, Ks) shared identity, in standard deviations; texture: (B, Kt) shared texture latent.
    expression: (B, V, Ke) in standard deviations; rotation: (B, V, 6) 6D or (B, V, 3) axis-angle, model to camera;
    translation: (B, V, 3) millimetres, camera space; lighting: (B, V, 9, 3) SH radiance, camera space.
    """

    shape: torch.Tensor
    texture: torch.Tensor
    expression: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    lighting: torch.Tensor

    @property
    def num_views(self) -> int:
        return int(self.expression.shape[1])

    def per_view_shape(self) -> torch.Tensor:
        """(B*V, Ks): the shared identity repeated for each view (view-major within a sample)."""
        return self.shape[:, None].expand(-1, self.num_views, -1).reshape(-1, self.shape.shape[-1])


class _Encoder(nn.Module):
    """Shared view encoder: (N, Cin, H, W) -> [level features (N, C_l, H_l, W_l)]."""

    def __init__(self, cin: int, widths: tuple[int, ...], stem_stride: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList([ConvBlock(cin, widths[0], stem_stride)])
        self.levels.extend(ConvBlock(a, b, 2) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for level in self.levels:
            x = level(x)
            out.append(x)
        return out


class DFMVRNet(nn.Module):
    """MulEn-Unet + RedNet head (see the module doc). ``forward(views, parsing=None) -> DFMVROutput``.

    views: (B, V, 3, H, W) RGB in [0, 1], any V >= 1; parsing: (B, V, P, H, W) when config.parsing_channels = P > 0.
    """

    def __init__(self, config: DFMVRConfig) -> None:
        super().__init__()
        self.config = c = config
        w = c.encoder_widths
        self.encoder = _Encoder(3 + c.parsing_channels, w, c.stem_stride)
        self.fusion = nn.ModuleList(ViewFusion(width, c.fusion) for width in w[c.decoder_level:])  # levels the decoder uses
        self.gates = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in range(len(w) - 2, c.decoder_level - 1, -1):  # coarse to fine
            self.gates.append(AttentionGate(w[level], w[level + 1]))
            self.up_blocks.append(ConvBlock(w[level] + w[level + 1], w[level]))
        k = w[c.decoder_level]
        self.view_gate = AttentionGate(k, k)
        stages: list[nn.Module] = []
        cin = 2 * k
        for width, blocks in zip(c.head_widths, c.head_blocks):
            for i in range(blocks):
                stages.append(InvolutionBottleneck(cin, width, stride=2 if i == 0 else 1, expansion=c.head_expansion,
                                                   kernel_size=c.involution_kernel, group_channels=c.group_channels))
                cin = width
        self.head = nn.Sequential(*stages)
        d, m = cin, c.mlp_width
        self.identity_mlp = nn.Sequential(nn.Linear(2 * d, m), nn.ReLU(inplace=True))
        self.identity_out = nn.Linear(m, c.num_shape + c.texture_dim)
        self._view_sizes = (_ROTATION_SIZE[c.rotation], 3, 27, c.num_expression)
        self.view_mlp = nn.Sequential(nn.Linear(d + m, m), nn.ReLU(inplace=True))
        self.view_out = nn.Linear(m, sum(self._view_sizes))
        for layer in (self.identity_out, self.view_out):  # start near the prior mean and the default pose/light
            nn.init.normal_(layer.weight, std=1e-2)
            nn.init.zeros_(layer.bias)

    def forward(self, views: torch.Tensor, parsing: torch.Tensor | None = None) -> DFMVROutput:
        c = self.config
        if views.ndim != 5 or views.shape[2] != 3:
            raise ValueError(f"views must be (B, V, 3, H, W) RGB in [0, 1], got {tuple(views.shape)}")
        b, v, _, h, w = views.shape
        x = views - 0.5
        if c.parsing_channels:
            if parsing is None or parsing.shape != (b, v, c.parsing_channels, h, w):
                got = None if parsing is None else tuple(parsing.shape)
                raise ValueError(f"this network takes parsing maps (B={b}, V={v}, P={c.parsing_channels}, {h}, {w}), got {got}")
            x = torch.cat([x, parsing.to(x.dtype)], dim=2)
        elif parsing is not None:
            raise ValueError("this network was configured without a parsing channel (parsing_channels=0)")

        feats = self.encoder(x.reshape(b * v, x.shape[2], h, w))  # per level (B*V, C, h, w)
        fused = [f(e.reshape(b, v, *e.shape[1:])) for f, e in zip(self.fusion, feats[c.decoder_level:])]
        u = fused[-1]
        for gate, block, skip in zip(self.gates, self.up_blocks, reversed(fused[:-1])):
            u = nn.functional.interpolate(u, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            u = block(torch.cat([u, gate(skip, u)], dim=1))
        own = feats[c.decoder_level]  # (B*V, C, h, w): each view's own features, gated by the fused map
        u_views = u[:, None].expand(-1, v, -1, -1, -1).reshape(own.shape)
        hv = self.head(torch.cat([u_views, self.view_gate(own, u_views)], dim=1)).mean(dim=(2, 3)).reshape(b, v, -1)

        ident = self.identity_mlp(fuse_views(hv, "mean_max"))  # (B, m)
        shape, texture = self.identity_out(ident).split([c.num_shape, c.texture_dim], dim=-1)
        per = self.view_out(self.view_mlp(torch.cat([hv, ident[:, None].expand(-1, v, -1)], dim=-1)))
        rot, trans, light, expr = per.split(self._view_sizes, dim=-1)
        if c.rotation == "6d":
            rot = rot + rot.new_tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        trans = trans * c.translation_scale_mm + trans.new_tensor([0.0, 0.0, -c.depth_mm])
        light = light.reshape(b, v, 9, 3) + default_sh(1, device=light.device, dtype=light.dtype)[None]
        return DFMVROutput(shape=shape, texture=texture, expression=expr, rotation=rot, translation=trans, lighting=light)
