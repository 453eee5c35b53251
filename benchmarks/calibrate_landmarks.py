"""Learn which model vertex each of dlib's 68 landmarks is: a calibrated landmark-to-vertex table.

    python benchmarks/calibrate_landmarks.py [--lfw-cache FILE] [--photos 3000] [--rounds 3] [--out FILE]

A detector's points are not the model's landmark vertices: dlib was trained on 300-W's annotators'
idea of an eye corner or a brow end, and the model's 68 vertices (3DDFA's) on another. Fitted on real
photos, the difference is absorbed by the shape coefficients and bends the 3D face. This script learns
the table on half "A" of the LFW people (`_real_landmarks.half`; `landmark_3d.py` evaluates on half B):

1. fit every photo with the current table (default config, all components);
2. for each of the 51 inner landmarks and the 3 chin points (the other jaw points slide along the outline),
   among the mean-face vertices within `--radius` mm of the current vertex that face forward, choose the
   one whose projection in the fitted faces lies closest to the detected points (mean Huber distance in
   face sizes);
3. repeat.

It writes `ganfit/data/landmark_table_<model>_dlib.json`: the 68 vertex ids, the model's name and the
sha256 of its mean shape (the table is refused for another model), the data it was learned on, and per
landmark the displacement from the model's own vertex on the mean face (mm).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _real_landmarks import LFW_COMMIT, half, load_lfw  # noqa: E402

from ganfit.fitting.landmark_energy import EnergyWeights  # noqa: E402
from ganfit.fitting.landmark_stage import LandmarkStage  # noqa: E402
from ganfit.fitting.losses import face_size, landmark_weights  # noqa: E402
from ganfit.model.geometry import vertex_normals  # noqa: E402
from ganfit.model.registry import load_model  # noqa: E402
from ganfit.render.camera import project_points, transform_points  # noqa: E402

CALIBRATED = list(range(17, 68)) + [7, 8, 9]


def fit_all(stage: LandmarkStage, lms: torch.Tensor, sizes: torch.Tensor, energy: EnergyWeights, batch: int = 256):
    """Fit in batches; returns the concatenated FitParams fields as a dict of tensors."""
    out: dict[str, list[torch.Tensor]] = {}
    w = landmark_weights(0.5)
    for i in range(0, len(lms), batch):
        p = stage.solve(lms[i : i + batch], sizes[i : i + batch], weights=w, energy=energy).params
        for k in ("shape", "expression", "rotation", "translation", "focal", "principal"):
            out.setdefault(k, []).append(getattr(p, k).double())
    return {k: torch.cat(v) for k, v in out.items()}


def candidates(model, vertex: int, radius: float, normals: np.ndarray) -> np.ndarray:
    mean = model.mean
    near = np.linalg.norm(mean - mean[vertex], axis=1) < radius
    forward = normals[:, 2] > 0.2
    region = model.regions.get("face", np.ones(len(mean), bool))
    ids = np.flatnonzero(near & forward & region)
    return ids if vertex in ids else np.append(ids, vertex)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw-cache", default="/work/data/lfw_landmarks.npz", help="LFW landmark cache (npz)")
    ap.add_argument("--lfw-root", default=None, help="LFW folders, to build the cache when it is missing")
    ap.add_argument("--photos", type=int, default=3000, help="at most this many half-A photos")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--radius", type=float, default=12.0, help="candidate vertices within this many mm")
    ap.add_argument("--sigma", type=float, default=0.02, help="landmark_sigma of the fits")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="output JSON (default: ganfit/data/landmark_table_<model>_dlib.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model("bfm-3ddfa")
    lfw = load_lfw(Path(args.lfw_cache), Path(args.lfw_root) if args.lfw_root else None)
    data = lfw.subset(np.array([half(p) == "A" for p in lfw.person]))
    step = max(1, len(data) // args.photos)
    data = data.subset(np.arange(len(data))[::step][: args.photos])
    lms = torch.as_tensor(data.landmarks, dtype=torch.float64)
    sizes = torch.as_tensor(data.sizes, dtype=torch.float64)
    scale = face_size(lms)
    print(f"{len(data)} photos of {len(set(data.person))} people (LFW half A)", file=sys.stderr)
    normals = vertex_normals(torch.as_tensor(model.mean, dtype=torch.float64)[None], model.triangles)[0].numpy()
    table = np.array(model.landmark_indices, dtype=np.int64)
    cand = {i: candidates(model, int(table[i]), args.radius, normals) for i in CALIBRATED}
    union = np.unique(np.concatenate(list(cand.values())))
    energy = EnergyWeights(landmark_sigma=args.sigma)
    history = []
    for rnd in range(args.rounds):
        stage = LandmarkStage(model, landmark_vertices=table)
        p = fit_all(stage, lms, sizes, energy)
        verts = model.vertices(p["shape"], p["expression"])[:, union]  # (N, U, 3) only the candidates
        cam = transform_points(verts, stage_rotation(p), p["translation"])
        proj = project_points(cam, p["focal"], p["principal"])  # (N, U, 2)
        pos = {v: k for k, v in enumerate(union)}
        before, after = [], []
        for i in CALIBRATED:
            cols = torch.as_tensor([pos[v] for v in cand[i]])
            d = (proj[:, cols] - lms[:, i : i + 1]).norm(dim=-1) / scale[:, None]  # (N, C) face sizes
            huber = torch.where(d < 0.05, 0.5 * d**2, 0.05 * (d - 0.025)).mean(0)
            best = int(huber.argmin())
            current = int(np.flatnonzero(cand[i] == table[i])[0])
            before.append(float(d[:, current].mean()))
            after.append(float(d[:, best].mean()))
            table[i] = cand[i][best]
        history.append({"round": rnd + 1, "mean_error_before": float(np.mean(before)), "mean_error_after": float(np.mean(after))})
        print(f"round {rnd + 1}: mean distance of the calibrated landmarks {100 * np.mean(before):.2f} -> "
              f"{100 * np.mean(after):.2f} % of the face size", file=sys.stderr)
    offsets = model.mean[table] - model.mean[model.landmark_indices]
    out = Path(args.out) if args.out else ROOT / "ganfit" / "data" / f"landmark_table_{model.name}_dlib.json"
    doc = {
        "model": model.name,
        "model_mean_sha256": hashlib.sha256(np.ascontiguousarray(model.mean, dtype=np.float32).tobytes()).hexdigest(),
        "detector": "dlib-68 (shape_predictor_68_face_landmarks.dat, iBUG 300-W order)",
        "convention": "2d",
        "vertices": [int(v) for v in table],
        "calibrated_landmarks": CALIBRATED,
        "offsets_mm": [[round(float(c), 3) for c in row] for row in offsets],
        "learned_on": {
            "data": "LFW deep-funneled, people of half A (sha1(name)[0] even), dlib landmarks",
            "repository": "github:braun-steven/dfi-tensorflow", "commit": LFW_COMMIT, "path": "data/lfw-deepfunneled/",
            "photos": len(data), "people": len(set(data.person)), "terms": "LFW: research use",
        },
        "method": f"benchmarks/calibrate_landmarks.py: {args.rounds} rounds, candidates within {args.radius} mm facing "
                  f"forward, landmark_sigma {args.sigma}, mean Huber distance (0.05 face sizes)",
        "rounds": history,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    moved = np.linalg.norm(offsets, axis=1)
    print(f"wrote {out}: {int((moved > 0).sum())} of 68 landmarks moved, median {np.median(moved[moved > 0]):.1f} mm, "
          f"max {moved.max():.1f} mm", file=sys.stderr)
    return 0


def stage_rotation(p):
    from ganfit.render.camera import rotation_matrix

    return rotation_matrix(p["rotation"])


if __name__ == "__main__":
    raise SystemExit(main())
