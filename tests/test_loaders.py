"""Tests of the face-model loaders (ganfit.model.loaders) on small files written in the real formats.

Each test writes a toy model (a 12-vertex dome bulging towards +z, units of the format) with the real
field names and layouts, loads it, and checks the numbers against the format's formula in mm.
"""
from __future__ import annotations

import json
import os
import pickle
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch

from ganfit.errors import AssetError, LandmarkError, ModelFormatError
from ganfit.model.loaders import detect_format, load_model_file
from ganfit.model.loaders._common import orient_outward, outward_score, read_obj, read_obj_vertices
from ganfit.model.loaders.bfm2009 import load_bfm2009
from ganfit.model.loaders.bfm2017 import load_bfm2017
from ganfit.model.loaders.bfm_front import load_bfm_front
from ganfit.model.loaders.flame import load_flame, load_pickled_npy
from ganfit.model.loaders.ict import load_ict
from ganfit.model.morphable import MorphableModel

ICT_SUBSET = Path("/work/shared/models/ict-facekit-subset")
NX, NY = 4, 3
V = NX * NY


# ---------------------------------------------------------------------------------------------- toy data
def dome_mm() -> np.ndarray:
    """(12, 3) vertices of a face-sized dome in mm: x right, y up, bulging towards +z."""
    xs, ys = np.linspace(-60, 60, NX), np.linspace(-80, 80, NY)
    x, y = np.meshgrid(xs, ys)  # (NY, NX), row j = y index
    z = 100.0 - 0.004 * (x**2 + y**2)
    return np.stack([x, y, z], axis=-1).reshape(-1, 3)


def grid_quads() -> np.ndarray:
    """(6, 4) quads a, b, c, d counter-clockwise seen from +z (0-based)."""
    quads = []
    for j in range(NY - 1):
        for i in range(NX - 1):
            a = j * NX + i
            quads.append((a, a + 1, a + 1 + NX, a + NX))
    return np.array(quads, np.int64)


def grid_triangles() -> np.ndarray:
    """(12, 3) triangles, counter-clockwise seen from +z (outward for the dome)."""
    q = grid_quads()
    return np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])


def interleave(arr: np.ndarray) -> np.ndarray:
    """(V, 3, K) -> (3V, K) or (V, 3) -> (3V,), rows x1 y1 z1 x2 ..."""
    return arr.reshape(arr.shape[0] * 3, *arr.shape[2:])


