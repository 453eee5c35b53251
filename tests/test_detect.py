"""ganfit.perception.detect and ganfit.perception.landmark_file on the bundled astronaut photo."""
from __future__ import annotations

import copy
import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from ganfit.errors import AssetError, ConfigError, LandmarkError, NoFaceError
from ganfit.io.images import load_image
from ganfit.perception import detect as detect_module
from ganfit.perception.detect import (
    Detection,
    DlibDetector,
    FaceDetector,
    default_predictor_path,
    make_detector,
    select_face,
)
from ganfit.perception.landmark_file import read_landmarks, write_pts

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> DlibDetector:
    # keep ganfit.assets' verification stamps out of the user's cache
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GANFIT_HOME", str(tmp_path_factory.mktemp("ganfit-home")))
        return DlibDetector()


@pytest.fixture(scope="module")
def astronaut() -> PILImage.Image:
    with PILImage.open(ASTRONAUT) as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def reference(detector: DlibDetector) -> Detection:
    detections = detector.detect(load_image(ASTRONAUT).pixels)
    assert len(detections) == 1
    return detections[0]


def _face_size(detection: Detection) -> float:
    return detection.width


# ----------------------------------------------------------------------------------- astronaut


def test_astronaut_box_and_result_types(reference: Detection):
    x0, y0, x1, y1 = reference.box
    assert 150 <= x0 < x1 <= 310 and 50 <= y0 < y1 <= 210
    assert reference.box.shape == (4,) and reference.landmarks.shape == (68, 2)
    assert reference.landmarks.dtype == np.float64 and reference.backend == "dlib"
    assert reference.score > 0.5


def test_astronaut_landmarks_are_sensible(reference: Detection):
    points = reference.landmarks
    assert (points[:, 0] > 150).all() and (points[:, 0] < 310).all()
    assert (points[:, 1] > 50).all() and (points[:, 1] < 210).all()
    eyes, nose_tip, mouth = points[36:48], points[30], points[48:68]
    assert eyes[:, 1].max() < nose_tip[1] < mouth[:, 1].min()
    assert points[36:42, 0].mean() < nose_tip[0] < points[42:48, 0].mean()  # left eye, nose, right eye
    assert points[17:27, 1].max() < eyes[:, 1].min() + 5  # brows above the eyes
    jaw_x = points[0:17, 0]
    assert (np.diff(jaw_x) > 0).all(), "jaw points should run left to right"
    assert points[8, 1] == points[0:17, 1].max()  # chin is the lowest jaw point


def test_detector_follows_protocol(detector: DlibDetector):
    assert isinstance(detector, FaceDetector)


def test_uint8_input_gives_same_result(detector: DlibDetector, astronaut: PILImage.Image, reference: Detection):
    (detection,) = detector.detect(np.asarray(astronaut))
    np.testing.assert_allclose(detection.landmarks, reference.landmarks, atol=1e-9)


def test_exif_rotated_jpeg_is_upright_and_landmarks_land_on_face(
    tmp_path: Path, detector: DlibDetector, astronaut: PILImage.Image, reference: Detection
):
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the stored pixels are turned 90 counter-clockwise
    astronaut.transpose(PILImage.Transpose.ROTATE_90).save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    image = load_image(tmp_path / "rotated.jpg")
    assert image.orientation_applied == 6
    (detection,) = detector.detect(image.pixels)
    error = np.linalg.norm(detection.landmarks - reference.landmarks, axis=1)
    assert error.mean() < 1.5 and error.max() < 4.0, error


def test_8000px_photo_matches_512px_landmarks(detector: DlibDetector, astronaut: PILImage.Image, reference: Detection):
    side = 8000
    big = np.asarray(astronaut.resize((side, side), PILImage.Resampling.BICUBIC)).astype(np.float32)
    big /= 255.0
    detections = detector.detect(big)
    assert len(detections) == 1
    scale = side / 512
    landmarks = (detections[0].landmarks + 0.5) / scale - 0.5  # back to 512-px pixel centres
    error = np.linalg.norm(landmarks - reference.landmarks, axis=1)
    assert error.max() < 0.04 * _face_size(reference), error  # within 4 % of the face size
    assert error.mean() < 0.015 * _face_size(reference)
    np.testing.assert_allclose(detections[0].box / scale, reference.box, atol=0.1 * _face_size(reference))


def test_small_face_found_by_upsample_pass(detector: DlibDetector, astronaut: PILImage.Image, reference: Detection):
    small = np.asarray(astronaut.resize((256, 256), PILImage.Resampling.LANCZOS))  # face about 45 px
    no_upsample = copy.copy(detector)
    no_upsample.upsample = 0
    assert no_upsample.find_boxes(small)[0] == []
    (detection,) = detector.detect(small)
    nose = (detection.landmarks[30] + 0.5) * 2 - 0.5
    assert np.linalg.norm(nose - reference.landmarks[30]) < 0.08 * _face_size(reference)


