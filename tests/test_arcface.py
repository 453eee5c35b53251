"""ArcFace: iresnet architecture, .pth and ONNX loading (round trips through torch's exporters and
onnxruntime), the 5-point alignment crop, and the missing-weights error. Random r18 weights only:
no download, no trained network."""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ganfit.errors import AssetError, ConfigError, ModelFormatError
from ganfit.perception.identity import ArcFace, make_identity_net
from ganfit.perception.identity.arcface import (ARCFACE_TEMPLATE_112, IResNet, align_faces, five_points, iresnet,
                                                layers_from_state_dict, load_iresnet, load_iresnet_state_dict,
                                                similarity_transform)

onnx = pytest.importorskip("onnx")
from ganfit.perception.identity.onnx_import import read_onnx_iresnet  # noqa: E402


def random_iresnet(arch: str = "r18", seed: int = 0) -> IResNet:
    """An iresnet with random weights and non-trivial batch-norm statistics and PReLU slopes."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m = iresnet(arch)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = mod.num_features
                mod.weight.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.copy_(0.1 * torch.randn(n, generator=g))
                mod.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                mod.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            elif isinstance(mod, nn.PReLU):
                mod.weight.copy_(0.5 * torch.rand(mod.weight.shape, generator=g))
    return m.eval()


def export(model: nn.Module, x: torch.Tensor, *, fold: bool) -> bytes:
    """ONNX bytes from torch's TorchScript exporter; `fold` folds batch norms into convolutions."""
    f = io.BytesIO()
    model.eval()  # the exporter restores the mode it found; never leave a fixture in training mode
    mode = torch.onnx.TrainingMode.EVAL if fold else torch.onnx.TrainingMode.PRESERVE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, dynamo=False, training=mode, do_constant_folding=fold,
                          input_names=["input"], output_names=["embedding"],
                          dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}})
    return f.getvalue()


def identity_landmarks(batch: int = 1, dtype=torch.float32) -> torch.Tensor:
    """68 landmarks whose five ArcFace points are exactly the 112x112 template."""
    t = torch.tensor(ARCFACE_TEMPLATE_112, dtype=dtype)
    lm = torch.full((68, 2), 56.0, dtype=dtype)
    lm[36:42], lm[42:48], lm[30], lm[48], lm[54] = t[0], t[1], t[2], t[3], t[4]
    return lm.expand(batch, 68, 2).clone()


@pytest.fixture(scope="module")
def r18() -> IResNet:
    return random_iresnet("r18")


@pytest.fixture(scope="module")
def x2() -> torch.Tensor:
    """One image (batch 1 keeps the file fast; the exports have a dynamic batch axis)."""
    return torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def ref(r18, x2) -> torch.Tensor:
    with torch.no_grad():
        return r18(x2)


# ----------------------------------------------------------------------------- architecture


def test_parameter_names_and_shapes_follow_arcface_torch(r18):
    sd = r18.state_dict()
    expected = {
        "conv1.weight": (64, 3, 3, 3), "bn1.running_var": (64,), "prelu.weight": (64,),
        "layer1.0.bn1.weight": (64,), "layer1.0.conv1.weight": (64, 64, 3, 3), "layer1.0.prelu.weight": (64,),
        "layer1.0.conv2.weight": (64, 64, 3, 3), "layer1.0.bn3.bias": (64,),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1), "layer1.0.downsample.1.num_batches_tracked": (),
        "layer2.0.conv1.weight": (128, 64, 3, 3), "layer4.1.conv2.weight": (512, 512, 3, 3),
        "bn2.weight": (512,), "fc.weight": (512, 512 * 7 * 7), "fc.bias": (512,), "features.running_mean": (512,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.endswith(".bias") and ("conv" in k or "downsample.0" in k) for k in sd)
    assert "layer1.1.downsample.0.weight" not in sd
    assert layers_from_state_dict(sd) == (2, 2, 2, 2)
    assert r18.arch == "r18"


