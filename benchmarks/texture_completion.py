"""UV texture completion: the fast (reduced Galerkin) Poisson fill against the exact one (issue 9, part 4).

For each photo the landmark-only fit gives the mesh; the photo is unwrapped into the model's UV
layout at 256, 512 and 768 texels a side (`PhotoTexture`'s layout, built once per size and not timed)
and completed with ``complete(..., solver="exact")`` and ``solver="fast"``. Printed per size: the
median wall-clock and CPU time of each over `--runs` calls (warm), and the differences of the fast
texture from the exact one over the unseen chart texels (per texel the largest of the three channel
differences, colours in [0, 1]): mean, 99th percentile and maximum; the same at the unseen texels next
to a seen one (where a seam would show); and the mean jump between those texels and their seen
neighbours, exact and fast (a seam would make the fast one larger). Timings are for the first photos
(`--timed`, default 2: the example photo and a turned face); the differences are the worst over all.

With `--png DIR` it writes, for each photo at 768, ``<name>_exact.png``, ``<name>_fast.png`` and
``<name>_diff10.png`` (|fast - exact| x 10).

    .venv/bin/python benchmarks/texture_completion.py [photos ...] [--dev 30] [--runs 7] [--png DIR]

Without photos: `examples/astronaut.png` and, if present, the turned face
`../shared/faces/dev/photos/Deep3DFaceRecon__datasets_examples_vd006.png` (about 28 degrees of yaw).
`--dev N` adds the first N photos (sorted by name) of `../shared/faces/dev/photos` to the error rows.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit import FitConfig, Fitter  # noqa: E402
from ganfit.fitting.photo_texture import PhotoTexture  # noqa: E402
from ganfit.io.images import load_image  # noqa: E402
from ganfit.render.unwrap import OUTSIDE, SEEN, complete, unwrap  # noqa: E402

DEV = ROOT.parent / "shared" / "faces" / "dev" / "photos"
DEFAULT_PHOTOS = [ROOT / "examples" / "astronaut.png", DEV / "Deep3DFaceRecon__datasets_examples_vd006.png"]
SIZES = (256, 512, 768)

#: what "invisible" means here (colours in [0, 1]; one 8-bit step is 0.0039): the mean difference
#: below one step, the 99th percentile below five steps, nothing above 0.06, and the texels next to
#: the seen ones within 0.01 (no seam).
THRESHOLDS = {"mean": 0.003, "p99": 0.02, "max": 0.06, "edge_max": 0.01}


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: texels with a 4-neighbour in `mask`."""
    out = np.zeros_like(mask)
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def seam_jump(texture: np.ndarray, label: np.ndarray) -> float:
    """Mean over 4-neighbour pairs (unseen chart texel, seen texel) of the largest channel difference."""
    seen, unseen = label == SEEN, (label != SEEN) & (label != OUTSIDE)
    jumps = []
    for a, b in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                 ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
        pair = (seen[a] & unseen[b]) | (unseen[a] & seen[b])
        jumps.append(np.abs(texture[a] - texture[b]).max(-1)[pair])
    return float(np.concatenate(jumps).mean())


