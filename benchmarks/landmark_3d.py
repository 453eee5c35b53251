"""Is the landmark stage's 3D shape better than no shape at all? Measures that run on real photos.

    python benchmarks/landmark_3d.py [--configs s0.02-k40-model s0.02-k40-dlib ...] [--people 400]

A configuration is `s<landmark_sigma>-k<shape components>-<table>`, table "model" (the model's landmark
vertices) or "dlib" (the calibrated table of `calibrate_landmarks.py`, learned on LFW half A). For each:

1. **Same-person consistency, LFW half B** (people never used for calibration): the neutral shapes
   (expression 0) fitted to different photos of one person should agree and those of different people
   differ. Mean distance (mm, face region, after similarity alignment) over all same-person pairs and over
   as many random different-person pairs, and their ratio. The mean face has both at 0: it says nothing.
2. The same on the dev corpus's video frames and multi-view sets (one person each).
3. **Held-out landmarks**: fit to the even-numbered landmarks, measure the odd ones, and the other way
   round (NME, % of the face size), on half-B photos.
4. **Synthetic faces with realistic landmark error**: faces from the model's priors (yaw +-45, pitch +-15),
   landmarks moved by the systematic offsets between dlib's points and the model's vertices measured on
   real photos (the calibrated table's displacements) plus Gaussian noise of 1.5 % of the face size per
   coordinate (3 px on a 200 px face, dlib's level); vertex error (mm, face region, after similarity
   alignment) against the mean face's.
5. **Distance to the person's consensus shape, LFW half B**: each photo's fitted neutral shape against
   the average of the same person's *other* photos fitted with a weak prior (landmark_sigma 0.01, all 40
   components, the same landmark table), beside the mean face's distance to that consensus. The consensus
   stands in for the person's true shape as far as landmarks can see it; its own noise adds the same
   amount to every row, the mean face's included, so the rows compare fairly. A fit that is better than
   no shape at all is closer to the consensus than the mean face is. What this cannot see: a bias shared
   by all people (a landmark definition that differs from the model's vertex), which the held-out and
   synthetic measures see.
6. The 2D landmark error of the fit on half-B photos (NME %), for reference: lower is not better in 3D.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _real_landmarks import LandmarkSet, dev_sets, half, load_lfw  # noqa: E402

from ganfit.fitting.landmark_energy import EnergyWeights  # noqa: E402
from ganfit.fitting.landmark_stage import LandmarkStage  # noqa: E402
from ganfit.fitting.losses import face_size, landmark_weights  # noqa: E402
from ganfit.fitting.metrics import aligned_vertex_error, similarity_align  # noqa: E402
from ganfit.fitting.synthetic import make_synthetic_faces  # noqa: E402
from ganfit.model.registry import load_model  # noqa: E402
from ganfit.render.camera import project_points, rotation_matrix, transform_points  # noqa: E402


def parse(name: str) -> dict:
    s, k, table = name.split("-")
    return {"sigma": float(s[1:]), "ks": int(k[1:]), "table": table}


class Runner:
    def __init__(self, model, table_file: Path) -> None:
        self.model = model
        self.table = np.array(json.loads(table_file.read_text())["vertices"]) if table_file.is_file() else None
        self.offsets = np.array(json.loads(table_file.read_text())["offsets_mm"]) if table_file.is_file() else None
        face = np.flatnonzero(model.regions["face"])
        self.sub = torch.as_tensor(face[::8])
        self.mask = torch.as_tensor(model.regions["face"])

    def stage(self, cfg: dict) -> LandmarkStage:
        table = None if cfg["table"] == "model" else self.table
        return LandmarkStage(self.model, num_shape=cfg["ks"], landmark_vertices=table)

    def fit(self, cfg: dict, lms: torch.Tensor, sizes: torch.Tensor, weights=None, batch: int = 256):
        stage, energy = self.stage(cfg), EnergyWeights(landmark_sigma=cfg["sigma"])
        w = landmark_weights(0.5) if weights is None else weights
        parts = [stage.solve(lms[i : i + batch], sizes[i : i + batch], weights=w, energy=energy) for i in range(0, len(lms), batch)]
        cat = lambda k: torch.cat([getattr(r.params, k).double() for r in parts])  # noqa: E731
        params = {k: cat(k) for k in ("shape", "expression", "rotation", "translation", "focal", "principal")}
        ids = torch.cat([r.vertex_ids for r in parts])
        return params, ids

    def neutral(self, shape: torch.Tensor) -> torch.Tensor:
        """(N, Ks) -> (N, S, 3) face-region vertices (every 8th) of the neutral shapes."""
        m = self.model
        ks = shape.shape[1]
        basis = torch.as_tensor(m.shape_basis[self.sub.numpy(), :, :ks] * m.shape_std[:ks], dtype=torch.float64)
        return torch.as_tensor(m.mean[self.sub.numpy()], dtype=torch.float64)[None] + torch.einsum("vck,nk->nvc", basis, shape)

    def landmarks_2d(self, params, ids) -> torch.Tensor:
        verts = self.model.vertices(params["shape"], params["expression"])
        cam = transform_points(verts, rotation_matrix(params["rotation"]), params["translation"])
        proj = project_points(cam, params["focal"], params["principal"])
        return proj.gather(1, ids[..., None].expand(-1, -1, 2))


def pair_distances(v: torch.Tensor, pairs: list[tuple[int, int]], chunk: int = 512) -> np.ndarray:
    out = []
    for i in range(0, len(pairs), chunk):
        a, b = zip(*pairs[i : i + chunk])
        out.append(aligned_vertex_error(v[list(a)], v[list(b)]))
    return torch.cat(out).numpy() if out else np.zeros(0)


def consistency(v: torch.Tensor, person: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(person):
        groups.setdefault(p, []).append(i)
    same = [pair for idx in groups.values() for pair in itertools.combinations(idx, 2)]
    n = len(person)
    diff = []
    while len(diff) < len(same):
        i, j = (int(k) for k in rng.integers(0, n, 2))
        if person[i] != person[j]:
            diff.append((i, j))
    return float(pair_distances(v, same).mean()), float(pair_distances(v, diff).mean())


def consensus_distance(v: torch.Tensor, ref: torch.Tensor, person: np.ndarray, mean: torch.Tensor) -> tuple[float, float]:
    """Mean distance (mm, after similarity alignment) of each fit v[i] (N, S, 3) to the average of ref over
    the same person's other photos, and the mean face's (S, 3) distance to the same averages."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(person):
        groups.setdefault(p, []).append(i)
    fit_d, mean_d = [], []
    for idx in groups.values():
        if len(idx) < 2:
            continue
        for i in idx:
            others = ref[[j for j in idx if j != i]].mean(0, keepdim=True)
            fit_d.append(aligned_vertex_error(v[i : i + 1], others))
            mean_d.append(aligned_vertex_error(mean[None], others))
    return float(torch.cat(fit_d).mean()), float(torch.cat(mean_d).mean())