def test_forward_shapes(r18, x2, ref):
    feats = r18.trunk(x2[:1])
    assert [tuple(f.shape) for f in feats] == [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    assert ref.shape == (1, 512) and torch.isfinite(ref).all()


# ----------------------------------------------------------------------------- .pth checkpoints


def test_pth_round_trip(tmp_path, r18, x2, ref):
    path = tmp_path / "backbone.pth"
    torch.save(r18.state_dict(), path)
    model, mean, std = load_iresnet(path)
    assert (mean, std) == (127.5, 127.5) and model.arch == "r18"
    with torch.no_grad():
        assert torch.equal(model(x2), ref)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "state_dict_backbone", "module-prefix"])
def test_nested_checkpoints(r18, wrap):
    """What torch.load returns for training checkpoints (arcface_torch's checkpoint_gpu_0.pt keeps
    the backbone under state_dict_backbone; DistributedDataParallel adds module.)."""
    sd = r18.state_dict()
    obj = {"state_dict": {"state_dict": sd, "epoch": 3}, "model": {"model": sd},
           "state_dict_backbone": {"state_dict_backbone": sd, "global_step": 10},
           "module-prefix": {"module." + k: v for k, v in sd.items()}}[wrap]
    model = load_iresnet_state_dict(obj)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), sd.values()))


def test_pth_missing_num_batches_tracked_is_accepted(tmp_path, r18):
    sd = {k: v for k, v in r18.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = load_iresnet_state_dict(sd)
    assert model.arch == "r18"


def test_pth_wrong_architecture_names_the_key(tmp_path, r18):
    sd = dict(r18.state_dict())
    missing = dict(sd)
    del missing["layer2.0.bn2.running_mean"]
    with pytest.raises(ModelFormatError, match=r"missing key 'layer2\.0\.bn2\.running_mean'"):
        load_iresnet_state_dict(missing)
    extra = dict(sd, **{"layer1.0.conv1.bias": torch.zeros(64)})
    with pytest.raises(ModelFormatError, match=r"unexpected key 'layer1\.0\.conv1\.bias'"):
        load_iresnet_state_dict(extra)
    shape = dict(sd, **{"layer3.1.conv2.weight": torch.zeros(256, 256, 1, 1)})
    path = tmp_path / "bad.pth"
    torch.save(shape, path)
    with pytest.raises(ModelFormatError, match=r"shape mismatch for 'layer3\.1\.conv2\.weight'.*bad\.pth|bad\.pth.*shape mismatch for 'layer3\.1\.conv2\.weight'"):
        load_iresnet(path)
    other = {"encoder.weight": torch.zeros(3, 3)}
    with pytest.raises(ModelFormatError, match="not an arcface_torch iresnet"):
        load_iresnet_state_dict(other)


def _evil(path: str) -> None:  # what a malicious checkpoint would run on unpickling
    Path(path).write_text("pwned")


class _Evil:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (_evil, (self.path,))


def test_pth_with_code_is_refused(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil(str(marker))}, path)
    with pytest.raises(ModelFormatError, match="refused"):
        load_iresnet(path)
    assert not marker.exists()


def test_pth_garbage_is_a_format_error(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelFormatError):
        load_iresnet(path)


# ----------------------------------------------------------------------------- ONNX import


@pytest.fixture(scope="module")
def onnx_folded(r18, x2) -> bytes:
    return export(r18, x2, fold=True)


def _ort(data: bytes, x: torch.Tensor) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def test_onnx_folded_round_trip_and_onnxruntime(onnx_folded, x2, ref):
    graph_ops = {n.op_type for n in onnx.load_from_string(onnx_folded).graph.node}
    imp = read_onnx_iresnet(onnx_folded)
    assert imp.arch == "r18" and (imp.input_mean, imp.input_std) == (127.5, 127.5)
    # the exporter folds every BN that follows a conv: stem, bn2/bn3 of 8 blocks, 4 shortcuts
    assert len(imp.folded_bn) == 21 and "layer2.0.downsample.1" in imp.folded_bn
    assert "layer1.0.bn1" not in imp.folded_bn and "BatchNormalization" in graph_ops
    model = load_iresnet_state_dict(imp.state_dict)
    with torch.no_grad():
        out = model(x2)
    assert (out - ref).abs().max() < 1e-5
    assert np.abs(_ort(onnx_folded, x2) - out.numpy()).max() < 1e-4


