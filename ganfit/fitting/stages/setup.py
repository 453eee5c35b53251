"""Building the joint stage's collaborators from names: the renderer, the identity network and the texture
model. The stage itself never builds a concrete backend (DESIGN.md, "Stages"); the `Fitter` calls this once.
"""
from __future__ import annotations

import logging

import torch

from .joint import JointStage, JointStageConfig

log = logging.getLogger(__name__)

IDENTITY_CHOICES = ("dlib", "arcface", "none")


def build_joint_stage(model, config: JointStageConfig, *, identity: str = "dlib", identity_weights: str | None = None,
                      texture_model: str = "default", device: torch.device | str = "cpu") -> JointStage:
    """A `JointStage` for `model` with its collaborators made from names.

    Args:
        model: the `MorphableModel`.
        config: the stage's settings.
        identity: "dlib" (offline default: dlib's face-descriptor ResNet), "arcface" (insightface packs found
            where insightface keeps them, or `identity_weights`), or "none" (identity, id-hat and content off).
        identity_weights: a weights file or folder for the identity network (None: its default).
        texture_model: "default" (the shipped texture GAN) or a `.pt` (GAN) / `.npz` (PCA) file in the model's
            UV layout.
        device: where everything runs.
    Raises:
        ConfigError: an unknown identity network. AssetError / ModelFormatError: missing or mismatched weights.
    """
    from ...errors import ConfigError
    from ...model.texture.registry import load_texture_model
    from ...render.renderer import Renderer, make_rasterizer

    if identity not in IDENTITY_CHOICES:
        raise ConfigError(f"identity must be one of {', '.join(IDENTITY_CHOICES)}; got {identity!r}")
    device = torch.device(device)
    net = None
    if identity != "none":
        from ...perception.identity import make_identity_net

        net = make_identity_net(identity, identity_weights, device=device)
    texture = load_texture_model(texture_model, device=str(device), face_model=model)
    renderer = Renderer(model, make_rasterizer("auto", device), image_size=(config.resolution, config.resolution))
    log.info("joint stage: identity %s, texture model %s, rasterizer %s", identity, texture_model,
             type(renderer.rasterizer).__name__)
    return JointStage(model, renderer, net, texture, config, device=device)
