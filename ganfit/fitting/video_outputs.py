"""The files of `ganfit fit-video` (`video_fit`): ``frames.npz`` (every frame's parameters, landmarks and
flags), ``overlay.mp4`` (the fitted mesh over the video, at its frame times), per-frame meshes and
``video.json``; each written atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import write_temporary

__all__ = ["frames_arrays", "write_outputs"]


def frames_arrays(track, seq, keys: list[int], lighting: np.ndarray | None) -> dict[str, np.ndarray]:
    """frames.npz's arrays, N frames: index, time_s, flags (tracking), fitted (bool), shape (Ks,: the
    identity), expression, rotation (axis-angle), translation (mm), focal (px), lighting (N, 9, 3: each
    frame's SH light from `frame_lighting`, only when the joint stage fitted the keyframes), landmarks_detected
    (smoothed and filled), landmarks_raw (measured), landmarks_fitted, reprojection_px, keyframes (positions)."""
    p = seq.params
    out = {
        "index": track.index, "time_s": track.time_s, "flags": np.array([f.value for f in track.flags], dtype=str),
        "fitted": seq.fitted, "shape": p.shape[0].numpy(), "expression": p.expression.numpy(),
        "rotation": p.rotation.numpy(), "translation": p.translation.numpy(), "focal": p.focal.numpy(),
        "landmarks_detected": track.landmarks, "landmarks_raw": track.raw_landmarks,
        "landmarks_fitted": seq.landmarks, "reprojection_px": seq.reprojection_px, "keyframes": np.array(keys),
    }
    if lighting is not None:
        out["lighting"] = np.asarray(lighting)
    return out


def _model_vertices(model, p, i: int) -> torch.Tensor:
    """Frame i's vertices in model space (V, 3) mm: the identity's shape with the frame's expression."""
    one = p.select(i).to("cpu", torch.float32)
    with torch.no_grad():
        return model.vertices(one.shape, one.expression)[0]


def _overlay_frames(path: Path, cfg, model, track, seq, texture: np.ndarray | None, alpha: float = 0.85):
    """Each frame with its fitted face rendered over it (the identity's texture, or grey, under a fixed light;
    only the face's box is rendered), as uint8 RGB."""
    import dataclasses

    from ..io.video import VideoReader
    from ..render.camera import project_points, transform_points
    from ..render.renderer import Renderer, make_rasterizer
    from ..render.shading import default_sh, sh_directional
    from .photo_texture import pixel_box

    position = {int(ix): k for k, ix in enumerate(track.index)}
    raster = make_rasterizer("auto", "cpu")
    light = default_sh(1, ambient=0.6) + sh_directional(torch.tensor([[-0.35, 0.45, 1.0]]), 0.55)
    tex = (torch.full((1, 3, 8, 8), 0.7) if texture is None else
           torch.as_tensor(np.asarray(texture, np.float32)).permute(2, 0, 1)[None])
    with VideoReader(path, every=cfg.every, start=cfg.start, end=cfg.end, max_frames=cfg.max_frames) as reader:
        for frame in reader:
            k = position.get(frame.index)
            if k is None:
                continue
            img = np.asarray(frame.pixels, np.float32) / 255.0
            if seq.fitted[k]:
                one = seq.params.select(k).to("cpu", torch.float32)
                with torch.no_grad():
                    cam = transform_points(model.vertices(one.shape, one.expression), one.rotation_matrix(), one.translation)[0]
                    proj = project_points(cam[None], one.focal, one.principal)[0]
                h, w = img.shape[:2]
                box = pixel_box(proj, cam[:, 2] < 0, (w, h), 2)
                if box is not None:
                    x0, y0, x1, y1 = box
                    crop = dataclasses.replace(one, principal=one.principal - torch.tensor([[x0, y0]], dtype=one.principal.dtype))
                    with torch.no_grad():
                        r = Renderer(model, raster, image_size=(x1 - x0, y1 - y0)).render(
                            crop, texture=tex, lighting=light, regions=False)
                    a = alpha * r.alpha[0][..., None].clamp(0, 1).numpy()
                    img[y0:y1, x0:x1] = (1 - a) * img[y0:y1, x0:x1] + alpha * r.image[0].clamp(0, 1).numpy()
            yield (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_outputs(path: Path, out: Path, cfg, model, track, seq, keys: list[int], lighting, fps: float, quiet: bool,
                  summary: dict[str, Any], texture: np.ndarray | None = None) -> list[Path]:
    """Write frames.npz, overlay.mp4 (cfg.overlay: the face rendered with the identity's `texture` (H, W, 3)
    over each frame), meshes/frame_<index>.obj (cfg.meshes) and video.json."""
    import io

    from tqdm.auto import tqdm

    from ..io.mesh import obj_text
    from ..io.video import write_video

    written = []
    buf = io.BytesIO()
    np.savez(buf, **frames_arrays(track, seq, keys, lighting))
    target = out / "frames.npz"
    os.replace(write_temporary(target, buf.getvalue()), target)
    written.append(target)
    if cfg.meshes:
        folder = out / "meshes"
        folder.mkdir(parents=True, exist_ok=True)
        tris = np.asarray(model.triangles)
        for k in tqdm(np.flatnonzero(seq.fitted), desc="video: meshes", unit="mesh", disable=quiet, leave=False):
            verts = _model_vertices(model, seq.params, int(k)).numpy()
            target = folder / f"frame_{int(track.index[k]):06d}.obj"
            text = obj_text(verts, tris, comment=f"ganfit fit-video frame {int(track.index[k])} at "
                            f"{float(track.time_s[k]):.3f} s; millimetres, y up, face looking down +z")
            os.replace(write_temporary(target, text), target)
            written.append(target)
    if cfg.overlay:
        target = out / "overlay.mp4"
        frames = _overlay_frames(path, cfg, model, track, seq, texture)
        bar = tqdm(frames, total=len(track), desc="video: overlay", unit="frame", disable=quiet, leave=False)
        write_video(target, bar, fps, times=list(track.time_s - track.time_s[0]))
        written.append(target)
    target = out / "video.json"
    summary = {**summary, "frames": len(track), "fitted": int(seq.fitted.sum()),
               "reprojection_px_mean": float(np.nanmean(seq.reprojection_px)) if seq.fitted.any() else None,
               "files": [str(p.relative_to(out)) for p in written]}
    os.replace(write_temporary(target, json.dumps(summary, indent=1, default=str)), target)
    written.append(target)
    return written
