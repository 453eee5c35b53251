"""Face-recognition networks for GANFit's identity and content losses.

>>> net = make_identity_net("arcface", weights="~/models/buffalo_l")   # or w600k_r50.onnx, backbone.pth
>>> emb = net.embed(images, landmarks)        # (B, 512) unit norm; images (B, 3, H, W) RGB in [0, 1]
>>> feats = net.features(images, landmarks)   # layer1..layer4 maps for the content loss

"dlib" is the offline default (dlib's face-descriptor ResNet from the face-recognition-models wheel);
"arcface" needs an insightface pack or an arcface_torch checkpoint the user provides; without a path it
finds the registered ganfit assets, then the packs insightface keeps in ``~/.insightface/models``
(`find_arcface_weights`).
"""
from __future__ import annotations

import os

import torch

from ...errors import ConfigError
from .arcface import (ARCFACE_TEMPLATE_112, IRESNET_LAYERS, ArcFace, IResNet, align_faces, five_points,
                      iresnet, load_iresnet, similarity_transform)
from .arcface_weights import ArcFaceWeights, find_arcface_weights
from .base import IdentityNet

__all__ = [
    "ARCFACE_TEMPLATE_112", "IRESNET_LAYERS", "ArcFace", "ArcFaceWeights", "IResNet", "IdentityNet", "align_faces",
    "find_arcface_weights", "five_points", "iresnet", "load_iresnet", "make_identity_net", "similarity_transform",
]

IDENTITY_NETS = ("dlib", "arcface")


def make_identity_net(name: str, weights: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu") -> IdentityNet:
    """An identity network by name.

    Args:
        name: "dlib" (dlib ResNet, weights from the installed face-recognition-models by default) or
            "arcface" (insightface .onnx / pack folder / pack name / arcface_torch .pth at `weights`; None
            looks for one: the ``insightface-buffalo-l`` / ``insightface-antelopev2`` assets, then
            ``~/.insightface/models/buffalo_l``, ``antelopev2``, other packs; see `find_arcface_weights`).
        weights: optional path overriding the default weights.
        device: where the network runs.
    """
    key = name.lower().strip()
    if key == "arcface":
        return ArcFace(weights, device=device)
    if key == "dlib":
        from .dlib_resnet import DlibResNet  # imported here: written separately, needs dlib's weights

        return DlibResNet(device=device) if weights is None else DlibResNet(weights, device=device)
    raise ConfigError(f"unknown identity network {name!r}; choose one of {', '.join(IDENTITY_NETS)}")
