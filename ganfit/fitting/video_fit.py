"""`ganfit fit-video`: one identity and per-frame expression and pose from a video (issue 13).

Steps, each checkpointed under ``OUT/.ganfit-video/`` so that ``resume=True`` continues a killed run and ends
with the same files as an uninterrupted one:
1. track: decode the frames (streamed, `io.video`), follow the face (`perception.tracking`: searched on every
   `detect_every`-th frame, landmarks from the carried box in between, one-euro smoothed, short gaps filled),
   and measure each face's sharpness -> ``track.npz``;
2. keyframes: a quick per-frame landmark fit gives yaw and expression; sharp, near-neutral frames spread
   over the yaw are chosen (`keyframes`), decoded again and fitted as one person with the fit's stages
   (`Fitter.fit(..., subjects=...)`: shared shape, and with the joint stage a shared texture latent)
   -> ``identity.npz``, ``identity.obj`` (+ texture, JSON) and the keyframes' own fits in ``keyframes/``;
3. frames: every frame with a face fitted with the identity fixed, warm-started from the frame before, with
   the temporal term (`sequence`), in parts of `chunk` frames -> ``part_<k>.npz``; when the joint stage fitted
   the keyframes, each frame's SH light from the identity's model texture (`frame_lighting`) -> ``lighting.npz``;
4. outputs (`video_outputs`): ``frames.npz``, ``overlay.mp4``, optional per-frame meshes, ``video.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import write_temporary
from .._threads import torch_threads
from ..errors import ConfigError, NoFaceError, OutputError
from .config import FitConfig
from .keyframes import auto_keyframe_count, choose_keyframes, face_sharpness
from .sequence import TemporalSmoothing, fit_sequence

__all__ = ["VideoFitConfig", "VideoFitResult", "fit_video"]

WORK = ".ganfit-video"


@dataclass(frozen=True)
class VideoFitConfig:
    """What `fit_video` reads and writes.

    every / start / end / max_frames: which frames (every n-th, from/to seconds, at most this many).
    keyframes: how many frames fit the identity (None: `keyframes.auto_keyframe_count`, 3-8 by yaw range).
    face_index: the face to follow when several are in view (None: the largest). detect_every: the face
        search runs on every n-th frame and when tracking is lost (landmarks from the box in between).
    smoothing: the temporal term of the per-frame fits. meshes: also write each frame's mesh. overlay: write
        overlay.mp4 (the fitted mesh over the video). chunk: frames per checkpoint part.
    """

    every: int = 1
    start: float | None = None
    end: float | None = None
    max_frames: int | None = None
    keyframes: int | None = None
    face_index: int | None = None
    detect_every: int = 10
    smoothing: TemporalSmoothing = field(default_factory=TemporalSmoothing)
    meshes: bool = False
    overlay: bool = True
    chunk: int = 100

    def __post_init__(self) -> None:
        if self.every < 1 or self.detect_every < 1 or self.chunk < 1:
            raise ConfigError("every, detect_every and chunk must be >= 1")
        if self.keyframes is not None and self.keyframes < 1:
            raise ConfigError(f"keyframes must be >= 1 (or auto), got {self.keyframes}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1, got {self.max_frames}")


@dataclass
class VideoFitResult:
    """frames: frames read; fitted: frames with a fitted face; keyframes: their positions; flags: frames per
    tracking flag; files: what was written; timings: seconds per step; stopped_early: why decoding stopped
    before the end (a truncated file), or None; resumed: steps taken from the checkpoint."""

    out: Path
    frames: int
    fitted: int
    keyframes: list[int]
    flags: dict[str, int]
    files: list[Path]
    timings: dict[str, float]
    stopped_early: str | None = None
    resumed: list[str] = field(default_factory=list)


def _save_npz(path: Path, **arrays: Any) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    os.replace(write_temporary(path, buf.getvalue()), path)


def _key(path: Path, fit: FitConfig, cfg: VideoFitConfig) -> str:
    """What a checkpoint belongs to: the video (size, mtime) and every option that changes the results."""
    st = path.stat()
    what = {"video": str(path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns, "fit": fit.to_dict(),
            "video_config": {k: v for k, v in asdict(cfg).items() if k not in ("meshes", "overlay")}}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _work_folder(out: Path, key: str, resume: bool) -> tuple[Path, bool]:
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write into {out}: it is a file; give a folder (-o out/)")
    work = out / WORK
    stamp = work / "key.txt"
    if resume and stamp.is_file() and stamp.read_text().strip() == key:
        return work, True
    if resume and stamp.is_file():
        raise ConfigError(f"{out} holds the checkpoint of another video or other options; run without --resume "
                          "to start again")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.replace(write_temporary(stamp, key), stamp)
    return work, False


def _bar(total, desc, quiet):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=quiet, leave=False)


def _track(path: Path, cfg: VideoFitConfig, detector, quiet: bool):
    """Step 1: the track and each face's sharpness, in one decode."""
    from ..io.video import VideoReader, probe
    from ..perception.tracking import FaceTracker, FrameFlag, Track, TrackerConfig, fill_gaps

    info = probe(path)
    tracker = FaceTracker(detector, TrackerConfig(keyframe_interval=cfg.detect_every, face_index=cfg.face_index))
    frames, sharp = [], []
    bar = _bar(info.frames, "video: tracking", quiet)
    with VideoReader(path, every=cfg.every, start=cfg.start, end=cfg.end, max_frames=cfg.max_frames) as reader:
        for frame in reader:
            tracked = tracker.update(frame.pixels, time_s=frame.time_s, index=frame.index)
            frames.append(tracked)
            sharp.append(face_sharpness(frame.pixels, tracked.box) if tracked.has_face else np.nan)
            bar.update()
        stopped = reader.error if reader.stopped_early else None
    bar.close()
    if not frames:
        raise NoFaceError(f"{path}: no frames could be decoded in the range asked for")
    if not any(f.flag is not FrameFlag.NONE for f in frames):
        raise NoFaceError(f"{path}: no face found in any of the {len(frames)} frames: use a video where the face is "
                          "visible, roughly frontal and at least about 80 px wide")
    track = Track.from_frames(fill_gaps(frames, tracker.config.max_gap))
    return track, np.asarray(sharp), (info.width, info.height), info.fps or 25.0, stopped


