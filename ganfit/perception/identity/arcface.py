"""ArcFace identity network: the iresnet family of insightface's ``arcface_torch``, checkpoint loading
(``.pth`` state dicts and insightface ONNX packs), and a differentiable 5-point alignment crop.

Architecture (Deng et al., "ArcFace", CVPR 2019; the "improved ResNet" of arcface_torch): stem conv3x3
(3->64) + BN + PReLU at 112x112; four stages of `IBasicBlock` (BN-conv3x3-BN-PReLU-conv3x3(stride)-BN,
plus a conv1x1+BN shortcut on each stage's first block), each halving the resolution (56, 28, 14, 7);
then BN2d, dropout, flatten, fc 512*7*7 -> 512 and BN1d (`features`). Parameter names equal
arcface_torch's, so its ``backbone.pth`` files load with ``strict=True``.

Input conventions (checked against insightface's ``model_zoo/arcface_onnx.py`` and arcface_torch's
training data loader): a 112x112 **RGB** crop, normalised ``(x - 127.5) / 127.5`` on 0-255 values.
insightface reads images with OpenCV (BGR) and converts with ``cv2.dnn.blobFromImages(...,
swapRB=True)``, so the network itself sees RGB. Old mxnet-converted ONNX graphs normalise inside the
graph (leading Sub/Mul nodes; insightface then feeds raw 0-255); the ONNX importer detects that and
records the constants, so `ArcFace` feeds each network what it expects.

Alignment: insightface's ``face_align.norm_crop``: the similarity transform (least squares, Umeyama)
taking five points (eye centres, nose tip, mouth corners) to `ARCFACE_TEMPLATE_112`, then a bilinear
warp to 112x112 (here `kornia.geometry.transform.warp_affine`, differentiable w.r.t. the pixels and the
landmarks).
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...assets.registry import get_asset
from ...errors import AssetError, ModelFormatError
from .arcface_weights import PACK_ASSETS, PACK_ONNX, find_arcface_weights, find_recognition_onnx
from .base import unit_range

__all__ = [
    "ARCFACE_TEMPLATE_112", "IRESNET_LAYERS", "ArcFace", "IBasicBlock", "IResNet", "align_faces",
    "five_points", "iresnet", "iresnet18", "iresnet34", "iresnet50", "iresnet100", "layers_from_state_dict",
    "load_iresnet", "load_iresnet_state_dict", "similarity_transform",
]

#: Blocks per stage of each arcface_torch iresnet.
IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}

#: insightface's ``arcface_dst``: where the five points (subject's right eye = image left, left eye,
#: nose tip, right and left mouth corner) go in the 112x112 crop, in pixels (x right, y down).
ARCFACE_TEMPLATE_112 = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

_BN_EPS = 1e-5


# ------------------------------------------------------------------------------------- network


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, + shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=_BN_EPS)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """arcface_torch's IResNet for 112x112 inputs.

    Args:
        layers: blocks per stage, e.g. ``IRESNET_LAYERS["r50"]``.
        num_features: embedding size D (512).
        dropout: dropout before the fc layer (only active in training mode).
    """

    fc_scale = 7 * 7

    def __init__(self, layers: Sequence[int], num_features: int = 512, dropout: float = 0.0):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive block counts, got {tuple(layers)}")
        self.layer_counts = tuple(int(n) for n in layers)
        self.num_features = int(num_features)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=_BN_EPS)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=_BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=_BN_EPS)

    def _make_layer(self, planes: int, blocks: int, stride: int = 2) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes, eps=_BN_EPS),
        )
        mods = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        mods += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    @property
    def arch(self) -> str:
        """"r50" etc., or "iresnet-a-b-c-d" for a non-standard depth."""
        for name, layers in IRESNET_LAYERS.items():
            if layers == self.layer_counts:
                return name
        return "iresnet-" + "-".join(map(str, self.layer_counts))

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, 112, 112) normalised -> outputs of layer1..layer4: (B, 64, 56, 56), (B, 128, 28, 28),
        (B, 256, 14, 14), (B, 512, 7, 7)."""
        x = self.prelu(self.bn1(self.conv1(x)))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats

    def head(self, x4: torch.Tensor) -> torch.Tensor:
        """layer4 output (B, 512, 7, 7) -> (B, D) embedding (not normalised)."""
        x = torch.flatten(self.bn2(x4), 1)
        return self.features(self.fc(self.dropout(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) normalised RGB -> (B, D) embedding (not normalised)."""
        return self.head(self.trunk(x)[-1])


def iresnet(arch: str, **kw) -> IResNet:
    """An iresnet by name: "r18", "r34", "r50", "r100" or "r200" (randomly initialised)."""
    try:
        layers = IRESNET_LAYERS[arch]
    except KeyError:
        raise ValueError(f"unknown iresnet {arch!r}; choose one of {', '.join(IRESNET_LAYERS)}") from None
    return IResNet(layers, **kw)


def iresnet18(**kw) -> IResNet:
    return IResNet(IRESNET_LAYERS["r18"], **kw)


def iresnet34(**kw) -> IResNet:
    return IResNet(IRESNET_LAYERS["r34"], **kw)


def iresnet50(**kw) -> IResNet:
    return IResNet(IRESNET_LAYERS["r50"], **kw)


def iresnet100(**kw) -> IResNet:
    return IResNet(IRESNET_LAYERS["r100"], **kw)


# ------------------------------------------------------------------------------ checkpoints

_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.conv1\.weight$")
_NESTED_KEYS = ("state_dict_backbone", "state_dict", "model", "backbone", "net")


def _unwrap(obj, origin: str) -> dict[str, torch.Tensor]:
    """The iresnet state dict inside a loaded checkpoint (raw, or nested under a known key; a
    DistributedDataParallel ``module.`` prefix is removed)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and "conv1.weight" not in obj and "module.conv1.weight" not in obj:
            inner = next((obj[k] for k in _NESTED_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise ModelFormatError(f"{origin}: expected a state dict (a mapping of tensors), got {type(obj).__name__}")
    sd = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise ModelFormatError(f"{origin}: state dict key {k!r} is not a string")
        if isinstance(v, torch.Tensor):
            sd[k[len("module."):] if k.startswith("module.") else k] = v
    if not sd:
        raise ModelFormatError(
            f"{origin}: no tensors found (looked at the top level and under {', '.join(_NESTED_KEYS)})")
    return sd


def layers_from_state_dict(sd: Mapping[str, torch.Tensor], origin: str = "state dict") -> tuple[int, int, int, int]:
    """Blocks per stage, counted from the ``layerN.I.conv1.weight`` keys."""
    counts = [0, 0, 0, 0]
    for k in sd:
        m = _BLOCK_KEY.match(k)
        if m:
            stage, idx = int(m.group(1)) - 1, int(m.group(2))
            counts[stage] = max(counts[stage], idx + 1)
    if min(counts) == 0:
        some = ", ".join(list(sd)[:5])
        raise ModelFormatError(
            f"{origin}: not an arcface_torch iresnet state dict (no layer1..layer4 block weights; "
            f"first keys: {some})")
    return tuple(counts)  # type: ignore[return-value]


def _check_keys(model: nn.Module, sd: Mapping[str, torch.Tensor], origin: str) -> None:
    """ModelFormatError naming the first missing key, unexpected key, or shape mismatch."""
    want = model.state_dict()
    for k, v in want.items():
        if k not in sd:
            raise ModelFormatError(f"{origin}: missing key {k!r} for {model.arch} (shape {tuple(v.shape)})")
    for k in sd:
        if k not in want:
            raise ModelFormatError(f"{origin}: unexpected key {k!r} for {model.arch}")
    for k, v in want.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise ModelFormatError(
                f"{origin}: shape mismatch for {k!r}: file has {tuple(sd[k].shape)}, "
                f"{model.arch} expects {tuple(v.shape)}")


def load_iresnet_state_dict(sd: Mapping[str, torch.Tensor], origin: str = "state dict") -> IResNet:
    """An `IResNet` (eval mode, float32) holding `sd`; depth and embedding size inferred from the keys."""
    sd = _unwrap(sd, origin)
    layers = layers_from_state_dict(sd, origin)
    fc = sd.get("fc.weight")
    num_features = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 512
    model = IResNet(layers, num_features=num_features)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    # older checkpoints lack BN's num_batches_tracked counters; they carry no information
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v.clone()
    _check_keys(model, sd, origin)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def _load_pth(path: Path) -> IResNet:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(
            f"{path}: refused to load: it is not a plain tensor checkpoint (only weights are "
            f"unpickled, never code): {first}; from a trusted source, re-save just the state dict "
            f"with torch.save(model.state_dict(), path)") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFormatError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    return load_iresnet_state_dict(obj, origin=str(path))


def _find_onnx(folder: Path) -> Path:
    found = find_recognition_onnx(folder)
    if found is not None:
        return found
    cands = sorted(p.name for p in (*folder.glob("*.onnx"), *folder.glob("*/*.onnx")))
    raise AssetError(
        f"{folder}: no ArcFace network found (looked for {', '.join(PACK_ONNX)}, or a single recognition .onnx"
        + (f"; candidates: {', '.join(cands)}" if cands else "") + "); point at the .onnx file itself")


def load_iresnet(path: str | os.PathLike) -> tuple[IResNet, float, float]:
    """(network, input_mean, input_std) from a ``.pth``/``.pt`` state dict, an ``.onnx`` file, or a
    folder holding an unpacked insightface pack. The network expects ``(rgb255 - mean) / std``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise AssetError(f"ArcFace weights {p} do not exist")
    if p.is_dir():
        p = _find_onnx(p)
    if p.suffix.lower() == ".onnx":
        from .onnx_import import read_onnx_iresnet

        imp = read_onnx_iresnet(p)
        model = load_iresnet_state_dict(imp.state_dict, origin=str(p))
        return model, imp.input_mean, imp.input_std
    return _load_pth(p), 127.5, 127.5


# ------------------------------------------------------------------------------ assets

#: the insightface packs, registered with the other assets in `ganfit.assets.registry`.
INSIGHTFACE_ASSETS = tuple(get_asset(n) for n in PACK_ASSETS)


def default_weights() -> Path:
    """The ArcFace weights found without an explicit path (`find_arcface_weights`: the registered
    insightface-buffalo-l / -antelopev2 assets, then the packs in ``~/.insightface/models``); AssetError
    listing every place looked and how to provide weights otherwise."""
    return find_arcface_weights().path


# ------------------------------------------------------------------------------ alignment


def five_points(landmarks: torch.Tensor) -> torch.Tensor:
    """(B, 68, 2) iBUG-68 landmarks -> (B, 5, 2): eye centres (mean of 36-41 and of 42-47), nose
    tip (30), mouth corners (48, 54) -- the order of `ARCFACE_TEMPLATE_112`."""
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (B, 68, 2), got {tuple(landmarks.shape)}")
    return torch.stack([
        landmarks[:, 36:42].mean(1), landmarks[:, 42:48].mean(1),
        landmarks[:, 30], landmarks[:, 48], landmarks[:, 54],
    ], dim=1)


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking `src` to `dst`.

    Umeyama (1991) in closed form for 2D (equal to skimage's ``SimilarityTransform.estimate``, which
    insightface uses); differentiable.
    Args:
        src: (B, N, 2); dst: (N, 2) or (B, N, 2).
    Returns:
        (B, 2, 3) matrix M with dst ~ M @ [src, 1].
    """
    dst = dst.to(src).expand_as(src)
    ms, md = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s, d = src - ms, dst - md
    var = s.pow(2).sum((1, 2)).clamp_min(torch.finfo(src.dtype).tiny)
    a = (s * d).sum((1, 2)) / var                                      # scale * cos
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1) / var   # scale * sin
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (B, 2, 2)
    t = md[:, 0] - (rot @ ms[:, 0, :, None])[..., 0]
    return torch.cat([rot, t[..., None]], -1)


def align_faces(images: torch.Tensor, landmarks: torch.Tensor, size: int = 112,
                template: Sequence[Sequence[float]] = ARCFACE_TEMPLATE_112) -> torch.Tensor:
    """Crop faces to the ArcFace template, as insightface's ``norm_crop`` (differentiable).

    Args:
        images: (B, C, H, W); landmarks: (B, 68, 2) pixels (x right, y down, pixel centres at integers).
        size: output side; the template is scaled by size / 112.
    Returns:
        (B, C, size, size) bilinear crops (zeros outside the image).
    """
    from kornia.geometry.transform import warp_affine

    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    if landmarks.shape[0] != images.shape[0]:
        raise ValueError(f"{landmarks.shape[0]} landmark sets for {images.shape[0]} images")
    dst = torch.tensor(template, dtype=torch.float64, device=images.device) * (size / 112.0)
    lm = landmarks.to(device=images.device, dtype=torch.float64 if images.dtype == torch.float64 else torch.float32)
    M = similarity_transform(five_points(lm), dst).to(images.dtype)
    return warp_affine(images, M, (size, size), mode="bilinear", padding_mode="zeros", align_corners=True)


# ------------------------------------------------------------------------------ IdentityNet


class ArcFace(nn.Module):
    """ArcFace as a ganfit `IdentityNet`: differentiable 5-point crop, iresnet, L2-normalised embedding.

    Args:
        weights: an insightface ``.onnx`` (w600k_r50.onnx, glintr100.onnx), a folder holding an unpacked
            pack, an insightface pack name ("antelopev2": ``~/.insightface/models/antelopev2``), an arcface_torch
            ``.pth`` state dict, an `IResNet` instance, or None to look for one (`find_arcface_weights`: the
            ``insightface-buffalo-l`` / ``insightface-antelopev2`` assets, then ``~/.insightface/models``;
            AssetError listing the places looked if none is found).
        device: where to run.
        input_mean, input_std: normalisation of 0-255 RGB crops; taken from the file when loading one
            (127.5/127.5 for arcface_torch and current insightface packs).
    The network is frozen (no parameter gradients) and in eval mode; gradients flow to the images.
    """

    embedding_dim: int

    def __init__(self, weights: str | os.PathLike | IResNet | None = None, device: str | torch.device = "cpu",
                 *, input_mean: float | None = None, input_std: float | None = None):
        super().__init__()
        if isinstance(weights, IResNet):
            net, mean, std = weights, 127.5, 127.5
            self.source = "module"
        else:
            path = find_arcface_weights(weights).path
            net, mean, std = load_iresnet(path)
            self.source = str(path)
        self.net = net.eval().requires_grad_(False)
        self.input_mean = float(mean if input_mean is None else input_mean)
        self.input_std = float(std if input_std is None else input_std)
        self.name = f"arcface-{net.arch}"
        self.embedding_dim = net.num_features
        self.to(device)

    def train(self, mode: bool = True) -> "ArcFace":
        """The wrapped network always stays in eval mode (frozen batch-norm statistics)."""
        super().train(mode)
        self.net.eval()
        return self

    def preprocess(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) RGB in [0, 1] -> network input ``(255 x - mean) / std``."""
        return (crops * 255.0 - self.input_mean) / self.input_std

    def align(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), (B, 68, 2) -> (B, 3, 112, 112) template crops."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        return align_faces(images, landmarks, 112)

    def _input(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Crop and normalise; a render slightly outside [0, 1] is clamped, 0-255 data refused (`unit_range`)."""
        p = next(self.net.parameters())
        images = unit_range(images.to(device=p.device, dtype=p.dtype))
        return self.preprocess(self.align(images, landmarks.to(p.device)))

    def embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) RGB in [0, 1] (a render slightly outside is clamped; see `unit_range`),
        landmarks (B, 68, 2) pixels -> (B, D) unit-norm embeddings."""
        return F.normalize(self.net(self._input(images, landmarks)), dim=-1)

    def features(self, images: torch.Tensor, landmarks: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of layer1..layer4: (B, 64, 56, 56), (B, 128, 28, 28), (B, 256, 14, 14), (B, 512, 7, 7)."""
        return self.net.trunk(self._input(images, landmarks))

    def embed_and_features(self, images: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`embed` and `features` from one forward pass."""
        feats = self.net.trunk(self._input(images, landmarks))
        return F.normalize(self.net.head(feats[-1]), dim=-1), feats

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return self.embed(images, landmarks)

    def extra_repr(self) -> str:
        return f"name={self.name}, source={self.source}, mean={self.input_mean}, std={self.input_std}"