def orthonormal(rows: int, cols: int, seed: int) -> np.ndarray:
    """(rows, cols) matrix with orthonormal columns."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(rows, cols)))
    return q


LANDMARKS = np.random.default_rng(7).integers(0, V, 68)


def vertices_np(model: MorphableModel, shape: np.ndarray, expression: np.ndarray | None = None) -> np.ndarray:
    """model.vertices for one coefficient vector, as float64 numpy."""
    s = torch.as_tensor(shape, dtype=torch.float64)[None]
    e = None if expression is None else torch.as_tensor(expression, dtype=torch.float64)[None]
    return model.vertices(s, e)[0].numpy()


def assert_round_trip(model: MorphableModel, tmp_path: Path) -> None:
    """save_npz then load_npz gives identical arrays and the same checksum."""
    out = tmp_path / "roundtrip.npz"
    model.save_npz(out)
    back = MorphableModel.load_npz(out)
    assert back.checksum() == model.checksum()
    for name in ("mean", "shape_basis", "shape_std", "expression_basis", "expression_std", "triangles",
                 "landmark_indices", "uv", "uv_triangles", "texture_mean", "texture_basis", "texture_std"):
        a, b = getattr(model, name), getattr(back, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert sorted(back.regions) == sorted(model.regions)
    assert back.meta == json.loads(json.dumps(model.meta))


# ---------------------------------------------------------------------------------------------- BFM 2009
def bfm2009_fields(ks: int = 5, kt: int = 4) -> dict:
    """The fields of 01_MorphableModel.mat for the toy dome (micrometres, 1-based tl)."""
    pcs = orthonormal(3 * V, ks, 1).astype(np.float32)
    tex_pc = orthonormal(3 * V, kt, 2).astype(np.float32)
    seg = np.zeros((V, 4), np.uint8)
    seg[np.arange(V), np.arange(V) % 4] = 1
    return {
        "shapeMU": (interleave(dome_mm()) * 1000.0).astype(np.float32)[:, None],
        "shapePC": pcs,
        "shapeEV": np.array([9000.0, 5000.0, 3000.0, 2000.0, 1000.0], np.float32)[:ks, None],
        "texMU": np.full((3 * V, 1), 128.0, np.float32),
        "texPC": tex_pc,
        "texEV": np.array([40.0, 20.0, 10.0, 5.0], np.float32)[:kt, None],
        "tl": (grid_triangles() + 1).astype(np.float64),
        "segbin": seg,
    }


def write_bfm2009(path: Path, **overrides) -> dict:
    fields = bfm2009_fields()
    fields.update(overrides)
    fields = {k: v for k, v in fields.items() if v is not None}
    scipy.io.savemat(path, fields)
    return fields


def test_bfm2009_numbers(tmp_path):
    f = write_bfm2009(tmp_path / "01_MorphableModel.mat")
    model = load_bfm2009(tmp_path / "01_MorphableModel.mat", landmarks=LANDMARKS)
    print("bfm2009 extent mm", model.mean.min(0), model.mean.max(0))
    assert model.num_vertices == V and model.num_shape == 5 and model.num_expression == 0
    np.testing.assert_allclose(model.mean, dome_mm(), atol=1e-3)
    assert np.array_equal(model.triangles, grid_triangles())
    assert np.array_equal(model.landmark_indices, LANDMARKS)
    np.testing.assert_allclose(model.shape_std, f["shapeEV"].ravel())
    alpha = np.array([1.0, -0.5, 2.0, 0.0, 0.3])
    expected = (f["shapeMU"].ravel() + f["shapePC"] @ (alpha * f["shapeEV"].ravel())).reshape(V, 3) / 1000.0
    np.testing.assert_allclose(vertices_np(model, alpha), expected, atol=1e-3)
    np.testing.assert_allclose(model.texture_mean, 128.0 / 255.0, atol=1e-6)
    np.testing.assert_allclose(model.texture_basis * model.texture_std, (f["texPC"] * f["texEV"].ravel()).reshape(V, 3, 4) / 255.0, atol=1e-6)
    assert model.regions["face"].all() and model.regions["segment_2"].sum() == 3
    assert model.meta["winding_flipped"] is False
    assert_round_trip(model, tmp_path)


def test_bfm2009_landmark_files(tmp_path):
    write_bfm2009(tmp_path / "m.mat")
    (tmp_path / "lm.txt").write_text("\n".join(str(i + 1) for i in LANDMARKS))
    (tmp_path / "lm.json").write_text(json.dumps({"landmarks": LANDMARKS.tolist()}))
    np.save(tmp_path / "lm.npy", LANDMARKS)
    a = load_bfm2009(tmp_path / "m.mat", landmarks=tmp_path / "lm.txt", landmark_index_base=1)
    b = load_bfm2009(tmp_path / "m.mat", landmarks=str(tmp_path / "lm.json"))
    c = load_bfm2009(tmp_path / "m.mat", landmarks=tmp_path / "lm.npy")
    for m in (a, b, c):
        assert np.array_equal(m.landmark_indices, LANDMARKS)
    with pytest.raises(LandmarkError, match="68"):
        load_bfm2009(tmp_path / "m.mat", landmarks=LANDMARKS[:60])
    with pytest.raises(LandmarkError, match="out of range"):
        load_bfm2009(tmp_path / "m.mat", landmarks=np.full(68, V))


def test_bfm2009_errors(tmp_path):
    write_bfm2009(tmp_path / "m.mat")
    with pytest.raises(ModelFormatError, match="landmarks="):
        load_bfm2009(tmp_path / "m.mat")
    write_bfm2009(tmp_path / "noev.mat", shapeEV=None)
    with pytest.raises(ModelFormatError, match="shapeEV"):
        load_bfm2009(tmp_path / "noev.mat", landmarks=LANDMARKS)
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(ModelFormatError):
        load_bfm2009(tmp_path / "junk.mat", landmarks=LANDMARKS)


def test_inward_winding_is_reversed(tmp_path):
    write_bfm2009(tmp_path / "m.mat", tl=(grid_triangles()[:, ::-1] + 1).astype(np.float64))
    model = load_bfm2009(tmp_path / "m.mat", landmarks=LANDMARKS)
    assert model.meta["winding_flipped"] is True
    assert outward_score(model.mean, model.triangles) > 0
    assert {tuple(np.roll(t, -np.argmin(t))) for t in model.triangles} == {
        tuple(np.roll(t, -np.argmin(t))) for t in grid_triangles()
    }


# ---------------------------------------------------------------------------------------------- BFM 2017
def write_bfm2017(path: Path, version: tuple[int, int] | None = (0, 9), drop: str | None = None) -> dict:
    """A statismo-layout .h5 with shape/expression/color parts; 0.8 stores pcaBasis as U * sqrt(var)."""
    rng = np.random.default_rng(3)
    parts = {
        "shape": (interleave(dome_mm()), orthonormal(3 * V, 4, 4), np.array([25.0, 9.0, 4.0, 1.0])),
        "expression": (rng.normal(scale=0.5, size=3 * V), orthonormal(3 * V, 3, 5), np.array([16.0, 4.0, 1.0])),
        "color": (np.full(3 * V, 0.5), orthonormal(3 * V, 2, 6), np.array([0.01, 0.004])),
    }
    with h5py.File(path, "w") as h5:
        if version is not None:
            h5["version/majorVersion"] = version[0]
            h5["version/minorVersion"] = version[1]
        for part, (mean, basis, var) in parts.items():
            stored = basis * np.sqrt(var) if version == (0, 8) else basis
            h5[f"{part}/model/mean"] = mean.astype(np.float32)
            h5[f"{part}/model/pcaBasis"] = stored.astype(np.float32)
            h5[f"{part}/model/pcaVariance"] = var.astype(np.float32)
            h5[f"{part}/model/noiseVariance"] = np.float32(0.0)
            h5[f"{part}/representer/points"] = dome_mm().T.astype(np.float32)
            h5[f"{part}/representer/cells"] = grid_triangles().T.astype(np.uint32)
        h5["metadata/landmarks/json"] = json.dumps([{"id": "center.nose.tip", "coordinates": [0, 0, 100]}])
        if drop:
            del h5[drop]
    return parts


@pytest.mark.parametrize("version", [(0, 9), (0, 8), None])
def test_bfm2017_numbers(tmp_path, version):
    parts = write_bfm2017(tmp_path / "model2017-1_face12_nomouth.h5", version)
    model = load_bfm2017(tmp_path / "model2017-1_face12_nomouth.h5", landmarks=LANDMARKS)
    assert model.name == "bfm2017-model2017-1_face12_nomouth"
    assert (model.num_shape, model.num_expression, model.num_texture) == (4, 3, 2)
    np.testing.assert_allclose(model.shape_std, [5.0, 3.0, 2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(model.expression_std, [4.0, 2.0, 1.0], rtol=1e-6)
    a, b = np.array([1.0, -1.0, 0.5, 2.0]), np.array([0.5, 1.0, -2.0])
    (sm, sb, sv), (em, eb, ev) = parts["shape"], parts["expression"]
    expected = sm + em + sb @ (a * np.sqrt(sv)) + eb @ (b * np.sqrt(ev))
    np.testing.assert_allclose(vertices_np(model, a, b), expected.reshape(V, 3), atol=1e-3)
    assert np.array_equal(model.triangles, grid_triangles())
    np.testing.assert_allclose(model.texture_mean, 0.5)
    assert model.meta["expression_mean_added"] is True


def test_bfm2017_errors_and_round_trip(tmp_path):
    write_bfm2017(tmp_path / "m.h5")
    with pytest.raises(ModelFormatError, match="landmarks="):
        load_bfm2017(tmp_path / "m.h5")
    assert_round_trip(load_bfm2017(tmp_path / "m.h5", landmarks=LANDMARKS), tmp_path)
    write_bfm2017(tmp_path / "nocells.h5", drop="shape/representer/cells")
    with pytest.raises(ModelFormatError, match="shape/representer/cells"):
        load_bfm2017(tmp_path / "nocells.h5", landmarks=LANDMARKS)
    write_bfm2017(tmp_path / "novar.h5", drop="shape/model/pcaVariance")
    with pytest.raises(ModelFormatError, match="pcaVariance"):
        load_bfm2017(tmp_path / "novar.h5", landmarks=LANDMARKS)


# ---------------------------------------------------------------------------------------------- BFM front
def bfm_front_fields() -> dict:
    """BFM_model_front.mat fields for the toy dome: decimetres, pre-scaled bases, 1-based indices."""
    rng = np.random.default_rng(11)
    return {
        "meanshape": (interleave(dome_mm()) / 100.0)[None, :],
        "idBase": rng.normal(scale=0.02, size=(3 * V, 6)).astype(np.float32),
        "exBase": rng.normal(scale=0.01, size=(3 * V, 4)).astype(np.float32),
        "meantex": np.full((1, 3 * V), 200.0, np.float32),
        "texBase": rng.normal(scale=5.0, size=(3 * V, 3)).astype(np.float32),
        "tri": (grid_triangles() + 1).astype(np.float64),
        "keypoints": (LANDMARKS + 1).astype(np.float64)[None, :],
        "point_buf": np.ones((V, 8)),
        "frontmask2_idx": np.array([[1], [2], [5]], np.float64),
        "skinmask": (np.arange(V) % 2).astype(np.float64)[None, :],
        "tri_mask2": (grid_triangles()[:2] + 1).astype(np.float64),
    }


def test_bfm_front_numbers(tmp_path):
    f = bfm_front_fields()
    scipy.io.savemat(tmp_path / "BFM_model_front.mat", f)
    model = load_bfm_front(tmp_path / "BFM_model_front.mat")
    print("bfm_front extent mm", model.mean.min(0), model.mean.max(0))
    np.testing.assert_allclose(model.mean, dome_mm(), atol=1e-3)
    assert np.all(model.shape_std == 1) and np.all(model.expression_std == 1) and np.all(model.texture_std == 1)
    a, b = np.arange(1.0, 7.0) / 3, np.array([1.0, -2.0, 0.5, 3.0])
    expected = (f["meanshape"].ravel() + f["idBase"] @ a + f["exBase"] @ b).reshape(V, 3) * 100.0
    np.testing.assert_allclose(vertices_np(model, a, b), expected, atol=1e-3)
    assert np.array_equal(model.landmark_indices, LANDMARKS)
    assert np.array_equal(model.triangles, grid_triangles())
    assert np.flatnonzero(model.regions["front"]).tolist() == [0, 1, 4]
    assert np.array_equal(model.regions["skin"], np.arange(V) % 2 == 1)
    np.testing.assert_allclose(model.texture_mean, 200.0 / 255.0, rtol=1e-6)
    assert_round_trip(model, tmp_path)


def test_bfm_front_errors(tmp_path):
    f = bfm_front_fields()
    del f["idBase"]
    scipy.io.savemat(tmp_path / "a.mat", f)
    with pytest.raises(ModelFormatError, match="idBase"):
        load_bfm_front(tmp_path / "a.mat")
    f = bfm_front_fields()
    del f["keypoints"]
    scipy.io.savemat(tmp_path / "b.mat", f)
    with pytest.raises(ModelFormatError, match="keypoints"):
        load_bfm_front(tmp_path / "b.mat")
    assert np.array_equal(load_bfm_front(tmp_path / "b.mat", landmarks=LANDMARKS).landmark_indices, LANDMARKS)


# ---------------------------------------------------------------------------------------------- FLAME
class FakeCh:
    """Pickles like chumpy.ch.Ch: the state is __dict__ minus _parents and _cache, the value in ``x``."""

    def __init__(self, x):
        self.x = np.asarray(x, dtype=np.float64)
        self._dirty_vars = set()
        self._itr = None
        self._parents = {}
        self._cache = {"r": None, "drs": {}}
        self._depends_on_deps = {}
        self._make_dense = False
        self._make_sparse = False

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_parents"], state["_cache"]
        return state


# pickled under chumpy's own name, as the real files are (the module is registered only while writing)
FakeCh.__module__, FakeCh.__qualname__ = "chumpy.ch", "Ch"


def chumpy_pickle(obj, monkeypatch) -> bytes:
    """Pickle `obj` (protocol 2, like the Python 2 originals) with FakeCh registered as chumpy.ch.Ch."""
    with monkeypatch.context() as mp:
        package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
        module.Ch = FakeCh
        package.ch = module
        mp.setitem(sys.modules, "chumpy", package)
        mp.setitem(sys.modules, "chumpy.ch", module)
        data = pickle.dumps(obj, protocol=2)
    assert b"chumpy.ch\nCh" in data
    return data


def flame_dict(total: int = 400) -> dict:
    """generic_model.pkl-like dict in metres (FakeCh for v_template/shapedirs/weights, as FLAME)."""
    rng = np.random.default_rng(5)
    return {
        "f": grid_triangles().astype(np.uint32),
        "v_template": FakeCh(dome_mm() / 1000.0),
        "shapedirs": FakeCh(rng.normal(scale=1e-3, size=(V, 3, total))),
        "posedirs": rng.normal(size=(V, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(np.full((5, V), 1.0 / V)),
        "weights": FakeCh(np.full((V, 5), 0.2)),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "J": np.zeros((5, 3)),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_embedding(path: Path) -> np.ndarray:
    """DECA's landmark_embedding.npy (a pickled dict); returns the expected nearest vertices."""
    rng = np.random.default_rng(9)
    faces_idx = rng.integers(0, len(grid_triangles()), 68)
    bary = rng.dirichlet([1.0, 1.0, 1.0], size=68)
    np.save(path, {
        "static_lmk_faces_idx": faces_idx[17:], "static_lmk_bary_coords": bary[17:],
        "full_lmk_faces_idx": faces_idx[None], "full_lmk_bary_coords": bary[None],
    }, allow_pickle=True)
    return grid_triangles()[faces_idx, bary.argmax(1)]