def _decode_some(path: Path, cfg: VideoFitConfig, indices: set[int]) -> dict[int, np.ndarray]:
    from ..io.video import VideoReader

    out = {}
    with VideoReader(path, every=cfg.every, start=cfg.start, end=cfg.end, max_frames=cfg.max_frames) as reader:
        for frame in reader:
            if frame.index in indices:
                out[frame.index] = np.array(frame.pixels)
                if len(out) == len(indices):
                    break
    return out


def fit_video(path: str | os.PathLike, out: str | os.PathLike, fit_config: FitConfig | None = None,
              config: VideoFitConfig | None = None, *, resume: bool = False, detector: Any = None) -> VideoFitResult:
    """Fit a video; see the module docstring for the steps and files.

    Args:
        path: the video. out: the output folder. fit_config: the fit's settings (stages, model, ...; the
            stages fit the keyframes, the frames use the landmark stage). config: the video's settings.
        resume: continue from the checkpoint in `out` when it belongs to this video and these options.
        detector: a face detector (default: the fit config's).
    Raises:
        VideoError: not a video, no video stream. NoFaceError: no face in any frame.
        OutputError: `out` is a file. ConfigError: a bad option, or --resume over another video's checkpoint.
    """
    from ..io.video import read_frames
    from .fitter import Fitter
    from .video_outputs import write_outputs

    fit = fit_config or FitConfig()
    cfg = config or VideoFitConfig()
    path, out = Path(path), Path(out)
    read_frames(path)  # a missing file, an image or a file without video fails here, before any output
    timings: dict[str, float] = {}
    existed = out.exists()
    work, resumed_run = _work_folder(out, _key(path, fit, cfg), resume)
    resumed: list[str] = []
    t = time.perf_counter()
    fitter = Fitter(fit, detector=detector)
    if resumed_run and (work / "track.npz").is_file():
        with np.load(work / "track.npz") as z:
            from ..perception.tracking import Track

            track, sharp = Track.from_arrays(z), z["sharpness"]
            size, fps = tuple(int(v) for v in z["size"]), float(z["fps"])
            stopped = str(z["stopped"]) or None
        resumed.append("track")
    else:
        try:
            track, sharp, size, fps, stopped = _track(path, cfg, detector or fitter.detector, fit.quiet)
        except BaseException:  # no face, nothing decodable, Ctrl-C: leave no output behind
            shutil.rmtree(work, ignore_errors=True)
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
            raise
        _save_npz(work / "track.npz", **track.as_arrays(), sharpness=sharp, size=np.array(size), fps=np.array(fps),
                  stopped=np.array(stopped or ""))
    timings["track"] = time.perf_counter() - t

    t = time.perf_counter()
    stage = fitter.schedule[0].solver("2d")
    lm_weights = torch.as_tensor(_landmark_weights(fit))
    if resumed_run and (work / "identity.npz").is_file():
        with np.load(work / "identity.npz") as z:
            keys = [int(k) for k in z["keyframes"]]
            ident = {k: torch.as_tensor(z[k]) for k in ("shape", "expression", "rotation", "translation", "focal", "principal")}
            key_lighting = z["lighting"] if "lighting" in z.files else None
            texture = z["texture"] / 255.0 if "texture" in z.files else None
            albedo = z["model_texture"] if "model_texture" in z.files else None
        resumed.append("identity")
    else:
        keys, ident, key_lighting, texture, albedo = _identity(path, cfg, fit, fitter, stage, track, sharp, size,
                                                           lm_weights, out, work)
    timings["identity"] = time.perf_counter() - t

    t = time.perf_counter()
    lighting = None  # (N, 9, 3) per frame, when the joint stage gave the identity an albedo
    with torch_threads(fit.threads):
        seq = _frames(stage, fit, cfg, track, size, ident, keys, lm_weights, work, resumed)
        if albedo is not None:
            if resumed_run and (work / "lighting.npz").is_file():
                with np.load(work / "lighting.npz") as z:
                    lighting = z["lighting"]
                resumed.append("lighting")
            else:
                lighting = _frame_lights(path, cfg, fitter.model, albedo, track, seq, keys, key_lighting, fit.quiet)
                _save_npz(work / "lighting.npz", lighting=lighting)
    timings["frames"] = time.perf_counter() - t
    t = time.perf_counter()
    with torch_threads(fit.threads):
        files = write_outputs(path, out, cfg, fitter.model, track, seq, keys, lighting, fps, fit.quiet,
                              summary={"video": str(path), "fps": fps, "size": list(size), "keyframes": keys,
                                       "flags": track.counts(), "stopped_early": stopped, "timings_s": timings,
                                       "config": fit.to_dict(), "video_config": asdict(cfg), "resumed": resumed},
                              texture=texture)
    timings["outputs"] = time.perf_counter() - t
    return VideoFitResult(out=out, frames=len(track), fitted=int(seq.fitted.sum()), keyframes=keys,
                          flags=track.counts(), files=files, timings=timings, stopped_early=stopped, resumed=resumed)


