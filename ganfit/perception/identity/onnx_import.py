"""Read an iresnet (ArcFace) ONNX graph -- e.g. ``w600k_r50.onnx`` of insightface's buffalo_l pack or
``glintr100.onnx`` of antelopev2 -- into a state dict of `arcface.IResNet`.

Exported names vary (``onnx::Conv_685``, ``layer1.0.bn1.weight``, ...), so nothing is matched by name:
the graph is walked along its data flow from the input, following the iresnet structure (stem, residual
blocks, head) and checking each operation's type, attributes and weight shapes.

Exporters often fold a batch norm into the convolution (or fc) before it, leaving a biased Conv and no
BatchNormalization (torch's exporter in eval mode with constant folding does; insightface's packs are
exported that way). Every iresnet convolution is followed by a batch norm in our module, so a folded
pair is loaded exactly as: conv weight = the fused weight; the BN = identity scale whose bias is the
fused bias (weight 1, running_mean 0, running_var 1 - eps, bias b). A Conv bias that precedes a kept
BatchNormalization is absorbed into its running mean. So the state dict always has arcface_torch's
keys, and ``.pth`` checkpoints and ONNX packs load into the same module. A batch norm epsilon other
than 1e-5 is absorbed into the running variance.

Graphs that normalise their input themselves (old mxnet conversions start with Sub/Mul by scalars;
insightface then feeds raw 0-255 pixels) are read with those constants reported as
`ImportedIResNet.input_mean` / `input_std`.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...errors import AssetError, ModelFormatError
from .arcface import IRESNET_LAYERS

log = logging.getLogger(__name__)

__all__ = ["ImportedIResNet", "read_onnx_iresnet"]

_EPS = 1e-5  # the batch-norm epsilon of our modules
_STAGE_PLANES = (64, 128, 256, 512)
_FOLDABLE = {"Constant", "Identity", "Cast", "Unsqueeze", "Squeeze", "Reshape", "Transpose"}
_PASSTHROUGH = {"Identity", "Dropout"}


@dataclass(frozen=True)
class ImportedIResNet:
    """An iresnet read from ONNX.

    state_dict: arcface_torch keys -> float32 tensors (loads into ``IResNet(layers)`` strictly).
    layers: blocks per stage; arch: "r50" etc. (or "iresnet-a-b-c-d").
    input_mean, input_std: the network expects ``(rgb255 - input_mean) / input_std``.
    folded_bn: our batch-norm modules that the file had folded into the layer before them.
    """

    state_dict: dict[str, torch.Tensor] = field(repr=False)
    layers: tuple[int, int, int, int]
    num_features: int
    input_mean: float
    input_std: float
    folded_bn: tuple[str, ...]
    source: str

    @property
    def arch(self) -> str:
        for name, layers in IRESNET_LAYERS.items():
            if layers == self.layers:
                return name
        return "iresnet-" + "-".join(map(str, self.layers))


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise AssetError(
            "reading ArcFace .onnx packs needs the onnx package: pip install 'ganfit[insightface]' "
            "(or pip install onnx)") from exc
    return onnx


class _Graph:
    def __init__(self, model, origin: str):
        onnx = _onnx()
        from onnx import numpy_helper

        self.onnx, self.origin = onnx, origin
        graph = model.graph
        self.const: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.data_nodes = []
        for node in graph.node:
            if not self._fold(node):
                self.data_nodes.append(node)
        self.consumers: dict[str, list] = defaultdict(list)
        for node in self.data_nodes:
            for name in node.input:
                if name and name not in self.const:
                    self.consumers[name].append(node)
        inputs = [i.name for i in graph.input if i.name not in self.const]
        if len(inputs) != 1:
            raise ModelFormatError(f"{origin}: expected one image input, the graph has {inputs}")
        self.input = inputs[0]
        self.outputs = [o.name for o in graph.output]
        self.used: set[int] = set()

    # --------------------------------------------------------------- constants
    def attr(self, node, name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                return self.onnx.helper.get_attribute_value(a)
        return default

    def _fold(self, node) -> bool:
        """Evaluate a constant-only node (weights reached through Identity/Unsqueeze/Cast...)."""
        op = node.op_type
        if op not in _FOLDABLE or not all((not i) or i in self.const for i in node.input):
            return False
        from onnx import numpy_helper

        ins = [self.const[i] if i else None for i in node.input]
        if op == "Constant":
            if self.attr(node, "value") is not None:
                out = numpy_helper.to_array(self.attr(node, "value"))
            elif self.attr(node, "value_float") is not None:
                out = np.array(self.attr(node, "value_float"), np.float32)
            elif self.attr(node, "value_floats") is not None:
                out = np.array(self.attr(node, "value_floats"), np.float32)
            elif self.attr(node, "value_int") is not None:
                out = np.array(self.attr(node, "value_int"), np.int64)
            elif self.attr(node, "value_ints") is not None:
                out = np.array(self.attr(node, "value_ints"), np.int64)
            else:
                return False
        elif op == "Identity":
            out = ins[0]
        elif op == "Cast":
            out = ins[0].astype(self.onnx.helper.tensor_dtype_to_np_dtype(self.attr(node, "to")))
        elif op == "Unsqueeze":
            axes = self.attr(node, "axes") if len(ins) < 2 else ins[1].tolist()
            out = ins[0]
            rank = out.ndim + len(axes)
            for ax in sorted(a % rank for a in axes):
                out = np.expand_dims(out, ax)
        elif op == "Squeeze":
            axes = self.attr(node, "axes") if len(ins) < 2 or ins[1] is None else ins[1].tolist()
            out = np.squeeze(ins[0], axis=None if axes is None else tuple(axes))
        elif op == "Reshape":
            shape = [d if d != 0 else ins[0].shape[i] for i, d in enumerate(ins[1].tolist())]
            out = ins[0].reshape(shape)
        elif op == "Transpose":
            out = np.transpose(ins[0], self.attr(node, "perm"))
        else:  # pragma: no cover
            return False
        self.const[node.output[0]] = np.asarray(out)
        return True

    def param(self, node, idx: int, what: str) -> np.ndarray:
        name = node.input[idx] if idx < len(node.input) else ""
        if not name or name not in self.const:
            raise ModelFormatError(f"{self.origin}: {what}: input {idx} of {node.op_type} is not a constant")
        return self.const[name].astype(np.float32)

    def optional_param(self, node, idx: int) -> np.ndarray | None:
        if idx < len(node.input) and node.input[idx]:
            return self.param(node, idx, "bias")
        return None

    # --------------------------------------------------------------- data flow
    def consumers_of(self, tensor: str) -> list:
        """Operations reading `tensor`, looking through Identity/Dropout."""
        out = []
        for node in self.consumers.get(tensor, []):
            if node.op_type in _PASSTHROUGH:
                self.used.add(id(node))
                out += self.consumers_of(node.output[0])
            else:
                out.append(node)
        return out

    def next_op(self, tensor: str, after: str):
        nodes = self.consumers_of(tensor)
        if len(nodes) != 1:
            found = ", ".join(n.op_type for n in nodes) or "nothing"
            raise ModelFormatError(f"{self.origin}: after {after} expected one operation, found {found}")
        return nodes[0]

    def fail(self, msg: str):
        raise ModelFormatError(f"{self.origin}: not an arcface iresnet graph: {msg}")


class _Reader:
    def __init__(self, graph: _Graph):
        self.g = graph
        self.sd: dict[str, torch.Tensor] = {}
        self.folded: list[str] = []

    def _put(self, key: str, value) -> None:
        self.sd[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))

    def _bn(self, prefix: str, gamma, beta, mean, var, eps: float) -> None:
        self._put(prefix + ".weight", gamma)
        self._put(prefix + ".bias", beta)
        self._put(prefix + ".running_mean", mean)
        self._put(prefix + ".running_var", var.astype(np.float64) + (eps - _EPS))
        self.sd[prefix + ".num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    def _identity_bn(self, prefix: str, channels: int, bias=None) -> None:
        self.folded.append(prefix)
        bias = np.zeros(channels, np.float32) if bias is None else bias
        self._bn(prefix, np.ones(channels, np.float32), bias, np.zeros(channels, np.float32),
                 np.full(channels, 1.0 - _EPS, np.float32), _EPS)

    def batch_norm(self, node, prefix: str, channels: int, conv_bias=None) -> str:
        g = self.g
        gamma, beta, mean, var = (g.param(node, i, prefix) for i in (1, 2, 3, 4))
        if gamma.shape != (channels,):
            g.fail(f"{prefix}: batch norm over {gamma.shape} channels, expected {channels}")
        if conv_bias is not None:
            mean = mean - conv_bias
        self._bn(prefix, gamma, beta, mean, var, float(g.attr(node, "epsilon", 1e-5)))
        g.used.add(id(node))
        return node.output[0]

    def conv_bn(self, tensor: str, conv: str, bn: str, cin: int, k: int, stride: int,
                cout: int | None = None, node=None) -> tuple[str, int]:
        """A Conv (node, or the single consumer of `tensor`) and its batch norm, kept or folded.
        Returns (output tensor, output channels)."""
        g = self.g
        node = node if node is not None else g.next_op(tensor, f"the input of {conv}")
        if node.op_type != "Conv":
            g.fail(f"expected Conv for {conv}, found {node.op_type}")
        w = g.param(node, 1, conv)
        cout = w.shape[0] if cout is None else cout
        if w.shape != (cout, cin, k, k):
            g.fail(f"{conv}: weight shape {w.shape}, expected {(cout, cin, k, k)}")
        pad = (k - 1) // 2
        checks = {"group": (g.attr(node, "group", 1), 1),
                  "strides": (list(g.attr(node, "strides", [1, 1])), [stride, stride]),
                  "pads": (list(g.attr(node, "pads", [0, 0, 0, 0])), [pad] * 4),
                  "dilations": (list(g.attr(node, "dilations", [1, 1])), [1, 1])}
        for name, (got, want) in checks.items():
            if got != want:
                g.fail(f"{conv}: {name} {got}, expected {want}")
        auto_pad = g.attr(node, "auto_pad", b"NOTSET")
        if auto_pad not in (b"NOTSET", "NOTSET"):
            g.fail(f"{conv}: auto_pad {auto_pad!r} is not supported")
        g.used.add(id(node))
        self._put(conv + ".weight", w)
        bias = g.optional_param(node, 2)
        out = node.output[0]
        after = g.consumers_of(out)
        if len(after) == 1 and after[0].op_type == "BatchNormalization":
            return self.batch_norm(after[0], bn, cout, conv_bias=bias), cout
        self._identity_bn(bn, cout, bias)
        return out, cout

    def prelu(self, tensor: str, prefix: str, channels: int) -> str:
        g = self.g
        node = g.next_op(tensor, f"the input of {prefix}")
        if node.op_type != "PRelu":
            g.fail(f"expected PRelu for {prefix}, found {node.op_type}")
        slope = g.param(node, 1, prefix).reshape(-1)
        if slope.size == 1:
            slope = np.repeat(slope, channels)
        if slope.shape != (channels,):
            g.fail(f"{prefix}: PRelu slope of {slope.size} values, expected {channels}")
        g.used.add(id(node))
        self._put(prefix + ".weight", slope)
        return node.output[0]

    def input_normalisation(self) -> tuple[str, float, float]:
        """Leading scalar Sub/Add/Mul/Div on the input: y = a x + c -> (tensor, mean, std)."""
        g = self.g
        t, a, c, seen = g.input, 1.0, 0.0, False
        while True:
            nodes = g.consumers_of(t)
            if len(nodes) != 1 or nodes[0].op_type not in ("Sub", "Add", "Mul", "Div"):
                break
            node = nodes[0]
            if node.input[0] != t and node.op_type in ("Sub", "Div"):
                break
            other = node.input[1] if node.input[0] == t else node.input[0]
            if other not in g.const:
                break
            k = g.const[other].astype(np.float64).ravel()
            if k.size == 0 or not np.all(k == k[0]):
                g.fail(f"per-channel input normalisation ({node.op_type} by {k.tolist()}) is not supported")
            k = float(k[0])
            if node.op_type == "Sub":
                c -= k
            elif node.op_type == "Add":
                c += k
            elif node.op_type == "Mul":
                a, c = a * k, c * k
            else:
                a, c = a / k, c / k
            g.used.add(id(node))
            t, seen = node.output[0], True
        if not seen:
            return t, 127.5, 127.5
        if a == 0:
            g.fail("input normalisation multiplies by zero")
        return t, -c / a, 1.0 / a

    def block(self, x: str, prefix: str, cin: int, first: bool) -> tuple[str, int]:
        g = self.g
        nodes = g.consumers_of(x)
        shortcut_conv = [n for n in nodes if n.op_type == "Conv" and g.param(n, 1, prefix).shape[-1] == 1]
        main = [n for n in nodes if n not in shortcut_conv and n.op_type in ("BatchNormalization", "Conv")]
        if len(main) != 1 or len(shortcut_conv) > 1 or len(nodes) != 2:
            g.fail(f"{prefix}: unexpected operations on the block input: {[n.op_type for n in nodes]}")
        if first != bool(shortcut_conv):
            g.fail(f"{prefix}: {'missing' if first else 'unexpected'} downsampling shortcut")
        stride = 2 if shortcut_conv else 1
        t = x
        if main[0].op_type == "BatchNormalization":
            t = self.batch_norm(main[0], prefix + ".bn1", cin)
            conv1 = None
        else:
            self._identity_bn(prefix + ".bn1", cin)
            conv1 = main[0]
        t, planes = self.conv_bn(t, prefix + ".conv1", prefix + ".bn2", cin, 3, 1, node=conv1)
        t = self.prelu(t, prefix + ".prelu", planes)
        t, _ = self.conv_bn(t, prefix + ".conv2", prefix + ".bn3", planes, 3, stride, cout=planes)
        if shortcut_conv:
            s, _ = self.conv_bn(x, prefix + ".downsample.0", prefix + ".downsample.1", cin, 1, 2,
                                cout=planes, node=shortcut_conv[0])
        else:
            if planes != cin:
                g.fail(f"{prefix}: identity shortcut from {cin} to {planes} channels")
            s = x
        add = g.next_op(t, f"{prefix}.bn3")
        if add.op_type not in ("Add", "Sum") or add not in g.consumers_of(s) or len(add.input) != 2:
            g.fail(f"{prefix}: expected the residual Add, found {add.op_type}")
        g.used.add(id(add))
        return add.output[0], planes

    def head(self, x: str) -> tuple[str, int]:
        g = self.g
        node = g.next_op(x, "the last block")
        if node.op_type == "BatchNormalization":
            t = self.batch_norm(node, "bn2", 512)
            node = g.next_op(t, "bn2")
        else:
            self._identity_bn("bn2", 512)
        if node.op_type == "Flatten":
            if g.attr(node, "axis", 1) != 1:
                g.fail(f"Flatten with axis {g.attr(node, 'axis')}")
        elif node.op_type == "Reshape":
            shape = g.param(node, 1, "flatten").astype(np.int64).tolist()
            if len(shape) != 2 or shape[1] not in (-1, 512 * 49):
                g.fail(f"Reshape to {shape} before the fc layer")
        else:
            g.fail(f"expected Flatten before the fc layer, found {node.op_type}")
        g.used.add(id(node))
        node = g.next_op(node.output[0], "flatten")
        if node.op_type == "Gemm":
            if g.attr(node, "transA", 0):
                g.fail("Gemm with transA")
            w = g.param(node, 1, "fc")
            w = w if g.attr(node, "transB", 0) else w.T
            w = w * float(g.attr(node, "alpha", 1.0))
            b = g.optional_param(node, 2)
            if b is not None:
                b = b.reshape(-1) * float(g.attr(node, "beta", 1.0))
            out = node.output[0]
        elif node.op_type == "MatMul":
            w = g.param(node, 1, "fc").T
            out, b = node.output[0], None
            nxt = g.consumers_of(out)
            if len(nxt) == 1 and nxt[0].op_type == "Add":
                add = nxt[0]
                other = add.input[1] if add.input[0] == out else add.input[0]
                if other in g.const:
                    b = g.const[other].astype(np.float32).reshape(-1)
                    g.used.add(id(add))
                    out = add.output[0]
        else:
            g.fail(f"expected the fc layer (Gemm or MatMul), found {node.op_type}")
        g.used.add(id(node))
        dim = w.shape[0]
        if w.shape != (dim, 512 * 49):
            g.fail(f"fc weight shape {w.shape}, expected (D, {512 * 49})")
        b = np.zeros(dim, np.float32) if b is None else b
        if b.shape != (dim,):
            g.fail(f"fc bias shape {b.shape}, expected ({dim},)")
        self._put("fc.weight", w)
        self._put("fc.bias", b)
        nxt = g.consumers_of(out)
        if len(nxt) == 1 and nxt[0].op_type == "BatchNormalization":
            out = self.batch_norm(nxt[0], "features", dim)
        else:
            self._identity_bn("features", dim)
        return out, dim

    def read(self) -> tuple[str, tuple[int, ...], int, float, float]:
        g = self.g
        t, mean, std = self.input_normalisation()
        t, _ = self.conv_bn(t, "conv1", "bn1", 3, 3, 1, cout=64)
        t = self.prelu(t, "prelu", 64)
        counts, cin = [], 64
        while True:
            nodes = g.consumers_of(t)
            if len(nodes) < 2:
                break
            first = any(n.op_type == "Conv" and g.param(n, 1, "shortcut").shape[-1] == 1 for n in nodes)
            if first:
                counts.append(0)
            if not counts or len(counts) > 4:
                g.fail("the stage structure does not match iresnet (four stages, each opening with a "
                       "downsampling block)")
            t, planes = self.block(t, f"layer{len(counts)}.{counts[-1]}", cin, first)
            if planes != _STAGE_PLANES[len(counts) - 1]:
                g.fail(f"stage {len(counts)} has {planes} channels, expected {_STAGE_PLANES[len(counts) - 1]}")
            counts[-1] += 1
            cin = planes
        if len(counts) != 4:
            g.fail(f"found {len(counts)} stages, expected 4")
        out, dim = self.head(t)
        return out, tuple(counts), dim, mean, std


def _load_model(source, origin: str):
    onnx = _onnx()
    if isinstance(source, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(source))
        except Exception as exc:  # protobuf raises its own DecodeError types
            raise ModelFormatError(f"{origin}: not a readable ONNX model ({exc})") from exc
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise AssetError(f"ONNX file {path} does not exist")
        try:
            return onnx.load(str(path))
        except Exception as exc:  # protobuf raises its own DecodeError types
            raise ModelFormatError(f"{path}: not a readable ONNX model ({exc})") from exc
    return source  # a ModelProto


def read_onnx_iresnet(source) -> ImportedIResNet:
    """Read an iresnet ONNX graph into arcface_torch-keyed weights.

    Args:
        source: path of an ``.onnx`` file, its bytes, or an ``onnx.ModelProto``.
    Raises:
        ModelFormatError naming the first operation that does not fit the iresnet structure.
    """
    origin = str(source) if isinstance(source, (str, os.PathLike)) else "ONNX model"
    model = _load_model(source, origin)
    graph = _Graph(model, origin)
    reader = _Reader(graph)
    out, layers, dim, mean, std = reader.read()
    # Everything the walk did not use must be downstream of the embedding (e.g. an L2 norm).
    tail, stack = set(), [out]
    while stack:
        for node in graph.consumers.get(stack.pop(), []):
            if id(node) not in tail:
                tail.add(id(node))
                stack.extend(node.output)
    unused = [n for n in graph.data_nodes if id(n) not in graph.used and id(n) not in tail]
    if unused:
        ops = ", ".join(f"{n.op_type} {n.name!r}" for n in unused[:5])
        raise ModelFormatError(f"{origin}: operations outside the iresnet structure: {ops}")
    if tail:
        log.info("%s: ignoring %d operation(s) after the embedding", origin, len(tail))
    if reader.folded:
        log.debug("%s: batch norms folded in the file: %s", origin, ", ".join(reader.folded))
    return ImportedIResNet(
        state_dict=reader.sd, layers=layers, num_features=dim, input_mean=float(mean),
        input_std=float(std), folded_bn=tuple(reader.folded), source=origin,
    )
