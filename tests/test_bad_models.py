"""Face-model files and arrays a user may hand us that are damaged or wrong: each is refused with a
`ModelFormatError` that says what is wrong (and the CLI prints it as one line, exit 2)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_model
from ganfit.cli.main import main
from ganfit.errors import ModelFormatError
from ganfit.model.morphable import MorphableModel
from ganfit.model.registry import load_model


@pytest.fixture()
def good_npz(tmp_path: Path) -> Path:
    path = tmp_path / "good.npz"
    make_tiny_model().save_npz(path)
    return path


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _bad_npz_files(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, message fragment) for every kind of damaged .npz."""
    raw = good.read_bytes()
    files: dict[str, tuple[Path, str]] = {}

    def put(name: str, data: bytes, fragment: str) -> None:
        (folder / name).write_bytes(data)
        files[name] = (folder / name, fragment)

    put("empty.npz", b"", "the file is empty")
    put("truncated.npz", raw[: len(raw) // 2], "not a readable .npz archive")
    put("text.npz", b"hello, not a zip file\n", "not a readable .npz archive")
    arrays = _arrays(good)
    for name, header, fragment in (
        ("not_json.npz", b"not json {", "the header is not JSON"),
        ("not_utf8.npz", b"\xff\xfe\x00", "the header is not JSON"),
        ("list_header.npz", b"[1, 2]", "not a JSON object"),
        ("bad_version.npz", json.dumps({"format": "ganfit-morphable-model", "version": "1", "name": "x"}).encode(),
         "not an integer"),
        ("other_format.npz", json.dumps({"format": "something-else"}).encode(), "format 'something-else'"),
    ):
        np.savez(folder / name, **{**arrays, "header": np.frombuffer(header, np.uint8)})
        files[name] = (folder / name, fragment)
    np.savez(folder / "no_header.npz", **{k: v for k, v in arrays.items() if k != "header"})
    files["no_header.npz"] = (folder / "no_header.npz", "no 'header' entry")
    np.savez(folder / "no_mean.npz", **{k: v for k, v in arrays.items() if k != "mean"})
    files["no_mean.npz"] = (folder / "no_mean.npz", "missing arrays ['mean']")
    np.savez(folder / "strings.npz", **{**arrays, "mean": np.array(["a"] * 30)})
    files["strings.npz"] = (folder / "strings.npz", "wrong type")
    np.save(folder / "bare.npy", np.zeros(3))
    (folder / "bare.npz").write_bytes((folder / "bare.npy").read_bytes())
    files["bare.npz"] = (folder / "bare.npz", "a single .npy array")
    return files


def test_damaged_npz_files_say_corrupt_or_not_a_model(tmp_path, good_npz):
    for name, (path, fragment) in _bad_npz_files(tmp_path, good_npz).items():
        for load in (MorphableModel.load_npz, load_model):
            with pytest.raises(ModelFormatError) as info:
                load(path)
            message = str(info.value)
            assert "corrupt or not a ganfit model file" in message, (name, message)
            assert fragment in message, (name, message)
            assert str(path) in message, name


def test_damaged_npz_on_the_command_line(tmp_path, good_npz, capsys):
    for name, (path, fragment) in _bad_npz_files(tmp_path, good_npz).items():
        assert main(["model", "info", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert "corrupt or not a ganfit model file" in err and fragment in err, (name, err)
        assert "Traceback" not in err and err.count("\n") == 1, (name, err)


def test_npz_from_a_newer_ganfit_says_upgrade(tmp_path, good_npz):
    header = json.dumps({"format": "ganfit-morphable-model", "version": 99, "name": "x", "meta": {}}).encode()
    np.savez(tmp_path / "new.npz", **{**_arrays(good_npz), "header": np.frombuffer(header, np.uint8)})
    with pytest.raises(ModelFormatError, match="newer ganfit.*upgrade"):
        MorphableModel.load_npz(tmp_path / "new.npz")


@pytest.mark.parametrize("field, index, value, fragment", [
    ("shape_std", 2, 0.0, "shape_std[2] is 0"),
    ("shape_std", 0, -1.5, "shape_std[0] is -1.5"),
    ("expression_std", 3, -0.5, "expression_std[3] is -0.5"),
    ("expression_std", 1, np.nan, "expression_std[1] is nan"),
    ("shape_std", 1, np.inf, "shape_std[1] is inf"),
])
def test_standard_deviations_must_be_positive_and_finite(field, index, value, fragment):
    model = make_tiny_model()
    std = getattr(model, field).copy()
    std[index] = value
    with pytest.raises(ModelFormatError) as info:
        MorphableModel(**{**_fields(model), field: std})
    assert fragment in str(info.value)


@pytest.mark.parametrize("field, index", [
    ("mean", (5, 2)), ("shape_basis", (7, 1, 3)), ("expression_basis", (0, 0, 0)), ("uv", (4, 1)),
])
def test_non_finite_arrays_are_named_with_the_index(field, index):
    model = make_tiny_model()
    arr = getattr(model, field).copy()
    arr[index] = np.nan
    with pytest.raises(ModelFormatError) as info:
        MorphableModel(**{**_fields(model), field: arr})
    assert f"{field}[{', '.join(map(str, index))}] is nan" in str(info.value)


def test_zero_std_in_a_file_is_refused_on_the_command_line(tmp_path, good_npz, capsys):
    arrays = _arrays(good_npz)
    arrays["shape_std"] = arrays["shape_std"].copy()
    arrays["shape_std"][4] = 0
    np.savez(tmp_path / "zero.npz", **arrays)
    assert main(["model", "info", str(tmp_path / "zero.npz")]) == 2
    err = capsys.readouterr().err
    assert "zero.npz" in err and "shape_std[4] is 0" in err and "positive" in err


def test_fit_refuses_a_model_with_zero_std(tmp_path, good_npz, capsys):
    """Before: the fit ran and exited 0."""
    arrays = _arrays(good_npz)
    arrays["expression_std"] = -arrays["expression_std"]
    np.savez(tmp_path / "neg.npz", **arrays)
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo)
    pts = tmp_path / "photo.npy"
    rng = np.random.default_rng(0)
    np.save(pts, rng.uniform(10, 50, (68, 2)))
    out = tmp_path / "out"
    rc = main(["fit", str(photo), "--landmarks", str(pts), "--model", str(tmp_path / "neg.npz"),
               "-o", str(out / "face.obj"), "-q", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "expression_std[0]" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def _fields(model: MorphableModel) -> dict:
    return {name: getattr(model, name) for name in (
        "name", "mean", "shape_basis", "shape_std", "expression_basis", "expression_std", "triangles",
        "landmark_indices", "uv", "uv_triangles", "regions", "texture_mean", "texture_basis", "texture_std", "meta")}
