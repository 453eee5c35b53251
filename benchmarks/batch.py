"""`ganfit batch` throughput on this machine (issue 15): the dev photos (../shared/faces/dev/photos, read in
place) fitted with the local engine at 1 and 2 workers, landmark stage only and with the joint stage.

    python benchmarks/batch.py [--photos 150] [--joint-photos 12]

Prints photos per second, seconds per photo and the speed-up of 2 workers; outputs go to /tmp/ganfit-batch-bench.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit.batch import BatchConfig, Job, run_batch  # noqa: E402
from ganfit.fitting import FitConfig  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "faces" / "dev" / "photos"
OUT = Path("/tmp/ganfit-batch-bench")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=150)
    ap.add_argument("--joint-photos", type=int, default=12)
    args = ap.parse_args()
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows = []
    for stages, n in (("landmarks", args.photos), ("landmarks,joint", args.joint_photos)):
        jobs = [Job(id=p.stem, inputs=(str(p),)) for p in photos[:n]]
        fit = FitConfig(quiet=True).with_stages(stages)
        per = {}
        for workers in (1, 2):
            out = OUT / f"{stages.replace(',', '+')}_{workers}"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            s = run_batch(jobs, out, fit, BatchConfig(workers=workers, overlay=True), progress=False)
            dt = time.perf_counter() - t
            per[workers] = dt
            rows.append(f"| {stages} | {len(jobs)} ({len(s.failed)} failed) | {workers} | {dt:.1f} | "
                        f"{len(s.done) / dt:.2f} | {dt / max(1, len(s.done)):.2f} | "
                        f"{per[1] / dt:.2f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    print("| stages | photos | workers | seconds | photos / s | s / photo | speed-up over 1 worker |\n"
          "|---|---|---|---|---|---|---|\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
