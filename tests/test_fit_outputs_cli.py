"""`ganfit fit` end to end: several photos with bad ones among them (the good ones are written, exit 1),
output formats (OBJ, PLY, GLB; others refused), a hostile photo name, and Ctrl-C while a face's files are
written (a face's set is whole or absent)."""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganfit.cli.main import main

pytestmark = [pytest.mark.assets, pytest.mark.usefixtures("one_thread")]

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.png"
SET = {"obj", "mtl", "_texture.png", ".json", "_overlay.png"}
FAST = ["--texture-size", "64", "-q"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("ganfit: error:")]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A good photo (the astronaut at 256 px) and its detected landmarks, a photo without a face, a
    truncated JPEG."""
    from ganfit.perception.detect import make_detector, select_face

    d = tmp_path_factory.mktemp("photos")
    img = Image.open(PHOTO).convert("RGB").resize((256, 256))
    img.save(d / "good.png")
    img.save(d / "good.jpg", quality=92)
    (d / "truncated.jpg").write_bytes((d / "good.jpg").read_bytes()[:3000])
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(d / "noface.png")
    det = select_face(make_detector("dlib").detect(np.asarray(img, np.float32) / 255.0), None)
    np.save(d / "good.npy", np.asarray(det.landmarks))
    return d


def test_several_photos_one_bad_fits_the_good_ones(photos, tmp_path, capsys):
    out = tmp_path / "out"
    bad = [photos / "noface.png", photos / "truncated.jpg", photos / "missing.jpg"]
    code, stdout, err = run(["fit", photos / "good.png", *bad, "-o", f"{out}/", *FAST], capsys)
    assert code == 1, err
    lines = error_lines(err)
    assert len(lines) == 3
    assert "noface.png" in lines[0] and "no face" in lines[0]
    assert "truncated.jpg" in lines[1] and "truncated" in lines[1]
    assert "missing.jpg" in lines[2] and "not found" in lines[2]
    assert names(out) == ["good.json", "good.mtl", "good.obj", "good_overlay.png", "good_texture.png"]
    assert json.loads((out / "good.json").read_text())["source"].endswith("good.png")


def test_numbered_outputs_keep_the_input_position(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["fit", photos / "noface.png", photos / "good.png", "-o", out / "face.obj", "--no-overlay", *FAST],
                       capsys)
    assert code == 1 and len(error_lines(err)) == 1
    assert names(out) == ["face_1.json", "face_1.mtl", "face_1.obj", "face_1_texture.png"]


def test_all_photos_bad_exit_2_and_nothing_written(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["fit", photos / "noface.png", photos / "truncated.jpg", "-o", f"{out}/", *FAST], capsys)
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 3 and "none of the 2 photos" in lines[-1]
    assert names(out) == []
    code, _, err = run(["fit", photos / "noface.png", "-o", out / "face.obj", *FAST], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and names(out) == []


def test_ply_and_glb_outputs(photos, tmp_path, capsys):
    trimesh = pytest.importorskip("trimesh")
    out = tmp_path / "out"
    lm = ["--landmarks", photos / "good.npy"]
    assert run(["fit", photos / "good.png", *lm, "-o", out / "face.ply", "--no-overlay", *FAST], capsys)[0] == 0
    assert run(["fit", photos / "good.png", *lm, "-o", out / "face.glb", "--no-overlay", *FAST], capsys)[0] == 0
    assert run(["fit", photos / "good.png", *lm, "-o", out / "face.obj", "--no-overlay", *FAST], capsys)[0] == 0
    # face.json is shared by the three (the same stem); each mesh format keeps its own files
    assert names(out) == ["face.glb", "face.json", "face.mtl", "face.obj", "face.ply", "face_texture.png"]
    obj = trimesh.load(out / "face.obj", process=False)
    ply = trimesh.load(out / "face.ply", process=False)
    (glb,) = trimesh.load(out / "face.glb", process=False).geometry.values()
    assert len(ply.faces) == len(glb.faces) == len(obj.faces) > 1000
    # the same surface: PLY in mm, GLB in metres (seam vertices split in both)
    lo, hi = obj.vertices.min(0), obj.vertices.max(0)
    np.testing.assert_allclose(ply.vertices.min(0), lo, atol=1e-3)
    np.testing.assert_allclose(glb.vertices.max(0) * 1e3, hi, atol=1e-2)
    assert ply.visual.uv is not None and glb.visual.uv is not None
    assert np.asarray(glb.visual.material.baseColorTexture).shape[:2] == (64, 64)


@pytest.mark.parametrize("name", ["face.stl", "face.gltf"])
def test_unknown_extension_is_refused_before_any_work(photos, tmp_path, capsys, name):
    out = tmp_path / "out"
    code, _, err = run(["fit", photos / "good.png", "-o", out / name, *FAST], capsys)
    assert code == 2 and "unsupported output format" in error_lines(err)[0] and ".ply" in err
    assert not out.exists()


def test_existing_folder_in_place_of_an_output_file(photos, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "good.obj").mkdir(parents=True)
    code, _, err = run(["fit", photos / "good.png", "-o", f"{out}/", *FAST], capsys)
    assert code == 2 and "good.obj: it is a folder" in err and len(error_lines(err)) == 1
    assert names(out) == ["good.obj"] and names(out / "good.obj") == []


def test_photo_name_cannot_inject_lines(photos, tmp_path, capsys):
    evil = tmp_path / "x\nmtllib evil.mtl\nv 9 9 9\n.png"
    shutil.copy(photos / "good.png", evil)
    out = tmp_path / "out"
    code, stdout, err = run(["fit", evil, "-o", f"{out}/", "--no-overlay", "--texture-size", "64"], capsys)
    assert code == 0, err
    assert all("\n" not in n for n in names(out))
    (obj,) = out.glob("*.obj")
    lines = obj.read_text().splitlines()
    from ganfit.model.registry import load_model

    assert sum(line.startswith("v ") for line in lines) == load_model("bfm-3ddfa").num_vertices
    assert not any(line.startswith(("mtllib evil", "v 9 9 9")) for line in lines)
    assert [line for line in lines if line.startswith("mtllib")] == [f"mtllib {obj.stem}.mtl"]
    assert "evil" not in (out / f"{obj.stem}.mtl").read_text().replace(obj.stem, "")
    assert all(line.count("\n") == 0 for line in stdout.splitlines())  # the summary names it on one line


def test_ctrl_c_while_writing_leaves_whole_sets(photos, tmp_path, capsys, monkeypatch, default_sigint):
    """Ctrl-C during the renames of the first face: held until its set is complete, then the command stops
    (exit 130) before the second face; Ctrl-C while the second face's temporaries are written: its set is
    absent, the first face's stays."""
    import ganfit._atomic as atomic
    import ganfit.fitting.outputs as outputs

    out = tmp_path / "out"
    shutil.copy(photos / "good.png", photos / "second.png")
    argv = ["fit", photos / "good.png", photos / "second.png", "--landmarks", photos / "good.npy", photos / "good.npy",
            "-o", f"{out}/", *FAST]
    real_replace, sent = os.replace, []

    def replace(a, b):
        if not sent:
            sent.append(os.kill(os.getpid(), signal.SIGINT))
        return real_replace(a, b)

    monkeypatch.setattr(atomic.os, "replace", replace)
    code, _, err = run(argv, capsys)
    assert code == 130 and "interrupted" in err
    assert names(out) == ["good.json", "good.mtl", "good.obj", "good_overlay.png", "good_texture.png"]
    monkeypatch.setattr(atomic.os, "replace", real_replace)

    shutil.rmtree(out)
    real_write, writes = outputs.write_temporary, []

    def write_temporary(target, data):
        writes.append(target)
        if len(writes) == 7:  # the second face's second file
            raise KeyboardInterrupt
        return real_write(target, data)

    monkeypatch.setattr(outputs, "write_temporary", write_temporary)
    code, _, err = run(argv, capsys)
    assert code == 130
    assert names(out) == ["good.json", "good.mtl", "good.obj", "good_overlay.png", "good_texture.png"]


def test_python_api_skips_bad_inputs_like_the_cli(photos, tmp_path):
    from ganfit import FitConfig, Fitter
    from ganfit.errors import ImageError, NoFaceError, NothingFittedError

    fitter = Fitter(FitConfig(device="cpu", quiet=True, texture_size=64))
    inputs = [str(photos / "noface.png"), str(photos / "good.png"), str(photos / "truncated.jpg")]
    with pytest.raises(NoFaceError):
        fitter.fit(inputs)  # on_error="raise" is the default
    result = fitter.fit(inputs, on_error="skip")
    assert len(result) == 1 and result.input_index == [1] and result.sources == [inputs[1]]
    assert [(f.index, f.kind) for f in result.failures] == [(0, "NoFaceError"), (2, "ImageError")]
    assert all(f.source in f.error for f in result.failures)
    assert [p.name for p in result.save(tmp_path / "f.obj")][-1] == "f_1.obj"
    with pytest.raises(NothingFittedError) as exc:
        fitter.fit([inputs[0], inputs[2]], on_error="skip")
    assert len(exc.value.failures) == 2 and "and 1 more" in str(exc.value)
    with pytest.raises(ImageError):
        fitter.fit(inputs[2:])
