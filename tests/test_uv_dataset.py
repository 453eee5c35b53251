"""build_uv_dataset on a small folder: valid photos, duplicates, unreadable files, no face, two faces;
resuming a killed build; the `ganfit texture build-dataset / build-pca` commands."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from ganfit.errors import GanfitError, ImageError
from ganfit.training.uv_dataset import build_uv_dataset, hash_distance, perceptual_hash
from ganfit.training.uv_filters import FilterConfig
from ganfit.training.uv_sources import PhotoSource

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"

pytest.importorskip("dlib")


def _photos(folder: Path) -> None:
    folder.mkdir()
    im = Image.open(EXAMPLE).convert("RGB")
    shutil.copy(EXAMPLE, folder / "astronaut.png")
    shutil.copy(EXAMPLE, folder / "astronaut_copy.png")  # byte-identical duplicate
    im.resize((384, 384), Image.Resampling.LANCZOS).save(folder / "astronaut_small.jpg", quality=90)  # near duplicate
    (folder / "sub").mkdir()
    ImageOps.mirror(im).save(folder / "sub" / "flipped.png")  # valid, a different photo
    (folder / "notes.jpg").write_text("not an image")  # unreadable
    Image.new("RGB", (200, 160), (128, 128, 128)).save(folder / "grey.png")  # no face
    (folder / "readme.txt").write_text("ignored: not an image extension")
    a = im.crop((110, 20, 340, 300))  # two faces, the right one more than twice as large: it is used
    b = ImageOps.mirror(a).resize((520, 633))
    pair = Image.new("RGB", (a.width + b.width, b.height), (90, 90, 90))
    pair.paste(a, (0, 0))
    pair.paste(b, (a.width, 0))
    pair.save(folder / "pair.png")
    twins = Image.new("RGB", (2 * a.width, a.height), (90, 90, 90))  # two faces of one size: whose photo?
    twins.paste(a, (0, 0))
    twins.paste(ImageOps.mirror(a).resize((a.width - 20, a.height - 24)), (a.width + 10, 12))
    twins.save(folder / "twins.png")


@pytest.fixture(scope="module")
def fitter(bfm):
    from ganfit import FitConfig, Fitter

    return Fitter(FitConfig(device="cpu", quiet=True, texture_size=0), model=bfm)


@pytest.fixture(scope="module")
def built(tmp_path_factory, fitter):
    root = tmp_path_factory.mktemp("uvds")
    _photos(root / "photos")
    report = build_uv_dataset(root / "photos", root / "uv", fitter=fitter, quiet=True)
    return root, report


def test_dataset_outputs_and_reasons(built, bfm):
    from ganfit.model.texture.base import model_uv_layout_id

    root, report = built
    out = root / "uv"
    assert report.written == 3, report.rejected
    reasons = {"duplicate": 2, "no_face": 1, "unreadable": 1, "several_faces": 1}
    assert report.by_reason == reasons
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["format"] == "ganfit-uv-dataset"
    assert manifest["face_model"] == {"name": "bfm-3ddfa", "sha256": bfm.checksum(), "uv_layout": model_uv_layout_id(bfm)}
    assert manifest["resolution"] == [256, 256] and manifest["ganfit_version"] and manifest["created"]
    assert manifest["counts"]["photos"] == 8 and manifest["counts"]["written"] == 3
    assert manifest["counts"]["by_reason"] == reasons
    assert manifest["settings"]["filters"]["second_face_ratio"] == 0.5 and manifest["settings"]["delight"]
    rejected = {r["key"]: r for r in manifest["rejected"]}
    assert rejected["photos/astronaut_copy.png"]["reason"] == "duplicate"
    assert "same bytes" in rejected["photos/astronaut_copy.png"]["message"]
    assert rejected["photos/astronaut_small.jpg"]["reason"] == "duplicate"
    assert "near duplicate" in rejected["photos/astronaut_small.jpg"]["message"]
    assert rejected["photos/notes.jpg"]["reason"] == "unreadable"
    assert rejected["photos/grey.png"]["reason"] == "no_face"
    assert rejected["photos/twins.png"]["reason"] == "several_faces" and rejected["photos/twins.png"]["second_face_ratio"] > 0.8
    items = {i["key"]: i for i in manifest["items"]}
    assert set(items) == {"photos/astronaut.png", "photos/sub/flipped.png", "photos/pair.png"}
    pair = items["photos/pair.png"]
    assert pair["faces_detected"] == 2 and pair["second_face_ratio"] < 0.5
    assert pair["face_box_px"][0] > 230  # the larger face, on the right
    assert items["photos/sub/flipped.png"]["name"] == "photos__sub__flipped"
    import hashlib

    item = items["photos/astronaut.png"]
    assert item["sha256"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert item["path"] == "astronaut.png" and item["source"] == "photos" and item["identity"] == "photos:astronaut.png"
    assert item["split"] in ("train", "validation") and item["labels"] == {}
    for item in items.values():
        assert 0 < item["fit_error_px"] and item["fit_error_rel"] < 0.035
        assert 0.4 <= item["visible_fraction"] <= 1 and item["face_width_px"] >= 64
        assert item["colourfulness"] > 0.03 and item["sharpness"] > 0.02
        assert abs(item["yaw_deg"]) < 30 and abs(item["roll_deg"]) < 30
        assert len(item["lighting_sh"]) == 9 and item["skin_ita"] is not None
        assert abs(item["asymmetry_delit"]) <= abs(item["asymmetry_photo"]) + 0.02
        uv = np.asarray(Image.open(out / item["outputs"]["uv"]), dtype=np.float32) / 255
        mask = np.asarray(Image.open(out / item["outputs"]["mask"]), dtype=np.float32) / 255
        assert uv.shape == (256, 256, 3) and mask.shape == (256, 256)
        centre = uv[96:160, 96:160].reshape(-1, 3).mean(0)  # cheeks, nose, mouth
        assert centre[0] > centre[2] + 0.05 and centre[0] > 0.35  # skin: red above blue
        assert 0.15 < mask.mean() < 0.6 and mask[112:144, 112:144].mean() > 0.5
    # mirrored photo -> (roughly) mirrored texture
    a = np.asarray(Image.open(out / "photos__astronaut.png"), dtype=np.float32)[64:192, 64:192]
    f = np.asarray(Image.open(out / "photos__sub__flipped.png"), dtype=np.float32)[64:192, 64:192]
    assert np.abs(a - f[:, ::-1]).mean() < np.abs(a - f).mean()
    # nothing else written (no temp files); one record per photo
    names = {p.name for p in out.iterdir()}
    assert names == {"manifest.json", "records.jsonl", "photos__astronaut.png", "photos__astronaut_mask.png",
                     "photos__sub__flipped.png", "photos__sub__flipped_mask.png", "photos__pair.png",
                     "photos__pair_mask.png"}
    assert len((out / "records.jsonl").read_text().splitlines()) == 8


class _KillingFitter:
    """Delegates to a real fitter; its `fit` raises `kill_at` calls in (a build killed mid-photo)."""

    def __init__(self, fitter, kill_at: int | None = None) -> None:
        self._fitter, self.kill_at, self.fits = fitter, kill_at, 0

    def __getattr__(self, name):
        return getattr(self._fitter, name)

    def fit(self, *args, **kwargs):
        self.fits += 1
        if self.kill_at is not None and self.fits == self.kill_at:
            raise KeyboardInterrupt
        return self._fitter.fit(*args, **kwargs)


def test_a_killed_build_resumes_without_losing_or_redoing_work(tmp_path, fitter):
    photos = tmp_path / "photos"
    photos.mkdir()
    im = Image.open(EXAMPLE).convert("RGB")
    im.save(photos / "a.png")
    ImageOps.mirror(im).save(photos / "b.png")
    im.rotate(8, resample=Image.Resampling.BILINEAR).save(photos / "c.png")
    (photos / "d.jpg").write_text("not an image")
    out = tmp_path / "uv"
    first = _KillingFitter(fitter, kill_at=2)
    with pytest.raises(KeyboardInterrupt):
        build_uv_dataset(photos, out, fitter=first, quiet=True)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["counts"]["photos"] == len(records) >= 1
    done = {r["key"] for r in records}
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    second = _KillingFitter(fitter)
    report = build_uv_dataset(photos, out, fitter=second, quiet=True)
    assert report.resumed == len(done) and report.processed == 4 - len(done)
    assert second.fits == len({"photos/a.png", "photos/b.png", "photos/c.png"} - done)  # none fitted twice
    assert report.written == 3 and report.by_reason == {"unreadable": 1}
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in stamps.items())  # earlier outputs untouched
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["items"]) == 3 and len(manifest["rejected"]) == 1
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 4 and len({json.loads(line)["key"] for line in lines}) == 4
    # a third run finds nothing to do
    third = _KillingFitter(fitter)
    again = build_uv_dataset(photos, out, fitter=third, quiet=True)
    assert third.fits == 0 and again.processed == 0 and again.written == 3
    # stricter thresholds on resume: the recorded measures are judged again, without refitting
    strict = _KillingFitter(fitter)
    tight = build_uv_dataset(photos, out, fitter=strict, quiet=True, filters=FilterConfig(min_sharpness=10.0))
    assert strict.fits == 0 and tight.written == 0 and tight.by_reason == {"blurry": 3, "unreadable": 1}
    assert not list(out.glob("*.png"))  # their files are gone
    # back to the defaults: the photos rejected by a threshold they now pass are made again
    loose = _KillingFitter(fitter)
    back = build_uv_dataset(photos, out, fitter=loose, quiet=True)
    assert loose.fits == 3 and back.written == 3 and back.by_reason == {"unreadable": 1}
    assert json.loads((out / "manifest.json").read_text())["counts"]["written"] == 3


def test_perceptual_hash():
    im = Image.open(EXAMPLE).convert("RGB")
    px = np.asarray(im, dtype=np.float32) / 255
    small = np.asarray(im.resize((300, 300), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    flipped = px[:, ::-1]
    h = perceptual_hash(px)
    assert hash_distance(h, perceptual_hash(small)) <= 4
    assert hash_distance(h, perceptual_hash(flipped)) > 12
    assert hash_distance(h, perceptual_hash(np.clip(px * 0.9 + 0.05, 0, 1))) <= 4


def _parser():
    from ganfit.cli.texture_data import add_data_parsers

    parser = argparse.ArgumentParser(prog="ganfit texture")
    add_data_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_build_pca(built, bfm, tmp_path, capsys):
    from ganfit.model.texture.linear import LinearTextureModel

    root, _ = built
    args = _parser().parse_args(["build-pca", str(root / "uv"), "-o", str(tmp_path / "m" / "pca.npz"), "--components", "5",
                                 "--resolution", "64"])
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    model = LinearTextureModel.load(tmp_path / "m" / "pca.npz", face_model=bfm)
    assert model.latent_dim == 2 and model.resolution == (64, 64)  # 3 UVs give 2 components
    bad = _parser().parse_args(["build-pca", str(root / "uv"), "-o", str(tmp_path / "pca.bin")])
    with pytest.raises(GanfitError, match="npz"):
        bad.func(bad)


def test_thresholds_and_cli_errors(tmp_path, fitter):
    photos = tmp_path / "p"
    photos.mkdir()
    shutil.copy(EXAMPLE, photos / "a.png")
    report = build_uv_dataset(photos, tmp_path / "o2", fitter=fitter, min_visible=0.99, quiet=True)
    assert report.by_reason == {"low_visibility": 1} and report.rejected[0]["visible_fraction"] < 0.99
    assert json.loads((tmp_path / "o2" / "manifest.json").read_text())["counts"]["written"] == 0
    report = build_uv_dataset(photos, tmp_path / "o6", fitter=fitter, quiet=True,
                              filters=FilterConfig(max_residual_asymmetry=1e-6))
    assert report.by_reason == {"uneven_light": 1} and abs(report.rejected[0]["asymmetry_delit"]) > 1e-6
    report = build_uv_dataset(photos, tmp_path / "o7", fitter=fitter, quiet=True, filters=FilterConfig(max_yaw_deg=0.01))
    assert report.by_reason == {"pose": 1}
    # at most N photos of one person; a resumed build with a higher cap takes the rest
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(EXAMPLE, two / "a1.png")
    ImageOps.mirror(Image.open(EXAMPLE).convert("RGB")).save(two / "a2.png")
    same = [PhotoSource(name="p", root=str(two), identity="pattern", id_pattern=r"^(a)")]
    report = build_uv_dataset(None, tmp_path / "o8", sources=same, fitter=fitter, quiet=True,
                              filters=FilterConfig(max_per_identity=1))
    assert report.written == 1 and report.by_reason == {"identity_cap": 1}
    assert report.rejected[0]["identity"] == "p:a"
    report = build_uv_dataset(None, tmp_path / "o8", sources=same, fitter=fitter, quiet=True,
                              filters=FilterConfig(max_per_identity=2))
    assert report.written == 2 and report.rejected == [] and report.processed == 1
    with pytest.raises(ImageError, match="not found"):
        build_uv_dataset(tmp_path / "missing", tmp_path / "o3", fitter=fitter)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no images"):
        build_uv_dataset(tmp_path / "empty", tmp_path / "o3", fitter=fitter)
    # the command (with the default fitter made from its options): nothing written -> exit code 1
    args = _parser().parse_args(["build-dataset", str(photos), "-o", str(tmp_path / "o4"), "--max-error", "0.0001",
                                 "--device", "cpu", "-q"])
    assert args.func(args) == 1
    manifest = json.loads((tmp_path / "o4" / "manifest.json").read_text())
    assert manifest["counts"]["by_reason"] == {"landmark_error": 1}
    assert manifest["settings"]["filters"]["max_landmark_error"] == 0.0001
    with pytest.raises(SystemExit):
        _parser().parse_args(["build-dataset", str(photos), "-o", "x", "--min-visible", "2"])
    both = _parser().parse_args(["build-dataset", str(photos), "--sources", "s.yaml", "-o", str(tmp_path / "o5")])
    with pytest.raises(GanfitError, match="either PHOTOS_DIR or --sources"):
        both.func(both)
