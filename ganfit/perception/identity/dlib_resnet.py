"""dlib's face-descriptor ResNet (``dlib_face_recognition_resnet_model_v1``) in PyTorch, with its
weights read directly from dlib's ``.dat`` file.

The network is ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp`` (King 2017; 99.38 %
on LFW). Written input first::

    input_rgb_image_sized<150>            (pixel - mean_rgb) / 256, mean_rgb = (122.782, 117.001, 104.298)
    con<32,7,7,2,2> affine relu           150 -> 72          (dlib's `con`: padding 0 when stride 2)
    max_pool<3,3,2,2>                     72 -> 35
    alevel4: ares<32> x3                  35x35x32
    alevel3: ares_down<64>, ares<64> x3   17x17x64
    alevel2: ares_down<128>, ares<128> x2 8x8x128
    alevel1: ares_down<256>, ares<256> x2 4x4x256
    alevel0: ares_down<256>               2x2x256
    avg_pool_everything, fc_no_bias<128>  128 (loss_metric: no normalisation)

    ares<N>      = relu(x + affine(con3x3(relu(affine(con3x3(x))))))
    ares_down<N> = relu(add_prev(affine(con3x3(relu(affine(con3x3/2(x))))), avg_pool2x2/2(x)))

29 convolutions (+ 1 fc), 5.6 M parameters. Two dlib details matter for exact parity:
- `add_prev` adds tensors of different shapes by zero-padding both to the larger one, aligned at
  channel 0 and the top-left pixel (so the 64-channel block output of ``ares_down<64>`` gets the
  32-channel shortcut added to its first 32 channels; in ``alevel1`` the 3x3 block output is added to
  the top-left of the 4x4 shortcut, and in ``alevel0`` the 1x1 block output to the top-left of 2x2).
- dlib's ``affine`` layer is a frozen batch norm (per-channel ``gamma * x + beta``); the file may also
  hold ``bn_con`` layers, which dlib converts to ``affine`` on load as we do. Both are folded into the
  preceding convolution here (exact up to float rounding).

dlib's descriptor is the raw ``fc`` output; its norm is not 1 (1.3-1.6 on face photos).
`DlibResNet.embed` returns it L2-normalised as the `IdentityNet` protocol requires;
`DlibResNet.descriptor` returns the raw vector, which is what ``dlib.face_recognition_model_v1``
computes (dlib's "same person" threshold, 0.6, applies to Euclidean distances of raw descriptors).

The ``.dat`` format (``dlib/serialize.h``, ``dlib/dnn/core.h``): integers are a control byte (bit 7:
sign, bits 0-3: byte count) followed by the magnitude little-endian; floats are two such integers
(mantissa, exponent: value = mantissa * 2**exponent); bools are the bytes '1'/'0'; strings are an
integer length then bytes; tensors are ``int version=2``, four integers (n, k, nr, nc) then raw
little-endian float32. A network serializes outside in: ``add_loss_layer`` writes its version, the loss
details, then its subnetwork; every ``add_layer`` / tag / skip writes its version and then its
subnetwork, and only after that (so the innermost first) its layer details and cached tensors. The
parse is therefore driven by the known network type, exactly as dlib's own ``deserialize`` is; it
takes 0.05-0.1 s for the 22 MB file, so nothing is cached.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import AssetError, GanfitError, ModelFormatError
from .dlib_chip import FACE_CHIP_PADDING, FACE_CHIP_SIZE, ROUNDING_MODES, extract_face_chips
from .base import unit_range

logger = logging.getLogger(__name__)

WEIGHTS_ASSET = "dlib-face-resnet"
WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"
INPUT_SIZE = 150
EMBEDDING_DIM = 128
DEFAULT_MEAN_RGB = (122.782, 117.001, 104.298)
"""dlib's `input_rgb_image_sized` defaults; the values actually used are read from the file."""

STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),   # alevel4
    (64, 4, True),    # alevel3
    (128, 3, True),   # alevel2
    (256, 3, True),   # alevel1
    (256, 1, True),   # alevel0
)
"""(channels, residual blocks, first block downsamples) per stage, input first."""


# =============================================================================== the .dat file