def test_flame_numbers(tmp_path, monkeypatch):
    data = flame_dict()
    had_chumpy = "chumpy" in sys.modules
    (tmp_path / "generic_model.pkl").write_bytes(chumpy_pickle(data, monkeypatch))
    assert ("chumpy" in sys.modules) == had_chumpy
    expected_lms = write_embedding(tmp_path / "landmark_embedding.npy")
    model = load_flame(tmp_path / "generic_model.pkl", landmarks=tmp_path / "landmark_embedding.npy")
    print("flame extent mm", model.mean.min(0), model.mean.max(0))
    assert ("chumpy" in sys.modules) == had_chumpy  # loading never imports chumpy
    assert (model.num_shape, model.num_expression) == (300, 100)
    assert np.all(model.shape_std == 1) and np.all(model.expression_std == 1)
    np.testing.assert_allclose(model.mean, dome_mm(), atol=1e-3)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(size=100)
    sd = data["shapedirs"].x
    expected = (data["v_template"].x + sd[:, :, :300] @ a + sd[:, :, 300:] @ b) * 1000.0
    np.testing.assert_allclose(vertices_np(model, a, b), expected, atol=1e-3)
    assert np.array_equal(model.triangles, grid_triangles())
    assert np.array_equal(model.landmark_indices, expected_lms)
    assert model.meta["shapedirs_split"] == [300, 100]
    assert_round_trip(model, tmp_path)


