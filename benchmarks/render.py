"""Renderer benchmark: forward + backward time of `Renderer.render` for the default face model.

    python benchmarks/render.py [--model bfm-3ddfa] [--sizes 224 512] [--batches 1 16] [--repeats 3]
                                [--threads 2] [--backends torch nvdiffrast]

What is timed: one `render` (vertices from shape/expression coefficients, pose, clip space, rasterize,
one interpolation of positions/normals/UVs/regions, a 512 x 512 UV texture sampled with mip-mapping, SH
shading, antialiasing) plus the backward pass of a loss on the image and alpha to the shape,
expression, pose, texture and lighting. Frontal face filling about 60% of the image width. Median of
`--repeats` runs after one warm-up run.

Backends: the torch backend on CPU (``torch.set_num_threads(--threads)``) and, when CUDA is present, the
torch backend and nvdiffrast on the GPU. The table's ratio column is each row's time per image divided
by the baseline measured in the same run: the torch backend on CPU, batch 1, at the smallest size.
Without the fetched default model (`ganfit assets fetch`) a synthetic mesh of the same size is used.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit.errors import GanfitError  # noqa: E402
from ganfit.fitting.params import FitParams  # noqa: E402
from ganfit.model.morphable import MorphableModel  # noqa: E402
from ganfit.model.registry import load_model  # noqa: E402
from ganfit.render.renderer import Renderer, make_rasterizer  # noqa: E402
from ganfit.render.shading import default_sh  # noqa: E402


def synthetic_model(n: int = 230) -> MorphableModel:
    """A half-ellipsoid grid mesh of n*n vertices (n = 230: ~53k vertices, ~105k triangles)."""
    u, v = np.meshgrid(np.linspace(-1.3, 1.3, n), np.linspace(-1.0, 1.0, n))
    mean = np.stack([80 * np.sin(u), 110 * v, 60 * np.cos(u) * np.sqrt(np.clip(1 - 0.5 * v**2, 0.1, None))], -1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tris = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    rng = np.random.default_rng(0)
    v_count = n * n
    return MorphableModel(
        name="synthetic", mean=mean.reshape(-1, 3), shape_basis=rng.normal(size=(v_count, 3, 40)) * 0.1,
        shape_std=np.ones(40), expression_basis=rng.normal(size=(v_count, 3, 10)) * 0.1, expression_std=np.ones(10),
        triangles=tris, landmark_indices=np.linspace(0, v_count - 1, 68).astype(int),
        uv=np.stack([(u.ravel() + 1.3) / 2.6, (v.ravel() + 1) / 2], -1), regions={"face": np.ones(v_count, bool)},
    )


def face_params(model: MorphableModel, batch: int, size: int, device: torch.device) -> FitParams:
    """Frontal pose, the face centred, about 60% of the image wide."""
    mean = torch.as_tensor(model.mean)
    centre = (mean.max(0).values + mean.min(0).values) / 2
    width = float(mean[:, 0].max() - mean[:, 0].min())
    distance = 600.0
    focal = 0.6 * size * (distance - float(mean[:, 2].max() - centre[2])) / width
    translation = torch.tensor([-centre[0], -centre[1], -distance - centre[2]])
    return FitParams(
        shape=torch.zeros(batch, min(80, model.num_shape), device=device),
        expression=torch.zeros(batch, min(29, model.num_expression), device=device),
        rotation=torch.zeros(batch, 3, device=device),
        translation=translation.repeat(batch, 1).to(device),
        focal=torch.full((batch,), focal, device=device),
        principal=torch.full((batch, 2), size / 2.0, device=device),
    )


def time_render(model, rasterizer, size: int, batch: int, device: torch.device, repeats: int) -> float:
    """Median seconds of one forward + backward."""
    renderer = Renderer(model, rasterizer, image_size=(size, size))
    params = face_params(model, batch, size, device)
    for t in (params.shape, params.expression, params.rotation, params.translation):
        t.requires_grad_(True)
    texture = torch.rand(1, 3, 512, 512, device=device).expand(batch, -1, -1, -1).clone().requires_grad_(True)
    light = default_sh(batch, frontal=0.3, device=device).requires_grad_(True)
    kwargs = {"texture": texture} if model.uv is not None else {}

    def step() -> None:
        out = renderer.render(params, lighting=light, **kwargs)
        (out.image.mean() + out.alpha.mean()).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bfm-3ddfa")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", nargs="+", default=None, help="subset of: torch-cpu torch-cuda nvdiffrast")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    try:
        model = load_model(args.model)
        model_note = f"{model.name}: {model.num_vertices} vertices, {model.triangles.shape[0]} triangles"
    except GanfitError as exc:
        model = synthetic_model()
        model_note = f"synthetic stand-in ({model.num_vertices} vertices, {model.triangles.shape[0]} triangles); {exc}"

    configs = [("torch-cpu", "torch", torch.device("cpu"))]
    if torch.cuda.is_available():
        configs.append(("torch-cuda", "torch", torch.device("cuda")))
        configs.append(("nvdiffrast", "nvdiffrast", torch.device("cuda")))
    if args.backends:
        configs = [c for c in configs if c[0] in args.backends]

    print(f"model: {model_note}")
    print(f"torch {torch.__version__}, CPU threads {args.threads}" + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    print(f"forward + backward, 512x512 UV texture (mipmap), SH lighting, median of {args.repeats}\n")
    rows = []
    baseline = None
    for label, backend, device in configs:
        try:
            rasterizer = make_rasterizer(backend, device)
        except GanfitError as exc:
            print(f"skipping {label}: {exc}")
            continue
        for size in sorted(args.sizes):
            for batch in sorted(args.batches):
                try:
                    seconds = time_render(model, rasterizer, size, batch, device, args.repeats)
                except (RuntimeError, MemoryError) as exc:  # e.g. out of memory
                    print(f"{label} {size}x{size} batch {batch}: failed ({type(exc).__name__}: {str(exc)[:100]})")
                    continue
                per_image = seconds / batch
                if baseline is None:
                    baseline = per_image
                rows.append((label, size, batch, seconds, per_image))
                print(f"  {label:11s} {size}x{size} batch {batch:2d}: {seconds * 1e3:9.1f} ms", flush=True)

    print("\n| backend | image | batch | ms / call | ms / image | speed-up per image vs torch-cpu b1 " f"{min(args.sizes)}² |")
    print("|---|---|---|---|---|---|")
    for label, size, batch, seconds, per_image in rows:
        print(f"| {label} | {size}² | {batch} | {seconds * 1e3:.1f} | {per_image * 1e3:.1f} | {baseline / per_image:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
