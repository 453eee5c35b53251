"""The UV corpus's parts on small synthetic inputs: de-lighting (ganfit.training.uv_delight), the filters'
measures and duplicate index (uv_filters), sources, labels, identities and the split (uv_sources)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganfit.errors import ConfigError
from ganfit.render.shading import default_sh, sh_directional, sh_shading
from ganfit.render.uv_layout import uv_layout
from ganfit.training.uv_delight import (
    DelightOptions, brightness_asymmetry, delight, estimate_lighting, ita_category, skin_tone_ita, srgb_to_lab,
)
from ganfit.training.uv_filters import DuplicateIndex, FilterConfig, colourfulness, face_crop, perceptual_hash, sharpness
from ganfit.training.uv_sources import PhotoSource, folder_source, iterate_photos, load_sources, split_of

SKIN = np.array([0.75, 0.55, 0.45], np.float32)


def dome(n: int = 33):
    """A height-field 'face' over the unit square: vertices (n*n, 3), normals (n*n, 3) of a half ellipsoid
    facing +z, uv = (x, y) (mirror-symmetric about x = 0.5), triangles."""
    ys, xs = np.mgrid[0:n, 0:n] / (n - 1)
    u, v = xs.ravel(), ys.ravel()
    px, py = 2 * u - 1, 2 * v - 1
    nz = np.sqrt(np.clip(1.6 - px**2 - py**2, 0.05, None))
    normals = np.stack([px, py, nz], 1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    verts = np.stack([px * 50, py * 50, nz * 30], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tris = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return verts.astype(np.float32), normals.astype(np.float32), np.stack([u, v], 1).astype(np.float32), tris


def side_light() -> torch.Tensor:
    """Ambient 0.5 + a directional light from the +x side (strong left/right asymmetry)."""
    return (default_sh(1, ambient=0.5) + sh_directional(torch.tensor([[0.8, 0.2, 0.55]]), 0.8))[0]


def shade(normals: np.ndarray, light: torch.Tensor) -> np.ndarray:
    return sh_shading(torch.as_tensor(normals)[None], light[None])[0].numpy()


# ----------------------------------------------------------------------------------------- de-lighting
def test_lighting_estimate_with_a_mean_albedo_ignores_outliers():
    _, normals, _, _ = dome()
    rng = np.random.default_rng(0)
    albedo = SKIN * rng.uniform(0.95, 1.05, (len(normals), 1))  # skin with small variations
    colors = albedo * shade(normals, side_light())
    hair = rng.random(len(normals)) < 0.15  # dark occluders the fit cannot explain
    colors[hair] *= 0.25
    light, level = estimate_lighting(colors, normals, np.ones(len(normals)))
    fitted = level * shade(normals, torch.as_tensor(light))
    truth = SKIN * shade(normals, side_light())
    rel = np.abs(fitted - truth)[~hair] / truth[~hair]
    assert np.median(rel) < 0.04 and np.percentile(rel, 90) < 0.1, (np.median(rel), np.percentile(rel, 90))
    # without the re-weighting the dark occluders bend the light and dim the estimate
    light0, level0 = estimate_lighting(colors, normals, np.ones(len(normals)), DelightOptions(iterations=0))
    rel0 = np.abs(level0 * shade(normals, torch.as_tensor(light0)) - truth)[~hair] / truth[~hair]
    assert np.median(rel) < 0.7 * np.median(rel0)
    with pytest.raises(ValueError, match="all weights are 0"):
        estimate_lighting(colors, normals, np.zeros(len(normals)))
    with pytest.raises(ValueError, match="need colors"):
        estimate_lighting(colors[:, :2], normals, np.ones(len(normals)))


def test_delight_removes_the_side_light_and_flattens_the_asymmetry():
    _, normals, uv, tris = dome()
    layout = uv_layout(uv, tris, 64)
    h, w = layout.resolution
    light = side_light()
    e = np.zeros((h * w, 3), np.float32)
    n_tex = np.asarray(layout.interpolation @ normals)
    n_tex /= np.linalg.norm(n_tex, axis=1, keepdims=True)
    e[layout.texels.numpy()] = shade(n_tex, light)
    photo = np.clip(SKIN * e.reshape(h, w, 3), 0, 1)
    mask = layout.coverage.astype(np.float32)
    before = brightness_asymmetry(photo, mask)
    assert abs(before) > 0.3  # lit from one side
    l_est, level = estimate_lighting(SKIN * shade(normals, light), normals, np.ones(len(normals)))
    d = delight(photo, mask, layout, normals, l_est, level)
    after = brightness_asymmetry(d.albedo, d.validity)
    assert abs(after) < 0.1 * abs(before), (before, after)
    seen = d.validity > 0.5
    assert seen.mean() > 0.5
    # flat: the skin colour at the photo's own level (a global light level cannot be told from the albedo's)
    # (within the ridge's pull towards an ambient light, a few %)
    alb = d.albedo[seen]
    assert np.all(alb.std(0) < 0.02 * alb.mean(0)) and np.allclose(alb.mean(0), level, rtol=0.05)
    assert np.allclose(level / SKIN, (level / SKIN).mean(), atol=0.01)
    assert d.shading.shape == (h, w, 3) and d.lighting.shape == (9, 3)


def test_brightness_asymmetry():
    tex = np.full((8, 8, 3), 0.4, np.float32)
    assert brightness_asymmetry(tex, np.ones((8, 8))) == pytest.approx(0.0, abs=1e-6)
    tex[:, :4] *= 2  # the left half twice as bright
    assert brightness_asymmetry(tex, np.ones((8, 8)), centre_band=0.0) == pytest.approx(np.log(2), rel=1e-4)
    assert brightness_asymmetry(tex, np.zeros((8, 8))) is None
    region = np.zeros((8, 8), bool)
    region[:, :3] = True  # the pairs' other halves lie outside the region: no pair
    assert brightness_asymmetry(tex, np.ones((8, 8)), region) is None


def test_skin_tone():
    lab = srgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert np.allclose(lab[0], [100, 0, 0], atol=0.05) and np.allclose(lab[1], [0, 0, 0], atol=1e-6)
    assert np.allclose(srgb_to_lab(np.array([1.0, 0.0, 0.0])), [53.24, 80.09, 67.20], atol=0.05)  # sRGB red
    skin = np.ones((4, 4), bool)
    itas = [skin_tone_ita(np.full((4, 4, 3), c, np.float32), skin) for c in
            ([0.95, 0.82, 0.75], [0.80, 0.60, 0.48], [0.45, 0.30, 0.22], [0.22, 0.14, 0.10])]
    assert itas == sorted(itas, reverse=True)
    assert ita_category(itas[0]) in ("very light", "light") and ita_category(itas[-1]) == "dark"
    assert ita_category(None) == "unknown" and skin_tone_ita(np.zeros((4, 4, 3)), ~skin) is None


# ----------------------------------------------------------------------------------------- filters
def test_photo_measures():
    rng = np.random.default_rng(1)
    sharp = np.clip(0.5 + 0.25 * rng.standard_normal((200, 200, 1)), 0, 1) * np.array([1.0, 0.7, 0.6])
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(sharp, (4, 4, 0))
    assert sharpness(sharp) > 5 * sharpness(blurred)
    grey = np.repeat(sharp[..., :1], 3, axis=2)
    assert colourfulness(grey) == pytest.approx(0.0) and colourfulness(sharp) > 0.1
    lm = np.array([[50.0, 60.0], [150.0, 160.0]])
    crop = face_crop(sharp, lm, margin=0.1)
    assert crop.shape == (120, 120, 3)
    assert face_crop(sharp, lm + 100).shape == (50, 60, 3)  # clipped at the photo's border


def test_duplicate_index():
    rng = np.random.default_rng(2)
    photo = rng.random((64, 64, 3)).astype(np.float32)
    idx = DuplicateIndex(4)
    idx.add("aa", perceptual_hash(photo), "first.jpg")
    assert "same bytes as first.jpg" == idx.find("aa", 0)
    assert "near duplicate of first.jpg" in idx.find("bb", perceptual_hash(np.clip(photo * 0.95 + 0.02, 0, 1)))
    assert idx.find("cc", perceptual_hash(photo[:, ::-1])) is None  # a mirrored photo is another photo
    for i in range(2000):  # grows past its first buffer
        idx.add(f"s{i}", (i * 0x9E3779B97F4A7C15) % 2**64, f"p{i}")
    assert len(idx) == 2001 and "p1999" in idx.find("new", (1999 * 0x9E3779B97F4A7C15) % 2**64 ^ 0b11)
    assert DuplicateIndex(-1).find("x", 5) is None


def test_filter_config_errors():
    with pytest.raises(ConfigError, match="max_landmark_error"):
        FilterConfig(max_landmark_error=0)
    with pytest.raises(ConfigError, match="min_visible"):
        FilterConfig(min_visible=1.5)
    with pytest.raises(ConfigError, match="pose"):
        FilterConfig(max_yaw_deg=0)


# ----------------------------------------------------------------------------------------- sources
def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_labels_identities_and_files(tmp_path):
    utk = PhotoSource(name="utk", root=str(tmp_path / "utk"), labels="utkface", path="data/UTKFace")
    _touch(tmp_path / "utk" / "25_1_2_2017.jpg.chip.jpg")
    _touch(tmp_path / "utk" / "._25_1_2_2017.jpg.chip.jpg")  # a macOS resource fork: skipped
    _touch(tmp_path / "utk" / "notes.txt")
    files = utk.photos()
    assert [f.name for f in files] == ["25_1_2_2017.jpg.chip.jpg"]
    assert utk.labels_of(files[0]) == {"age": 25, "sex": "female", "ethnicity": "asian"}
    assert utk.repo_path(files[0]) == "data/UTKFace/25_1_2_2017.jpg.chip.jpg"
    assert utk.identity_of(files[0]) == "utk:25_1_2_2017.jpg.chip.jpg"
    assert utk.labels_of(type(files[0])("badname.jpg")) == {}

    me = PhotoSource(name="me", root=str(tmp_path / "me"), labels="folders", exclude=["watercolor-*"])
    _touch(tmp_path / "me" / "male" / "black" / "12.jpg")
    _touch(tmp_path / "me" / "female" / "asian" / "watercolor-1.jpg")
    (rel,) = me.photos()
    assert me.labels_of(rel) == {"sex": "male", "ethnicity": "black"}

    (tmp_path / "info.csv").write_text("face_id,face_age,face_gender,face_eth\n001,24,female,white\n002,31,male,black\n")
    ld = PhotoSource(name="ld", root=str(tmp_path / "ld"), labels="table", table=str(tmp_path / "info.csv"),
                     id_pattern=r"^(\d+)_", identity="pattern", include=["neutral/*"])
    for name in ("neutral/001_03.jpg", "neutral/002_03.jpg", "smiling/001_08.jpg"):
        _touch(tmp_path / "ld" / name)
    files = ld.photos()
    assert [f.as_posix() for f in files] == ["neutral/001_03.jpg", "neutral/002_03.jpg"]  # include
    assert ld.labels_of(files[1]) == {"age": 31, "sex": "male", "ethnicity": "black"}
    assert ld.identity_of(files[0]) == ld.identity_of(type(files[0])("smiling/001_08.jpg")) == "ld:001"

    lfw = PhotoSource(name="lfw", root=str(tmp_path / "lfw"), identity="folder")
    assert lfw.identity_of(type(files[0])("Ann_Smith/Ann_Smith_0001.jpg")) == "lfw:Ann_Smith"
    assert folder_source(tmp_path / "utk").name == "utk"


def test_source_file_and_bad_entries(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"sources": [{"name": "a", "root": str(tmp_path), "repo": "github:x/y",
                                                              "commit": "abc", "licence": "CC BY 4.0"}]}))
    (src,) = load_sources(tmp_path / "s.json")
    assert src.provenance() == {"source": "a", "repo": "github:x/y", "commit": "abc", "licence": "CC BY 4.0"}
    (tmp_path / "bad.json").write_text(json.dumps({"sources": [{"name": "a", "root": ".", "colour": 1}]}))
    with pytest.raises(ConfigError, match="colour"):
        load_sources(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="labels must be one of"):
        PhotoSource(name="a", root=".", labels="guess")
    with pytest.raises(ConfigError, match="id_pattern"):
        PhotoSource(name="a", root=".", identity="pattern")
    with pytest.raises(ConfigError, match="not found"):
        PhotoSource(name="a", root=str(tmp_path / "missing")).photos()


def test_build_order_and_split(tmp_path):
    for i in range(30):
        _touch(tmp_path / "big" / f"{i:02d}.jpg")
    for i in range(6):
        _touch(tmp_path / "small" / f"{i}.jpg")
    sources = [PhotoSource(name="big", root=str(tmp_path / "big")), PhotoSource(name="small", root=str(tmp_path / "small"))]
    order = [p.key for p in iterate_photos(sources)]
    assert order == [p.key for p in iterate_photos(sources)] and len(set(order)) == 36  # repeatable, complete
    assert order != sorted(order)  # shuffled
    first = [k.split("/")[0] for k in order[:12]]
    assert 1 <= first.count("small") <= 3  # interleaved in proportion (6 of 36)
    assert split_of("lfw:Ann", 0.1) == split_of("lfw:Ann", 0.1)
    n_val = sum(split_of(f"id{i}", 0.1) == "validation" for i in range(2000))
    assert 150 < n_val < 250
    assert split_of("x", 0.0) == "train"