def held_out(runner: Runner, cfg: dict, data: LandmarkSet) -> float:
    lms = torch.as_tensor(data.landmarks, dtype=torch.float64)
    sizes = torch.as_tensor(data.sizes, dtype=torch.float64)
    scale = face_size(lms)
    errors = []
    for fold in (np.arange(68) % 2 == 0, np.arange(68) % 2 == 1):
        w = landmark_weights(0.5) * torch.as_tensor(fold, dtype=torch.float64)
        params, ids = runner.fit(cfg, lms, sizes, weights=w)
        fitted = runner.landmarks_2d(params, ids)
        e = (fitted - lms).norm(dim=-1) / scale[:, None]
        errors.append(e[:, torch.as_tensor(~fold)].mean(1))
    return float(torch.cat(errors).mean())


def synthetic(runner: Runner, cfg: dict, n: int = 200) -> tuple[float, float]:
    m = runner.model
    g = torch.Generator().manual_seed(0)
    offsets = None if runner.offsets is None else torch.as_tensor(runner.offsets)
    syn = make_synthetic_faces(m, n, g, yaw_deg=45, pitch_deg=15, roll_deg=8, noise_px=0.0, landmark_offsets=offsets)
    noisy = syn.landmarks_clean + 0.015 * face_size(syn.landmarks_clean)[:, None, None] * torch.randn(
        syn.landmarks_clean.shape, generator=g, dtype=torch.float64)
    params, _ = runner.fit(cfg, noisy, torch.full((n, 2), 512.0, dtype=torch.float64))
    fitted = m.vertices(params["shape"], params["expression"])
    err = aligned_vertex_error(fitted, syn.vertices, runner.mask)
    mean = aligned_vertex_error(torch.as_tensor(m.mean, dtype=torch.float64)[None].expand(n, -1, -1), syn.vertices, runner.mask)
    return float(err.mean()), float(mean.mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["s0.0077-k40-model", "s0.02-k40-model", "s0.02-k40-dlib"])
    ap.add_argument("--lfw-cache", default="/work/data/lfw_landmarks.npz")
    ap.add_argument("--lfw-root", default=None)
    ap.add_argument("--faces", default=str(ROOT.parent / "shared" / "faces" / "dev"))
    ap.add_argument("--table", default=str(ROOT / "ganfit" / "data" / "landmark_table_bfm-3ddfa_dlib.json"))
    ap.add_argument("--people", type=int, default=400, help="half-B LFW people for consistency (up to 4 photos each)")
    ap.add_argument("--held-out", type=int, default=400, help="half-B photos for the held-out landmark measure")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    model = load_model("bfm-3ddfa")
    runner = Runner(model, Path(args.table))
    lfw = load_lfw(Path(args.lfw_cache), Path(args.lfw_root) if args.lfw_root else None)
    b_half = lfw.subset(np.array([half(p) == "B" for p in lfw.person]))
    people = sorted(set(b_half.person))
    chosen = set(people[:: max(1, len(people) // args.people)][: args.people])
    keep, count = [], {}
    for i, p in enumerate(b_half.person):
        if p in chosen and count.get(p, 0) < 4:
            keep.append(i)
            count[p] = count.get(p, 0) + 1
    cons = b_half.subset(np.array(keep))
    held = b_half.subset(np.arange(len(b_half))[:: max(1, len(b_half) // args.held_out)][: args.held_out])
    dev = dev_sets(Path(args.faces)) if Path(args.faces).is_dir() else None
    print(f"LFW half B: {len(cons)} photos of {len(chosen)} people for consistency, {len(held)} for held-out "
          f"landmarks; dev: {0 if dev is None else len(dev)} frames/views of {0 if dev is None else len(set(dev.person))} "
          f"people\n", file=sys.stderr)
    print("| config | LFW same mm | LFW diff mm | LFW ratio | dev same mm | dev diff mm | dev ratio | held-out NME % | "
          "synthetic mm (mean face) | consensus mm (mean face) | 2D NME % | |shape| | s/photo |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    references: dict[str, torch.Tensor] = {}
    mean_face = runner.neutral(torch.zeros(1, 1, dtype=torch.float64))[0]
    for name in args.configs:
        cfg = parse(name)
        t0 = time.perf_counter()
        lms = torch.as_tensor(cons.landmarks, dtype=torch.float64)
        params, ids = runner.fit(cfg, lms, torch.as_tensor(cons.sizes, dtype=torch.float64))
        secs = (time.perf_counter() - t0) / len(cons)
        neutral = runner.neutral(params["shape"])
        same, diff = consistency(neutral, cons.person, rng)
        if cfg["table"] not in references:
            ref_params, _ = runner.fit({"sigma": 0.01, "ks": 40, "table": cfg["table"]}, lms,
                                       torch.as_tensor(cons.sizes, dtype=torch.float64))
            references[cfg["table"]] = runner.neutral(ref_params["shape"])
        cons_fit, cons_mean = consensus_distance(neutral, references[cfg["table"]], cons.person, mean_face)
        nme2d = float(((runner.landmarks_2d(params, ids) - lms).norm(dim=-1).mean(1) / face_size(lms)).median())
        norm = float(params["shape"].norm(dim=1).median())
        if dev is not None and len(dev):
            dp, _ = runner.fit(cfg, torch.as_tensor(dev.landmarks, dtype=torch.float64), torch.as_tensor(dev.sizes, dtype=torch.float64))
            dsame, ddiff = consistency(runner.neutral(dp["shape"]), dev.person, rng)
        else:
            dsame = ddiff = float("nan")
        ho = held_out(runner, cfg, held)
        syn, syn_mean = synthetic(runner, cfg)
        print(f"| {name} | {same:.3f} | {diff:.3f} | {same / diff:.3f} | {dsame:.3f} | {ddiff:.3f} | {dsame / ddiff:.3f} | "
              f"{100 * ho:.2f} | {syn:.3f} ({syn_mean:.3f}) | {cons_fit:.3f} ({cons_mean:.3f}) | {100 * nme2d:.2f} | {norm:.2f} | {secs:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