@dataclass(frozen=True)
class LayerSpec:
    """One layer of dlib's network type, as written in the C++ template (`kind` and its arguments).

    kind: "input", "con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "tag", "skip",
        "fc_no_bias" or "loss_metric".
    args: template arguments, e.g. {"num_filters": 32, "nr": 7, "nc": 7, "stride": 2} for `con`,
        {"id": 1} for tags, skips and add_prev.
    """

    kind: str
    args: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        inner = ",".join(str(v) for v in self.args.values())
        return f"{self.kind}<{inner}>" if inner else self.kind


def _ares(n: int, down: bool) -> list[LayerSpec]:
    """`ares<N>` / `ares_down<N>` of dnn_face_recognition_ex.cpp, input first."""
    stride = 2 if down else 1
    block = [
        LayerSpec("tag", {"id": 1}),
        LayerSpec("con", {"num_filters": n, "nr": 3, "nc": 3, "stride": stride}),
        LayerSpec("affine"),
        LayerSpec("relu"),
        LayerSpec("con", {"num_filters": n, "nr": 3, "nc": 3, "stride": 1}),
        LayerSpec("affine"),
    ]
    if down:  # residual_down = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,BN,2,tag1<SUBNET>>>>>>
        block += [LayerSpec("tag", {"id": 2}), LayerSpec("skip", {"id": 1}),
                  LayerSpec("avg_pool", {"nr": 2, "nc": 2, "stride": 2}), LayerSpec("add_prev", {"id": 2})]
    else:  # residual = add_prev1<block<N,BN,1,tag1<SUBNET>>>
        block += [LayerSpec("add_prev", {"id": 1})]
    return block + [LayerSpec("relu")]


def anet_type() -> list[LayerSpec]:
    """The layers of dlib's `anet_type` (dnn_face_recognition_ex.cpp), input first, loss last.

    dlib numbers them the other way round: ``layer<0>`` is the loss, ``layer<len-1>`` the input.
    """
    layers = [
        LayerSpec("input", {"nr": INPUT_SIZE, "nc": INPUT_SIZE}),
        LayerSpec("con", {"num_filters": 32, "nr": 7, "nc": 7, "stride": 2}),
        LayerSpec("affine"),
        LayerSpec("relu"),
        LayerSpec("max_pool", {"nr": 3, "nc": 3, "stride": 2}),
    ]
    for channels, blocks, down in STAGES:
        for b in range(blocks):
            layers += _ares(channels, down and b == 0)
    layers += [
        LayerSpec("avg_pool", {"nr": 0, "nc": 0, "stride": 1}),  # avg_pool_everything
        LayerSpec("fc_no_bias", {"num_outputs": EMBEDDING_DIM}),
        LayerSpec("loss_metric"),
    ]
    return layers


@dataclass
class DlibLayer:
    """One parsed layer. index: dlib's layer<index> (0 = loss); version: the version string in the
    file ("con_4", "affine_", "bn_con2", ...; "" for tags and skips); config: its scalar settings;
    params: its arrays (con: weight (O, I, kh, kw), bias (O,) or None; affine: gamma, beta (C,);
    fc_no_bias: weight (out, in))."""

    index: int
    spec: LayerSpec
    version: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray | None] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.spec.kind


@dataclass
class DlibNet:
    """A parsed dlib network: `layers` input first (each knows its dlib index), plus the file's
    input normalisation (`mean_rgb`, divided by 256) and loss settings."""

    layers: list[DlibLayer]
    mean_rgb: tuple[float, float, float]
    input_size: int
    loss: dict[str, float]
    path: str

    def of_kind(self, kind: str) -> list[DlibLayer]:
        return [layer for layer in self.layers if layer.kind == kind]

    def num_parameters(self) -> int:
        return sum(int(a.size) for layer in self.layers for a in layer.params.values() if a is not None)