def test_flame_legacy_numpy_names_and_options(tmp_path, monkeypatch):
    raw = chumpy_pickle(flame_dict(total=20), monkeypatch)
    legacy = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n").replace(
        b"scipy.sparse._csc\n", b"scipy.sparse.csc\n"
    )
    (tmp_path / "old.pkl").write_bytes(legacy)
    masks = {"face": np.array([4, 5, 6, 7]), "neck": np.array([0, 1])}
    (tmp_path / "FLAME_masks.pkl").write_bytes(pickle.dumps(masks, protocol=2))
    (tmp_path / "head_template.obj").write_text(obj_text(dome_mm() / 1000.0, with_faces=False) + "".join(
        f"f {a}/{a} {b}/{b} {c}/{c}\n" for a, b, c in grid_triangles() + 1))
    model = load_flame(tmp_path / "old.pkl", landmarks=LANDMARKS, num_shape=15, masks=tmp_path / "FLAME_masks.pkl",
                       uv_obj=tmp_path / "head_template.obj")
    assert (model.num_shape, model.num_expression) == (15, 5)
    assert np.flatnonzero(model.regions["face"]).tolist() == [4, 5, 6, 7]
    assert model.regions["neck"].sum() == 2
    assert np.array_equal(model.uv_triangles, grid_triangles()) and model.uv.shape == (V, 2)
    (tmp_path / "other.obj").write_text(obj_text(dome_mm()))  # quads: different triangles
    with pytest.raises(ModelFormatError, match="do not match"):
        load_flame(tmp_path / "old.pkl", landmarks=LANDMARKS, uv_obj=tmp_path / "other.obj")


