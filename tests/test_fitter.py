"""`Fitter` on real photos: unusual but valid inputs give the same face, the API mirrors the CLI."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganfit import FitConfig, Fitter
from ganfit.errors import LandmarkError, NoFaceError

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
pytestmark = pytest.mark.assets


@pytest.fixture(scope="module")
def fitter(bfm):
    return Fitter(FitConfig(device="cpu", quiet=True), model=bfm)


@pytest.fixture(scope="module")
def reference(fitter):
    return fitter.fit(str(PHOTO))


def _variant(kind: str, tmp: Path) -> tuple[Path, callable]:
    """A file of the astronaut photo in another format, and how to map its pixels back to the original."""
    rgb = Image.open(PHOTO).convert("RGB")
    ident = lambda p: p  # noqa: E731
    if kind == "gray":
        path = tmp / "gray.png"
        rgb.convert("L").save(path)
    elif kind == "rgba":
        path = tmp / "rgba.png"
        im = rgb.convert("RGBA")
        im.putalpha(200)
        im.save(path)
    elif kind == "16bit":
        path = tmp / "sixteen.png"
        arr = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(arr).save(path)
    elif kind == "exif":
        path = tmp / "rotated.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6  # stored rotated; viewers rotate it 90 degrees clockwise to show it upright
        rgb.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    elif kind == "huge":
        path = tmp / "huge.jpg"
        rgb.resize((8000, 8000), Image.Resampling.BICUBIC).save(path, quality=85)
        return path, lambda p: p / (8000 / 512)
    else:
        raise ValueError(kind)
    return path, ident


@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit", "exif", "huge"])
def test_unusual_photos_give_the_same_face(kind, fitter, reference, tmp_path):
    path, back = _variant(kind, tmp_path)
    res = fitter.fit(str(path))
    fitted = back(res.landmarks_fitted[0].numpy())
    ref = reference.landmarks_fitted[0].numpy()
    size = np.sqrt(np.prod(ref.max(0) - ref.min(0)))
    assert np.abs(fitted - ref).mean() / size < 0.03, kind  # within 3% of the face size
    if kind == "huge":
        assert res.meshes[0].colors is not None and res.meshes[0].visible.float().mean() > 0.3


def test_result_contents_and_batch(fitter, reference, tmp_path):
    r = reference
    assert len(r) == 1 and r.meshes[0].vertices.shape == (fitter.model.num_vertices, 3)
    assert r.reprojection_error_px().item() < 3.0
    assert torch.isfinite(r.params.shape).all() and r.params.focal.item() > 0
    losses = r.losses(0)
    assert losses["total"][-1] < losses["total"][0]
    # the landmark vertices of the fitted mesh project onto the fitted landmarks
    ids = r.landmark_vertices[0]
    assert torch.allclose(r.meshes[0].projected[ids], r.landmarks_fitted[0], atol=1e-3)
    # two photos in one batch (the second one flipped: another pose) and arrays instead of paths
    img = np.asarray(Image.open(PHOTO).convert("RGB"))
    both = fitter.fit([img, img[:, ::-1].copy()])
    assert len(both) == 2 and both.sources == [None, None]
    yaw = both.params.euler_deg()[:, 0]
    assert (yaw[0] + yaw[1]).abs() < 3.0  # mirrored photo: mirrored yaw
    assert torch.allclose(both.landmarks_fitted[0], r.landmarks_fitted[0], atol=0.05)
    written = both.save(tmp_path / "out")
    expected = [f"face_{i}{suffix}" for i in (0, 1) for suffix in (".obj", ".mtl", "_texture.png", ".json", "_overlay.png")]
    assert sorted(p.name for p in written) == sorted(expected)


def test_texture_from_photo(reference, bfm):
    render = reference.renders[0]
    assert render.shape == (512, 512, 4) and 0.02 < render[..., 3].mean() < 0.2  # the face: ~4% of this photo
    ref = reference.landmarks_fitted[0].numpy().astype(int)
    nose = ref[30]
    assert render[nose[1], nose[0], 3] > 0.99  # the render covers the fitted nose tip
    mesh = reference.meshes[0]
    tex, mask = mesh.texture, mesh.texture_mask
    assert tex.shape == (768, 768, 3) and mask.shape == (768, 768)
    assert np.isfinite(tex).all() and tex.min() >= 0 and tex.max() <= 1
    assert 0.2 < (mask > 0.5).mean() < 0.8  # a frontal photo sees most of the face, not all of the chart
    # texels of the frontal face match the photo colours sampled at the same vertices
    h, w = mask.shape
    uv = bfm.uv
    col = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    row = np.clip(((1 - uv[:, 1]) * h).astype(int), 0, h - 1)
    seen = mesh.visible.numpy() & (mask[row, col] > 0.9) & bfm.regions["skin"]
    assert seen.sum() > 5000
    diff = np.abs(tex[row[seen], col[seen]] - mesh.colors.numpy()[seen]).mean()
    assert diff < 0.04, diff


def test_given_landmarks_skip_detection(fitter, reference):
    lms = reference.landmarks_target[0].numpy()
    res = fitter.fit(str(PHOTO), landmarks=lms)
    assert res.detections == [None]
    assert torch.allclose(res.landmarks_fitted, reference.landmarks_fitted, atol=1e-3)
    with pytest.raises(LandmarkError):
        fitter.fit(str(PHOTO), landmarks=lms[:60])
    with pytest.raises(LandmarkError):
        fitter.fit([str(PHOTO), str(PHOTO)], landmarks=[lms])


def test_no_face_names_the_file(fitter, tmp_path):
    p = tmp_path / "flat.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(p)
    with pytest.raises(NoFaceError, match="flat.png"):
        fitter.fit(str(p))


def test_misplaced_landmarks_are_refused(fitter, reference):
    lms = reference.landmarks_target[0].numpy()
    with pytest.raises(LandmarkError, match="only 0 of 68 landmarks lie inside the 512x512 image"):
        fitter.fit(str(PHOTO), landmarks=lms + 5000)
    with pytest.raises(LandmarkError, match="x, y"):  # rows and columns swapped, for a wide image
        wide = np.zeros((100, 900, 3), np.uint8)
        fitter.fit(wide, landmarks=np.stack([np.linspace(100, 800, 68), np.full(68, 50.0)], 1)[:, ::-1].copy())
    with pytest.raises(LandmarkError, match=r"normalised to \[0, 1\]"):
        fitter.fit(str(PHOTO), landmarks=lms / 512)
    with pytest.raises(LandmarkError, match="span only"):
        fitter.fit(str(PHOTO), landmarks=np.full((68, 2), 200.0))
    # A face running off the edge (a tight crop) is accepted: here the jaw line leaves the image.
    crop = np.asarray(Image.open(PHOTO).convert("RGB"))
    top = int(lms[:, 1].max()) - 25  # cut the photo just above the chin
    res = fitter.fit(crop[:top], landmarks=lms)
    assert res.warnings == [[]]


def test_poor_landmark_fit_is_reported(fitter, reference, caplog):
    assert reference.warnings == [[]] and reference.to_dict()["warnings"] == []
    rng = np.random.default_rng(0)
    lms = rng.uniform(150, 350, size=(68, 2))  # 68 points inside the face area, in no face's arrangement
    with caplog.at_level("WARNING", logger="ganfit"):
        res = fitter.fit(str(PHOTO), landmarks=lms)
    (message,) = [m for m in res.warnings[0] if "poor landmark fit" in m]  # (its pose may be implausible too)
    assert "astronaut.png" in message
    assert res.to_dict()["warnings"] == res.warnings[0]
    assert any("poor landmark fit" in r.getMessage() for r in caplog.records)
