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


# ---------------------------------------------------------------------------- output path rules
def test_output_layout_rules(tmp_path):
    from ganfit.fitting.outputs import output_layout

    one = output_layout(tmp_path / "face.obj", ["a/photo.jpg"])
    assert [p.name for p in one[0].paths()] == ["face.obj", "face_texture.png", "face.mtl", "face.json", "face_overlay.png"]
    (ply,) = output_layout(tmp_path / "face.PLY", ["p.jpg"])
    assert ply.format == "ply" and ply.mesh.name == "face.ply" and ply.mtl is None and ply.texture.name == "face_texture.png"
    (glb,) = output_layout(tmp_path / "face.glb", ["p.jpg"])
    assert glb.format == "glb" and glb.texture is None and glb.mtl is None
    # several photos and a file path: numbered by input position, whichever failed
    assert [f.mesh.name for f in output_layout(tmp_path / "f.obj", ["a", "c"], indices=[0, 2])] == ["f_0.obj", "f_2.obj"]
    assert [f.mesh.name for f in output_layout(tmp_path / "f.obj", ["c"], indices=[2])] == ["f_2.obj"]
    # folders: trailing slash, no extension, an existing folder with any name
    names = ["x/Photo.jpg", "y/photo.png", f"{EVIL}.jpg", None]
    for folder in (f"{tmp_path}/out/", tmp_path / "out2"):
        stems = [f.mesh.stem for f in output_layout(folder, names)]
        assert stems == ["Photo", "photo_1", "x_mtllib_evil.mtl_v_9_9_9", "face_3"]  # distinct ignoring case
    (tmp_path / "run.v2").mkdir()
    assert output_layout(tmp_path / "run.v2", ["p.jpg"])[0].mesh == tmp_path / "run.v2" / "p.obj"
    assert output_layout(f"{tmp_path}/face.obj/", ["p.jpg"])[0].mesh == tmp_path / "face.obj" / "p.obj"


@pytest.mark.parametrize("name", ["face.stl", "face.gltf", "face.xyz", "face.obj.bak"])
def test_unknown_output_extensions_are_refused(tmp_path, name):
    from ganfit.fitting.outputs import output_layout

    with pytest.raises(OutputError, match=r"unsupported output format .*\.obj, \.ply, \.glb"):
        output_layout(tmp_path / name, ["p.jpg"])


def test_targets_that_are_folders_are_refused_before_writing(tmp_path):
    from ganfit.fitting.outputs import check_targets, output_layout

    (tmp_path / "face.obj").mkdir()
    with pytest.raises(OutputError, match="existing folder"):
        output_layout(tmp_path / "face.obj", ["p.jpg"])
    (tmp_path / "out" / "p_texture.png").mkdir(parents=True)
    with pytest.raises(OutputError, match="p_texture.png: it is a folder"):
        check_targets(output_layout(tmp_path / "out", ["p.jpg"]))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_targets(output_layout(tmp_path / "file" / "sub" / "face.obj", ["p.jpg"]))


# ---------------------------------------------------------------------------- one face, one set
def _set(tmp_path, tag: str):
    from ganfit.fitting.outputs import output_layout

    (face,) = output_layout(tmp_path / "face.obj", ["p.jpg"])
    payloads = [(face.texture, f"png {tag}".encode()), (face.mtl, f"mtl {tag}"), (face.json, f"json {tag}"),
                (face.overlay, f"ov {tag}".encode()), (face.mesh, f"obj {tag}")]
    return face, payloads


def _contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_face_set_is_written_whole_and_mesh_last(tmp_path, monkeypatch):
    import ganfit._atomic as atomic
    from ganfit.fitting.outputs import write_face_set

    face, payloads = _set(tmp_path, "new")
    order = []
    real = atomic.os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (order.append(Path(b).name), real(a, b)))
    written = write_face_set(face, payloads[::-1])
    assert [p.name for p in written][-1] == "face.obj" and order[-1] == "face.obj"
    assert _contents(tmp_path) == {"face.json": "json new", "face.mtl": "mtl new", "face.obj": "obj new",
                                   "face_overlay.png": "ov new", "face_texture.png": "png new"}


@pytest.mark.parametrize("when", ["writing", "renaming"])
def test_interrupted_set_leaves_the_old_set_and_no_temporaries(tmp_path, monkeypatch, when):
    import ganfit._atomic as atomic
    import ganfit.fitting.outputs as outputs

    face, old = _set(tmp_path, "old")
    outputs.write_face_set(face, old)
    before = _contents(tmp_path)
    _, new = _set(tmp_path, "new")
    calls = []

    def interrupt(real):
        def wrapped(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:  # Ctrl-C in the middle of the set
                raise KeyboardInterrupt
            return real(*args, **kwargs)
        return wrapped

    if when == "writing":
        monkeypatch.setattr(outputs, "write_temporary", interrupt(outputs.write_temporary))
    else:
        monkeypatch.setattr(atomic.os, "replace", interrupt(atomic.os.replace))
    with pytest.raises(KeyboardInterrupt):
        outputs.write_face_set(face, new)
    assert _contents(tmp_path) == before  # the old set, whole; no temporaries or backups


def test_interrupted_first_write_leaves_nothing(tmp_path, monkeypatch):
    import ganfit._atomic as atomic
    import ganfit.fitting.outputs as outputs

    face, new = _set(tmp_path, "new")
    real = atomic.os.replace
    calls = []

    def replace(a, b):
        calls.append(b)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        return real(a, b)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OutputError, match="No space left"):
        outputs.write_face_set(face, new)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_the_renames_is_held_until_the_set_is_complete(tmp_path, monkeypatch, default_sigint):
    import os
    import signal

    import ganfit._atomic as atomic
    from ganfit.fitting.outputs import write_face_set

    face, new = _set(tmp_path, "new")
    real = atomic.os.replace
    sent = []

    def replace(a, b):
        if not sent:  # a real SIGINT between the first and the second rename
            sent.append(os.kill(os.getpid(), signal.SIGINT))
        return real(a, b)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_face_set(face, new)
    assert set(_contents(tmp_path)) == {"face.json", "face.mtl", "face.obj", "face_overlay.png", "face_texture.png"}


def test_files_of_the_older_set_that_the_new_one_lacks_are_removed(tmp_path):
    from ganfit.fitting.outputs import write_face_set

    face, old = _set(tmp_path, "old")
    write_face_set(face, old)
    (tmp_path / "face.ply").write_text("another format's file stays")
    _, new = _set(tmp_path, "new")
    write_face_set(face, [item for item in new if item[0] != face.overlay])  # --no-overlay this time
    assert _contents(tmp_path) == {"face.json": "json new", "face.mtl": "mtl new", "face.obj": "obj new",
                                   "face.ply": "another format's file stays", "face_texture.png": "png new"}
