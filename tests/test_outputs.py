"""Output files: names that cannot inject lines into OBJ/MTL/PLY, PLY and GLB export, the output path rules,
and a face's files written as one set (all or nothing, also on Ctrl-C)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganfit._names import escape_controls, safe_stem
from ganfit.errors import OutputError
from ganfit.io.mesh import Material, glb_bytes, mtl_text, obj_text, ply_bytes, read_obj, write_glb, write_ply

EVIL = "x\nmtllib evil.mtl\nv 9 9 9\n"


def grid_mesh(n: int = 6):
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    verts = np.stack([100 * u.ravel() - 50, 100 * v.ravel() - 50, 10 * np.sin(3 * u.ravel())], 1)
    tris = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            tris += [[a, b, d], [a, d, c]]
    uv = np.stack([u.ravel(), v.ravel()], 1)
    colors = np.stack([u.ravel(), v.ravel(), 0.5 * np.ones(n * n)], 1)
    return verts, np.array(tris), uv, colors


# ---------------------------------------------------------------------------- names in text formats
def test_names_with_line_breaks_are_refused_in_obj_and_mtl():
    verts, tris, uv, _ = grid_mesh()
    for bad in (EVIL, "a\rb", "a\x1b[2Jb", "a\u2028b", "a\x00b", "a\x85b"):
        with pytest.raises(OutputError, match="control character"):
            obj_text(verts, tris, uv=uv, mtl=Material("face", "t.png"), mtllib=f"{bad}.mtl")
        with pytest.raises(OutputError, match="control character"):
            mtl_text(Material("face", texture=f"{bad}_texture.png"))
        with pytest.raises(OutputError, match="material name"):
            mtl_text(Material(f"m{bad}"))
    with pytest.raises(OutputError, match="control character"):
        ply_bytes(verts, tris, uv=uv, texture=f"{EVIL}.png")
    # spaces are fine in file names (readers take the rest of the line)
    assert "mtllib my face.mtl\n" in obj_text(verts, tris, mtl=Material("face"), mtllib="my face.mtl")


def test_comments_stay_comments():
    verts, tris, _, _ = grid_mesh()
    text = obj_text(verts, tris, comment=f"fit of {EVIL}\x1b[31m\udcff.jpg")
    head = [line for line in text.splitlines() if not line.startswith(("v ", "f "))]
    assert all(line.startswith("#") for line in head), head
    assert sum(line.startswith("v ") for line in text.splitlines()) == len(verts)
    assert "\x1b" not in text and "\\x1b[31m\\xff.jpg" in text
    data = ply_bytes(verts, tris, comment=f"José {EVIL}\x1b \udcff")
    header = data[: data.index(b"end_header\n")].decode("ascii")  # ASCII, one comment line per line
    assert [line for line in header.splitlines() if line.startswith("comment")] == [
        "comment Jos\\xe9 x", "comment mtllib evil.mtl", "comment v 9 9 9", "comment \\x1b \\xff"]


def test_safe_stem():
    assert safe_stem(EVIL, "face_0") == "x_mtllib_evil.mtl_v_9_9_9"
    assert safe_stem("..", "f") == "f" and safe_stem(".", "f") == "f" and safe_stem("", "f") == "f"
    assert safe_stem(None, "f") == "f" and safe_stem("\n\t ", "f") == "f"
    assert safe_stem(".hidden", "f") == "hidden"
    assert safe_stem("a\\b/c d", "f") == "a_b_c_d"
    assert safe_stem("\u202eexe.jpg", "f") == "_exe.jpg"
    assert safe_stem("\udcff\udcfe", "f") == "f" and safe_stem("a\udcffb", "f") == "a_b"  # undecodable bytes
    long = safe_stem("é" * 300, "f")
    assert len(long.encode()) <= 160 and set(long) == {"é"}
    assert escape_controls("a\nb\x1b\u202e\udcff") == "a\\nb\\x1b\\u202e\\xff"


# ---------------------------------------------------------------------------- PLY and GLB
def test_ply_with_uv_and_texture_loads_in_trimesh(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    verts, tris, uv, colors = grid_mesh()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "m_texture.png")
    write_ply(tmp_path / "m.ply", verts, tris, vertex_colors=colors, uv=uv, texture="m_texture.png")
    mesh = trimesh.load(tmp_path / "m.ply", process=False)
    assert len(mesh.vertices) == len(verts) and len(mesh.faces) == len(tris)
    np.testing.assert_allclose(mesh.vertices, verts, atol=1e-4)
    np.testing.assert_allclose(mesh.visual.uv, uv, atol=1e-6)
    assert mesh.visual.material.image.size == (8, 8)


def test_glb_carries_mesh_and_texture(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    verts, tris, uv, colors = grid_mesh()
    tex = np.zeros((16, 16, 3), np.float32)
    tex[:, :8, 0] = 1.0  # left half red
    path = write_glb(tmp_path / "m.glb", verts * 1e-3, tris, uv=uv, texture=tex)
    scene = trimesh.load(path, process=False)
    (mesh,) = scene.geometry.values()
    assert len(mesh.vertices) == len(verts) and len(mesh.faces) == len(tris)
    np.testing.assert_allclose(mesh.vertices, verts * 1e-3, atol=1e-6)
    np.testing.assert_allclose(mesh.visual.uv, uv, atol=1e-6)
    image = np.asarray(mesh.visual.material.baseColorTexture)
    assert image.shape[:2] == (16, 16) and image[0, 0, 0] == 255 and image[0, 15, 0] == 0
    # a UV layout with seams: seam vertices are split, the triangles stay
    uv_tris = tris.copy()
    uv2 = np.concatenate([uv, uv[:1] + 0.01])
    uv_tris[0, 0] = len(uv)
    data = glb_bytes(verts * 1e-3, tris, uv=uv2, uv_triangles=uv_tris, texture=tex)
    (mesh,) = trimesh.load(io.BytesIO(data), file_type="glb", process=False).geometry.values()
    assert len(mesh.faces) == len(tris) and len(mesh.vertices) == len(verts) + 1
    # no texture: the vertex colours
    (mesh,) = trimesh.load(io.BytesIO(glb_bytes(verts, tris, vertex_colors=colors)), file_type="glb",
                           process=False).geometry.values()
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3] / 255.0, colors, atol=1 / 255)
