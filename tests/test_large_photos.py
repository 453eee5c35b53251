"""Photos larger than the working copy (`ganfit.io.images.WORKING_MAX_PIXELS`): the fit runs on a
downscaled copy in bounded memory, and every result stays in the photo's own pixels."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganfit import FitConfig, Fitter

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
SIDE, FACE_SIDE, OFFSET = 20_000, 8_000, np.array([6_000.0, 4_000.0])  # the astronaut pasted 15.6x larger
pytestmark = pytest.mark.assets

_RUN_CLI = """
import sys
from ganfit.cli.main import main
rc = main(sys.argv[1:])
with open("/proc/self/status") as status:  # this process's own peak (ru_maxrss may carry the parent's)
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(rc, peak_kb)
"""


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory) -> Path:
    """A 20000 x 20000 grey JPEG (the largest photo accepted) with the astronaut at 8000 x 8000 px."""
    path = tmp_path_factory.mktemp("large") / "big.jpg"
    face = Image.open(PHOTO).convert("L").resize((FACE_SIDE, FACE_SIDE), Image.Resampling.BILINEAR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        canvas = Image.new("L", (SIDE, SIDE), 120)  # 400 MB, for a moment
        canvas.paste(face, tuple(int(v) for v in OFFSET))
        canvas.save(path, quality=85)
    return path


@pytest.fixture(scope="module")
def reference(bfm):
    """The same face fitted at 512 px; its landmarks mapped into the big photo's pixels."""
    gray = np.asarray(Image.open(PHOTO).convert("L").convert("RGB"))
    result = Fitter(FitConfig(device="cpu", quiet=True, texture_size=0), model=bfm).fit(gray)
    k = FACE_SIDE / 512
    return (result.landmarks_target[0].numpy() + 0.5) * k - 0.5 + OFFSET


def _face_size(points: np.ndarray) -> float:
    return float(np.sqrt(np.prod(points.max(0) - points.min(0))))


def test_20000px_jpeg_fits_in_under_2_gb_with_results_in_photo_pixels(big_photo, reference, tmp_path):
    out = tmp_path / "out" / "face.obj"
    run = subprocess.run([sys.executable, "-c", _RUN_CLI, "fit", str(big_photo), "-o", str(out), "-q"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rc, peak_kb = (int(v) for v in run.stdout.split()[-2:])
    assert rc == 0 and run.stderr == ""
    assert peak_kb < 2 * 1024 * 1024, f"peak memory {peak_kb / 1024:.0f} MB"  # ~0.9 GB measured (was 8.3 GB)
    for name in ("face.obj", "face.mtl", "face_texture.png", "face.json", "face_overlay.png"):
        assert (out.parent / name).is_file(), name
    info = json.loads((out.parent / "face.json").read_text())
    assert info["camera"]["image_size"] == [SIDE, SIDE]
    assert info["camera"]["principal_px"] == [SIDE / 2, SIDE / 2]
    target = np.asarray(info["landmarks"]["target_px"])
    error = np.linalg.norm(target - reference, axis=1)
    assert error.mean() < 0.02 * _face_size(reference), error  # the same face, in the photo's pixels
    box = np.asarray(info["landmarks"]["face_box_px"])
    assert (box[:2] > OFFSET).all() and (box[2:] < OFFSET + FACE_SIDE).all()
    assert info["landmarks"]["reprojection_error_px"] < 0.03 * _face_size(reference)
    with Image.open(out.parent / "face_overlay.png") as overlay:
        assert overlay.size == (3 * 1024, 1024)


def test_landmark_files_of_a_large_photo_are_in_its_pixels(big_photo, reference, bfm, tmp_path):
    # landmarks given in the photo's pixels (as a user measures them) are accepted as they are
    np.save(tmp_path / "big.npy", reference)
    fitter = Fitter(FitConfig(device="cpu", quiet=True, texture_size=0), model=bfm)
    result = fitter.fit(str(big_photo), landmarks=str(tmp_path / "big.npy"))
    np.testing.assert_allclose(result.landmarks_target[0].numpy(), reference, rtol=1e-6)
    assert result.camera.image_size[0].tolist() == [SIDE, SIDE]
    assert result.reprojection_error_px().item() < 0.03 * _face_size(reference)
    assert result.images[0].shape[:2] == (4096, 4096)  # the working copy, not 20000 x 20000
