"""Timing of the pure-PyTorch rasterizer on a face-sized mesh (prints; asserts nothing).

    python benchmarks/_raster_torch_timing.py [--threads 2] [--repeats 20] [--sizes 224 512] [--bfm]

Mesh: a 230 x 230 grid on a half-ellipsoid "face" (52,900 vertices, 104,882 triangles, about the size of
the BFM topology), 150 x 200 mm, 600 mm in front of the camera, filling about 80% of the image height.
One step = rasterize + interpolate per-vertex colours + antialias + MSE to a target + backward to
vertex positions and colours (the inner step of a photometric fit). With --bfm the mean face of the
embedded default model (if installed) is timed as well. Wall time over the repeats: median and minimum
(on a shared machine the minimum is the better estimate of the cost itself; with more threads than
idle cores, OpenMP waits make the median much worse).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit.render.camera import clip_from_camera  # noqa: E402
from ganfit.render.torch_backend import TorchRasterizer  # noqa: E402


def grid_face(n: int = 230) -> tuple[torch.Tensor, torch.Tensor]:
    """(n*n, 3) half-ellipsoid vertices in mm (facing +z) and (2 (n-1)^2, 3) triangles (CCW from outside)."""
    u, v = torch.meshgrid(torch.linspace(-1.2, 1.2, n), torch.linspace(-1.0, 1.0, n), indexing="xy")
    x, y = 75.0 * torch.sin(u), 100.0 * v
    z = 60.0 * torch.cos(u) * torch.sqrt((1.0 - 0.5 * v**2).clamp_min(0.1))
    verts = torch.stack([x, y, z], -1).reshape(-1, 3)
    i, j = torch.meshgrid(torch.arange(n - 1), torch.arange(n - 1), indexing="ij")
    a = (i * n + j).reshape(-1)
    b, c, d = a + 1, a + n, a + n + 1
    tris = torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, c], 1)])
    return verts, tris


def to_clip(verts: torch.Tensor, size: int, distance: float = 600.0) -> torch.Tensor:
    """Model (V, 3) mm -> clip (1, V, 4) for a size x size image; the face is ~80% of the height."""
    cam = verts[None] + torch.tensor([0.0, 0.0, -distance])
    focal = torch.tensor([0.8 * size * distance / 200.0])
    principal = torch.tensor([[size / 2.0, size / 2.0]])
    return clip_from_camera(cam, focal, principal, (size, size))


def time_step(raster: TorchRasterizer, verts: torch.Tensor, tris: torch.Tensor, size: int, repeats: int) -> dict:
    colors = (verts - verts.min(0).values) / (verts.max(0).values - verts.min(0).values)
    target = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(0))
    verts = verts.clone().requires_grad_(True)
    colors = colors.clone().requires_grad_(True)
    fwd, total = [], []
    for _ in range(repeats + 2):
        t0 = time.perf_counter()
        clip = to_clip(verts, size)
        frags = raster.rasterize(clip, tris, (size, size))
        img = raster.interpolate(colors, frags, tris)
        img = raster.antialias(img, frags, clip, tris)
        loss = ((img - target) ** 2).mean()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        verts.grad = None
        colors.grad = None
        fwd.append(t1 - t0)
        total.append(t2 - t0)
    fwd, total = fwd[2:], total[2:]
    return {
        "forward_ms": 1e3 * statistics.median(fwd),
        "fwd_bwd_ms": 1e3 * statistics.median(total),
        "forward_min_ms": 1e3 * min(fwd),
        "fwd_bwd_min_ms": 1e3 * min(total),
        "covered_px": int(frags.mask.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    ap.add_argument("--bfm", action="store_true", help="also time the embedded default model's mean face")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    raster = TorchRasterizer()
    meshes = [("grid face", *grid_face())]
    if args.bfm:
        try:
            from ganfit.model.registry import load_model

            m = load_model("bfm-3ddfa")
            mean = torch.as_tensor(m.mean, dtype=torch.float32)
            mean = mean - mean.mean(0)
            meshes.append(("bfm-3ddfa mean", mean, torch.as_tensor(m.triangles).long()))
        except Exception as exc:  # noqa: BLE001 - optional
            print(f"(bfm-3ddfa not available: {exc})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    for name, verts, tris in meshes:
        for size in args.sizes:
            r = time_step(raster, verts, tris, size, args.repeats)
            print(
                f"{name}: {verts.shape[0]} vertices, {tris.shape[0]} triangles, {size}x{size}: "
                f"forward {r['forward_ms']:.1f} ms (min {r['forward_min_ms']:.1f}), "
                f"forward+backward {r['fwd_bwd_ms']:.1f} ms (min {r['fwd_bwd_min_ms']:.1f}) "
                f"({r['covered_px']} px covered)"
            )


if __name__ == "__main__":
    main()
