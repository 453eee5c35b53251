"""Cost of a progressive texture generator where the joint stage pays it: forward + backward to the latent at
batch 1, weights frozen (as in fitting: `EqualizedConv2d` caches weight x scale then), on this CPU.

Sizes the 128 x 128 generator of issue 12: the joint stage runs it every iteration, so it should cost
<= 100 ms. For each width schedule (fmap_base, fmap_max; channels at a level = min(fmap_max, fmap_base /
2**stage), stage = log2(side) - 1) it prints the channels per level, the parameter count, the file size
(float32) and the median (minimum) of `--reps` timed calls after warm-up, at each thread count.

    python benchmarks/generator_cost.py --resolution 128 --threads 1 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ganfit._threads import torch_threads  # noqa: E402
from ganfit.model.texture.pggan import Generator, GeneratorConfig  # noqa: E402

DEFAULT_WIDTHS = ((1024, 128), (2048, 128), (2048, 256), (3072, 256), (4096, 256), (4096, 512), (8192, 512))


def time_generator(cfg: GeneratorConfig, threads: int, reps: int, warmup: int = 3) -> tuple[float, float]:
    """(median, minimum) seconds of one forward + backward to the latent (batch 1) of a frozen generator.
    On a shared machine the minimum is the better estimate of the uncontended cost."""
    torch.manual_seed(0)
    g = Generator.from_config(cfg).eval().requires_grad_(False)
    z = torch.randn(1, cfg.latent_dim, requires_grad=True)
    times = []
    with torch_threads(threads):
        for i in range(warmup + reps):
            t = time.perf_counter()
            out = g(z)
            out.square().mean().backward()
            z.grad = None
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--latent-dim", type=int, default=512)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--widths", type=str, nargs="*", default=None, help="BASE:MAX pairs (default: a sweep)")
    args = ap.parse_args()
    widths = [tuple(int(v) for v in w.split(":")) for w in args.widths] if args.widths else DEFAULT_WIDTHS
    print(f"| fmap_base | fmap_max | channels 4 -> {args.resolution} | parameters | MB (fp32) | "
          + " | ".join(f"fwd+bwd ms, {t} thread{'s' * (t > 1)}" for t in args.threads) + " |")
    print("|---|---|---|---|---|" + "---|" * len(args.threads))
    for base, cap in widths:
        cfg = GeneratorConfig(args.latent_dim, (args.resolution, args.resolution), base, cap)
        g = Generator.from_config(cfg)
        n = sum(p.numel() for p in g.parameters())
        chans = "-".join(str(cfg.channels_at(k)) for k in range(cfg.num_levels))
        ms = [time_generator(cfg, t, args.reps) for t in args.threads]
        print(f"| {base} | {cap} | {chans} | {n / 1e6:.2f} M | {4 * n / 2**20:.1f} | "
              + " | ".join(f"{1000 * med:.0f} ({1000 * low:.0f})" for med, low in ms) + " |", flush=True)


if __name__ == "__main__":
    main()