def _landmark_weights(fit: FitConfig) -> torch.Tensor:
    from .losses import landmark_weights

    base = None if fit.landmark_weights is None else torch.tensor(fit.landmark_weights)
    return landmark_weights(fit.jaw_weight, base)


def _identity(path, cfg, fit, fitter, stage, track, sharp, size, lm_weights, out: Path, work: Path):
    """Step 2: keyframes chosen from a quick per-frame fit, fitted as one person; identity files written."""
    from .fitter import Fitter

    has = track.has_face
    idx = np.flatnonzero(has)
    sizes = torch.tensor([list(size)], dtype=torch.float64).expand(len(idx), -1)
    quick = stage.solve(torch.as_tensor(track.landmarks[idx]), sizes, weights=lm_weights, iterations=15)
    yaw = np.full(len(track), np.nan)
    expr = np.full(len(track), np.nan)
    yaw[idx] = quick.params.euler_deg()[:, 0].numpy()
    expr[idx] = quick.params.expression.norm(dim=-1).numpy()
    count = cfg.keyframes or auto_keyframe_count(yaw, has)
    keys = choose_keyframes(yaw, sharp, expr, has, count)
    pixels = _decode_some(path, cfg, {int(track.index[k]) for k in keys})
    images = [pixels[int(track.index[k])] for k in keys]
    result = Fitter(fit.replace(quiet=True), model=fitter.model, detector=fitter.detector).fit(
        images, landmarks=[track.landmarks[k] for k in keys], subjects=[0] * len(keys))
    p = result.params
    ident = {"shape": p.shape[:1], "expression": p.expression, "rotation": p.rotation, "translation": p.translation,
             "focal": p.focal.median().reshape(1), "principal": p.principal[:1]}
    lighting = albedo = None
    if result.joint is not None:
        lighting = torch.cat([r.lighting for r in result.joint.results]).detach().cpu().numpy()
        albedo = result.joint.results[0].texture[:1].detach().cpu().numpy()
    texture = result.identities[0].texture
    result.save_identities(f"{out}/")
    result.sources = [f"frame_{int(track.index[k]):06d}" for k in keys]
    result.identities = []  # keyframes/ holds the keyframes' own fits
    result.save(f"{out}/keyframes/")
    extra = {} if lighting is None else {"lighting": lighting, "model_texture": albedo}
    if texture is not None:  # 8 bits, as identity_texture.png
        texture = np.round(np.clip(texture, 0, 1) * 255.0).astype(np.uint8)
        extra["texture"] = texture
        texture = texture / 255.0
    _save_npz(work / "identity.npz", keyframes=np.array(keys), **{k: v.detach().cpu().numpy() for k, v in ident.items()}, **extra)
    return keys, ident, lighting, texture, albedo