def differences(fast: np.ndarray, exact: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Fast vs exact over the unseen chart texels (and those next to a seen texel)."""
    unseen = (label != SEEN) & (label != OUTSIDE)
    edge = unseen & _neighbours(label == SEEN)
    d = np.abs(fast - exact).max(-1)
    return {
        "mean": float(d[unseen].mean()), "p99": float(np.percentile(d[unseen], 99)), "max": float(d[unseen].max()),
        "edge_p99": float(np.percentile(d[edge], 99)), "edge_max": float(d[edge].max()),
        "jump_exact": seam_jump(exact, label), "jump_fast": seam_jump(fast, label),
    }


def time_calls(fn, runs: int) -> tuple[float, float]:
    """Median wall-clock and CPU milliseconds of `runs` calls (after one warm-up call)."""
    fn()
    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def _png(path: Path, image: np.ndarray) -> None:
    Image.fromarray((np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="*", type=Path)
    ap.add_argument("--dev", type=int, default=0, help="add the first N dev photos to the error rows")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--timed", type=int, default=2, help="time the first N photos")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--png", type=Path, default=None, help="write exact / fast / |diff| x 10 PNGs here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    photos = args.photos or [p for p in DEFAULT_PHOTOS if p.exists()]
    if args.dev:
        photos += sorted(p for p in DEV.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.dev]
    if args.png:
        args.png.mkdir(parents=True, exist_ok=True)

    fitter = Fitter(FitConfig(device="cpu", quiet=True, texture_size=0))
    model = fitter.model
    layouts = {}
    rows: dict[int, dict[str, list]] = {s: {"exact": [], "fast": [], "diff": []} for s in SIZES}
    for k, photo in enumerate(photos):
        result = fitter.fit(str(photo))
        mesh = result.meshes[0]
        pixels = load_image(photo).pixels
        for size in SIZES:
            if size not in layouts:
                t0 = time.perf_counter()
                layouts[size] = PhotoTexture(model, texture_size=size).layout
                print(f"layout {size}: built in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
            layout = layouts[size]
            raw = unwrap(pixels, mesh.projected, mesh.vertices_camera, model.triangles, layout=layout,
                         normals=mesh.normals_camera)
            exact, label = complete(raw, layout.mirror, layout=layout, solver="exact")
            fast, label_fast = complete(raw, layout.mirror, layout=layout, solver="fast")
            assert np.array_equal(label, label_fast)
            assert np.array_equal(fast[label == SEEN], exact[label == SEEN]), "seen texels changed"
            rows[size]["diff"].append(differences(fast, exact, label))
            if k < args.timed:
                rows[size]["exact"].append(time_calls(lambda: complete(raw, layout.mirror, layout=layout, solver="exact"),
                                                      max(1, args.runs // 2)))
                rows[size]["fast"].append(time_calls(lambda: complete(raw, layout.mirror, layout=layout), args.runs))
            if args.png and size == max(SIZES):
                stem = photo.stem
                _png(args.png / f"{stem}_exact.png", exact)
                _png(args.png / f"{stem}_fast.png", fast)
                _png(args.png / f"{stem}_diff10.png", 10 * np.abs(fast - exact))
        d = rows[768]["diff"][-1]
        print(f"{photo.name[:44]:44s} 768: mean {d['mean']:.4f} p99 {d['p99']:.4f} max {d['max']:.4f} "
              f"edge max {d['edge_max']:.4f}", file=sys.stderr)

    print(f"\n{len(photos)} photos; timings: median of {args.runs} warm calls (exact: {max(1, args.runs // 2)}), "
          f"over the first {min(args.timed, len(photos))} photos; torch threads {args.threads}\n")
    print("| texture | exact ms (CPU) | fast ms (CPU) | speed-up | mean | p99 | max | next to seen: p99 / max | "
          "seam jump exact / fast |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in SIZES:
        r = rows[size]
        ex = [statistics.median(v) for v in zip(*r["exact"])] or [float("nan")] * 2
        fa = [statistics.median(v) for v in zip(*r["fast"])] or [float("nan")] * 2
        worst = {key: max(d[key] for d in r["diff"]) for key in r["diff"][0]}
        jump_e = statistics.mean(d["jump_exact"] for d in r["diff"])
        jump_f = statistics.mean(d["jump_fast"] for d in r["diff"])
        print(f"| {size} x {size} | {ex[0]:.0f} ({ex[1]:.0f}) | {fa[0]:.0f} ({fa[1]:.0f}) | {ex[0] / fa[0]:.1f}x | "
              f"{worst['mean']:.4f} | {worst['p99']:.4f} | {worst['max']:.4f} | {worst['edge_p99']:.4f} / "
              f"{worst['edge_max']:.4f} | {jump_e:.4f} / {jump_f:.4f} |")
    print("\nDifferences: the worst photo's value of each measure (fast vs exact, unseen chart texels, largest "
          "channel difference, colours in [0, 1]); seam jump: mean over photos.")
    worst768 = {key: max(d[key] for d in rows[768]["diff"]) for key in THRESHOLDS}
    ok = all(worst768[k] < v for k, v in THRESHOLDS.items())
    print("Thresholds at 768: " + ", ".join(f"{k} < {v}" for k, v in THRESHOLDS.items()) + (": met" if ok else ": NOT met"))


if __name__ == "__main__":
    main()
