"""`ganfit fit-video` (`fitting.video_fit`): a synthetic clip of the example photo moving, fitted with one
identity; the files; a run killed half-way and resumed equals an uninterrupted one; bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganfit.cli.main import main
from ganfit.errors import ConfigError, NoFaceError, OutputError, VideoError
from ganfit.fitting import FitConfig
from ganfit.fitting import video_fit
from ganfit.fitting.video_fit import VideoFitConfig, fit_video
from ganfit.io.video import read_frames, write_video

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.assets]
PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
N = 16
FIT = FitConfig(quiet=True, texture_size=64, device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """16 frames at 10 fps: the example photo (256 px) drifting sideways and back."""
    base = np.asarray(Image.open(PHOTO).convert("RGB").resize((256, 256)))
    frames = []
    for i in range(N):
        dx = int(round(6 * np.sin(i / N * 2 * np.pi)))
        frames.append(np.roll(base, dx, axis=1))
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, frames, 10.0)
    return path


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "frames.npz") as z:
        return {k: z[k] for k in z.files}


def test_a_clip_is_fitted_with_one_identity(clip, tmp_path):
    out = tmp_path / "out"
    res = fit_video(clip, out, FIT, VideoFitConfig(keyframes=2, chunk=6, meshes=True))
    assert res.frames == N and res.fitted == N and len(res.keyframes) == 2
    names = {p.name for p in out.iterdir()}
    assert {"identity.obj", "identity.json", "identity_texture.png", "frames.npz", "overlay.mp4", "video.json",
            "keyframes", "meshes"} <= names
    z = _arrays(out)
    assert z["expression"].shape[0] == N and z["fitted"].all() and z["shape"].ndim == 1
    assert np.nanmax(z["reprojection_px"]) < 4.0
    # the head moves sideways with the photo: fitted x translation follows the drift's sign
    drift = np.round(6 * np.sin(np.arange(N) / N * 2 * np.pi))
    assert np.corrcoef(drift, z["translation"][:, 0])[0, 1] > 0.8
    assert len(list((out / "meshes").glob("frame_*.obj"))) == N
    assert sum(1 for _ in read_frames(out / "overlay.mp4")) == N
    summary = json.loads((out / "video.json").read_text())
    assert summary["frames"] == N and summary["keyframes"] == res.keyframes


def test_a_killed_run_resumes_to_the_same_files(clip, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    fit_video(clip, whole, FIT, VideoFitConfig(keyframes=2, chunk=6, overlay=False))
    real = video_fit.fit_sequence
    calls = {"n": 0}

    def dies_on_the_second_part(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(video_fit, "fit_sequence", dies_on_the_second_part)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        fit_video(clip, part, FIT, VideoFitConfig(keyframes=2, chunk=6, overlay=False))
    assert not (part / "frames.npz").exists() and (part / ".ganfit-video" / "part_00000.npz").is_file()
    monkeypatch.setattr(video_fit, "fit_sequence", real)
    res = fit_video(clip, part, FIT, VideoFitConfig(keyframes=2, chunk=6, overlay=False), resume=True)
    assert {"track", "identity", "part_00000.npz"} <= set(res.resumed)
    a, b = _arrays(whole), _arrays(part)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    with pytest.raises(ConfigError, match="another video or other options"):
        fit_video(clip, part, FIT, VideoFitConfig(keyframes=3, chunk=6, overlay=False), resume=True)


def test_bad_inputs_say_what_to_do(clip, tmp_path):
    with pytest.raises(VideoError, match="use `ganfit fit`"):
        fit_video(PHOTO, tmp_path / "o1", FIT)
    blank = tmp_path / "blank.mp4"
    write_video(blank, [np.full((128, 128, 3), 90, np.uint8)] * 5, 10.0)
    with pytest.raises(NoFaceError, match="no face found in any of the 5 frames"):
        fit_video(blank, tmp_path / "o2", FIT)
    assert not (tmp_path / "o2").exists()  # no output at all
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputError, match="it is a file"):
        fit_video(clip, afile, FIT)
    assert main(["fit", str(clip), "-o", str(tmp_path / "f.obj"), "-q"]) == 2  # a video given to `fit`
    assert main(["fit-video", str(PHOTO), "-o", str(tmp_path / "o3"), "-q"]) == 2


def test_a_truncated_video_is_fitted_as_far_as_it_decodes(clip, tmp_path):
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.95)])  # H.264's last frames lost (less and no frame decodes)
    with pytest.warns(UserWarning):
        res = fit_video(cut, tmp_path / "o", FIT, VideoFitConfig(keyframes=2, overlay=False))
    assert 0 < res.frames < N and res.fitted == res.frames and res.stopped_early


def test_fit_video_on_the_command_line(clip, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["fit-video", str(clip), "-o", str(out), "--keyframes", "2", "--no-overlay", "--max-frames", "8"]) == 0
    assert "8 of 8 frames fitted" in capsys.readouterr().out
    assert _arrays(out)["expression"].shape[0] == 8 and not (out / "overlay.mp4").exists()