def test_onnx_unfolded_round_trip_and_onnxruntime(r18, x2, ref):
    data = export(r18, x2, fold=False)
    imp = read_onnx_iresnet(data)
    assert imp.folded_bn == ()
    model = load_iresnet_state_dict(imp.state_dict)
    with torch.no_grad():
        out = model(x2)
    assert (out - ref).abs().max() < 1e-5
    assert np.abs(_ort(data, x2) - out.numpy()).max() < 1e-4


@pytest.mark.slow
def test_onnx_dynamo_exporter(r18, x2, ref):
    """torch's default (dynamo) exporter also folds the final BatchNorm1d into the Gemm and flattens
    with Reshape."""
    pytest.importorskip("onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(r18, (x2,), None, dynamo=True, optimize=True, verbose=False)
    imp = read_onnx_iresnet(prog.model_proto)
    model = load_iresnet_state_dict(imp.state_dict)
    with torch.no_grad():
        assert (model(x2) - ref).abs().max() < 1e-5


class _InGraphNormalisation(nn.Module):
    """Like the mxnet-converted packs: the graph normalises raw 0-255 input itself."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net((x - 127.5) * 0.0078125)


def test_onnx_in_graph_normalisation_is_reported(r18, x2, ref, tmp_path):
    raw = x2 * 127.5 + 127.5
    wrapped = _InGraphNormalisation(r18).eval()
    data = export(wrapped, raw, fold=True)
    imp = read_onnx_iresnet(data)
    assert imp.input_mean == pytest.approx(127.5) and imp.input_std == pytest.approx(128.0)
    model = load_iresnet_state_dict(imp.state_dict)
    with torch.no_grad():
        out = model((raw - imp.input_mean) / imp.input_std)
        assert (out - wrapped(raw)).abs().max() < 1e-5
    path = tmp_path / "mx.onnx"
    path.write_bytes(data)
    assert load_iresnet(path)[1:] == pytest.approx((127.5, 128.0))  # what ArcFace feeds it


def test_onnx_other_network_is_rejected():
    net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.PReLU(64), nn.Flatten()).eval()
    data = export(net, torch.zeros(1, 3, 8, 8), fold=True)
    with pytest.raises(ModelFormatError, match="iresnet"):
        read_onnx_iresnet(data)
    with pytest.raises(ModelFormatError):
        read_onnx_iresnet(b"\x00garbage")


# ----------------------------------------------------------------------------- alignment


def test_similarity_transform_recovers_and_matches_umeyama():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(3, 5, 2, generator=g, dtype=torch.float64) * 30 + 100
    ang = torch.tensor([0.3, -1.0, 2.5], dtype=torch.float64)
    s = torch.tensor([0.7, 1.3, 2.0], dtype=torch.float64)
    R = torch.stack([torch.stack([ang.cos(), -ang.sin()], -1), torch.stack([ang.sin(), ang.cos()], -1)], -2) * s[:, None, None]
    t = torch.tensor([[5.0, -3.0], [0.0, 10.0], [-20.0, 1.0]], dtype=torch.float64)
    dst = src @ R.transpose(1, 2) + t[:, None]
    M = similarity_transform(src, dst)
    assert torch.allclose(M[:, :, :2], R, atol=1e-10) and torch.allclose(M[:, :, 2], t, atol=1e-8)
    # noisy points: the least-squares answer equals Umeyama's SVD solution
    noisy = dst + torch.randn(dst.shape, generator=g, dtype=torch.float64)
    M = similarity_transform(src, noisy)
    for b in range(3):
        p, q = src[b].numpy(), noisy[b].numpy()
        mp, mq = p.mean(0), q.mean(0)
        cov = (q - mq).T @ (p - mp) / len(p)
        U, S, Vt = np.linalg.svd(cov)
        D = np.diag([1.0, np.sign(np.linalg.det(U @ Vt))])
        Rot = U @ D @ Vt
        scale = np.trace(np.diag(S) @ D) / ((p - mp) ** 2).sum(1).mean()
        A = scale * Rot
        assert np.allclose(M[b, :, :2].numpy(), A, atol=1e-10)
        assert np.allclose(M[b, :, 2].numpy(), mq - A @ mp, atol=1e-8)


def test_identity_landmarks_give_the_image_itself():
    img = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(five_points(identity_landmarks()), torch.tensor(ARCFACE_TEMPLATE_112)[None])
    crop = align_faces(img, identity_landmarks())
    assert (crop - img).abs().max() < 1e-4


def _pattern(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A smooth 3-channel image function of face coordinates (u, v) (wavelengths 30-60 px)."""
    return torch.stack([0.5 + 0.2 * torch.sin(u / 9.0 + 0.3 * v / 7.0),
                        0.5 + 0.2 * torch.cos(v / 8.0 - u / 19.0 + 1.0),
                        0.5 + 0.2 * torch.sin((u + v) / 11.0 + 2.0)], 0)


def _render(size: int, S: torch.Tensor) -> torch.Tensor:
    """(1, 3, size, size): pixel p shows _pattern(S^-1 p) for the 2x3 similarity S."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    A, t = S[:, :2], S[:, 2]
    q = torch.linalg.solve(A, torch.stack([xs.ravel() - t[0], ys.ravel() - t[1]]))
    return _pattern(q[0], q[1]).reshape(3, size, size)[None].float()


def test_alignment_is_invariant_to_moving_the_face():
    """A shifted, scaled and rotated copy of an image, with its landmarks moved the same way, gives
    the same 112x112 crop (up to bilinear interpolation error)."""
    g = torch.Generator().manual_seed(3)
    tmpl = torch.tensor(ARCFACE_TEMPLATE_112, dtype=torch.float64)
    c, s = math.cos(0.1), math.sin(0.1)
    lm = torch.rand(1, 68, 2, generator=g, dtype=torch.float64) * 60 + 40
    five = tmpl @ (1.15 * torch.tensor([[c, s], [-s, c]], dtype=torch.float64)) + torch.tensor([22.0, 16.0])
    lm[0, 36:42], lm[0, 42:48] = five[0], five[1]
    lm[0, 30], lm[0, 48], lm[0, 54] = five[2], five[3], five[4]
    S_a = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
    ang, sc = -0.35, 1.6
    S_b = torch.tensor([[sc * math.cos(ang), -sc * math.sin(ang), 30.0],
                        [sc * math.sin(ang), sc * math.cos(ang), 95.0]], dtype=torch.float64)
    lm_b = lm @ S_b[:, :2].T + S_b[:, 2]
    crop_a = align_faces(_render(170, S_a), lm.float())
    crop_b = align_faces(_render(330, S_b), lm_b.float())
    # the exact crop: the pattern at M^-1 d for the template-pixel grid d
    M = similarity_transform(five_points(lm), tmpl)[0]
    exact = _render(112, M)
    assert crop_a.min() > 0.2 and crop_b.min() > 0.2  # the crop lies inside both images
    assert (crop_a - exact).abs().max() < 5e-3
    assert (crop_b - exact).abs().max() < 5e-3
    assert (crop_a - crop_b).abs().max() < 5e-3


# ----------------------------------------------------------------------------- ArcFace


def test_arcface_from_onnx_file(tmp_path, onnx_folded, r18):
    path = tmp_path / "w600k_r50.onnx"
    path.write_bytes(onnx_folded)
    net = ArcFace(path)
    assert net.name == "arcface-r18" and net.embedding_dim == 512
    img = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    emb = net.embed(img, identity_landmarks(1))
    assert emb.shape == (1, 512) and torch.allclose(emb.norm(dim=-1), torch.ones(1), atol=1e-5)
    with torch.no_grad():
        expect = torch.nn.functional.normalize(r18((img * 255 - 127.5) / 127.5), dim=-1)
    assert (emb - expect).abs().max() < 1e-4
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.net.training


def test_missing_weights_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # no ~/.insightface either
    monkeypatch.setenv("GANFIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GANFIT_INSIGHTFACE_BUFFALO_L", raising=False)
    monkeypatch.delenv("GANFIT_INSIGHTFACE_ANTELOPEV2", raising=False)
    with pytest.raises(AssetError, match=r"insightface.*\.insightface/models/buffalo_l.*"
                                         r"ganfit assets path insightface-buffalo-l"):
        ArcFace()
    with pytest.raises(AssetError):
        make_identity_net("arcface")
    with pytest.raises(AssetError, match="do not exist"):
        ArcFace(tmp_path / "nope.onnx")
    with pytest.raises(ConfigError):
        make_identity_net("vggface")


def test_insightface_home_pack_is_found_and_loads(tmp_path, monkeypatch, onnx_folded, r18):
    """`--identity arcface` without weights: the buffalo_l pack where insightface keeps it, ~/.insightface/models."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("GANFIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GANFIT_INSIGHTFACE_BUFFALO_L", raising=False)
    monkeypatch.delenv("GANFIT_INSIGHTFACE_ANTELOPEV2", raising=False)
    pack = tmp_path / "user" / ".insightface" / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    (pack / "w600k_r50.onnx").write_bytes(onnx_folded)
    (pack / "det_10g.onnx").write_bytes(b"not a recognition network")
    net = make_identity_net("arcface")
    assert net.name == "arcface-r18" and net.source == str(pack / "w600k_r50.onnx")
    img = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expect = torch.nn.functional.normalize(r18((img * 255 - 127.5) / 127.5), dim=-1)
        assert (net.embed(img, identity_landmarks(1)) - expect).abs().max() < 1e-4
    assert make_identity_net("arcface", "buffalo_l").source == str(pack)   # a pack name works too


def test_registered_pack_path_is_used(tmp_path, monkeypatch, onnx_folded):
    from ganfit.assets import get_asset, set_user_path

    assert get_asset("insightface-buffalo-l").kind == "user-path"
    assert get_asset("insightface-antelopev2").kind == "user-path"
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("GANFIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GANFIT_INSIGHTFACE_BUFFALO_L", raising=False)
    monkeypatch.delenv("GANFIT_INSIGHTFACE_ANTELOPEV2", raising=False)
    pack = tmp_path / "antelopev2"
    pack.mkdir()
    (pack / "glintr100.onnx").write_bytes(onnx_folded)
    set_user_path("insightface-antelopev2", pack)
    net = make_identity_net("arcface")
    assert net.name == "arcface-r18" and net.source == str(pack)


def test_a_lit_render_slightly_above_one_is_clamped_not_refused():
    """Renders overshoot [0, 1] before clamping: ArcFace clamps up to 2 (the gradient passes inside the
    range) and refuses 0-255 data instead of embedding it as if it were [0, 1]."""
    net = ArcFace(random_iresnet("r18", seed=3))
    gen = torch.Generator().manual_seed(5)
    lm = identity_landmarks(1)
    bright = torch.rand(1, 3, 112, 112, generator=gen) * 1.2
    with torch.no_grad():
        assert torch.allclose(net.embed(bright, lm), net.embed(bright.clamp(0, 1), lm), atol=1e-6)
    with pytest.raises(ValueError, match=r"0-255 data"):
        net.embed(bright * 255, lm)
    x = (torch.rand(1, 3, 112, 112, generator=gen) * 1.05).requires_grad_(True)
    net.embed(x, lm).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[x.detach() > 1] == 0).all() and (x.grad[x.detach() <= 1] != 0).float().mean() > 0.9
