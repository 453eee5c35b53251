"""``ganfit texture train`` and ``ganfit texture sample``: train the progressive-GAN UV texture model
and draw textures from it. Thin: parse, call `ganfit.training.texture_gan` / `TexturePGGAN`, print.

Wire into the ``texture`` command group with ``add_train_parser(texture_subparsers)``; each command's
function (``args.func``) returns an exit code and raises `GanfitError` subclasses for user errors.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import ConfigError

__all__ = ["add_train_parser", "run_train", "run_sample"]

log = logging.getLogger("ganfit")

TRAIN_EPILOG = """\
outputs (in --out):
  model.pt              the trained generator (load with TexturePGGAN.load; use with `ganfit texture sample`)
  checkpoint.pt         latest full training state (networks, optimisers, RNG, schedule); --resume continues it
  config.json           the options of the run
  log.jsonl             losses per logging interval;  swd.jsonl: sliced Wasserstein distance to held reals
  samples/              reals.png and fakes_STEP.png grids from fixed latents

examples:
  ganfit texture train --data uv_dataset/ --resolution 256 --out runs/bfm256
  ganfit texture train --data uv_dataset/ --out runs/bfm256 --resume
  ganfit texture train --data uv/ --resolution 64 --out runs/small --kimg 200 --fade-kimg 50 --stable-kimg 50
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``sample`` commands to a ``texture`` command group's subparsers."""
    p = subparsers.add_parser(
        "train",
        help="train the progressive-GAN UV texture model on a folder of UV textures",
        description="Train a progressive GAN (Karras et al. 2018) on UV textures, growing from 4x4 to "
        "--resolution, and export the generator GANFit optimises. Options not given keep their defaults, "
        "or, with --resume, the values the run was started with.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="DIR",
                   help="folder of square UV textures (*.png, *.jpg; *_mask.png skipped), e.g. from `ganfit texture build-dataset`")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder for checkpoints, samples, logs and model.pt")
    p.add_argument("--resolution", type=int, default=None, metavar="PX",
                   help="side of the final textures, a power of two from 8 to 512 (default: 256)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation, data order, augmentation and latents (default: 0)")
    p.add_argument("--device", default=None, metavar="DEV", help="auto (CUDA if available), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="minibatch size at every resolution (default: 16, 8 at 256 px, 4 at 512 px)")
    p.add_argument("--kimg", type=_positive_float, default=None, metavar="K",
                   help="train on K thousand real images in all (default: until the growth schedule ends)")
    p.add_argument("--fade-kimg", type=float, default=None, metavar="K",
                   help="thousands of images per fade-in of a new resolution (default: 600)")
    p.add_argument("--stable-kimg", type=float, default=None, metavar="K",
                   help="thousands of images per stabilisation phase (default: 600)")
    p.add_argument("--lr", type=_positive_float, default=None, help="Adam learning rate of both networks (default: 0.001)")
    p.add_argument("--latent-dim", type=int, default=None, metavar="D", help="latent size (default: 512)")
    p.add_argument("--fmap-base", type=int, default=None, metavar="N",
                   help="channel schedule: min(fmap-max, N / 2**stage) channels per level (default: 8192)")
    p.add_argument("--fmap-max", type=int, default=None, metavar="N", help="most channels of any level (default: 512)")
    p.add_argument("--r1-gamma", type=float, default=None, metavar="G", help="R1 penalty weight (default: 10)")
    p.add_argument("--uv-layout", default=None, metavar="ID",
                   help="UV layout id of the textures (default: read from the dataset's manifest.json)")
    p.add_argument("--swd-data", default=None, metavar="DIR",
                   help="held-out UV textures to measure SWD against (default: a fixed subset of --data)")
    p.add_argument("--split", default=None, metavar="NAME",
                   help="train on the dataset manifest's items of this split, e.g. train (default: all textures)")
    p.add_argument("--swd-split", default=None, metavar="NAME",
                   help="measure SWD against this split of --swd-data (or of --data), e.g. validation")
    p.add_argument("--no-mirror", action="store_true",
                   help="no horizontal-flip augmentation (use for a UV layout that is not mirror-symmetric)")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--config", metavar="FILE", help="JSON or YAML file of training options; command-line options override it")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary; errors only")
    p.set_defaults(func=run_train)

    s = subparsers.add_parser(
        "sample",
        help="draw random textures from a trained texture GAN into a grid PNG",
        description="Decode N latents z ~ N(0, I) with a trained texture GAN (model.pt or a training "
        "checkpoint) and write them as one grid image.",
    )
    s.add_argument("model", metavar="MODEL.pt", help="a model.pt written by `ganfit texture train`, or its checkpoint.pt")
    s.add_argument("-n", "--num", type=int, default=16, metavar="N", help="number of textures (default: %(default)s)")
    s.add_argument("-o", "--output", default="samples.png", metavar="PNG", help="grid image to write (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="seed of the latents (default: %(default)s)")
    s.add_argument("--columns", type=int, default=None, metavar="C", help="grid columns (default: about sqrt(N))")
    s.add_argument("--device", default=None, metavar="DEV", help="auto (CUDA if available), cpu, cuda or cuda:N (default: auto)")
    s.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    s.set_defaults(func=run_sample)


_OPTION_FIELDS = {
    "data": "data", "resolution": "resolution", "seed": "seed", "device": "device", "kimg": "total_kimg",
    "fade_kimg": "fade_kimg", "stable_kimg": "stable_kimg", "lr": "lr", "latent_dim": "latent_dim",
    "fmap_base": "fmap_base", "fmap_max": "fmap_max", "r1_gamma": "r1_gamma", "uv_layout": "uv_layout",
    "swd_data": "swd_data", "split": "data_split", "swd_split": "swd_split",
}


def _build_config(args: argparse.Namespace):
    from ..training.texture_gan import CHECKPOINT, TrainConfig

    out = Path(args.out)
    base: dict = {}
    if args.resume and (out / "config.json").is_file() and (out / CHECKPOINT).is_file():
        try:
            base = json.loads((out / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{out / 'config.json'}: unreadable ({exc}); cannot resume") from exc
    if args.config:
        base.update(TrainConfig.from_file(args.config).to_dict())
    for opt, name in _OPTION_FIELDS.items():
        value = getattr(args, opt)
        if value is not None:
            base[name] = value
    if args.batch_size is not None:
        base["batch_size"] = args.batch_size
        base["batch_size_by_resolution"] = {}
    if args.no_mirror:
        base["mirror"] = False
    if args.no_amp:
        base["mixed_precision"] = False
    base["out"] = str(out)
    if not base.get("data"):
        raise ConfigError("--data DIR is required (a folder of UV textures)")
    return TrainConfig.from_dict(base)


def run_train(args: argparse.Namespace) -> int:
    """``ganfit texture train``."""
    from ..training.texture_gan import train

    cfg = _build_config(args)
    result = train(cfg, progress=not args.quiet, resume=args.resume)
    if not args.quiet:
        h = w = cfg.generator_config().resolution_at(result.level)[0]
        last = result.swd_history[-1] if result.swd_history else None
        swd_text = f", SWD {last['swd']['mean']:.4f} at {last['resolution']} px" if last else ""
        print(f"trained {result.step} steps ({result.images_seen / 1000:.1f} kimg) in {result.seconds:.0f} s, "
              f"reached {h}x{w} (alpha {result.alpha:.2f}){swd_text}; wrote {result.model_path}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    """``ganfit texture sample``."""
    import torch

    from ..io.images import save_png
    from ..model.texture.pggan import TexturePGGAN
    from .._device import resolve_device
    from ..training.grids import make_grid

    if args.num < 1:
        raise ConfigError(f"-n must be at least 1, got {args.num}")
    if args.columns is not None and args.columns < 1:
        raise ConfigError(f"--columns must be at least 1, got {args.columns}")
    device = resolve_device(args.device or "auto")
    model = TexturePGGAN.load(args.model, device=device)
    z = model.sample(args.num, torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        textures = torch.cat([model.decode(chunk) for chunk in z.split(16)])
    save_png(args.output, make_grid(textures, args.columns, min_tile=1))
    if not args.quiet:
        h, w = model.resolution
        print(f"wrote {args.output}: {args.num} textures of {h}x{w} from {args.model} (seed {args.seed})")
    return 0