def test_flame_errors(tmp_path, monkeypatch):
    data = flame_dict(total=10)
    (tmp_path / "m.pkl").write_bytes(chumpy_pickle(data, monkeypatch))
    with pytest.raises(ModelFormatError, match="landmark"):
        load_flame(tmp_path / "m.pkl")
    del data["shapedirs"]
    (tmp_path / "noshape.pkl").write_bytes(chumpy_pickle(data, monkeypatch))
    with pytest.raises(ModelFormatError, match="shapedirs"):
        load_flame(tmp_path / "noshape.pkl", landmarks=LANDMARKS)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_flame_refuses_code_in_pickles(tmp_path):
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"v_template": _Evil()}, protocol=2))
    with pytest.raises(ModelFormatError, match="refusing"):
        load_flame(tmp_path / "evil.pkl", landmarks=LANDMARKS)
    np.save(tmp_path / "evil.npy", np.array([_Evil()], dtype=object), allow_pickle=True)
    with pytest.raises(ModelFormatError, match="refusing"):
        load_pickled_npy(tmp_path / "evil.npy")


# ---------------------------------------------------------------------------------------------- ICT
def obj_text(vertices: np.ndarray, with_faces: bool = True) -> str:
    """An ICT-style OBJ: v, vt, usemtl groups, quads v/vt (plus one triangle), 1-based."""
    lines = ["# toy ICT mesh", "mtllib ICTFaceModelMaterial.mtl"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    uv = (dome_mm()[:, :2] + [60.0, 80.0]) / [120.0, 160.0]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uv]
    if with_faces:
        quads = grid_quads() + 1
        lines.append("usemtl M_Face")
        lines += ["f " + " ".join(f"{i}/{i}" for i in q) for q in quads[:5]]
        lines.append("usemtl M_Teeth")
        q = quads[5]
        lines.append(f"f {q[0]}/{q[0]} {q[1]}/{q[1]} {q[2]}/{q[2]}")
        lines.append(f"f {q[0]}/{q[0]} {q[2]}/{q[2]} {q[3]}/{q[3]}")
    return "\n".join(lines) + "\n"


def write_ict(folder: Path) -> dict:
    """A FaceXModel-like folder in centimetres: neutral, 2 identities, 2 of 3 listed expressions."""
    folder.mkdir()
    rng = np.random.default_rng(12)
    neutral = dome_mm() / 10.0
    meshes = {"generic_neutral_mesh": neutral}
    for name in ("identity000", "identity001", "jawOpen", "eyeBlink_L"):
        meshes[name] = neutral + rng.normal(scale=0.2, size=neutral.shape)
    for name, verts in meshes.items():
        (folder / f"{name}.obj").write_text(obj_text(verts))
    index = {
        "expressions": ["browDown_L", "jawOpen", "eyeBlink_L"],
        "idx_to_landmark_verts": LANDMARKS.tolist(),
        "idx_to_fitting_verts": [4, 5, 6, 7],
        "idx_to_rigid_verts": [0, 3],
    }
    (folder / "vertex_indices.json").write_text(json.dumps(index))
    return meshes


def test_ict_numbers(tmp_path):
    meshes = write_ict(tmp_path / "FaceXModel")
    model = load_ict(tmp_path / "FaceXModel")
    print("ict toy extent mm", model.mean.min(0), model.mean.max(0))
    assert (model.num_shape, model.num_expression) == (2, 2)
    assert model.meta["expressions"] == ["jawOpen", "eyeBlink_L"]
    n = meshes["generic_neutral_mesh"]
    np.testing.assert_allclose(model.mean, dome_mm(), atol=1e-3)
    a, b = np.array([0.5, -1.5]), np.array([1.0, 0.25])
    expected = 10.0 * (n + a[0] * (meshes["identity000"] - n) + a[1] * (meshes["identity001"] - n)
                       + b[0] * (meshes["jawOpen"] - n) + b[1] * (meshes["eyeBlink_L"] - n))
    np.testing.assert_allclose(vertices_np(model, a, b), expected, atol=1e-3)
    q = grid_quads()
    expected_tris = np.concatenate([np.stack([q[:5, [0, 1, 2]], q[:5, [0, 2, 3]]], 1).reshape(-1, 3),
                                    q[5:, [0, 1, 2]], q[5:, [0, 2, 3]]])
    assert np.array_equal(model.triangles, expected_tris)
    assert np.array_equal(model.uv_triangles, expected_tris) and model.uv.shape == (V, 2)
    assert np.array_equal(model.landmark_indices, LANDMARKS)
    assert np.flatnonzero(model.regions["face"]).tolist() == [4, 5, 6, 7]
    assert np.flatnonzero(model.regions["mtl_teeth"]).tolist() == [6, 7, 10, 11]
    assert model.regions["rigid"].sum() == 2 and not model.meta["winding_flipped"]
    assert_round_trip(model, tmp_path)
    # the repository root (parent of FaceXModel/) and max_* limits work too
    small = load_model_file(tmp_path, max_identities=1, max_expressions=0)
    assert (small.num_shape, small.num_expression) == (1, 0)


