"""Landmark-stage benchmark: accuracy on synthetic faces with known geometry, and speed.

    python benchmarks/landmark_fit.py [--faces 100] [--threads 2] [--skip-detect]

Accuracy: random faces from the default model's priors (shape and expression ~ N(0, 1)), yaw within
+-60 deg, pitch +-20, roll +-10, depth 500-900 mm, focal 1.6 x 512 px, 512x512 images; their 68
landmarks placed as a detector places them (jaw line on the image outline) plus 1 px Gaussian noise.
Reported: mean per-vertex error over the face region after similarity alignment (mm), landmark
reprojection error against the noisy input and against the noise-free landmarks (px), yaw error.
Optimizers and contour treatments are compared on the same faces. The "mean face" row is the error of
the model's mean shape (no fitting of shape at all): the baseline any fit must beat.

Speed: wall time of the landmark stage for one image and for 16 images as one batch (median of
repeats), and dlib detection + 68 landmarks on the bundled 512x512 photo.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit.fitting.landmark_stage import LandmarkStage, solve_landmarks  # noqa: E402
from ganfit.fitting.losses import landmark_weights  # noqa: E402
from ganfit.fitting.metrics import aligned_vertex_error  # noqa: E402
from ganfit.fitting.synthetic import make_synthetic_faces  # noqa: E402
from ganfit.model.registry import load_model  # noqa: E402


def accuracy(model, syn, sizes, face_mask, **kw) -> dict:
    t0 = time.perf_counter()
    res = solve_landmarks(model, syn.landmarks.float(), sizes, weights=landmark_weights(0.5), **kw)
    elapsed = time.perf_counter() - t0
    p = res.params
    fitted = model.vertices(p.shape.double(), p.expression.double())
    err = aligned_vertex_error(fitted, syn.vertices, face_mask)
    ids = res.vertex_ids
    from ganfit.render.camera import project_points, transform_points

    cam = transform_points(fitted, p.rotation_matrix().double(), p.translation.double())
    proj = project_points(cam, p.focal.double(), p.principal.double())
    fitted_lm = proj.gather(1, ids[..., None].expand(-1, -1, 2))
    return {
        "vertex_mm": err,
        "reproj_noisy_px": (fitted_lm - syn.landmarks).norm(dim=-1).mean(-1),
        "reproj_clean_px": (fitted_lm - syn.landmarks_clean).norm(dim=-1).mean(-1),
        "yaw_err_deg": (p.euler_deg()[:, 0].double() - syn.yaw_pitch_roll[:, 0]).abs(),
        "iterations": float(np.mean(res.iterations)),
        "fitted_landmarks": fitted_lm,
        "seconds": elapsed,
    }


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (this project's CI machine has 2 cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-detect", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model("bfm-3ddfa")
    mask = torch.as_tensor(model.regions["face"])
    syn = make_synthetic_faces(model, args.faces, torch.Generator().manual_seed(args.seed))
    sizes = torch.full((args.faces, 2), 512.0)
    print(f"# Landmark stage on {args.faces} synthetic faces (bfm-3ddfa, yaw +-60, pitch +-20, 1 px noise), "
          f"torch {torch.__version__}, {args.threads} threads\n")
    mean_face = aligned_vertex_error(model.vertices(torch.zeros(args.faces, model.num_shape, dtype=torch.float64),
                                                    torch.zeros(args.faces, model.num_expression, dtype=torch.float64)),
                                     syn.vertices, mask)
    rows = [("mean face (no fit)", {"vertex_mm": mean_face}, "")]
    configs = [
        ("LM, dynamic contour (default)", dict(optimizer="lm", contour="dynamic")),
        ("LM, static contour", dict(optimizer="lm", contour="static")),
        ("LM, jaw line off", dict(optimizer="lm", contour="off")),
        ("Adam 400 it, dynamic contour", dict(optimizer="adam", contour="dynamic", adam_iterations=400)),
    ]
    for name, kw in configs:
        rows.append((name, accuracy(model, syn, sizes, mask, **kw), kw))
    print("| method | vertex error mm (mean / median / p90) | reprojection px vs noisy / clean | yaw error deg (median) | iterations (mean) | time for the batch s |")
    print("|---|---|---|---|---|---|")
    for name, r, _ in rows:
        v = r["vertex_mm"].numpy()
        if "reproj_noisy_px" not in r:
            print(f"| {name} | {v.mean():.2f} / {np.median(v):.2f} / {np.percentile(v, 90):.2f} | - | - | - | - |")
            continue
        print(f"| {name} | {v.mean():.2f} / {np.median(v):.2f} / {np.percentile(v, 90):.2f} | "
              f"{r['reproj_noisy_px'].mean():.2f} / {r['reproj_clean_px'].mean():.2f} | {r['yaw_err_deg'].median():.2f} | "
              f"{r['iterations']:.1f} | {r['seconds']:.2f} |")

    # Error by |yaw|: depth from landmarks is ill-posed, worst near frontal and profile.
    default = rows[1][1]
    yaw = syn.yaw_pitch_roll[:, 0].abs().numpy()
    print("\n| abs(yaw) | faces | vertex error mm (mean) | reprojection px vs clean |")
    print("|---|---|---|---|")
    for lo, hi in [(0, 20), (20, 40), (40, 60.01)]:
        sel = (yaw >= lo) & (yaw < hi)
        print(f"| {lo}-{int(hi)} | {sel.sum()} | {default['vertex_mm'].numpy()[sel].mean():.2f} | {default['reproj_clean_px'].numpy()[sel].mean():.2f} |")

    # Landmark conventions on turned faces: 2d (jaw on the outline, as dlib) and 3d (fixed vertices, as
    # AFLW2000-3D), each fitted with both conventions.
    print("\n| landmarks | fitted as | abs(yaw) 60-80: vertex error mm | yaw error deg (median) | NME % vs clean |")
    print("|---|---|---|---|---|")
    from ganfit.fitting.metrics import landmark_nme

    for data_conv in ("2d", "3d"):
        turned = make_synthetic_faces(model, args.faces, torch.Generator().manual_seed(args.seed + 1), yaw_deg=80,
                                      yaw_min_deg=60, convention=data_conv)
        for fit_conv in ("2d", "3d"):
            r = accuracy(model, turned, sizes, mask, convention=fit_conv)
            nme = landmark_nme(r["fitted_landmarks"], turned.landmarks_clean)
            print(f"| {data_conv} | {fit_conv} | {r['vertex_mm'].mean():.2f} | {r['yaw_err_deg'].median():.2f} | "
                  f"{100 * nme.mean():.2f} |")

    print("\n## Speed (median wall time, warm process: the stage is built once, as a Fitter keeps it)\n")
    print("| task | LM (default) ms | Adam 400 it ms | LM speed-up |")
    print("|---|---|---|---|")
    stage = LandmarkStage(model)
    w = landmark_weights(0.5)
    for b, reps in [(1, 21), (16, 7)]:
        targets = syn.landmarks[:b].float()
        lm_t = timed(lambda: stage.solve(targets, sizes[:b], weights=w), reps)
        adam_t = timed(lambda: stage.solve(targets, sizes[:b], weights=w, optimizer="adam"), max(1, reps // 7))
        print(f"| landmark stage, {b} image{'s' if b > 1 else ''} (one batch) | {1e3 * lm_t:.1f} | {1e3 * adam_t:.0f} | {adam_t / lm_t:.1f}x |")

    if not args.skip_detect:
        from ganfit.io.images import load_image
        from ganfit.perception.detect import make_detector

        img = load_image(ROOT / "examples" / "astronaut.png").pixels
        det = make_detector("dlib")
        t = timed(lambda: det.detect(img), 10)
        print(f"\n| dlib detection + 68 landmarks, 512x512 photo | {1000 * t:.1f} ms |\n|---|---|")


if __name__ == "__main__":
    main()