class _Reader:
    """Sequential reader of dlib's serialization primitives over an in-memory buffer."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.pos = 0
        self.path = path
        self.where = "the file header"

    # -- errors
    def fail(self, problem: str) -> ModelFormatError:
        return ModelFormatError(
            f"{self.path} is not a valid dlib face-recognition network: {problem} at byte {self.pos} "
            f"(while reading {self.where}); re-fetch it with `ganfit assets fetch {WEIGHTS_ASSET}`"
        )

    def _take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"file truncated ({what} needs {n} bytes, {len(self.data) - self.pos} left)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    # -- primitives
    def int(self, what: str = "an integer") -> int:
        """A signed dlib integer (also used for unsigned ones whose high bit is never set)."""
        control = self._take(1, what)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            self.pos -= 1
            raise self.fail(f"bad integer control byte 0x{control:02x} for {what}")
        value = int.from_bytes(self._take(size, what), "little")
        return -value if control & 0x80 else value

    def float(self, what: str = "a float") -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail(f"{what} uses dlib's old text float format, which is not supported")
        mantissa = self.int(what)
        exponent = self.int(what)
        if exponent == 32000:
            return float("inf")
        if exponent == 32001:
            return float("-inf")
        if exponent == 32002:
            return float("nan")
        return float(np.ldexp(np.float64(mantissa), exponent))

    def bool(self, what: str = "a bool") -> bool:
        ch = self._take(1, what)
        if ch not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"bad bool byte 0x{ch[0]:02x} for {what}")
        return ch == b"1"

    def string(self, what: str = "a string", limit: int = 256) -> str:
        n = self.int(what)
        if not 0 <= n <= limit:
            raise self.fail(f"implausible string length {n} for {what}")
        raw = self._take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not text ({raw[:20]!r})") from None

    def tensor(self, what: str = "a tensor") -> np.ndarray:
        """A resizable_tensor: (n, k, nr, nc) float32 (a copy, writable)."""
        version = self.int(what)
        if version != 2:
            raise self.fail(f"unexpected tensor version {version} for {what}")
        shape = tuple(self.int(what) for _ in range(4))
        if any(s < 0 for s in shape):
            raise self.fail(f"negative tensor shape {shape} for {what}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self._take(4 * count, f"{what} data ({shape})")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self, what: str = "an alias tensor") -> tuple[int, int, int, int]:
        version = self.int(what)
        if version != 1:
            raise self.fail(f"unexpected alias_tensor version {version} for {what}")
        return tuple(self.int(what) for _ in range(4))  # type: ignore[return-value]

    def expect_end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} unexpected bytes after the network")


def _split(params: np.ndarray, shapes: list[tuple[int, ...]], reader: _Reader) -> list[np.ndarray]:
    """Cut a flat params tensor into consecutive arrays of `shapes` (dlib's alias tensors)."""
    flat = params.reshape(-1)
    sizes = [int(np.prod(s)) for s in shapes]
    if sum(sizes) != flat.size:
        raise reader.fail(f"params tensor has {flat.size} values, its parts {shapes} need {sum(sizes)}")
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(flat[start:start + size].reshape(shape).copy())
        start += size
    return out


def _read_details(r: _Reader, layer: DlibLayer) -> None:
    """Read the layer-details object of `layer` (its `serialize(details)` output)."""
    spec, kind = layer.spec, layer.spec.kind
    version = r.string("the layer version string")
    layer.version = version

    def wrong() -> ModelFormatError:
        return r.fail(f"layer<{layer.index}> should be {spec} but the file holds {version!r}")

    def check(name: str, found: Any, expected: Any) -> None:
        if found != expected:
            raise r.fail(f"layer<{layer.index}> {spec}: {name} is {found}, expected {expected}")

    if kind == "con":
        if version not in ("con_4", "con_5", "con_6"):
            raise wrong()
        params = r.tensor("con params")
        num_filters, nr, nc = r.int(), r.int(), r.int()
        stride_y, stride_x, pad_y, pad_x = r.int(), r.int(), r.int(), r.int()
        filters, biases = r.alias("con filters"), r.alias("con biases")
        for _ in range(4):
            r.float("con learning-rate multipliers")
        use_bias = r.bool("con use_bias") if version in ("con_5", "con_6") else True
        if version == "con_6":
            r.bool("con use_relu")
        check("num_filters", num_filters, spec.args["num_filters"])
        check("filter size", (nr, nc), (spec.args["nr"], spec.args["nc"]))
        check("stride", (stride_y, stride_x), (spec.args["stride"],) * 2)
        default_pad = 0 if spec.args["stride"] != 1 else spec.args["nr"] // 2
        check("padding", (pad_y, pad_x), (default_pad, default_pad))
        check("filters shape", (filters[0], filters[2], filters[3]), (num_filters, nr, nc))
        shapes = [filters] + ([biases] if use_bias else [])
        parts = _split(params, shapes, r)
        layer.params = {"weight": parts[0], "bias": parts[1].reshape(-1) if use_bias else None}
        layer.config = {"stride": stride_y, "padding": pad_y}
    elif kind == "affine":
        if version in ("affine_", "affine_2"):
            params = r.tensor("affine params")
            gamma, beta = r.alias("affine gamma"), r.alias("affine beta")
            mode = r.int("affine mode")
            disabled = r.bool("affine disabled") if version == "affine_2" else False
            if disabled:
                raise r.fail(f"layer<{layer.index}> affine is disabled; this network type needs it")
            g, b = _split(params, [gamma, beta], r)
        elif version == "bn_con2":
            params = r.tensor("bn params")
            gamma, beta = r.alias("bn gamma"), r.alias("bn beta")
            for name in ("means", "invstds"):
                r.tensor(f"bn {name}")
            running_means, running_vars = r.tensor("bn running means"), r.tensor("bn running variances")
            r.int("bn num_updates")
            r.int("bn running_stats_window_size")
            for _ in range(4):
                r.float("bn learning-rate multipliers")
            eps = r.float("bn eps")
            sg, sb = _split(params, [gamma, beta], r)
            g = sg / np.sqrt(running_vars.reshape(sg.shape) + eps)
            b = sb - g * running_means.reshape(sg.shape)
            mode = 0  # CONV_MODE
        else:
            raise wrong()
        check("mode (0 = CONV_MODE, per channel)", mode, 0)
        layer.params = {"gamma": g.reshape(-1).astype(np.float32), "beta": b.reshape(-1).astype(np.float32)}
    elif kind == "relu":
        if version == "relu_2":
            if r.bool("relu disabled"):
                raise r.fail(f"layer<{layer.index}> relu is disabled; this network type needs it")
        elif version != "relu_":
            raise wrong()
    elif kind in ("max_pool", "avg_pool"):
        if version != f"{kind}_2":
            raise wrong()
        nr, nc, stride_y, stride_x, pad_y, pad_x = (r.int(f"{kind} settings") for _ in range(6))
        check("window", (nr, nc), (spec.args["nr"], spec.args["nc"]))
        check("stride", (stride_y, stride_x), (spec.args["stride"],) * 2)
        default_pad = 0 if spec.args["stride"] != 1 else spec.args["nr"] // 2
        check("padding", (pad_y, pad_x), (default_pad, default_pad))
        layer.config = {"window": nr, "stride": stride_y, "padding": pad_y}
    elif kind == "add_prev":
        if version != "add_prev_":
            raise wrong()
    elif kind == "fc_no_bias":
        if version not in ("fc_2", "fc_3"):
            raise wrong()
        num_outputs, num_inputs = r.int("fc num_outputs"), r.int("fc num_inputs")
        params = r.tensor("fc params")
        weights, _biases = r.alias("fc weights"), r.alias("fc biases")
        bias_mode = r.int("fc bias mode")
        for _ in range(4):
            r.float("fc learning-rate multipliers")
        if version == "fc_3":
            r.bool("fc use_bias")
        check("num_outputs", num_outputs, spec.args["num_outputs"])
        check("bias mode (1 = no bias)", bias_mode, 1)
        check("weights shape", weights[:2], (num_inputs, num_outputs))
        (w,) = _split(params, [weights], r)
        layer.params = {"weight": np.ascontiguousarray(w.reshape(num_inputs, num_outputs).T)}
    elif kind == "input":
        if version != "input_rgb_image_sized":
            raise wrong()
        mean = tuple(r.float("input channel means") for _ in range(3))
        nr, nc = r.int("input rows"), r.int("input columns")
        check("input size", (nr, nc), (spec.args["nr"], spec.args["nc"]))
        layer.config = {"mean_rgb": mean, "size": nr}
    elif kind == "loss_metric":
        if version == "loss_metric_":
            layer.config = {"margin": 0.1, "distance_threshold": 0.75}
        elif version == "loss_metric_2":
            layer.config = {"margin": r.float("loss margin"), "distance_threshold": r.float("loss threshold")}
        else:
            raise wrong()
    else:  # pragma: no cover - anet_type() has no other kinds
        raise wrong()


def parse_dlib_net(data: bytes, path: str = "<bytes>", spec: list[LayerSpec] | None = None) -> DlibNet:
    """Parse a serialized dlib network of type `spec` (default `anet_type()`).

    data: the bytes of the ``.dat`` file. Raises ModelFormatError (naming the layer, its dlib index
    and the byte offset) on a truncated or corrupt file, or one holding a different network.
    """
    spec = list(spec if spec is not None else anet_type())
    if spec[-1].kind != "loss_metric" or spec[0].kind != "input":
        raise ValueError("the network type must start with an input layer and end with loss_metric")
    n = len(spec)
    layers = [DlibLayer(index=n - 1 - i, spec=s) for i, s in enumerate(spec)]
    r = _Reader(data, path)

    # add_loss_layer: version, loss details, then the subnetwork
    r.where = f"layer<0> ({spec[-1]})"
    if r.int("the loss layer version") != 1:
        raise r.fail("unexpected add_loss_layer version (is this a dlib DNN file?)")
    _read_details(r, layers[-1])

    # the version numbers of the wrapping layers, outermost (layer<1>) first
    versions: dict[int, int] = {}
    for i in range(n - 2, 0, -1):  # list positions n-2 .. 1 = dlib layer<1> .. layer<n-2>
        layer = layers[i]
        r.where = f"layer<{layer.index}> ({layer.spec})"
        version = r.int("a layer version")
        if layer.kind in ("tag", "skip"):
            ok = version == 1
        elif i == 1:  # the add_layer that also holds the input layer
            ok = version in (2, 3)
        else:
            ok = version in (1, 2)
        if not ok:
            raise r.fail(f"layer<{layer.index}> should be {layer.spec} but its version number is {version}")
        versions[i] = version

    # the input layer, then each add_layer's details and cached tensors, innermost first
    r.where = f"layer<{layers[0].index}> ({layers[0].spec})"
    _read_details(r, layers[0])
    for i in range(1, n - 1):
        layer = layers[i]
        if layer.kind in ("tag", "skip"):
            continue
        r.where = f"layer<{layer.index}> ({layer.spec})"
        _read_details(r, layer)
        for flag in ("setup_called", "gradient_input_is_stale", "output_disabled"):
            r.bool(flag)
        r.tensor("x_grad")
        r.tensor("cached_output")
        if i == 1:
            r.tensor("grad_final")
            if versions[i] >= 3:
                r.int("sample_expansion_factor")
        elif versions[i] == 2:
            r.tensor("params_grad")
    r.where = "the end of the file"
    r.expect_end()

    inp = layers[0].config
    return DlibNet(layers=layers, mean_rgb=tuple(inp["mean_rgb"]), input_size=int(inp["size"]),
                   loss=dict(layers[-1].config), path=path)


def read_dlib_net(path: str | Path) -> DlibNet:
    """Read and parse a ``dlib_face_recognition_resnet_model_v1.dat`` file (see `parse_dlib_net`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AssetError(
            f"dlib face-recognition weights not found at {path}; run `ganfit assets fetch {WEIGHTS_ASSET}`"
        ) from None
    except OSError as exc:
        raise AssetError(f"cannot read {path}: {exc}") from exc
    return parse_dlib_net(data, str(path))


# ================================================================================= the network


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: a + b after zero-padding both to the larger size of each dimension, aligned at
    channel 0, row 0, column 0. a, b: (B, C, H, W)."""
    if a.shape == b.shape:
        return a + b
    size = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]

    def pad(t: torch.Tensor) -> torch.Tensor:
        c, h, w = t.shape[1:]
        return F.pad(t, (0, size[2] - w, 0, size[1] - h, 0, size[0] - c))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """dlib's ``ares<N>`` (down=False) or ``ares_down<N>`` (down=True), affine layers folded into the
    convolutions: relu(add_prev(conv2(relu(conv1(x))), x or avg_pool2x2/2(x)))."""

    def __init__(self, in_channels: int, channels: int, down: bool) -> None:
        super().__init__()
        self.down = down
        stride, pad = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=pad)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_padded(y, shortcut))