# ---------------------------------------------------------------------------------------- faces


@pytest.mark.parametrize("kind", ["gradient", "noise", "flat"])
def test_no_face(detector: DlibDetector, kind: str):
    rng = np.random.default_rng(0)
    if kind == "gradient":
        pixels = np.repeat(np.linspace(0, 1, 400, dtype=np.float32)[None, :, None], 300, 0).repeat(3, 2)
    elif kind == "noise":
        pixels = rng.random((300, 400, 3), dtype=np.float32)
    else:
        pixels = np.full((300, 400, 3), 0.5, np.float32)
    detections = detector.detect(pixels)
    assert detections == []
    with pytest.raises(NoFaceError, match=r"no face found in blank\.png: .*visible"):
        select_face(detections, source="blank.png")


def _two_face_canvas(astronaut: PILImage.Image) -> np.ndarray:
    face = astronaut.crop((120, 20, 330, 250))  # 210 x 230 around the face
    canvas = PILImage.new("RGB", (900, 520), (128, 128, 128))
    canvas.paste(face, (30, 150))  # small face on the left
    canvas.paste(face.resize((315, 345), PILImage.Resampling.BICUBIC), (480, 60))  # 1.5x on the right
    return np.asarray(canvas, np.float32) / 255.0


def test_two_faces_largest_by_default_and_face_index(
    detector: DlibDetector, astronaut: PILImage.Image, caplog: pytest.LogCaptureFixture
):
    detections = detector.detect(_two_face_canvas(astronaut))
    assert len(detections) == 2
    with caplog.at_level(logging.WARNING, logger="ganfit.perception.detect"):
        chosen = select_face(detections, source="pair.png")
    assert chosen.center[0] > 450 and chosen.width > 100
    assert "2 faces found in pair.png" in caplog.text and "face_index=1" in caplog.text
    assert "box [" in caplog.text
    left = select_face(detections, face_index=0)
    assert left.center[0] < 450 and left.width < chosen.width
    assert select_face(detections, face_index=1) is chosen
    with pytest.raises(NoFaceError, match="face_index 2"):
        select_face(detections, face_index=2)


def test_single_face_no_warning(reference: Detection, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        assert select_face([reference]) is reference
    assert caplog.text == ""


def test_detect_rejects_wrong_shape(detector: DlibDetector):
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detector.detect(np.zeros((64, 64), np.float32))


# --------------------------------------------------------------------------------- construction


def test_default_predictor_path_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("GANFIT_HOME", str(tmp_path))
    assert default_predictor_path().name == "shape_predictor_68_face_landmarks.dat"
    assert default_predictor_path().is_file()


def test_default_predictor_path_without_assets_package(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "ganfit.assets", None)  # import of ganfit.assets fails
    assert default_predictor_path().is_file()
    monkeypatch.setattr(detect_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AssetError, match="pip install face-recognition-models"):
        default_predictor_path()


def test_missing_or_corrupt_predictor(tmp_path: Path):
    with pytest.raises(AssetError, match="not found"):
        DlibDetector(predictor_path=tmp_path / "missing.dat")
    (tmp_path / "bad.dat").write_bytes(b"not a model")
    with pytest.raises(AssetError, match="cannot load"):
        DlibDetector(predictor_path=tmp_path / "bad.dat")


def test_make_detector(detector: DlibDetector, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(detect_module, "default_predictor_path", lambda: detect_module._packaged_predictor_path())
    assert isinstance(make_detector("dlib", upsample=0), DlibDetector)
    with pytest.raises(ConfigError, match="unknown face detector 'mtcnn'.*dlib, fan"):
        make_detector("mtcnn")


def test_fan_without_package_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "face_alignment", None)
    with pytest.raises(AssetError, match=r"pip install ganfit\[fan\]"):
        make_detector("fan")


def test_fan_without_weights_says_where_to_put_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    fake = types.ModuleType("face_alignment")
    api = types.ModuleType("face_alignment.api")
    api.models_urls = {"2DFAN-4": "https://example.invalid/2DFAN4-abc.pth.tar"}  # type: ignore[attr-defined]
    sfd = types.ModuleType("face_alignment.detection.sfd.sfd_detector")
    sfd.models_urls = {"s3fd": "https://example.invalid/s3fd-abc.pth"}  # type: ignore[attr-defined]
    for name, module in [("face_alignment", fake), ("face_alignment.api", api),
                         ("face_alignment.detection", types.ModuleType("face_alignment.detection")),
                         ("face_alignment.detection.sfd", types.ModuleType("face_alignment.detection.sfd")),
                         ("face_alignment.detection.sfd.sfd_detector", sfd)]:
        monkeypatch.setitem(sys.modules, name, module)
    hub = types.ModuleType("torch.hub")
    hub.get_dir = lambda: str(tmp_path)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.hub", hub)
    with pytest.raises(AssetError, match=r"weights are missing: download .*2DFAN4-abc\.pth\.tar to .*checkpoints"):
        make_detector("fan")


@pytest.mark.parametrize("kwargs", [{"max_side": 10}, {"upsample": -1}])
def test_bad_dlib_settings(kwargs: dict):
    with pytest.raises(ConfigError):
        DlibDetector(**kwargs)


# ------------------------------------------------------------------------------- landmark files


@pytest.fixture()
def landmarks() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.uniform(0, 500, (68, 2)).round(3)


def test_pts_round_trip_and_one_based(tmp_path: Path, landmarks: np.ndarray):
    write_pts(tmp_path / "a.pts", landmarks)
    text = (tmp_path / "a.pts").read_text()
    assert text.startswith("version: 1\nn_points: 68\n{\n") and text.rstrip().endswith("}")
    first = [float(v) for v in text.splitlines()[3].split()]
    np.testing.assert_allclose(first, landmarks[0] + 1)  # 300-W files are 1-based
    np.testing.assert_allclose(read_landmarks(tmp_path / "a.pts"), landmarks, atol=1e-6)
    np.testing.assert_allclose(read_landmarks(tmp_path / "a.pts", pts_one_based=False), landmarks + 1, atol=1e-6)


def test_pts_ibug_style_file(tmp_path: Path, landmarks: np.ndarray):
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in landmarks + 1)
    (tmp_path / "ibug.pts").write_text(f"version: 1\r\nn_points:  68\r\n{{\r\n{body}\r\n}}\r\n")
    np.testing.assert_allclose(read_landmarks(tmp_path / "ibug.pts"), landmarks, atol=1e-6)


