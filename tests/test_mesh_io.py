"""Tests of ganfit.io.mesh: OBJ/MTL and PLY writing, the OBJ reader, atomicity and errors."""
from __future__ import annotations

import os

import numpy as np
import pytest

import ganfit.io.mesh as mesh_mod
from ganfit.errors import ModelFormatError, OutputError
from ganfit.io.mesh import Material, mtl_text, obj_text, read_obj, write_obj, write_ply


def make_mesh(n: int = 12, seed: int = 0):
    """A bumpy n x n grid with random colours, per-vertex UVs and unit normals."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.linspace(-50, 50, n), np.linspace(-60, 60, n))
    zs = 20 * np.exp(-(xs**2 + ys**2) / 2000) + rng.normal(0, 0.1, xs.shape)
    verts = np.stack([xs, ys, zs], -1).reshape(-1, 3)
    i = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None, :]).ravel()
    tris = np.concatenate([np.stack([i, i + 1, i + n + 1], 1), np.stack([i, i + n + 1, i + n], 1)])
    uv = np.stack([(xs + 50) / 100, (ys + 60) / 120], -1).reshape(-1, 2)
    colors = rng.random((n * n, 3))
    normals = rng.normal(size=(n * n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return verts, tris, uv, colors, normals


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------- OBJ round trips
def test_obj_round_trip_all_attributes(tmp_path):
    verts, tris, uv, colors, normals = make_mesh()
    path = write_obj(
        tmp_path / "face.obj", verts, tris, uv=uv, vertex_colors=colors, normals=normals,
        mtl=Material("skin", "face_texture.png"), comment="test mesh\nsecond line",
    )
    assert path == tmp_path / "face.obj"
    m = read_obj(path)
    np.testing.assert_allclose(m.vertices, verts, rtol=0, atol=5e-7)  # 6 decimals
    np.testing.assert_array_equal(m.triangles, tris)
    np.testing.assert_allclose(m.colors, colors, rtol=0, atol=5e-5)  # 4 decimals
    np.testing.assert_allclose(m.uv, uv, rtol=0, atol=5e-7)
    np.testing.assert_array_equal(m.uv_triangles, tris)
    np.testing.assert_allclose(m.normals, normals, rtol=0, atol=5e-7)
    np.testing.assert_array_equal(m.normal_triangles, tris)
    assert m.mtllib == "face.mtl"
    text = path.read_text()
    assert text.startswith("mtllib face.mtl\n# test mesh\n# second line\n")  # mtllib first: never found in a comment
    assert "usemtl skin\n" in text
    mtl = (tmp_path / "face.mtl").read_text()
    assert "newmtl skin\n" in mtl and "map_Kd face_texture.png\n" in mtl
    assert leftovers(tmp_path) == []


def test_obj_text_matches_written_file(tmp_path):
    verts, tris, uv, colors, _ = make_mesh(5)
    mat = Material("skin", "tex.png")
    write_obj(tmp_path / "f.obj", verts, tris, uv=uv, vertex_colors=colors, mtl=mat, comment="c")
    text = obj_text(verts, tris, uv=uv, vertex_colors=colors, mtl=mat, mtllib="f.mtl", comment="c")
    assert text == (tmp_path / "f.obj").read_text()
    assert mtl_text(mat) == (tmp_path / "f.mtl").read_text()
    assert "mtllib" not in obj_text(verts, tris, mtl=mat) and "usemtl skin" in obj_text(verts, tris, mtl=mat)
    with pytest.raises(OutputError):
        obj_text(verts[:, :2], tris)


def test_obj_faces_are_one_based_and_layouts(tmp_path):
    verts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    tris = np.array([[0, 1, 2]])
    write_obj(tmp_path / "a.obj", verts, tris)
    assert "f 1 2 3\n" in (tmp_path / "a.obj").read_text()
    write_obj(tmp_path / "b.obj", verts, tris, uv=verts[:, :2])
    assert "f 1/1 2/2 3/3\n" in (tmp_path / "b.obj").read_text()
    write_obj(tmp_path / "c.obj", verts, tris, normals=np.tile([0.0, 0.0, 1.0], (3, 1)))
    assert "f 1//1 2//2 3//3\n" in (tmp_path / "c.obj").read_text()
    write_obj(tmp_path / "d.obj", verts, tris, vertex_colors=np.eye(3))
    assert "v 1.000000 0.000000 0.000000 0.0000 1.0000 0.0000\n" in (tmp_path / "d.obj").read_text()
    assert not (tmp_path / "a.mtl").exists()


def test_obj_separate_uv_topology(tmp_path):
    verts, tris, _, _, _ = make_mesh(5)
    rng = np.random.default_rng(1)
    uv = rng.random((70, 2))
    uv_tris = rng.integers(0, 70, size=tris.shape)
    write_obj(tmp_path / "s.obj", verts, tris, uv=uv, uv_triangles=uv_tris)
    m = read_obj(tmp_path / "s.obj")
    np.testing.assert_array_equal(m.triangles, tris)
    np.testing.assert_array_equal(m.uv_triangles, uv_tris)
    np.testing.assert_allclose(m.uv, uv, atol=5e-7)
    assert m.colors is None and m.normals is None


def test_obj_accepts_torch_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    verts, tris, _, colors, _ = make_mesh(4)
    write_obj(tmp_path / "t.obj", torch.tensor(verts, dtype=torch.float32), torch.tensor(tris),
              vertex_colors=torch.tensor(colors))
    m = read_obj(tmp_path / "t.obj")
    np.testing.assert_allclose(m.vertices, verts.astype(np.float32), atol=5e-7)
    np.testing.assert_allclose(m.colors, colors, atol=5e-5)


def test_colors_are_clipped(tmp_path):
    verts, tris, _, _, _ = make_mesh(3)
    colors = np.full((9, 3), 0.5)
    colors[0] = [-0.2, 1.3, 0.5]
    write_obj(tmp_path / "c.obj", verts, tris, vertex_colors=colors)
    np.testing.assert_allclose(read_obj(tmp_path / "c.obj").colors[0], [0.0, 1.0, 0.5])


def test_trimesh_reads_obj(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    verts, tris, uv, colors, _ = make_mesh()
    write_obj(tmp_path / "c.obj", verts, tris, vertex_colors=colors)
    tm = trimesh.load(tmp_path / "c.obj", process=False)
    np.testing.assert_allclose(tm.vertices, verts, atol=5e-7)
    np.testing.assert_array_equal(tm.faces, tris)
    assert tm.visual.kind == "vertex"
    # trimesh stores 8-bit colours.
    np.testing.assert_allclose(tm.visual.vertex_colors[:, :3] / 255.0, colors, atol=0.5 / 255 + 5e-5)

    write_obj(tmp_path / "t.obj", verts, tris, uv=uv, vertex_colors=colors, mtl=Material("skin", "tex.png"))
    tm = trimesh.load(tmp_path / "t.obj", process=False)
    np.testing.assert_allclose(tm.vertices, verts, atol=5e-7)
    np.testing.assert_array_equal(tm.faces, tris)
    np.testing.assert_allclose(tm.visual.uv, uv, atol=5e-7)


# ---------------------------------------------------------------------------- PLY
def test_ply_binary_round_trip(tmp_path):
    verts, tris, _, colors, normals = make_mesh()
    path = write_ply(tmp_path / "m.ply", verts, tris, vertex_colors=colors, normals=normals, comment="hello")
    raw = path.read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    assert b"format binary_little_endian 1.0" in header and b"comment hello" in header
    vdt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4"),
                    ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vrec = np.frombuffer(body, dtype=vdt, count=len(verts))
    frec = np.frombuffer(body, dtype=[("n", "u1"), ("i", "<i4", (3,))], offset=vdt.itemsize * len(verts))
    assert len(frec) == len(tris)
    np.testing.assert_array_equal(np.stack([vrec["x"], vrec["y"], vrec["z"]], 1), verts.astype(np.float32))
    np.testing.assert_array_equal(vrec["red"], np.round(colors[:, 0] * 255).astype(np.uint8))
    np.testing.assert_array_equal(frec["n"], 3)
    np.testing.assert_array_equal(frec["i"], tris)


def test_trimesh_reads_ply(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    verts, tris, _, colors, _ = make_mesh()
    write_ply(tmp_path / "m.ply", verts, tris, vertex_colors=colors)
    tm = trimesh.load(tmp_path / "m.ply", process=False)
    np.testing.assert_allclose(tm.vertices, verts.astype(np.float32), atol=1e-6)
    np.testing.assert_array_equal(tm.faces, tris)
    np.testing.assert_array_equal(tm.visual.vertex_colors[:, :3], np.round(colors * 255).astype(np.uint8))


# ---------------------------------------------------------------------------- reader
def test_read_obj_polygons_negative_indices_and_comments(tmp_path):
    (tmp_path / "q.obj").write_text(
        "# a quad and a triangle\nmtllib q.mtl\n"
        "v 0 0 0\nv 1 0 0\nv 1 1 0  # inline comment\nv 0 1 0\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
        "f 1/1 2/2 3/3 4/4\nf -4/-4 -3/-3 -1/-1\n"
    )
    m = read_obj(tmp_path / "q.obj")
    np.testing.assert_array_equal(m.triangles, [[0, 1, 2], [0, 2, 3], [0, 1, 3]])
    np.testing.assert_array_equal(m.uv_triangles, m.triangles)
    assert m.mtllib == "q.mtl" and m.colors is None


def test_read_obj_errors(tmp_path):
    with pytest.raises(ModelFormatError):
        read_obj(tmp_path / "missing.obj")
    (tmp_path / "bad.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n")
    with pytest.raises(ModelFormatError):
        read_obj(tmp_path / "bad.obj")
    (tmp_path / "mixed.obj").write_text("v 0 0 0\nv 1 0 0 1 1 1\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(ModelFormatError):
        read_obj(tmp_path / "mixed.obj")


# ---------------------------------------------------------------------------- atomicity and errors
def _failing_after_first_call(monkeypatch):
    original = mesh_mod._format_rows
    calls = {"n": 0}

    def flaky(fh, fmt, rows):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("disk full (simulated)")
        original(fh, fmt, rows)

    monkeypatch.setattr(mesh_mod, "_format_rows", flaky)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    verts, tris, uv, colors, _ = make_mesh()
    _failing_after_first_call(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated"):
        write_obj(tmp_path / "f.obj", verts, tris, uv=uv, vertex_colors=colors, mtl=Material("m", "t.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_failed_write_keeps_existing_files(tmp_path, monkeypatch):
    verts, tris, uv, colors, _ = make_mesh()
    write_obj(tmp_path / "f.obj", verts, tris, uv=uv, mtl=Material("m", "t.png"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"f.obj", "f.mtl"}
    _failing_after_first_call(monkeypatch)
    with pytest.raises(RuntimeError):
        write_obj(tmp_path / "f.obj", verts * 2, tris, uv=uv, vertex_colors=colors, mtl=Material("x", "y.png"))
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before


def test_failed_ply_write_keeps_existing_file(tmp_path, monkeypatch):
    import contextlib

    verts, tris, _, colors, _ = make_mesh()
    path = write_ply(tmp_path / "m.ply", verts, tris)
    before = path.read_bytes()
    real_open = mesh_mod.atomic_open

    class FailingSecondWrite:
        def __init__(self, fh):
            self.fh, self.calls = fh, 0

        def write(self, data):
            self.calls += 1
            if self.calls > 1:
                raise OSError(28, "No space left on device (simulated)")
            return self.fh.write(data)

    @contextlib.contextmanager
    def failing_open(target, mode="wb"):
        with real_open(target, mode) as fh:
            yield FailingSecondWrite(fh)

    monkeypatch.setattr(mesh_mod, "atomic_open", failing_open)
    with pytest.raises(OutputError, match="No space left"):
        write_ply(path, verts * 2, tris, vertex_colors=colors)
    assert path.read_bytes() == before
    with pytest.raises(OutputError, match="No space left"):
        write_ply(tmp_path / "new.ply", verts, tris)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ply"]


def test_nonexistent_directory_raises_output_error(tmp_path):
    verts, tris, _, _, _ = make_mesh(3)
    with pytest.raises(OutputError):
        write_obj(tmp_path / "no" / "such" / "dir" / "m.obj", verts, tris)
    with pytest.raises(OutputError):
        write_ply(tmp_path / "no" / "m.ply", verts, tris)
    (tmp_path / "a_file").write_text("not a directory")
    with pytest.raises(OutputError):
        write_obj(tmp_path / "a_file" / "m.obj", verts, tris, mtl=Material("m"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_readonly_directory_raises_output_error(tmp_path):
    verts, tris, _, _, _ = make_mesh(3)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError):
            write_obj(ro / "m.obj", verts, tris, mtl=Material("m"))
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(vertices=np.zeros((4, 2))),
        dict(vertices=np.full((4, 3), np.nan)),
        dict(triangles=np.array([[0, 1, 9]])),
        dict(triangles=np.array([[0, 1]])),
        dict(vertex_colors=np.zeros((3, 3))),
        dict(uv=np.zeros((3, 2))),
        dict(uv_triangles=np.array([[0, 1, 2]])),
        dict(normals=np.zeros((4, 2))),
    ],
)
def test_invalid_arrays_raise_output_error(tmp_path, kwargs):
    args = dict(vertices=np.eye(4, 3), triangles=np.array([[0, 1, 2]]))
    args.update(kwargs)
    with pytest.raises(OutputError):
        write_obj(tmp_path / "m.obj", args.pop("vertices"), args.pop("triangles"), **args)
    assert list(tmp_path.iterdir()) == []
