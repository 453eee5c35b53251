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


class _CodedDetector:
    """Stands in for a face detector on a synthetic clip: each frame's grey level says which frame it is, and
    the detector returns that frame's synthetic landmarks."""

    backend = "synthetic"

    def __init__(self, landmarks: np.ndarray) -> None:
        self.lms = landmarks

    def detect(self, pixels: np.ndarray):
        from ganfit.perception.detect import Detection

        k = int(round((float(pixels[:32, :32].mean()) - 8.0) / 12.0))
        pts = self.lms[k]
        box = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
        return [Detection(box=box, score=1.0, landmarks=pts.copy(), backend=self.backend)]


def test_a_clip_has_one_identity_and_steadier_3d_motion_than_per_frame_fits(bfm, tmp_path):
    """A synthetic person turning +-30 deg over 18 frames, 1.5 px landmark noise: the clip's one identity is as
    near the true shape as the frames' own landmark fits on average, every frame keeps it, and the 3D motion is
    far steadier than per-frame fits'."""
    import math

    import torch

    from ganfit.fitting.landmark_stage import LandmarkStage
    from ganfit.fitting.losses import landmark_weights
    from ganfit.fitting.synthetic import make_synthetic_faces

    n = 18
    g = torch.Generator().manual_seed(4)
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    ypr = torch.stack([30 * torch.sin(2 * math.pi * t), 4 * torch.sin(4 * math.pi * t), torch.zeros(n, dtype=torch.float64)], -1)
    truth = torch.randn(bfm.num_shape, generator=g, dtype=torch.float64)
    syn = make_synthetic_faces(bfm, n, g, shape=truth, yaw_pitch_roll=ypr, depth_mm=(700, 700), noise_px=1.5,
                               expression=0.3 * torch.randn(n, bfm.num_expression, generator=g, dtype=torch.float64))
    video = tmp_path / "coded.mp4"
    write_video(video, [np.full((512, 512, 3), 8 + 12 * k, np.uint8) for k in range(n)], 10.0)
    fit = FitConfig(quiet=True, texture_size=0, landmark_table="model", device="cpu")
    fit_video(video, tmp_path / "o", fit, VideoFitConfig(keyframes=4, overlay=False, detect_every=1),
              detector=_CodedDetector(syn.landmarks.numpy()))
    z = _arrays(tmp_path / "o")
    own = LandmarkStage(bfm).solve(syn.landmarks, torch.full((n, 2), 512.0, dtype=torch.float64), weights=landmark_weights(0.5))
    zero = torch.zeros(1, bfm.num_expression, dtype=torch.float64)

    def error(shape) -> float:
        v = bfm.vertices(torch.as_tensor(np.atleast_2d(shape), dtype=torch.float64), zero)
        tv = bfm.vertices(truth[None], zero)
        return float(((v - v.mean(1, keepdim=True)) - (tv - tv.mean(1, keepdim=True))).norm(dim=-1).mean())

    e_clip = error(z["shape"])
    e_frames = float(np.mean([error(s) for s in own.params.shape.numpy()]))
    # measured 2026-12-06: 2.96 vs 2.94 mm: on synthetic faces the error is mostly the prior's shrinkage, which
    # averaging views does not remove (real clips: RESULTS.md "Video", halves 0.80 mm apart vs 1.92 between people)
    assert e_clip < 1.03 * e_frames, (e_clip, e_frames)
    assert z["fitted"].all() and np.nanmax(z["reprojection_px"]) < 5.0

    def camera_vertices(shape, expression, rotation, translation):
        from ganfit.render.camera import rotation_matrix, transform_points

        s_ = torch.as_tensor(np.asarray(shape), dtype=torch.float64)
        s_ = s_.expand(len(expression), -1) if s_.ndim == 1 else s_
        v = bfm.vertices(s_, torch.as_tensor(np.asarray(expression), dtype=torch.float64))[:, ::50]
        r = rotation_matrix(torch.as_tensor(np.asarray(rotation), dtype=torch.float64))
        return transform_points(v, r, torch.as_tensor(np.asarray(translation), dtype=torch.float64)).numpy()

    from ganfit.perception.tracking import landmark_jitter

    p = own.params
    jitter_frames = landmark_jitter(camera_vertices(p.shape, p.expression, p.rotation, p.translation))
    jitter_clip = landmark_jitter(camera_vertices(z["shape"], z["expression"], z["rotation"], z["translation"]))
    # one shape and one focal length: the depth no longer trades off with the focal length frame by frame
    assert jitter_clip < 0.5 * jitter_frames, (jitter_clip, jitter_frames)


def test_with_the_joint_stage_every_frame_gets_its_light(clip, tmp_path):
    from ganfit.fitting.stages import JointStageConfig

    fit = FIT.replace(identity="none", stages=("landmarks", JointStageConfig(iterations=4, warmup_iterations=1,
                                                                               latent_candidates=1)))
    res = fit_video(clip, tmp_path / "j", fit, VideoFitConfig(keyframes=2, overlay=False, max_frames=6))
    z = _arrays(tmp_path / "j")
    assert z["lighting"].shape == (6, 9, 3) and np.isfinite(z["lighting"]).all()
    assert not np.allclose(z["lighting"][0], z["lighting"][-1])  # its own light, not a keyframe's copy
    assert "texture_latent" in json.loads((tmp_path / "j" / "identity.json").read_text()) and res.fitted == 6


def test_sigkill_half_way_then_resume_gives_the_same_files(tmp_path):
    """`ganfit fit-video` killed (SIGKILL) once its first checkpoint part is on disk, then run again with
    --resume: frames.npz equals an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    base = np.asarray(Image.open(PHOTO).convert("RGB").resize((256, 256)))
    video = tmp_path / "long.mp4"
    write_video(video, [np.roll(base, int(round(5 * np.sin(i / 12))), axis=1) for i in range(80)], 25.0)
    args = [sys.executable, "-m", "ganfit", "fit-video", str(video), "--keyframes", "2", "--checkpoint-every", "4",
            "--no-overlay", "-q", "--texture-size", "64", "--device", "cpu", "--smoothing", "1"]
    subprocess.run(args + ["-o", str(tmp_path / "whole")], check=True, timeout=300)
    out = tmp_path / "killed"
    proc = subprocess.Popen(args + ["-o", str(out)])
    first = out / ".ganfit-video" / "part_00000.npz"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    code = proc.wait(timeout=60)
    assert first.exists()
    killed_before_the_end = code == -signal.SIGKILL and not (out / "frames.npz").exists()
    subprocess.run(args + ["-o", str(out), "--resume"], check=True, timeout=300)
    a, b = _arrays(tmp_path / "whole"), _arrays(out)
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    summary = json.loads((out / "video.json").read_text())
    assert "track" in summary["resumed"]
    if killed_before_the_end:  # (on a very fast machine the first run may finish before the kill lands)
        assert "part_00000.npz" in summary["resumed"] and len([r for r in summary["resumed"] if r.startswith("part")]) < 20