class DlibFaceNet(nn.Module):
    """The descriptor network on aligned 150x150 chips.

    forward(chips (B, 3, 150, 150) RGB in [0, 1]) -> (B, 128) raw dlib descriptors (not normalised).
    Chips are scaled to dlib's 0-255 pixel values and then normalised as dlib's input layer does:
    (255 * x - mean_rgb) / 256.
    """

    def __init__(self, mean_rgb: tuple[float, float, float] = DEFAULT_MEAN_RGB) -> None:
        super().__init__()
        self.register_buffer("mean_rgb", torch.tensor(mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        stages, in_ch = [], 32
        for channels, blocks, down in STAGES:
            stage = [ResidualBlock(in_ch if b == 0 else channels, channels, down and b == 0) for b in range(blocks)]
            stages.append(nn.Sequential(*stage))
            in_ch = channels
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(in_ch, EMBEDDING_DIM, bias=False)

    def normalise(self, chips: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) [0, 1] -> dlib's network input (255 x - mean) / 256."""
        return (chips * 255.0 - self.mean_rgb) / 256.0

    def stage_outputs(self, chips: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the 5 residual stages, shallow to deep: (B, 32, 35, 35), (B, 64, 17, 17),
        (B, 128, 8, 8), (B, 256, 4, 4), (B, 256, 2, 2) for 150x150 chips."""
        x = F.max_pool2d(F.relu(self.stem(self.normalise(chips))), 3, 2)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = self.stage_outputs(chips)[-1]
        return self.fc(x.mean(dim=(2, 3)))

    @classmethod
    def from_dlib(cls, net: DlibNet) -> "DlibFaceNet":
        """Build the module from a parsed file, folding every affine layer into its convolution."""
        with torch.device("meta"):  # skip the random initialisation; every value is set below
            model = cls(net.mean_rgb)
        model = model.to_empty(device="cpu")
        model.mean_rgb.copy_(torch.tensor(net.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        convs, affines, fcs = net.of_kind("con"), net.of_kind("affine"), net.of_kind("fc_no_bias")
        targets = [model.stem] + [c for stage in model.stages for blk in stage for c in (blk.conv1, blk.conv2)]
        if not (len(convs) == len(affines) == len(targets)) or len(fcs) != 1:
            raise ModelFormatError(f"{net.path}: expected {len(targets)} con+affine pairs and one fc layer, "
                                   f"found {len(convs)}, {len(affines)} and {len(fcs)}")
        with torch.no_grad():
            for conv, affine, target in zip(convs, affines, targets):
                w = conv.params["weight"]
                bias = conv.params["bias"]
                gamma, beta = affine.params["gamma"], affine.params["beta"]
                if w.shape != tuple(target.weight.shape) or gamma.shape != (w.shape[0],):
                    raise ModelFormatError(
                        f"{net.path}: layer<{conv.index}> has filters {w.shape}, expected "
                        f"{tuple(target.weight.shape)} (and layer<{affine.index}> {gamma.shape[0]} channels)")
                w64, g64 = w.astype(np.float64), gamma.astype(np.float64)
                b64 = bias.astype(np.float64) if bias is not None else np.zeros(w.shape[0])
                target.weight.copy_(torch.from_numpy(w64 * g64[:, None, None, None]))
                target.bias.copy_(torch.from_numpy(b64 * g64 + beta.astype(np.float64)))
            fc_w = fcs[0].params["weight"]
            if fc_w.shape != tuple(model.fc.weight.shape):
                raise ModelFormatError(f"{net.path}: layer<{fcs[0].index}> fc weights {fc_w.shape}, "
                                       f"expected {tuple(model.fc.weight.shape)}")
            model.fc.weight.copy_(torch.from_numpy(fc_w))
        return model


def load_dlib_face_net(path: str | Path | None = None) -> DlibFaceNet:
    """The descriptor network with weights from `path` (default: the `dlib-face-resnet` asset),
    in eval mode with frozen parameters."""
    model = DlibFaceNet.from_dlib(read_dlib_net(default_weights_path() if path is None else path))
    model.eval()
    model.requires_grad_(False)
    return model


def default_weights_path() -> Path:
    """Path of ``dlib_face_recognition_resnet_model_v1.dat`` from `ganfit.assets`; AssetError if absent."""
    from ganfit.assets import asset_path

    try:
        return Path(asset_path(WEIGHTS_ASSET))
    except GanfitError as exc:
        message = str(exc)
        hint = f"ganfit assets fetch {WEIGHTS_ASSET}"
        if hint not in message:
            message += f" (then run `{hint}`, or pass weights_path= to DlibResNet)"
        raise AssetError(message) from exc


# ======================================================================= the IdentityNet wrapper


def _check_inputs(images: torch.Tensor, landmarks: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B, 3, H, W) RGB tensor, got {_shape(images)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor with values in [0, 1], got dtype {images.dtype}")
    if not isinstance(landmarks, torch.Tensor) or landmarks.ndim != 3 or landmarks.shape[2] != 2 \
            or landmarks.shape[1] != 68:
        raise ValueError(f"landmarks must be a (B, 68, 2) tensor of x, y pixels, got {_shape(landmarks)}")
    if landmarks.shape[0] != images.shape[0]:
        raise ValueError(f"images and landmarks disagree on the batch size: {images.shape[0]} vs {landmarks.shape[0]}")
    if not torch.isfinite(landmarks.detach()).all():
        raise ValueError("landmarks contain NaN or infinite values")


def _shape(x: Any) -> str:
    return f"shape {tuple(x.shape)}" if hasattr(x, "shape") else type(x).__name__


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet as an `IdentityNet`: differentiable alignment to dlib's 150x150
    face chip (`dlib_chip.extract_face_chips`) + the descriptor network.

    weights_path: the ``.dat`` file; default the `dlib-face-resnet` asset (AssetError if missing).
    device: where the network lives ("cpu", "cuda", ...). Use `.double()` / `.to()` as for any module.
    pyramid, rounding: chip-extraction options (see `extract_face_chips`). The defaults reproduce
        dlib's chip (image pyramid for large faces) with its uint8 truncation replaced by its mean
        effect, so the result is smooth in the pixels; rounding="exact" truncates as dlib does
        (forward values match dlib's; straight-through gradients).

    embed(images, landmarks) -> (B, 128) unit-norm; descriptor(...) -> (B, 128) raw dlib descriptors;
    features(...) -> the 5 stage outputs; embed_and_features(...) -> both from one pass; chips(...) -> the
    (B, 3, 150, 150) aligned inputs.
    """

    name = "dlib-resnet"
    embedding_dim = EMBEDDING_DIM

    def __init__(self, weights_path: str | Path | None = None, device: str | torch.device = "cpu",
                 pyramid: bool = True, rounding: str = "mean") -> None:
        if rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
        super().__init__()
        self.net = load_dlib_face_net(weights_path)
        self.pyramid, self.rounding = pyramid, rounding
        self.chip_size, self.padding = FACE_CHIP_SIZE, FACE_CHIP_PADDING
        self.to(device)

    def train(self, mode: bool = True) -> "DlibResNet":
        """The network has no training-time behaviour (no dropout, frozen batch norm); kept in eval."""
        return super().train(False)

    def chips(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """dlib's aligned face chips. images: (B, 3, H, W) [0, 1] (a render slightly outside, within
        `ACCEPTED_RANGE`, is clamped to it); landmarks: (B, 68, 2) pixels.
        Returns (B, 3, 150, 150) in [0, 1], in the images' dtype and device."""
        _check_inputs(images, landmarks)
        images = unit_range(images)
        return extract_face_chips(images, landmarks.to(images.device), size=self.chip_size,
                                  padding=self.padding, pyramid=self.pyramid, rounding=self.rounding)

    def descriptor(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Raw dlib descriptors (B, 128), as ``dlib.face_recognition_model_v1.compute_face_descriptor``."""
        chips = self.chips(images, landmarks)
        return self.net(chips.to(self._dtype()))

    def embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 128) unit-norm embeddings (the raw descriptor divided by its norm)."""
        return F.normalize(self.descriptor(images, landmarks), dim=1)

    def features(self, images: torch.Tensor, landmarks: torch.Tensor) -> list[torch.Tensor]:
        """The 5 residual-stage outputs (B, C_k, H_k, W_k), shallow to deep: 32x35x35, 64x17x17,
        128x8x8, 256x4x4, 256x2x2."""
        return self.net.stage_outputs(self.chips(images, landmarks).to(self._dtype()))

    def embed_and_features(self, images: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`embed` and `features` from one pass of the network (the joint stage needs both every step)."""
        feats = self.net.stage_outputs(self.chips(images, landmarks).to(self._dtype()))
        return F.normalize(self.net.fc(feats[-1].mean(dim=(2, 3))), dim=1), feats

    def _dtype(self) -> torch.dtype:
        return self.net.fc.weight.dtype


__all__ = [
    "DlibFaceNet", "DlibLayer", "DlibNet", "DlibResNet", "LayerSpec", "ResidualBlock", "anet_type",
    "default_weights_path", "load_dlib_face_net", "parse_dlib_net", "read_dlib_net",
]
