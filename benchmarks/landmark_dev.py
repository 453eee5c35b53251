"""Landmark stage on real photos: how closely the fitted face's landmarks follow dlib's.

    python benchmarks/landmark_dev.py [--faces ../shared/faces/dev] [--limit 150] [--threads 2]

Every photo in the dev corpus (../shared/faces/dev/photos; for benchmarks only, never part of the
project) is fitted on its own with the default `FitConfig` (no texture, so only detection and the
landmark stage run). Reported: the normalised landmark error of the fit (`ganfit.fitting.metrics.
landmark_nme`: mean distance between the 68 fitted and detected landmarks over the face size), its
distribution, the same in pixels, the pose range and the time per photo. There is no ground truth here:
the error mixes dlib's landmark noise with what the model (40 shape, 10 expression components) cannot
follow. The fitter's poor-fit warning (`POOR_FIT_NME`) is set well above the largest value seen.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit import FitConfig, Fitter  # noqa: E402
from ganfit.errors import GanfitError  # noqa: E402
from ganfit.fitting.checks import POOR_FIT_NME  # noqa: E402
from ganfit.fitting.metrics import landmark_nme  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", default=str(ROOT.parent / "shared" / "faces" / "dev"), help="the dev corpus folder")
    ap.add_argument("--limit", type=int, default=150, help="at most this many photos (sorted by name)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    photos = sorted(p for p in (Path(args.faces) / "photos").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photos = photos[: args.limit]
    if not photos:
        print(f"no photos under {args.faces}/photos", file=sys.stderr)
        return 1
    fitter = Fitter(FitConfig(texture_size=0, quiet=True, device="cpu"))
    nme, px, yaw, times, failed = [], [], [], [], []
    for i, path in enumerate(photos):
        t0 = time.perf_counter()
        try:
            res = fitter.fit(str(path))
        except GanfitError as exc:
            failed.append(f"{path.name}: {exc}")
            continue
        times.append(time.perf_counter() - t0)
        nme.append(float(landmark_nme(res.landmarks_fitted, res.landmarks_target)[0]))
        px.append(float(res.reprojection_error_px()[0]))
        yaw.append(float(res.params.euler_deg()[0, 0]))
        print(f"[{i + 1}/{len(photos)}] {path.name}: {100 * nme[-1]:.2f}% ({px[-1]:.2f} px), yaw {yaw[-1]:+.0f}",
              file=sys.stderr, flush=True)
    nme_a, px_a = np.array(nme), np.array(px)
    print(f"\n{len(nme)} photos fitted, {len(failed)} refused (no face or unreadable)")
    for line in failed:
        print(f"  refused: {line}")
    print("\n| measure | median | p90 | p95 | max |\n|---|---|---|---|---|")
    q = lambda a: [np.median(a), np.percentile(a, 90), np.percentile(a, 95), a.max()]  # noqa: E731
    print("| landmark error, % of face size | " + " | ".join(f"{100 * v:.2f}" for v in q(nme_a)) + " |")
    print("| landmark error, px | " + " | ".join(f"{v:.2f}" for v in q(px_a)) + " |")
    print(f"\nyaw range {min(yaw):+.0f} to {max(yaw):+.0f} deg; median time per photo {1e3 * np.median(times):.0f} ms "
          f"(load, detect, landmark stage, colours)")
    print(f"above the poor-fit warning ({100 * POOR_FIT_NME:.0f}%): {int((nme_a > POOR_FIT_NME).sum())} photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
