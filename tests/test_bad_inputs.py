"""Table-driven bad-input suite through the command line: one row per kind of bad or unusual input
(issue 10's corpus).

Each row is (id, a function that builds the input files in ``tmp_path`` and returns the argv, the
expected exit code, a regular expression the ``ganfit: error:`` line must match (None for success
rows), whether output files may exist). Every row checks that stderr holds no traceback. A failing
row (exit 2) also checks that stderr has exactly one ``ganfit: error:`` line per bad photo and that
the run left **no new file anywhere under tmp_path** (no partial outputs, no ``.face.obj.*.tmp``
temporaries, no file a malicious input would create). A success row checks exit 0 and the full set
of outputs (mesh, .mtl and _texture.png for OBJ, .json, _overlay.png unless --no-overlay); a partial
row (several photos, some bad) checks exit 1, the good photos' full sets and one error line per bad
photo.

Kept fast: detection runs only where it is under test (elsewhere a --landmarks file of the
astronaut's 68 points), one dlib detector serves the whole module, photos are 256 px, textures 64 px.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_model
from ganfit.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
EVIL_NAME = "x\nmtllib evil.mtl\nv 9 9 9\n.jpg"
FAST = ["-q", "--device", "cpu", "--texture-size", "64"]


# ---------------------------------------------------------------------------------------- shared inputs
@dataclass
class Ctx:
    """Inputs shared by all rows (built once per module, outside every row's tmp_path)."""

    photo: Path  # the astronaut at 256x256, PNG
    photo_rgb: Image.Image
    landmarks: np.ndarray  # its 68 dlib landmarks, (68, 2) pixels
    lm: Path  # those as .npy
    jpeg512: bytes  # examples/astronaut.png as a JPEG


@pytest.fixture(scope="module")
def shared_detector():
    """One dlib detector for the module (loading the predictor takes ~1 s; each CLI call would load it
    again), or None when the predictor is not installed (the rows that detect then skip)."""
    from ganfit.errors import GanfitError
    from ganfit.perception import detect

    try:
        detector = detect.make_detector("dlib")
    except GanfitError:
        yield None
        return
    original = detect.make_detector

    def cached(name: str = "dlib", **kwargs):
        return detector if name.lower() == "dlib" and not kwargs else original(name, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(detect, "make_detector", cached)
        yield detector


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, shared_detector) -> Ctx:
    from ganfit.io.images import load_image
    from ganfit.perception.detect import select_face

    folder = tmp_path_factory.mktemp("shared")
    with Image.open(ASTRONAUT) as im:
        rgb512 = im.convert("RGB")
    small = rgb512.resize((256, 256), Image.LANCZOS)
    photo = folder / "astronaut256.png"
    small.save(photo)
    if shared_detector is not None:
        detections = shared_detector.detect(load_image(photo).pixels)
        assert len(detections) == 1, "the 256 px astronaut must have one detectable face"
        landmarks = np.asarray(select_face(detections).landmarks, np.float64)
    else:  # 68 points on an ellipse around the face: enough for the rows refused before any fit
        t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        landmarks = np.stack([110 + 25 * np.cos(t), 63 + 30 * np.sin(t)], 1)
    lm = folder / "astronaut256.npy"
    np.save(lm, landmarks)
    buf = io.BytesIO()
    rgb512.save(buf, format="JPEG", quality=90)
    return Ctx(photo=photo, photo_rgb=small, landmarks=landmarks, lm=lm, jpeg512=buf.getvalue())


# ---------------------------------------------------------------------------------------- the table
@dataclass
class Row:
    id: str
    build: Callable[[Path, Ctx], list[str]]
    code: int
    fragment: str | tuple[str, ...] | None  # regex (case-insensitive) the ganfit: error: line must match; a
    # tuple: one error line per regex, in that order
    outputs: bool  # may output files exist
    expect: Callable[[Path], dict[str, set[str]]] | None = None  # out folder -> {"required", "allowed"}
    check: Callable[[Path, Ctx, object], None] | None = None  # extra checks: (tmp_path, ctx, bfm)
    skip: Callable[[], str | None] | None = None
    assets: bool = True  # needs the default model and the dlib predictor (always true for rows that fit)

    @property
    def needs_assets(self) -> bool:
        return self.assets or self.code != 2


def face_set(stem: str = "face", *, ext: str = "obj", overlay: bool = True, texture: bool = True) -> dict[str, set[str]]:
    required = {f"{stem}.{ext}", f"{stem}.json"}
    allowed: set[str] = set()
    if overlay:
        required.add(f"{stem}_overlay.png")
    if texture:
        if ext == "obj":
            required |= {f"{stem}.mtl", f"{stem}_texture.png"}
        elif ext == "ply":
            required.add(f"{stem}_texture.png")  # named by the PLY's TextureFile comment
        else:  # glb embeds the texture; a PNG beside it is fine too
            allowed.add(f"{stem}_texture.png")
    return {"required": required, "allowed": allowed}


def union(*sets: dict[str, set[str]]) -> dict[str, set[str]]:
    return {k: set().union(*(s[k] for s in sets)) for k in ("required", "allowed")}


def out(tmp: Path, name: str = "face.obj") -> str:
    return str(tmp / "out" / name)


def fit(*args: object) -> list[str]:
    return ["fit", *map(str, args)]


def with_lm(tmp: Path, c: Ctx, photo: Path, *extra: object) -> list[str]:
    """A fit of `photo` (the 256 px astronaut's geometry) with the known landmarks, not detection."""
    return fit(photo, "--landmarks", c.lm, "-o", out(tmp), *FAST, "--no-overlay", *extra)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (8-bit grey); one row of data follows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 5))
            + chunk(b"IEND", b""))