def test_ict_errors(tmp_path):
    write_ict(tmp_path / "FaceXModel")
    (tmp_path / "FaceXModel" / "identity001.obj").write_text(obj_text(dome_mm()[:5] / 10.0, with_faces=False))
    with pytest.raises(ModelFormatError, match="identity001"):
        load_ict(tmp_path / "FaceXModel")
    (tmp_path / "FaceXModel" / "generic_neutral_mesh.obj").unlink()
    with pytest.raises(ModelFormatError, match="generic_neutral_mesh.obj"):
        load_ict(tmp_path / "FaceXModel")
    (tmp_path / "other").mkdir()
    with pytest.raises(ModelFormatError, match="vertex_indices.json"):
        load_ict(tmp_path / "other")


def test_read_obj_polygons_and_negative_indices(tmp_path):
    (tmp_path / "p.obj").write_text(
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0.5 1.5 0\nv 0 1 0\nf 1 2 3 4 5\nf -3 -2 -1\n"
    )
    mesh = read_obj(tmp_path / "p.obj")
    assert mesh.triangles.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4], [2, 3, 4]]
    assert mesh.uv is None and mesh.uv_triangles is None and mesh.polygon_sizes.tolist() == [5, 3]
    (tmp_path / "c.obj").write_text("v 1 2 3 0.5 0.5 0.5\r\nvt 0 0\r\nvn 0 0 1\r\nv 4 5 6\r\n")
    assert read_obj_vertices(tmp_path / "c.obj").tolist() == [[1, 2, 3], [4, 5, 6]]
    assert read_obj(tmp_path / "c.obj").vertices.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_orient_outward_flips_uv_too():
    tris = grid_triangles()[:, ::-1]
    new, uv_new, flipped = orient_outward(dome_mm(), tris, tris + 100)
    assert flipped and np.array_equal(new, grid_triangles()) and np.array_equal(uv_new, grid_triangles() + 100)


@pytest.mark.skipif(not ICT_SUBSET.is_dir(), reason="ICT-FaceKit subset not available")
def test_ict_real_subset():
    model = load_model_file(ICT_SUBSET)
    index = json.loads((ICT_SUBSET / "vertex_indices.json").read_text())
    lo, hi = model.mean.min(0), model.mean.max(0)
    print("ICT subset extent mm", lo, hi)
    assert model.num_vertices == 26719 and model.triangles.shape == (52220, 3)
    assert np.array_equal(model.landmark_indices, index["idx_to_landmark_verts"])
    assert (model.num_shape, model.num_expression) == (5, 6)
    width, height, depth = hi - lo
    assert 200 < width < 300 and 280 < height < 400 and 180 < depth < 260  # a head in mm
    assert np.all(np.abs(model.shape_basis).max(axis=(0, 1)) > 1.0)
    assert np.all(np.abs(model.expression_basis).max(axis=(0, 1)) > 1.0)
    assert not model.meta["winding_flipped"] and model.regions["face"].sum() == 7801
    lm = model.mean[model.landmark_indices]
    assert lm[36, 0] < 0 < lm[45, 0]  # subject's right eye at -x: looking down +z, y up
    assert lm[8, 1] < lm[30, 1] < lm[27, 1]  # chin below nose tip below nose bridge
    assert lm[30, 2] > lm[36, 2] + 10  # nose tip in front of the eye corners
    assert model.uv_triangles.shape == model.triangles.shape


# ---------------------------------------------------------------------------------------------- dispatch
def test_load_model_file_dispatch(tmp_path, monkeypatch):
    write_bfm2009(tmp_path / "01_MorphableModel.mat")
    scipy.io.savemat(tmp_path / "BFM_model_front.mat", bfm_front_fields())
    write_bfm2017(tmp_path / "model2017.h5")
    (tmp_path / "generic_model.pkl").write_bytes(chumpy_pickle(flame_dict(total=8), monkeypatch))
    write_ict(tmp_path / "FaceXModel")
    cases = {
        "01_MorphableModel.mat": ("bfm2009", load_bfm2009),
        "BFM_model_front.mat": ("bfm_front", load_bfm_front),
        "model2017.h5": ("bfm2017", load_bfm2017),
        "generic_model.pkl": ("flame", load_flame),
        "FaceXModel": ("ict", load_ict),
    }
    for name, (fmt, loader) in cases.items():
        path = tmp_path / name
        assert detect_format(path) == fmt
        direct = loader(path, landmarks=LANDMARKS)
        assert load_model_file(path, landmarks=LANDMARKS).checksum() == direct.checksum(), name
    direct.save_npz(tmp_path / "m.npz")
    assert load_model_file(tmp_path / "m.npz").checksum() == direct.checksum()
    moved = load_model_file(tmp_path / "m.npz", landmarks=np.zeros(68, np.int64))
    assert moved.landmark_indices.sum() == 0
    assert load_model_file(tmp_path / "FaceXModel" / "vertex_indices.json").num_vertices == V


