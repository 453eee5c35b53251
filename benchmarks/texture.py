"""Texture-GAN benchmark: generator speed, and SWD of a trained model against its data.

    python benchmarks/texture.py [--sizes 256 512] [--batches 1 8] [--repeats 3] [--threads 2]
                                 [--device cpu] [--mode fit|train]
    python benchmarks/texture.py --model runs/NAME/model.pt --data UV_DIR --heldout UV_DIR [--swd-images 256]

Speed: one forward + backward of the progressive-GAN generator at full width (latent 512, fmap_base
8192, fmap_max 512: 512 channels up to 32x32, then 256/128/64/32 at 64/128/256/512), randomly
initialised (speed does not depend on the weights). ``--mode fit`` (default) is what GANFit does at
every iteration: the weights frozen, the gradient of a loss on the texture to the latent only;
``--mode train`` also computes the weights' gradients (a generator training step without the
discriminator). Median of `--repeats` runs after one warm-up; rows whose single warm-up run took
longer than `--slow-s` seconds are measured with one repeat (the table says so). The ratio column is
each row's ms per call divided by the first row's.

SWD (with ``--model``): the sliced Wasserstein distance on Laplacian pyramids (Karras et al. 2018,
section 5; ``ganfit.training.swd``) between N samples of the model and N textures of its training
folder, and N held-out textures; plus training-vs-held-out reals as the floor a perfect model would
reach (N = min(--swd-images, folder sizes)). Values x 10^3 as in the paper's tables.
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

from ganfit.model.texture.pggan import Generator, TexturePGGAN  # noqa: E402
from ganfit.training.swd import swd  # noqa: E402
from ganfit.training.uv_folder import load_uv_folder  # noqa: E402


def time_generator(gen: Generator, batch: int, device: torch.device, mode: str, repeats: int, slow_s: float):
    """(median seconds per forward + backward, repeats used)."""
    gen.requires_grad_(mode == "train")
    z = torch.randn(batch, gen.latent_dim, device=device, requires_grad=True)

    def step() -> float:
        t0 = time.perf_counter()
        gen.zero_grad(set_to_none=True)
        z.grad = None
        out = gen(z)
        out.square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    warm = step()
    n = 1 if warm > slow_s else repeats
    return statistics.median(step() for _ in range(n)), n


def speed_section(args) -> None:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {args.threads} CPU threads"))
    print(f"generator forward + backward, mode {args.mode}, latent 512, fmap_base 8192, fmap_max 512\n")
    rows = []
    for size in args.sizes:
        torch.manual_seed(0)
        gen = Generator(512, size).to(device).eval()
        params = sum(p.numel() for p in gen.parameters())
        for batch in args.batches:
            try:
                seconds, n = time_generator(gen, batch, device, args.mode, args.repeats, args.slow_s)
            except (RuntimeError, MemoryError) as exc:
                print(f"  {size}² batch {batch}: failed ({type(exc).__name__}: {str(exc)[:100]})")
                continue
            rows.append((size, batch, seconds, n, params))
            print(f"  {size}² batch {batch}: {seconds * 1e3:.0f} ms (median of {n})", flush=True)
    if not rows:
        return
    base = rows[0][2]
    print("\n| texture | batch | generator params | ms / call | ms / image | repeats | ratio vs first row |")
    print("|---|---|---|---|---|---|---|")
    for size, batch, seconds, n, params in rows:
        print(f"| {size}² | {batch} | {params / 1e6:.1f} M | {seconds * 1e3:.0f} | {seconds * 1e3 / batch:.0f} | {n} | {seconds / base:.2f}x |")


@torch.no_grad()
def swd_section(args) -> None:
    model = TexturePGGAN.load(args.model, device=args.device)
    h, w = model.resolution
    if h != w:
        raise SystemExit(f"{args.model}: SWD section supports square textures, got {h}x{w}")
    train_uv, _ = load_uv_folder(args.data, h)
    held_uv, _ = load_uv_folder(args.heldout, h)
    n = min(args.swd_images, len(train_uv), len(held_uv))
    pick = torch.Generator().manual_seed(args.seed)
    train_set = train_uv[torch.randperm(len(train_uv), generator=pick)[:n]].float() / 255
    held_set = held_uv[torch.randperm(len(held_uv), generator=pick)[:n]].float() / 255
    z = model.sample(n, torch.Generator().manual_seed(args.seed))
    fakes = torch.cat([model.decode(c).cpu() for c in z.split(16)])
    rows = [
        ("model samples vs training UVs", swd(train_set, fakes)),
        ("model samples vs held-out UVs", swd(held_set, fakes)),
        ("training vs held-out UVs (floor)", swd(train_set, held_set)),
    ]
    levels = [k for k in rows[0][1] if k != "mean"]
    print(f"\nSWD x 10^3, {n} images per set, {h}x{w}, model {args.model} ({model.name}, uv layout {model.uv_layout})\n")
    print("| pair | " + " | ".join(f"{lv}²" for lv in levels) + " | mean |")
    print("|---|" + "---|" * (len(levels) + 1))
    for label, values in rows:
        print(f"| {label} | " + " | ".join(f"{values[lv] * 1e3:.1f}" for lv in levels) + f" | {values['mean'] * 1e3:.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="texture sides to time")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row after one warm-up")
    ap.add_argument("--slow-s", type=float, default=20.0, help="rows whose warm-up exceeds this get one timed run")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--mode", choices=["fit", "train"], default="fit", help="gradient to the latent only, or to the weights too")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed section")
    ap.add_argument("--model", help="trained texture GAN (model.pt) for the SWD section")
    ap.add_argument("--data", help="its training UV folder")
    ap.add_argument("--heldout", help="held-out UV folder")
    ap.add_argument("--swd-images", type=int, default=256, help="images per set in the SWD section")
    ap.add_argument("--seed", type=int, default=0, help="seed of the SWD section's latents and image picks")
    args = ap.parse_args(argv)
    if not args.no_speed:
        speed_section(args)
    if args.model:
        if not (args.data and args.heldout):
            ap.error("--model needs --data and --heldout")
        swd_section(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