def blank(tmp: Path, name: str = "blank.png") -> Path:
    yy, xx = np.mgrid[0:256, 0:256]
    path = tmp / name
    Image.fromarray(np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.uint8)).save(path)
    return path


def truncated_jpeg(tmp: Path, c: Ctx, name: str = "truncated.jpg") -> Path:
    path = tmp / name
    path.write_bytes(c.jpeg512[: len(c.jpeg512) // 2])
    return path


def write(tmp: Path, name: str, data: bytes | str) -> Path:
    path = tmp / name
    (path.write_text if isinstance(data, str) else path.write_bytes)(data)
    return path


class Evil:
    """Unpickling this creates the file it names (builtins.open(path, 'w')): a loader that runs it is unsafe."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import builtins

        return (builtins.open, (self.marker, "w"))


def marker_absent(name: str) -> Callable[[Path, Ctx, object], None]:
    def check(tmp: Path, c: Ctx, bfm) -> None:
        assert not (tmp / name).exists(), f"{name} was created: the malicious input ran"
    return check


def two_faces(tmp: Path, c: Ctx) -> Path:
    """The astronaut twice side by side: a 256 px copy on the left, a 200 px copy (a smaller face) on the right."""
    canvas = Image.new("RGB", (512, 256), (128, 128, 128))
    canvas.paste(c.photo_rgb, (0, 0))
    canvas.paste(c.photo_rgb.resize((200, 200), Image.LANCZOS), (284, 28))
    path = tmp / "two.png"
    canvas.save(path)
    return path


def face_box_x(tmp: Path) -> float:
    box = json.loads((tmp / "out" / "face.json").read_text())["landmarks"]["face_box_px"]
    return (box[0] + box[2]) / 2


def landmarks_match(tmp: Path, c: Ctx, bfm, tolerance_px: float = 4.0, stem: str = "face") -> None:
    """The detected landmarks are the upright astronaut's."""
    target = np.asarray(json.loads((tmp / "out" / f"{stem}.json").read_text())["landmarks"]["target_px"])
    err = float(np.linalg.norm(target - c.landmarks, axis=1).mean())
    assert err < tolerance_px, f"detected landmarks are {err:.1f} px from the upright astronaut's"


def obj_is_whole(tmp: Path, c: Ctx, bfm, stem: str = "face") -> None:
    lines = (tmp / "out" / f"{stem}.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in lines) == bfm.num_vertices
    assert sum(line.startswith("f ") for line in lines) == len(bfm.triangles)


# -- builders -------------------------------------------------------------------------------------
def b_missing(tmp, c):
    return fit(tmp / "nope.jpg", "-o", out(tmp), "-q")


def b_directory(tmp, c):
    (tmp / "photos.jpg").mkdir()
    return fit(tmp / "photos.jpg", "-o", out(tmp), "-q")


def b_empty(tmp, c):
    return fit(write(tmp, "empty.jpg", b""), "-o", out(tmp), "-q")


def b_random_jpg(tmp, c):
    return fit(write(tmp, "random.jpg", np.random.default_rng(0).bytes(4096)), "-o", out(tmp), "-q")


def b_text_png(tmp, c):
    return fit(write(tmp, "notes.png", "this is not an image\n" * 20), "-o", out(tmp), "-q")


def b_truncated(tmp, c):
    return fit(truncated_jpeg(tmp, c), "-o", out(tmp), "-q")


def b_tiny(tmp, c):
    path = tmp / "tiny.png"
    c.photo_rgb.resize((20, 20)).save(path)
    return fit(path, "-o", out(tmp), "-q")


def b_bomb(tmp, c):
    return fit(write(tmp, "bomb.png", png_header_only(100_000, 100_000)), "-o", out(tmp), "-q")


def b_blank(tmp, c):
    return fit(blank(tmp), "-o", out(tmp), "-q")


def detect_fit(path: Path, tmp: Path, *extra: object) -> list[str]:
    return fit(path, "-o", out(tmp), *FAST, *extra)


def b_gray(tmp, c):
    path = tmp / "gray.png"
    c.photo_rgb.convert("L").save(path)
    return detect_fit(path, tmp)


def b_gray16(tmp, c):
    path = tmp / "gray16.png"
    Image.fromarray(np.asarray(c.photo_rgb.convert("L"), np.uint16) * 257).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    return detect_fit(path, tmp, "--no-overlay")


def b_cmyk(tmp, c):
    path = tmp / "cmyk.jpg"
    c.photo_rgb.convert("CMYK").save(path, quality=95)
    return detect_fit(path, tmp, "--no-overlay")


def b_rgba(tmp, c):
    rgba = np.dstack([np.asarray(c.photo_rgb), np.full((256, 256), 255, np.uint8)])
    rgba[:12, :, 3] = 0  # a transparent band at the top, a half-transparent one at the bottom
    rgba[-12:, :, 3] = 128
    path = tmp / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return detect_fit(path, tmp, "--no-overlay")


def b_palette(tmp, c):
    path = tmp / "palette.png"
    c.photo_rgb.quantize(colors=64).save(path)
    return detect_fit(path, tmp, "--no-overlay")


def b_exif_rotated(tmp, c):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the stored pixels are the upright image turned 90 CCW
    path = tmp / "rotated.jpg"
    c.photo_rgb.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    return detect_fit(path, tmp, "--no-overlay")


def b_two_faces(tmp, c):
    return detect_fit(two_faces(tmp, c), tmp, "--no-overlay")


def b_two_faces_index1(tmp, c):
    return detect_fit(two_faces(tmp, c), tmp, "--no-overlay", "--face-index", "1")


def b_png_named_jpg(tmp, c):
    path = tmp / "really_a_png.jpg"
    path.write_bytes(c.photo.read_bytes())
    return with_lm(tmp, c, path)


def b_two_faces_index_negative(tmp, c):
    return fit(two_faces(tmp, c), "-o", out(tmp), "-q", "--face-index", "-1")


def b_two_faces_index5(tmp, c):
    return fit(two_faces(tmp, c), "-o", out(tmp), "-q", "--face-index", "5")


# landmarks
def b_lm_missing(tmp, c):
    return fit(c.photo, "--landmarks", tmp / "nope.pts", "-o", out(tmp), "-q")


def lm_file(tmp: Path, points: np.ndarray, name: str = "lm.npy") -> Path:
    np.save(tmp / name, points)
    return tmp / name


def b_lm_count(tmp, c):
    return fit(c.photo, "--landmarks", lm_file(tmp, c.landmarks[:67]), "-o", out(tmp), "-q")


def b_lm_nan(tmp, c):
    points = c.landmarks.copy()
    points[30] = np.nan
    return fit(c.photo, "--landmarks", lm_file(tmp, points), "-o", out(tmp), "-q")


def b_lm_outside(tmp, c):
    return fit(c.photo, "--landmarks", lm_file(tmp, c.landmarks + 1000), "-o", out(tmp), "-q")


def b_lm_garbage(tmp, c):
    return fit(c.photo, "--landmarks", write(tmp, "lm.npy", np.random.default_rng(1).bytes(300)), "-o", out(tmp), "-q")


def b_lm_pickle(tmp, c):
    path = tmp / "lm.npy"
    np.save(path, np.array([Evil(tmp / "pwned_lm")] * 68, dtype=object), allow_pickle=True)
    return fit(c.photo, "--landmarks", path, "-o", out(tmp), "-q")


def b_lm_per_photo(tmp, c):
    return fit(c.photo, c.photo, "--landmarks", c.lm, "-o", tmp / "out", "-q")


def b_lm_directory(tmp, c):
    (tmp / "lm.pts").mkdir()
    return fit(c.photo, "--landmarks", tmp / "lm.pts", "-o", out(tmp), "-q")


def b_lm_pts_malformed(tmp, c):
    text = "version: 1\nn_points: 68\n{\n" + "1 2\n" * 30 + "}\n"
    return fit(c.photo, "--landmarks", write(tmp, "lm.pts", text), "-o", out(tmp), "-q")


# models
def with_model(tmp: Path, c: Ctx, model: Path) -> list[str]:
    return fit(c.photo, "--landmarks", c.lm, "--model", model, "-o", out(tmp), "-q", "--device", "cpu")


def good_npz_bytes(tmp: Path) -> bytes:
    make_tiny_model().save_npz(tmp / "good.tmp.npz")
    data = (tmp / "good.tmp.npz").read_bytes()
    (tmp / "good.tmp.npz").unlink()
    return data


def npz_arrays(tmp: Path) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(good_npz_bytes(tmp))) as data:
        return {k: data[k] for k in data.files}


def b_model_missing(tmp, c):
    return with_model(tmp, c, tmp / "nope.npz")


def b_model_empty(tmp, c):
    return with_model(tmp, c, write(tmp, "empty.npz", b""))


def b_model_truncated(tmp, c):
    raw = good_npz_bytes(tmp)
    return with_model(tmp, c, write(tmp, "truncated.npz", raw[: len(raw) // 2]))


def b_model_header(tmp, c):
    arrays = npz_arrays(tmp)
    arrays["header"] = np.frombuffer(b"not json {", np.uint8)
    np.savez(tmp / "header.npz", **arrays)
    return with_model(tmp, c, tmp / "header.npz")


def b_model_zero_std(tmp, c):
    # MorphableModel refuses a zero std itself, so the file is written with numpy directly; the tiny
    # model (not the 53k-vertex default) keeps the file small
    arrays = npz_arrays(tmp)
    arrays["shape_std"] = arrays["shape_std"].copy()
    arrays["shape_std"][2] = 0.0
    np.savez(tmp / "zero_std.npz", **arrays)
    return with_model(tmp, c, tmp / "zero_std.npz")


def b_model_npz_pickle(tmp, c):
    arrays = npz_arrays(tmp)
    arrays["mean"] = np.array([Evil(tmp / "pwned_npz")], dtype=object)
    np.savez(tmp / "pickled.npz", **arrays)
    return with_model(tmp, c, tmp / "pickled.npz")


def b_model_random(ext: str):
    def build(tmp, c):
        return with_model(tmp, c, write(tmp, f"model.{ext}", np.random.default_rng(2).bytes(2048)))
    return build


def b_model_empty_folder(tmp, c):
    (tmp / "model").mkdir()
    return with_model(tmp, c, tmp / "model")


def b_model_evil_pickle(tmp, c):
    data = pickle.dumps({"v_template": Evil(tmp / "pwned_pkl"), "f": np.zeros((1, 3), np.int64)})
    return with_model(tmp, c, write(tmp, "flame.pkl", data))


# config
def b_config_yaml(tmp, c):
    return fit(c.photo, "--config", write(tmp, "c.yaml", "device: [cpu\n  : {{\n"), "-o", out(tmp), "-q")


def b_config_json(tmp, c):
    return fit(c.photo, "--config", write(tmp, "c.json", "{device: cpu,}"), "-o", out(tmp), "-q")


def b_config_binary(tmp, c):
    return fit(c.photo, "--config", write(tmp, "c.yaml", b"\xff\xfe\x00\x81binary"), "-o", out(tmp), "-q")


def b_config_yaml_tag(tmp, c):
    text = f"device: !!python/object/apply:builtins.open [{str(tmp / 'pwned_yaml')!r}, w]\n"
    return fit(c.photo, "--config", write(tmp, "c.yaml", text), "-o", out(tmp), "-q")


def b_config_unknown(tmp, c):
    return fit(c.photo, "--config", write(tmp, "c.yaml", "optimiser: lm\n"), "-o", out(tmp), "-q")


def b_config_missing(tmp, c):
    return fit(c.photo, "--config", tmp / "nope.yaml", "-o", out(tmp), "-q")


def b_option(*option: str):
    def build(tmp, c):
        return fit(c.photo, "--landmarks", c.lm, *option, "-o", out(tmp), "-q")
    return build


def b_iterations0(tmp, c):
    return fit(c.photo, "--landmarks", c.lm, "--iterations", "0", "-o", out(tmp), "-q")


def b_device(name: str):
    # a photo without a face: a device check that comes only after detection says "no face" instead
    def build(tmp, c):
        return fit(blank(tmp), "--device", name, "-o", out(tmp), "-q")
    return build


def no_cuda() -> str | None:
    return "this machine has CUDA" if torch.cuda.is_available() else None


# outputs
def b_read_only(tmp, c):
    ro = tmp / "out"
    ro.mkdir()
    ro.chmod(0o500)
    return with_lm(tmp, c, c.photo)


def not_root() -> str | None:
    return "root ignores permission bits" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def b_parent_is_file(tmp, c):
    write(tmp, "out", "a file where the output folder should be\n")
    return fit(c.photo, "--landmarks", c.lm, "-o", tmp / "out" / "face.obj", *FAST)


def b_parent_of_parent_is_file(tmp, c):
    write(tmp, "blocker", "x\n")
    return fit(c.photo, "--landmarks", c.lm, "-o", tmp / "blocker" / "sub" / "face.obj", *FAST)


def b_obj_is_dir(tmp, c):
    """-o out/ with a photo named face.png, and out/face.obj an existing folder."""
    photo = tmp / "face.png"
    photo.write_bytes(c.photo.read_bytes())
    (tmp / "out" / "face.obj").mkdir(parents=True)
    return fit(photo, "--landmarks", c.lm, "-o", str(tmp / "out") + os.sep, *FAST)


def b_texture_is_dir(tmp, c):
    """out/face_texture.png an existing folder: the first file written may be the texture or the OBJ."""
    (tmp / "out" / "face_texture.png").mkdir(parents=True)
    return fit(c.photo, "--landmarks", c.lm, "-o", out(tmp), *FAST)


def b_json_is_dir(tmp, c):
    """out/face.json an existing folder: the JSON is written last today."""
    (tmp / "out" / "face.json").mkdir(parents=True)
    return fit(c.photo, "--landmarks", c.lm, "-o", out(tmp), *FAST)


def b_ext(ext: str):
    def build(tmp, c):
        return fit(c.photo, "--landmarks", c.lm, "-o", out(tmp, f"face.{ext}"), *FAST)
    return build


def b_overwrite(tmp, c):
    (tmp / "out").mkdir()
    write(tmp / "out", "face.obj", "old\n")
    write(tmp / "out", "face.json", "{}")
    return fit(c.photo, "--landmarks", c.lm, "-o", out(tmp), *FAST)


def b_evil_name(tmp, c):
    photo = tmp / EVIL_NAME
    photo.write_bytes(c.photo.read_bytes())
    return fit(photo, "--landmarks", c.lm, "-o", tmp / "out", *FAST)


def b_same_names(tmp, c):
    for sub in ("a", "b"):
        (tmp / sub).mkdir()
        (tmp / sub / "p.png").write_bytes(c.photo.read_bytes())
    return fit(tmp / "a" / "p.png", tmp / "b" / "p.png", "--landmarks", c.lm, c.lm, "-o", tmp / "out", *FAST, "--no-overlay")


# several photos
def several(tmp: Path, c: Ctx, bad: list[Path]) -> list[str]:
    good = tmp / "good.png"
    good.write_bytes(c.photo.read_bytes())
    return fit(good, *bad, "-o", tmp / "out", *FAST, "--no-overlay")


def b_several_noface(tmp, c):
    return several(tmp, c, [blank(tmp)])


def b_several_truncated(tmp, c):
    return several(tmp, c, [truncated_jpeg(tmp, c)])


def b_several_missing(tmp, c):
    return several(tmp, c, [tmp / "missing.jpg"])


def b_all_bad(tmp, c):
    return fit(blank(tmp), truncated_jpeg(tmp, c), "-o", tmp / "out", *FAST, "--no-overlay")


# -- checks for success rows -----------------------------------------------------------------------
def check_two_faces_default(tmp, c, bfm):
    assert face_box_x(tmp) < 256, "the larger (left) face should be fitted"


def check_two_faces_index1(tmp, c, bfm):
    assert face_box_x(tmp) > 256, "--face-index 1 should fit the right face"


def check_ply(tmp, c, bfm):
    trimesh = pytest.importorskip("trimesh")
    data = (tmp / "out" / "face.ply").read_bytes()
    header = data[: data.index(b"end_header\n")].decode("ascii").splitlines()
    assert header[0] == "ply" and f"element vertex {bfm.num_vertices}" in header
    assert "comment TextureFile face_texture.png" in header
    # trimesh drops the vertices no triangle uses (the model has some)
    mesh = trimesh.load(tmp / "out" / "face.ply", process=False)
    assert len(mesh.faces) == len(bfm.triangles) and len(mesh.vertices) == len(np.unique(bfm.triangles))


def check_glb(tmp, c, bfm):
    trimesh = pytest.importorskip("trimesh")
    assert (tmp / "out" / "face.glb").read_bytes()[:4] == b"glTF"
    scene = trimesh.load(tmp / "out" / "face.glb", process=False)
    meshes = list(scene.geometry.values()) if hasattr(scene, "geometry") else [scene]
    assert len(meshes) == 1 and len(meshes[0].faces) == len(bfm.triangles)
    assert len(meshes[0].vertices) >= len(np.unique(bfm.triangles))  # seam vertices may be split


def check_overwritten(tmp, c, bfm):
    obj_is_whole(tmp, c, bfm)
    assert json.loads((tmp / "out" / "face.json").read_text())["model"]["name"] == "bfm-3ddfa"


def evil_expect(folder: Path) -> dict[str, set[str]]:
    objs = [p for p in folder.iterdir() if p.suffix == ".obj"]
    assert len(objs) == 1, sorted(p.name for p in folder.iterdir())
    return face_set(objs[0].stem)


def check_evil(tmp, c, bfm):
    folder = tmp / "out"
    assert all("\n" not in p.name and "\r" not in p.name for p in folder.iterdir())
    (obj,) = [p for p in folder.iterdir() if p.suffix == ".obj"]
    lines = obj.read_text().splitlines()
    assert sum(line.startswith("v ") for line in lines) == bfm.num_vertices
    assert not any(line.startswith("mtllib evil") for line in lines)
    assert "v 9 9 9" not in lines
    mtllibs = [line for line in lines if line.startswith("mtllib ")]
    assert mtllibs == [f"mtllib {obj.stem}.mtl"], mtllibs
    mtl = obj.with_suffix(".mtl").read_text().splitlines()
    assert all(line == "" or line.startswith(("#", "newmtl ", "K", "d ", "Ns ", "Ni ", "illum ", "map_", "Tr ")) for line in mtl), mtl


def check_same_names(tmp, c, bfm):
    for stem in ("p", "p_1"):
        obj_is_whole(tmp, c, bfm, stem)


ERR_NO_FILE = r"no such file|not found|does not exist"


def both(name: str, words: str) -> str:
    """A regex: the line names `name` (a file name) and says `words` (a regex), in either order."""
    return rf"(?=.*{re.escape(name)})(?=.*({words}))"

ERR_EXTENSIONS = r"(?=.*\bobj\b)(?=.*\bply\b)(?=.*\bglb\b)"

ROWS = [
    # ------------------------------------------------------------------ images
    Row("image-missing", b_missing, 2, ERR_NO_FILE, False, assets=False),
    Row("image-directory", b_directory, 2, r"directory|folder", False, assets=False),
    Row("image-empty", b_empty, 2, r"empty", False, assets=False),
    Row("image-random-bytes-jpg", b_random_jpg, 2, r"not an image", False, assets=False),
    Row("image-text-as-png", b_text_png, 2, r"not an image", False, assets=False),
    Row("image-truncated-jpeg", b_truncated, 2, r"truncat", False, assets=False),
    Row("image-tiny-20px", b_tiny, 2, r"too small|no face", False, assets=False),
    Row("image-bomb-100000px", b_bomb, 2, r"too large|size|pixels", False, assets=False),
    Row("image-no-face", b_blank, 2, r"no face", False),
    Row("image-grayscale-L", b_gray, 0, None, True, expect=lambda f: face_set()),
    Row("image-16bit-png", b_gray16, 0, None, True, expect=lambda f: face_set(overlay=False)),
    Row("image-cmyk-jpeg", b_cmyk, 0, None, True, expect=lambda f: face_set(overlay=False)),
    Row("image-rgba-png", b_rgba, 0, None, True, expect=lambda f: face_set(overlay=False)),
    Row("image-palette-png", b_palette, 0, None, True, expect=lambda f: face_set(overlay=False)),
    Row("image-exif-rotated", b_exif_rotated, 0, None, True, expect=lambda f: face_set(overlay=False),
        check=landmarks_match),
    Row("image-two-faces-largest", b_two_faces, 0, None, True, expect=lambda f: face_set(overlay=False),
        check=check_two_faces_default),
    Row("image-two-faces-index-1", b_two_faces_index1, 0, None, True, expect=lambda f: face_set(overlay=False),
        check=check_two_faces_index1),
    Row("image-two-faces-index-negative", b_two_faces_index_negative, 2, r"face_index -1|face-index -1|\b2 face", False),
    Row("image-png-named-jpg", b_png_named_jpg, 0, None, True, expect=lambda f: face_set(overlay=False)),
    Row("image-two-faces-index-5", b_two_faces_index5, 2, r"face_index 5|face-index 5|\b2 face", False),
    # ------------------------------------------------------------------ landmarks
    Row("landmarks-missing-file", b_lm_missing, 2, ERR_NO_FILE, False, assets=False),
    Row("landmarks-67-points", b_lm_count, 2, r"\b67\b.*\b68\b", False, assets=False),
    Row("landmarks-nan", b_lm_nan, 2, r"nan", False, assets=False),
    Row("landmarks-outside-image", b_lm_outside, 2, r"inside the 256x256 image", False, assets=False),
    Row("landmarks-garbage-npy", b_lm_garbage, 2, r"landmark", False, assets=False),
    Row("landmarks-pickle-npy", b_lm_pickle, 2, r"landmark", False, check=marker_absent("pwned_lm"), assets=False),
    Row("landmarks-directory", b_lm_directory, 2, both("lm.pts", "is a folder"), False, assets=False),
    Row("landmarks-pts-malformed", b_lm_pts_malformed, 2, both("lm.pts", r"\b30\b"), False, assets=False),
    Row("landmarks-not-one-per-photo", b_lm_per_photo, 2, r"one per photo", False, assets=False),
    # ------------------------------------------------------------------ models
    Row("model-missing-path", b_model_missing, 2, r"nope\.npz.*(neither a registered name|no such|not found)", False),
    Row("model-empty-npz", b_model_empty, 2, r"corrupt or not a ganfit model file.*empty", False),
    Row("model-truncated-npz", b_model_truncated, 2, r"corrupt or not a ganfit model file", False),
    Row("model-npz-header-not-json", b_model_header, 2, r"corrupt or not a ganfit model file.*not JSON", False),
    Row("model-zero-std", b_model_zero_std, 2, r"zero_std\.npz.*shape_std\[2\] is 0", False),
    Row("model-npz-with-pickle", b_model_npz_pickle, 2, r"pickled\.npz", False, check=marker_absent("pwned_npz")),
    Row("model-random-mat", b_model_random("mat"), 2, r"model\.mat.*corrupt or not a", False),
    Row("model-random-h5", b_model_random("h5"), 2, r"model\.h5.*corrupt or not a", False),
    Row("model-random-pkl", b_model_random("pkl"), 2, r"model\.pkl.*corrupt or not a", False),
    Row("model-empty-folder", b_model_empty_folder, 2, both("model", "corrupt or not a|folder"), False),
    Row("model-malicious-pickle", b_model_evil_pickle, 2, r"flame\.pkl.*(corrupt or not a|refus)", False,
        check=marker_absent("pwned_pkl")),
    # ------------------------------------------------------------------ config
    Row("config-not-yaml", b_config_yaml, 2, r"not valid YAML", False, assets=False),
    Row("config-not-json", b_config_json, 2, r"not valid JSON", False, assets=False),
    Row("config-binary", b_config_binary, 2, both("c.yaml", "not UTF-8"), False, assets=False),
    Row("config-yaml-python-tag", b_config_yaml_tag, 2, r"not valid YAML", False, check=marker_absent("pwned_yaml"),
        assets=False),
    Row("config-unknown-key", b_config_unknown, 2, r"unknown config option 'optimiser'", False, assets=False),
    Row("config-missing-file", b_config_missing, 2, both("nope.yaml", "cannot read|no such file|not found"), False,
        assets=False),
    Row("texture-size-5", b_option("--texture-size", "5"), 2, r"texture.size", False, assets=False),
    Row("landmark-sigma-0", b_option("--landmark-sigma", "0"), 2, r"landmark.sigma", False, assets=False),
    Row("stages-unknown", b_option("--stages", "landmarks,nonsense"), 2, r"unknown stage 'nonsense'", False,
        assets=False),
    Row("iterations-0", b_iterations0, 2, r"iterations.*at least 1", False, assets=False),
    Row("device-mps", b_device("mps"), 2, r"device 'mps'", False),
    Row("device-xpu", b_device("xpu"), 2, r"device 'xpu'", False),
    Row("device-meta", b_device("meta"), 2, r"device 'meta'", False),
    Row("device-cuda", b_device("cuda"), 2, r"device 'cuda'.*no CUDA", False, skip=no_cuda),
    Row("device-cuda-3", b_device("cuda:3"), 2, r"device 'cuda:3'", False, skip=no_cuda),
    Row("device-nonsense", b_device("tpu9"), 2, r"unknown device 'tpu9'", False),
    # ------------------------------------------------------------------ outputs
    Row("output-read-only-folder", b_read_only, 2, r"cannot write", False, skip=not_root),
    Row("output-parent-is-file", b_parent_is_file, 2, r"cannot write|not a folder", False),
    Row("output-grandparent-is-file", b_parent_of_parent_is_file, 2, r"cannot write|not a folder", False),
    Row("output-obj-is-directory", b_obj_is_dir, 2, r"face\.obj.*(directory|folder)", False),
    Row("output-texture-is-directory", b_texture_is_dir, 2, r"face_texture\.png.*(directory|folder)", False),
    Row("output-json-is-directory", b_json_is_dir, 2, r"face\.json.*(directory|folder)", False),
    Row("output-ply", b_ext("ply"), 0, None, True, expect=lambda f: face_set(ext="ply"), check=check_ply),
    Row("output-glb", b_ext("glb"), 0, None, True, expect=lambda f: face_set(ext="glb"), check=check_glb),
    Row("output-stl", b_ext("stl"), 2, ERR_EXTENSIONS, False),
    Row("output-gltf", b_ext("gltf"), 2, ERR_EXTENSIONS, False),
    Row("output-xyz", b_ext("xyz"), 2, ERR_EXTENSIONS, False),
    Row("output-overwrites-old-files", b_overwrite, 0, None, True, expect=lambda f: face_set(), check=check_overwritten),
    Row("output-name-with-newlines", b_evil_name, 0, None, True, expect=evil_expect, check=check_evil),
    Row("output-same-photo-names", b_same_names, 0, None, True,
        expect=lambda f: union(face_set("p", overlay=False), face_set("p_1", overlay=False)), check=check_same_names),
    # ------------------------------------------------------------------ several photos
    Row("several-one-no-face", b_several_noface, 1, both("blank.png", "no face"), True,
        expect=lambda f: face_set("good", overlay=False)),
    Row("several-one-truncated", b_several_truncated, 1, both("truncated.jpg", "truncat"), True,
        expect=lambda f: face_set("good", overlay=False)),
    Row("several-one-missing", b_several_missing, 1, both("missing.jpg", ERR_NO_FILE), True,
        expect=lambda f: face_set("good", overlay=False)),
    # each bad photo on its line, then one line saying nothing was written
    Row("several-all-bad", b_all_bad, 2, (both("blank.png", "no face"), both("truncated.jpg", "truncat"),
                                          r"none of the 2|nothing (was )?written"), False),
]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def _restore_permissions(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)


def test_row_ids_are_unique():
    assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=[pytest.mark.assets] if r.needs_assets else [])
                                 for r in ROWS])
def test_bad_input(row: Row, tmp_path: Path, ctx: Ctx, shared_detector, request, capsys):
    if row.skip and (why := row.skip()):
        pytest.skip(why)
    bfm = None
    if row.needs_assets:
        bfm = request.getfixturevalue("bfm")
        if shared_detector is None:
            pytest.skip("dlib landmark predictor not available; run `ganfit assets fetch`")
    argv = row.build(tmp_path, ctx)
    before = _files(tmp_path)
    try:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    finally:
        _restore_permissions(tmp_path)
    _, err = capsys.readouterr()
    new = _files(tmp_path) - before
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("ganfit: error:")]
    assert code == row.code, f"exit {code}, expected {row.code}; stderr: {err}"
    if row.fragment is None:
        assert errors == [], err
    else:
        patterns = (row.fragment,) if isinstance(row.fragment, str) else row.fragment
        assert len(errors) == len(patterns), err
        for line, pattern in zip(errors, patterns):
            line = line.replace(str(tmp_path), "<tmp>")  # the folder's name holds the row's id
            assert re.search(pattern, line, re.IGNORECASE), f"{line!r} does not match {pattern!r}"
    folder = tmp_path / "out"
    if not row.outputs:
        assert not new, f"files left behind: {sorted(new)}"
        assert not folder.is_dir() or not [p for p in folder.iterdir() if not p.is_dir()]
    else:
        assert row.expect is not None
        outside = [n for n in new if not n.startswith("out" + os.sep)]
        assert not outside, f"files written outside the output folder: {outside}"
        names = {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()}
        temporaries = [n for n in names if n.startswith(".") or n.endswith(".tmp")]
        assert not temporaries, temporaries
        expected = row.expect(folder)
        missing = expected["required"] - names
        extra = names - expected["required"] - expected["allowed"]
        assert not missing and not extra, f"missing {sorted(missing)}, unexpected {sorted(extra)}"
    if row.check:
        row.check(tmp_path, ctx, bfm)
