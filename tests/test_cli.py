"""`ganfit` command line: help, bad input (one-line error, non-zero exit, nothing written), and a real fit."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganfit.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.png"


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_failure(code, err, out_dir: Path, words: str):
    assert code != 0
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("ganfit: error:"), err
    assert words.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.iterdir()), list(out_dir.iterdir())


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ["--output", "--device", "--seed", "--iterations", "--config", "--landmarks", "--quiet", "--stages",
                "--face-index", "--model", "--detector", "--optimizer", "--contour", "--no-overlay"]:
        assert opt in text
    assert "face_overlay.png" in text


def test_python_dash_m_works():
    r = subprocess.run([sys.executable, "-m", "ganfit", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith("ganfit ")


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    text = tmp / "notes.jpg"
    text.write_text("this is not an image\n")
    empty = tmp / "empty.jpg"
    empty.write_bytes(b"")
    buf = io.BytesIO()
    Image.open(PHOTO).save(buf, format="JPEG", quality=90)
    trunc = tmp / "truncated.jpg"
    trunc.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    noface = tmp / "noface.png"
    yy, xx = np.mgrid[0:256, 0:256]
    Image.fromarray(np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.uint8)).save(noface)
    return {
        "missing": (tmp / "nope.jpg", "not found"),
        "text": (text, "not"),
        "empty": (empty, "empty"),
        "truncated": (trunc, "truncat"),
        "noface": (noface, "no face"),
    }


@pytest.mark.parametrize("case", ["missing", "text", "empty", "truncated", "noface"])
def test_bad_images_fail_cleanly(case, tmp_path, capsys):
    path, words = _bad_files(tmp_path)[case]
    out_dir = tmp_path / "out"
    code, out, err = run(["fit", str(path), "-o", str(out_dir / "face.obj"), "-q"], capsys)
    assert_clean_failure(code, err, out_dir, words)


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run(["fit", str(PHOTO), "-o", str(blocker / "sub" / "face.obj"), "-q"], capsys)
    assert_clean_failure(code, err, blocker.parent / "none", "cannot write")
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        code, out, err = run(["fit", str(PHOTO), "-o", str(ro / "face.obj"), "-q"], capsys)
        assert_clean_failure(code, err, ro, "cannot write")


def test_landmark_file_with_wrong_count(tmp_path, capsys):
    lm = tmp_path / "lm.npy"
    np.save(lm, np.zeros((5, 2)))
    out_dir = tmp_path / "out"
    code, out, err = run(["fit", str(PHOTO), "--landmarks", str(lm), "-o", str(out_dir / "face.obj"), "-q"], capsys)
    assert_clean_failure(code, err, out_dir, "68")


def test_landmark_files_must_match_photos(tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run(["fit", str(PHOTO), str(PHOTO), "--landmarks", "a.pts", "-o", str(out_dir), "-q"], capsys)
    assert_clean_failure(code, err, out_dir, "one per photo")


def test_bad_config_and_device(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optimiser: lm\n")
    out_dir = tmp_path / "out"
    code, out, err = run(["fit", str(PHOTO), "--config", str(cfg), "-o", str(out_dir / "f.obj")], capsys)
    assert_clean_failure(code, err, out_dir, "unknown config option")
    code, out, err = run(["fit", str(PHOTO), "--device", "tpu", "-o", str(out_dir / "f.obj")], capsys)
    assert_clean_failure(code, err, out_dir, "device")


@pytest.mark.assets
def test_fit_example_photo_end_to_end(bfm, tmp_path, capsys):
    out = tmp_path / "out" / "face.obj"
    code, stdout, err = run(["fit", str(PHOTO), "-o", str(out), "--seed", "3"], capsys)
    assert "Traceback" not in err
    assert code == 0, err
    for name in ("face.obj", "face.mtl", "face_texture.png", "face.json", "face_overlay.png"):
        assert (out.parent / name).exists(), name
    assert "map_Kd face_texture.png" in (out.parent / "face.mtl").read_text()
    assert np.asarray(Image.open(out.parent / "face_texture.png")).shape == (768, 768, 3)
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["model"]["name"] == "bfm-3ddfa" and len(data["model"]["sha256"]) == 64
    assert data["landmarks"]["reprojection_error_px"] < 4.0  # astronaut face is ~150 px wide
    assert abs(data["params"]["yaw_pitch_roll_deg"][0]) < 30
    assert len(data["losses"]["total"]) >= 2 and data["losses"]["total"][-1] < data["losses"]["total"][0]
    assert data["config"]["seed"] == 3 and "torch" in data["versions"]
    import trimesh

    from ganfit.io.mesh import read_obj

    mesh = read_obj(out)
    assert len(mesh.vertices) == bfm.num_vertices and len(mesh.triangles) == len(bfm.triangles)
    # a third-party reader opens it too (trimesh drops the vertices no triangle uses)
    assert len(trimesh.load(out, process=False).faces) == len(bfm.triangles)
    face = bfm.regions["face"]
    colors = np.asarray(mesh.colors)[face]
    # the fitted face is skin-coloured: red channel above blue on average
    assert colors[:, 0].mean() > colors[:, 2].mean() + 0.05
    overlay = np.asarray(Image.open(out.parent / "face_overlay.png"))
    assert overlay.ndim == 3 and overlay.shape[1] > overlay.shape[0]
    assert "landmark error" in stdout
    # same seed, same result
    out2 = tmp_path / "out2" / "face.obj"
    assert main(["fit", str(PHOTO), "-o", str(out2), "--seed", "3", "-q", "--texture-size", "0"]) == 0
    assert not (out2.parent / "face_texture.png").exists() and not (out2.parent / "face.mtl").exists()
    a, b = json.loads(out.with_suffix(".json").read_text()), json.loads(out2.with_suffix(".json").read_text())
    assert a["params"] == b["params"]


def test_assets_list_and_path(capsys):
    code, out, err = run(["assets", "list"], capsys)
    assert code == 0 and "bfm-3ddfa" in out and "dlib-landmarks-68" in out
    code, out, err = run(["assets", "path", "no-such-asset"], capsys)
    assert code != 0 and err.startswith("ganfit: error:") and "Traceback" not in err


@pytest.mark.assets
def test_model_info_and_convert_round_trip(bfm, tmp_path, capsys):
    code, out, err = run(["model", "info", "bfm-3ddfa"], capsys)
    info = json.loads(out)
    assert code == 0 and info["vertices"] == 53215 and info["sha256"] == bfm.checksum()
    dst = tmp_path / "bfm.npz"
    code, out, err = run(["model", "convert", "bfm-3ddfa", str(dst)], capsys)
    assert code == 0 and dst.exists()
    code, out, err = run(["model", "info", str(dst)], capsys)
    assert json.loads(out)["sha256"] == bfm.checksum()
    code, out, err = run(["model", "info", str(tmp_path / "missing.npz")], capsys)
    assert code != 0 and "neither a registered name" in err


def test_landmark_file_for_another_image(tmp_path, capsys):
    lm = tmp_path / "lm.npy"
    np.save(lm, np.random.default_rng(0).uniform(2000, 3000, size=(68, 2)))
    out_dir = tmp_path / "out"
    code, out, err = run(["fit", str(PHOTO), "--landmarks", str(lm), "-o", str(out_dir / "face.obj"), "-q"], capsys)
    assert_clean_failure(code, err, out_dir, "lie inside the 512x512 image")


@pytest.mark.parametrize("command, words", [
    (["model", "info"], "print"),
    (["model", "convert"], ".npz"),
])
def test_model_subcommands_have_a_description(command, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "-h"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    usage, _, rest = text.partition("\n\n")
    description = rest.split("\n\n")[0]
    assert usage.startswith(f"usage: ganfit {' '.join(command)}")
    assert not description.startswith(("positional arguments", "options")), text
    assert len(description) > 60 and words in description
    if command[-1] == "convert":
        assert ".txt, .json or .npy" in " ".join(text.split())


def test_package_metadata_describes_what_ships():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    described = cfg["metadata"]["description"]
    packages = cfg["options.packages.find"]["include"]
    if not (ROOT / "dfmvr").is_dir():
        assert "dfmvr" not in packages and "DF-MVR" not in described
    assert "landmark" in described and "ganfit*" in packages