def test_json_formats(tmp_path: Path, landmarks: np.ndarray):
    (tmp_path / "list.json").write_text(json.dumps(landmarks.tolist()))
    (tmp_path / "obj.json").write_text(json.dumps({"landmarks": landmarks.tolist(), "image": "a.jpg"}))
    for name in ("list.json", "obj.json"):
        np.testing.assert_allclose(read_landmarks(tmp_path / name), landmarks)


def test_npy_and_txt(tmp_path: Path, landmarks: np.ndarray):
    np.save(tmp_path / "a.npy", landmarks.astype(np.float32))
    np.testing.assert_allclose(read_landmarks(tmp_path / "a.npy"), landmarks, atol=1e-4)
    lines = ["# x y"] + [f"{x} {y}" for x, y in landmarks[:34]] + [""] + [f"{x},{y}" for x, y in landmarks[34:]]
    (tmp_path / "a.txt").write_text("\n".join(lines))
    np.testing.assert_allclose(read_landmarks(tmp_path / "a.txt"), landmarks)


def test_detected_landmarks_round_trip(tmp_path: Path, reference: Detection):
    write_pts(tmp_path / "astronaut.pts", reference.landmarks)
    np.testing.assert_allclose(read_landmarks(tmp_path / "astronaut.pts"), reference.landmarks, atol=1e-5)


def _write(path: Path, content) -> Path:
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("few.txt", "1 2\n3 4\n", "has 2 landmarks; expected 68"),
        ("few.npy", np.zeros((5, 2)), "has 5 landmarks; expected 68"),
        ("wide.npy", np.zeros((68, 3)), r"shape \(N, 2\)"),
        ("nan.json", json.dumps([[1.0, 2.0]] * 67 + [[float("nan"), 1.0]]), "NaN"),
        ("nan.txt", "nan 1\n" * 68, "NaN"),
        ("bad.json", "{not json", "not valid JSON"),
        ("key.json", json.dumps({"points": []}), "'landmarks' key"),
        ("pairs.json", json.dumps([[1, 2, 3]] * 68), r"\[x, y\] pairs"),
        ("count.pts", "version: 1\nn_points: 68\n{\n1 2\n}\n", "declares n_points: 68 but lists 1"),
        ("brace.pts", "version: 1\nn_points: 1\n1 2\n", "not a .pts file"),
        ("words.txt", "left eye 1 2\n", "malformed"),
        ("empty.txt", "", "has 0 landmarks"),
        ("landmarks.csv", "1,2\n", "unsupported landmark file"),
    ],
)
def test_bad_landmark_files(tmp_path: Path, name: str, content, message: str):
    with pytest.raises(LandmarkError, match=message):
        read_landmarks(_write(tmp_path / name, content))


def test_missing_and_undecodable_landmark_files(tmp_path: Path):
    with pytest.raises(LandmarkError, match="not found"):
        read_landmarks(tmp_path / "missing.pts")
    (tmp_path / "latin.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LandmarkError, match="cannot read"):
        read_landmarks(tmp_path / "latin.txt")
    (tmp_path / "pickle.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(LandmarkError):
        read_landmarks(tmp_path / "pickle.npy")


def test_expected_none_accepts_any_count(tmp_path: Path):
    (tmp_path / "five.txt").write_text("1 2\n" * 5)
    assert read_landmarks(tmp_path / "five.txt", expected=None).shape == (5, 2)