def test_load_model_file_errors(tmp_path):
    with pytest.raises(AssetError):
        load_model_file(tmp_path / "nope.mat")
    for loader in (load_bfm2009, load_bfm2017, load_bfm_front, load_flame):
        with pytest.raises(AssetError):
            loader(tmp_path / "nope", landmarks=LANDMARKS)
    (tmp_path / "model.xyz").write_text("?")
    with pytest.raises(ModelFormatError, match="unknown face-model file type"):
        load_model_file(tmp_path / "model.xyz")
    scipy.io.savemat(tmp_path / "other.mat", {"foo": np.zeros(3)})
    with pytest.raises(ModelFormatError, match="foo"):
        load_model_file(tmp_path / "other.mat")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match="vertex_indices.json"):
        load_model_file(tmp_path / "empty")
    with pytest.raises(ModelFormatError, match="unknown face-model format"):
        load_model_file(tmp_path / "other.mat", format="lsfm")


# ---------------------------------------------------------------------------------------------- damaged files
def _good_files(folder: Path, monkeypatch) -> dict[str, Path]:
    """One valid file per format that needs landmarks (plus BFM_model_front), to damage."""
    write_bfm2009(folder / "bfm2009.mat")
    scipy.io.savemat(folder / "front.mat", bfm_front_fields())
    write_bfm2017(folder / "bfm2017.h5")
    (folder / "flame.pkl").write_bytes(chumpy_pickle(flame_dict(total=10), monkeypatch))
    return {"bfm2009": folder / "bfm2009.mat", "bfm_front": folder / "front.mat",
            "bfm2017": folder / "bfm2017.h5", "flame": folder / "flame.pkl"}


# what a damaged file of each kind is called: a .mat too damaged to tell which .mat model it was is "BFM .mat"
_NAMES = {"bfm2009": "BFM 2009", "bfm_front": "BFM_model_front", "bfm2017": "BFM 2017", "flame": "FLAME"}


