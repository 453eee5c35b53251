"""`ganfit fit-video` on the dev sequences (issue 13): identity consistency, jitter, landmark error, speed.
Reads ../shared/faces/dev/sequences/*/source_video.mp4 in place; outputs go to /tmp/ganfit-video-bench/.

    python benchmarks/video.py [--max-frames 200] [--no-joint] [--report]

Per clip (each a different person):
- the pipeline with the landmark stage on the keyframes ("landmarks"), and with the joint stage too ("joint");
- independent per-frame fits: the landmark stage on every frame's tracked (smoothed) landmarks, each frame
  its own person (what a per-frame fitter without a shared identity gives);
- the pipeline on each half of the clip, for identity consistency.
Measures: spread of the neutral shape over the frames (mm, aligned; independent fits vs one identity), the
distance between the two halves' identities vs the distance between different clips' identities (same- vs
different-person ratio), jitter (mean frame-to-frame acceleration) of landmarks (px) and of mesh vertices (mm)
for raw detections, tracked landmarks, independent fits and the pipeline, landmark error of the fitted frames
against the tracked landmarks (% of face size), and frames per second per step.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit.fitting import FitConfig, Fitter  # noqa: E402
from ganfit.fitting.losses import face_size, landmark_weights  # noqa: E402
from ganfit.fitting.metrics import aligned_vertex_error  # noqa: E402
from ganfit.fitting.video_fit import VideoFitConfig, fit_video  # noqa: E402
from ganfit.perception.tracking import landmark_jitter  # noqa: E402

SEQUENCES = ROOT.parent / "shared" / "faces" / "dev" / "sequences"
OUT = Path("/tmp/ganfit-video-bench")


def clips() -> dict[str, Path]:
    return {p.parent.name: p for p in sorted(SEQUENCES.glob("*/source_video.mp4"))}


def load(folder: Path) -> dict:
    with np.load(folder / "frames.npz") as z:
        return {k: z[k] for k in z.files}


def vertices(model, shape: np.ndarray, expression: np.ndarray | None = None, sub=None) -> torch.Tensor:
    s = torch.as_tensor(np.atleast_2d(shape), dtype=torch.float64)
    e = None if expression is None else torch.as_tensor(np.atleast_2d(expression), dtype=torch.float64)
    with torch.no_grad():
        v = model.vertices(s, e) if e is not None else model.vertices(s)
    return v if sub is None else v[:, sub]


def run(args, ck: dict, path: Path) -> None:
    fitter = Fitter(FitConfig(quiet=True, threads=1))
    stage = fitter.schedule[0].solver("2d")
    for name, video in clips().items():
        rec = ck["clips"].setdefault(name, {})
        base = VideoFitConfig(max_frames=args.max_frames, overlay=False)
        runs = {"landmarks": (FitConfig(quiet=True), base)}
        if args.joint:
            runs["joint"] = (FitConfig(quiet=True).with_stages("landmarks,joint"), base)
        for key, (fit, cfg) in runs.items():
            if key in rec:
                continue
            t = time.perf_counter()
            res = fit_video(video, OUT / name / key, fit, cfg)
            rec[key] = dict(seconds=time.perf_counter() - t, timings=res.timings, frames=res.frames,
                            fitted=res.fitted, keyframes=res.keyframes, flags=res.flags)
            path.write_text(json.dumps(ck))
            print(f"{name} {key}: {res.fitted}/{res.frames} frames, {res.timings}", file=sys.stderr, flush=True)
        z = load(OUT / name / "landmarks")
        n = len(z["time_s"])
        if "halves" not in rec:
            t_mid = float(z["time_s"][n // 2])
            shapes = []
            for h, (s0, s1) in enumerate(((None, t_mid), (t_mid, None))):
                cfg = VideoFitConfig(max_frames=None if s0 is None else n - n // 2, start=s0, end=s1, overlay=False)
                if s0 is None:
                    cfg = VideoFitConfig(max_frames=n // 2, overlay=False)
                fit_video(video, OUT / name / f"half{h}", FitConfig(quiet=True), cfg)
                shapes.append(load(OUT / name / f"half{h}")["shape"].tolist())
            rec["halves"] = shapes
        if "independent" not in rec:
            has = z["fitted"].astype(bool)
            lms = torch.as_tensor(z["landmarks_detected"][has])
            from ganfit.io.video import probe

            info = probe(video)
            sizes = torch.tensor([[info.width, info.height]], dtype=torch.float64).expand(len(lms), -1)
            t = time.perf_counter()
            ind = stage.solve(lms, sizes, weights=landmark_weights(0.5))
            secs = time.perf_counter() - t
            rec["independent"] = dict(seconds=secs, shape=ind.params.shape.tolist(), expression=ind.params.expression.tolist(),
                                      rotation=ind.params.rotation.tolist(), translation=ind.params.translation.tolist(),
                                      focal=ind.params.focal.tolist(), principal=ind.params.principal.tolist(),
                                      vertex_ids=ind.vertex_ids.tolist())
            path.write_text(json.dumps(ck))


def report(ck: dict) -> str:
    from ganfit.fitting.params import FitParams
    from ganfit.model.registry import load_model

    model = load_model("bfm-3ddfa")
    sub = torch.as_tensor(np.flatnonzero(model.regions["face"])[::8])
    rows, ident = [], {}
    for name, rec in ck["clips"].items():
        if "independent" not in rec or "landmarks" not in rec:
            continue
        z = load(OUT / name / "landmarks")
        has = z["fitted"].astype(bool)
        ind = rec["independent"]
        p = FitParams(*(torch.as_tensor(np.asarray(ind[k]), dtype=torch.float32) for k in
                        ("shape", "expression", "rotation", "translation", "focal", "principal")))
        neutral = vertices(model, np.asarray(ind["shape"]), sub=sub)
        mean_shape = vertices(model, np.asarray(ind["shape"]).mean(0), sub=sub)
        spread = float(aligned_vertex_error(neutral, mean_shape.expand(len(neutral), -1, -1)).mean())
        halves = [vertices(model, np.asarray(s), sub=sub) for s in rec["halves"]]
        ident[name] = (vertices(model, z["shape"], sub=sub), halves)
        # landmark and vertex jitter
        ids = torch.as_tensor(np.asarray(ind["vertex_ids"]))
        with torch.no_grad():
            from ganfit.render.camera import project_points, transform_points

            cam = transform_points(model.vertices(p.shape, p.expression), p.rotation_matrix(), p.translation)
            pts = cam.gather(1, ids[..., None].expand(-1, -1, 3))
            proj = project_points(pts, p.focal, p.principal).numpy()
            v_ind = cam[:, sub].numpy()
        zz = {k: torch.as_tensor(z[k][has]) for k in ("expression", "rotation", "translation", "focal")}
        nf = int(has.sum())
        shape = torch.as_tensor(z["shape"])[None].expand(nf, -1)
        pp = FitParams(shape=shape.float(), expression=zz["expression"].float(), rotation=zz["rotation"].float(),
                translation=zz["translation"].float(), focal=zz["focal"].float(), principal=p.principal.float())
        with torch.no_grad():
            cam_p = transform_points(model.vertices(pp.shape, pp.expression), pp.rotation_matrix(), pp.translation)
        v_pipe = cam_p[:, sub].numpy()
        fs = face_size(torch.as_tensor(z["landmarks_detected"][has])).numpy()
        nme_pipe = 100 * np.mean(np.linalg.norm(z["landmarks_fitted"][has] - z["landmarks_detected"][has], axis=-1).mean(-1) / fs)
        nme_ind = 100 * np.mean(np.linalg.norm(proj - z["landmarks_detected"][has], axis=-1).mean(-1) / fs)
        lm = rec["landmarks"]
        t = lm["timings"]
        fps_track = lm["frames"] / t["track"]
        fps_frames = lm["fitted"] / max(t["frames"], 1e-9)
        fps_all = lm["frames"] / (t["track"] + t["identity"] + t["frames"])
        joint = rec.get("joint")
        fps_joint = joint["frames"] / (joint["timings"]["track"] + joint["timings"]["identity"] + joint["timings"]["frames"]) if joint else float("nan")
        rows.append(
            f"| {name} | {lm['frames']} ({', '.join(f'{k} {v}' for k, v in lm['flags'].items() if v)}) | "
            f"{spread:.2f} | {landmark_jitter(z['landmarks_raw'][has]):.2f} / {landmark_jitter(z['landmarks_detected'][has]):.2f} / "
            f"{landmark_jitter(proj):.2f} / {landmark_jitter(z['landmarks_fitted'][has]):.2f} | "
            f"{landmark_jitter(v_ind):.2f} / {landmark_jitter(v_pipe):.2f} | {nme_ind:.2f} / {nme_pipe:.2f} | "
            f"{fps_track:.0f} / {fps_frames:.0f} / {fps_all:.1f} / {fps_joint:.2f} |")
    # identity consistency across clips
    names = list(ident)
    same = [float(aligned_vertex_error(ident[n][1][0], ident[n][1][1])[0]) for n in names]
    diff = [float(aligned_vertex_error(ident[a][0], ident[b][0])[0]) for i, a in enumerate(names) for b in names[i + 1:]]
    head = ("| clip | frames (flags) | neutral-shape spread of independent fits, mm (pipeline: 0, one identity) | "
            "landmark jitter px: raw detections / tracked / independent fits / pipeline | vertex jitter mm: "
            "independent / pipeline | NME % to tracked landmarks: independent / pipeline | fps: tracking / "
            "frame fits / whole (landmark keyframes) / whole (joint keyframes) |\n|---|---|---|---|---|---|---|")
    tail = (f"\n\nIdentity consistency: the two halves of a clip fitted separately are {np.mean(same):.2f} mm apart "
            f"(per clip: {', '.join(f'{s:.2f}' for s in same)}); different clips' identities {np.mean(diff):.2f} mm "
            f"(ratio {np.mean(same) / np.mean(diff):.3f}).") if len(names) > 1 else ""
    return head + "\n" + "\n".join(rows) + tail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-frames", type=int, default=200)
    ap.add_argument("--no-joint", dest="joint", action="store_false")
    ap.add_argument("--checkpoint", default=str(OUT / "results.json"))
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = Path(args.checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    ck = json.loads(path.read_text()) if path.is_file() else {"clips": {}}
    if not args.report:
        run(args, ck, path)
    print(report(ck))


if __name__ == "__main__":
    main()
