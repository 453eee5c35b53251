"""Identity embeddings on real photos: cosine of same-photo augmented pairs vs different-photo pairs.

    python benchmarks/identity_cosines.py [--faces ../shared/faces/dev] [--limit 150] [--network dlib]

For every single-person photo in the dev corpus (../shared/faces/dev/photos, with its index.json; these
photos are for benchmarks only and never part of the project), dlib detects the face and its 68
landmarks, and the identity network embeds it. Each photo is also augmented twice (shift up to 6% of
the face size, scale 0.9-1.1, rotation up to 6 deg, brightness +-12%), the landmarks re-detected on the
augmented photo, and embedded again. Reported: the cosine distribution of
  - same photo, augmented (should be close to 1: the embedding is stable),
  - same person (index.json's approximate `identity_group`), different photos,
  - different people,
and how well a single threshold separates same-person from different-person pairs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit.errors import GanfitError  # noqa: E402
from ganfit.io.images import load_image  # noqa: E402
from ganfit.perception.detect import make_detector, select_face  # noqa: E402
from ganfit.perception.identity import make_identity_net  # noqa: E402


def augment(pixels: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
    """A random similarity warp about the image centre plus a brightness change."""
    h, w = pixels.shape[:2]
    scale = rng.uniform(0.9, 1.1)
    angle = np.deg2rad(rng.uniform(-6, 6))
    shift = rng.uniform(-0.06, 0.06, size=2) * face_size
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    cx, cy = w / 2, h / 2
    # forward map: p' = A (p - c) + c + shift; PIL wants the inverse
    a = np.array([[c, -s], [s, c]])
    inv = np.linalg.inv(a)
    offset = np.array([cx, cy]) - inv @ (np.array([cx, cy]) + shift)
    coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    img = Image.fromarray((pixels * 255).astype(np.uint8)).transform((w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    out = np.asarray(img, dtype=np.float32) / 255.0 * rng.uniform(0.88, 1.12)
    return np.clip(out, 0, 1)


def embed(net, detector, pixels: np.ndarray) -> torch.Tensor | None:
    try:
        det = select_face(detector.detect(pixels))
    except GanfitError:
        return None
    img = torch.from_numpy(np.array(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
    lm = torch.as_tensor(det.landmarks, dtype=torch.float32)[None]
    with torch.no_grad():
        return net.embed(img, lm)[0]


def summary(name: str, values: list[float]) -> str:
    v = np.asarray(values)
    return (f"| {name} | {len(v)} | {v.mean():.3f} | {np.percentile(v, 5):.3f} | {np.median(v):.3f} | "
            f"{np.percentile(v, 95):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", default=str(ROOT.parent / "shared" / "faces" / "dev"))
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--network", default="dlib", help="dlib, or arcface (needs an insightface pack)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    root = Path(args.faces)
    index = json.loads((root / "index.json").read_text())
    files = [f for f in index["files"] if f["file"].startswith("photos/") and f.get("dlib_hog_faces", 0) >= 1]
    files = files[: args.limit]
    net = make_identity_net(args.network)
    detector = make_detector("dlib")
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    emb, groups, aug_cos, failed = [], [], [], 0
    for f in files:
        pixels = load_image(root / f["file"]).pixels
        e = embed(net, detector, pixels)
        if e is None:
            failed += 1
            continue
        emb.append(e)
        groups.append(f["identity_group"])
        size = float(f.get("max_face_width") or min(pixels.shape[:2]) / 2)
        for _ in range(2):
            ea = embed(net, detector, augment(pixels, size, rng))
            if ea is not None:
                aug_cos.append(float(e @ ea))
    e = torch.stack(emb)
    cos = (e @ e.T).numpy()
    same, diff = [], []
    for i in range(len(emb)):
        for j in range(i + 1, len(emb)):
            (same if groups[i] == groups[j] else diff).append(float(cos[i, j]))
    print(f"# {net.name} embeddings on {len(emb)} dev photos ({failed} without a detected face), "
          f"{len(aug_cos)} augmented copies, {time.perf_counter() - t0:.0f} s\n")
    print("| pairs | count | mean cosine | p5 | median | p95 |")
    print("|---|---|---|---|---|---|")
    print(summary("same photo, augmented", aug_cos))
    print(summary("same person, different photos", same))
    print(summary("different people", diff))
    s, d = np.asarray(same), np.asarray(diff)
    thresholds = np.linspace(-1, 1, 2001)
    acc = [((s >= t).mean() + (d < t).mean()) / 2 for t in thresholds]
    best = int(np.argmax(acc))
    print(f"\nbest single threshold {thresholds[best]:.3f}: balanced accuracy {acc[best]:.3f} "
          f"(same-person pairs above: {(s >= thresholds[best]).mean():.3f}, different-people pairs below: "
          f"{(d < thresholds[best]).mean():.3f}); augmented pairs above it: "
          f"{(np.asarray(aug_cos) >= thresholds[best]).mean():.3f}")


if __name__ == "__main__":
    main()