@pytest.mark.parametrize("fmt", ["bfm2009", "bfm_front", "bfm2017", "flame"])
@pytest.mark.parametrize("damage", ["empty", "random", "truncated", "text"])
@pytest.mark.parametrize("with_landmarks", [False, True])
def test_damaged_files_say_corrupt_or_not_a_model_file(tmp_path, monkeypatch, fmt, damage, with_landmarks):
    """Before: "pass landmarks=" for a damaged .h5 or .pkl (the landmark check came first), and
    "not a readable MATLAB .mat file" for a .mat."""
    good = _good_files(tmp_path, monkeypatch)[fmt]
    raw = good.read_bytes()
    data = {"empty": b"", "random": np.random.default_rng(1).bytes(4096), "truncated": raw[: len(raw) // 2],
            "text": b"hello, this is not a face model\n"}[damage]
    bad = tmp_path / f"bad{good.suffix}"
    bad.write_bytes(data)
    landmarks = LANDMARKS if with_landmarks else None
    loader = {"bfm2009": load_bfm2009, "bfm_front": load_bfm_front, "bfm2017": load_bfm2017, "flame": load_flame}[fmt]
    for load in (loader, load_model_file):
        with pytest.raises(ModelFormatError) as info:
            load(bad, landmarks=landmarks)
        message = str(info.value)
        assert message.startswith(f"{bad}: corrupt or not a "), message
        assert "landmarks=" not in message and "--model-landmarks" not in message, message
        if load is loader or good.suffix != ".mat" or damage == "truncated":
            assert f"corrupt or not a {_NAMES[fmt]}" in message, message
        else:  # too damaged to tell BFM 2009 from BFM_model_front
            assert "corrupt or not a BFM .mat file" in message, message


def test_foreign_content_in_a_model_file_says_corrupt_or_not_a_model_file(tmp_path, monkeypatch):
    """Readable containers holding something else, or the right fields with the wrong shapes or types."""
    write_bfm2017(tmp_path / "nomodel.h5", drop="shape")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["images"] = np.zeros((2, 3))
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    data = flame_dict(total=10)
    data["v_template"] = FakeCh(np.zeros((V, 2)))
    (tmp_path / "flat.pkl").write_bytes(chumpy_pickle(data, monkeypatch))
    data = flame_dict(total=10)
    data["f"] = np.array(["a", "b", "c"])
    (tmp_path / "strings.pkl").write_bytes(chumpy_pickle(data, monkeypatch))
    write_bfm2009(tmp_path / "badpc.mat", shapePC=np.zeros((7, 5), np.float32))
    write_bfm2009(tmp_path / "badtl.mat", tl=np.array(["abc"]))
    scipy.io.savemat(tmp_path / "other.mat", {"foo": np.zeros(3)})
    cases = {
        "nomodel.h5": ("BFM 2017", "missing field 'shape/"),
        "other.h5": ("BFM 2017", "missing field"),
        "list.pkl": ("FLAME", "expected a pickled dict, got list"),
        "flat.pkl": ("FLAME", "do not match"),
        "strings.pkl": ("FLAME", ""),
        "badpc.mat": ("BFM 2009", "shapePC must be (3V=36, K)"),
        "badtl.mat": ("BFM 2009", ""),
        "other.mat": ("BFM .mat", "unknown .mat face model"),
    }
    for name, (what, fragment) in cases.items():
        for landmarks in (None, LANDMARKS):
            with pytest.raises(ModelFormatError) as info:
                load_model_file(tmp_path / name, landmarks=landmarks)
            message = str(info.value)
            assert message.startswith(f"{tmp_path / name}: corrupt or not a {what} file: "), message
            assert fragment in message, (name, message)


@pytest.mark.parametrize("fmt", ["bfm2009", "bfm2017", "flame"])
def test_a_valid_model_without_landmarks_names_model_landmarks(tmp_path, monkeypatch, fmt):
    """Before: "pass landmarks=", a Python keyword the command line cannot give."""
    path = _good_files(tmp_path, monkeypatch)[fmt]
    with pytest.raises(ModelFormatError) as info:
        load_model_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "--model-landmarks FILE" in message, message
    assert ".txt, .json or .npy" in message and "corrupt" not in message, message
    assert _NAMES[fmt] in message


def test_bfm_front_without_keypoints_names_model_landmarks(tmp_path):
    f = bfm_front_fields()
    del f["keypoints"]
    scipy.io.savemat(tmp_path / "front.mat", f)
    with pytest.raises(ModelFormatError, match="missing field 'keypoints'.*--model-landmarks FILE"):
        load_model_file(tmp_path / "front.mat")


# ---------------------------------------------------------------------------------------------- --model-landmarks
def _photo_with_landmarks(folder: Path) -> tuple[Path, Path]:
    """A grey 256x256 photo and a landmark file: the dome's landmark vertices seen from the front."""
    from PIL import Image

    photo = folder / "photo.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(photo)
    points = dome_mm()[LANDMARKS][:, :2] * np.array([1.0, -1.0]) + 128.0
    np.save(folder / "photo.npy", points)
    return photo, folder / "photo.npy"


def test_fit_a_bfm2009_file_with_model_landmarks(tmp_path, capsys):
    from ganfit.cli.main import main

    write_bfm2009(tmp_path / "01_MorphableModel.mat")
    (tmp_path / "bfm_landmarks.txt").write_text("\n".join(str(i) for i in LANDMARKS))
    photo, points = _photo_with_landmarks(tmp_path)
    out = tmp_path / "out" / "face.obj"
    rc = main(["fit", str(photo), "--landmarks", str(points), "--model", str(tmp_path / "01_MorphableModel.mat"),
               "--model-landmarks", str(tmp_path / "bfm_landmarks.txt"), "-o", str(out),
               "--texture-size", "0", "--no-overlay", "-q", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert out.is_file() and sum(line.startswith("v ") for line in out.read_text().splitlines()) == V
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["config"]["model_landmarks"] == str(tmp_path / "bfm_landmarks.txt")


def test_fit_a_bfm2009_file_without_model_landmarks_says_so_before_detecting(tmp_path, capsys, monkeypatch):
    import ganfit.perception.detect
    from ganfit.cli.main import main

    def must_not_run(*args, **kwargs):
        raise AssertionError("detection started before the face model was loaded")

    monkeypatch.setattr(ganfit.perception.detect, "make_detector", must_not_run)
    write_bfm2009(tmp_path / "01_MorphableModel.mat")
    photo, _ = _photo_with_landmarks(tmp_path)
    out = tmp_path / "out"
    rc = main(["fit", str(photo), "--model", str(tmp_path / "01_MorphableModel.mat"), "-o", str(out / "face.obj"),
               "--texture-size", "0", "--no-overlay", "-q", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("ganfit: error: ") and err.count("\n") == 1, err
    assert "01_MorphableModel.mat" in err and "--model-landmarks FILE" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    rc = main(["fit", str(photo), "--model", str(tmp_path / "junk.h5"), "-o", str(out / "face.obj"), "-q",
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "junk.h5: corrupt or not a BFM 2017 file" in err, err


def test_model_info_and_convert_take_model_landmarks(tmp_path, capsys):
    from ganfit.cli.main import main

    write_bfm2009(tmp_path / "m.mat")
    np.save(tmp_path / "lm.npy", LANDMARKS)
    assert main(["model", "info", str(tmp_path / "m.mat")]) == 2
    assert "--model-landmarks FILE" in capsys.readouterr().err
    assert main(["model", "info", str(tmp_path / "m.mat"), "--model-landmarks", str(tmp_path / "lm.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["vertices"] == V
    for flag in ("--landmarks", "--model-landmarks"):
        assert main(["model", "convert", str(tmp_path / "m.mat"), str(tmp_path / "m.npz"), flag, str(tmp_path / "lm.npy")]) == 0
        assert np.array_equal(MorphableModel.load_npz(tmp_path / "m.npz").landmark_indices, LANDMARKS)
    capsys.readouterr()
