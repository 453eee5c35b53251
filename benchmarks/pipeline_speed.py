"""Speed of the landmark-only `ganfit fit` per step, warm process (issue 9, part 4).

For `examples/astronaut.png` (512 x 512) and a 12-megapixel copy of it (4000 x 3000, upscaled into a
temporary folder) this runs what `ganfit fit photo -o out/face.obj` runs: `Fitter.fit` (load, detect,
landmark stage, vertex colours, 768 x 768 UV texture with completion, overlay render) and
`FitResult.save` (OBJ, MTL, texture PNG, JSON, overlay PNG), and prints the median of each step of
face.json's ``timings_s`` over the runs, the wall-clock total (and this process's CPU time, which a
second process sharing the cores inflates less than the wall clock), and detection + 68 landmarks
alone (`DlibDetector.detect` on the decoded photo). The first fit of each photo is a warm-up (it builds the
per-model UV layout and caches) and is not counted.

    .venv/bin/python benchmarks/pipeline_speed.py [--runs 7] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit import FitConfig, Fitter  # noqa: E402
from ganfit.io.images import load_image  # noqa: E402

PHOTO = ROOT / "examples" / "astronaut.png"

#: (key in timings_s, label) in pipeline order
STEPS = [
    ("load", "load (decode)"),
    ("detect", "detect + 68 landmarks"),
    ("landmark_stage", "landmark stage"),
    ("geometry", "mesh geometry (vertices, projection, normals)"),
    ("colors", "vertex colours (z-buffer, sampling, fill)"),
    ("texture_unwrap", "texture: unwrap"),
    ("texture_complete", "texture: completion (mirror + Poisson)"),
    ("texture", "texture (unwrap + completion)"),
    ("render", "overlay render"),
    ("total", "**fit total** (`Fitter.fit`)"),
    ("save_png", "save: texture PNG"),
    ("save_mtl", "save: MTL"),
    ("save_obj", "save: OBJ"),
    ("save_overlay", "save: overlay PNG (draw + encode)"),
    ("save_json", "save: JSON"),
    ("save_write", "save: write files"),
    ("save", "**save total** (`FitResult.save`)"),
]


def _median_ms(values: list[float]) -> float:
    return 1000.0 * statistics.median(values)


def time_pipeline(fitter: Fitter, photo: Path, runs: int, out: Path) -> dict[str, list[float]]:
    """Per-step seconds of `runs` warm fits + saves of `photo` (after one warm-up)."""
    samples: dict[str, list[float]] = {}
    for run in range(runs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fitter.fit(str(photo))
        result.save(out / f"face_{run}.obj")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if run == 0:
            continue
        for key, value in result.timings.items():
            samples.setdefault(key, []).append(value)
        samples.setdefault("wall", []).append(wall)
        samples.setdefault("cpu", []).append(cpu)
    return samples


def time_detection(fitter: Fitter, photo: Path, runs: int) -> tuple[list[float], list[float], list[float]]:
    """Seconds to decode `photo`, and wall-clock and CPU seconds to detect its face with 68 landmarks,
    `runs` times each."""
    pixels = load_image(photo).pixels
    fitter.detector.detect(pixels)  # warm-up
    load, detect, detect_cpu = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        load_image(photo)
        t1, c1 = time.perf_counter(), time.process_time()
        fitter.detector.detect(pixels)
        t2, c2 = time.perf_counter(), time.process_time()
        load.append(t1 - t0)
        detect.append(t2 - t1)
        detect_cpu.append(c2 - c1)
    return load, detect, detect_cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per photo (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    fitter = Fitter(FitConfig(device="cpu", quiet=True))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = tmp / "astronaut_12mp.jpg"
        Image.open(PHOTO).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(big, quality=90)
        photos = {"512 x 512": PHOTO, "4000 x 3000 (12 MP)": big}
        pipeline = {name: time_pipeline(fitter, path, args.runs, tmp / f"out{i}") for i, (name, path) in enumerate(photos.items())}
        detection = {name: time_detection(fitter, path, 3 * args.runs) for name, path in photos.items()}

    names = list(photos)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.runs} warm runs (ms)\n")
    print("| step | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, label in STEPS:
        cells = [f"{_median_ms(pipeline[n][key]):.0f}" if key in pipeline[n] else "-" for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("| **fit + save, wall clock** | " + " | ".join(f"**{_median_ms(pipeline[n]['wall']):.0f}**" for n in names) + " |")
    print("| fit + save, wall clock, fastest run | " + " | ".join(f"{1000 * min(pipeline[n]['wall']):.0f}" for n in names) + " |")
    print("| fit + save, CPU time of this process | " + " | ".join(f"{_median_ms(pipeline[n]['cpu']):.0f}" for n in names) + " |")
    print(f"| detection + 68 landmarks alone, median of {3 * args.runs} (CPU time) | "
          + " | ".join(f"{_median_ms(detection[n][1]):.1f} ({_median_ms(detection[n][2]):.1f})" for n in names) + " |")
    print(f"| load_image alone, median of {3 * args.runs} | " + " | ".join(f"{_median_ms(detection[n][0]):.1f}" for n in names) + " |")

    small, large = names
    det_small, det_large = _median_ms(detection[small][1]), _median_ms(detection[large][1])
    wall_small = _median_ms(pipeline[small]["wall"])
    print()
    print(f"- detection + 68 landmarks <= 50 ms at 512 x 512: {det_small:.1f} ms, {'met' if det_small <= 50 else 'NOT met'}")
    print(f"- detection + 68 landmarks <= 150 ms at 12 MP: {det_large:.1f} ms, {'met' if det_large <= 150 else 'NOT met'}")
    print(f"- whole landmark-only fit + save <= 1 s at 512 x 512: {wall_small:.0f} ms, {'met' if wall_small <= 1000 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