def _frame_lights(path, cfg, model, albedo: np.ndarray, track, seq, keys: list[int], key_lighting: np.ndarray,
                  quiet: bool) -> np.ndarray:
    """(N, 9, 3) each fitted frame's SH light (NaN elsewhere), pulled towards its nearest keyframe's."""
    from ..io.video import VideoReader
    from ..render.renderer import Renderer, make_rasterizer
    from .frame_lighting import frame_lighting

    renderer = Renderer(model, make_rasterizer("auto", "cpu"), image_size=(128, 128))
    tex = torch.as_tensor(albedo)
    position = {int(ix): k for k, ix in enumerate(track.index)}
    out = np.full((len(track), 9, 3), np.nan, np.float32)
    bar = _bar(len(track), "video: lighting", quiet)
    with VideoReader(path, every=cfg.every, start=cfg.start, end=cfg.end, max_frames=cfg.max_frames) as reader:
        for frame in reader:
            k = position.get(frame.index)
            if k is None:
                continue
            if seq.fitted[k]:
                near = int(np.argmin(np.abs(np.asarray(keys) - k)))
                ref = torch.as_tensor(np.asarray(key_lighting[near:near + 1], np.float32))
                out[k] = frame_lighting(renderer, tex, seq.params.select(k), frame.pixels, track.landmarks[k],
                                        ref)[0].numpy()
            bar.update()
    bar.close()
    return out


def _frames(stage, fit, cfg, track, size, ident, keys, lm_weights, work: Path, resumed: list[str]):
    """Step 3: every frame with the identity fixed, in checkpointed parts."""
    from .params import FitParams
    from .sequence import SequenceFit

    n = len(track)
    nearest = lambda i: int(np.argmin(np.abs(np.asarray(keys) - i)))  # noqa: E731
    k0 = nearest(0)
    identity = FitParams(shape=ident["shape"][:1], expression=ident["expression"][k0:k0 + 1],
                         rotation=ident["rotation"][k0:k0 + 1], translation=ident["translation"][k0:k0 + 1],
                         focal=ident["focal"][:1], principal=ident["principal"][:1])
    parts: list[SequenceFit] = []
    start = start_time = None
    bar = _bar(n, "video: frames", fit.quiet)
    for k, lo in enumerate(range(0, n, cfg.chunk)):
        hi = min(n, lo + cfg.chunk)
        part_file = work / f"part_{k:05d}.npz"
        if part_file.is_file():
            with np.load(part_file) as z:
                seq = _sequence_from(z, stage, identity)
            resumed.append(part_file.name)
        else:
            seq = fit_sequence(stage, identity, track.landmarks[lo:hi], track.time_s[lo:hi], size,
                               has_face=track.has_face[lo:hi], weights=lm_weights, smoothing=cfg.smoothing,
                               start=start, start_time=start_time)
            _save_npz(part_file, unknowns=seq.unknowns, fitted=seq.fitted, landmarks=seq.landmarks,
                      reprojection_px=seq.reprojection_px, iterations=seq.iterations, times=track.time_s[lo:hi])
        parts.append(seq)
        done = np.flatnonzero(seq.fitted)
        if done.size:
            start = torch.as_tensor(seq.unknowns[done[-1]:done[-1] + 1])
            start_time = float(track.time_s[lo + done[-1]])
        bar.update(hi - lo)
    bar.close()
    return _concat(parts, stage, identity)


def _sequence_from(z, stage, identity):
    from .sequence import SequenceFit, unknowns_to_params

    return SequenceFit(params=unknowns_to_params(stage, z["unknowns"], identity), fitted=z["fitted"],
                       landmarks=z["landmarks"], reprojection_px=z["reprojection_px"], iterations=z["iterations"],
                       unknowns=z["unknowns"])


def _concat(parts, stage, identity):
    from .sequence import SequenceFit, unknowns_to_params

    u = np.concatenate([p.unknowns for p in parts])
    return SequenceFit(params=unknowns_to_params(stage, u, identity), fitted=np.concatenate([p.fitted for p in parts]),
                       landmarks=np.concatenate([p.landmarks for p in parts]),
                       reprojection_px=np.concatenate([p.reprojection_px for p in parts]),
                       iterations=np.concatenate([p.iterations for p in parts]), unknowns=u)
