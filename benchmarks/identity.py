"""Identity-network speed: forward and forward + backward (gradient to the input pixels, as the
identity and content losses need) of each available `IdentityNet`, at several batch sizes.

    python benchmarks/identity.py [--arch r50 ...] [--weights PATH] [--batches 1 16] [--repeats 3]
                                  [--threads 2] [--device cpu] [--size 512]

Networks: ArcFace iresnets (random weights unless --weights is given: the timing does not depend on
the values) and dlib's face-descriptor ResNet (`ganfit.perception.identity.dlib_resnet.DlibResNet`)
when it imports and its weights are installed. Inputs: random RGB images of --size pixels with one
68-point face of about 60 % of the image width (dlib's mean face shape), so both networks crop and
align as in a fit. "embed" times `embed` + backward of the sum of the embeddings; "embed+features"
adds the content-loss feature maps. Median of --repeats after one warm-up; a markdown table with
the time of each row relative to the first.
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

from ganfit.fitting.losses import content_loss, identity_loss  # noqa: E402
from ganfit.perception.identity.arcface import ARCFACE_TEMPLATE_112, ArcFace, iresnet  # noqa: E402


def face_landmarks(size: int) -> torch.Tensor:
    """(1, 68, 2) a frontal face filling about 60 % of a size x size image."""
    try:
        from ganfit.perception.identity.dlib_chip import MEAN_FACE_68

        inner = torch.as_tensor(MEAN_FACE_68, dtype=torch.float32)  # points 17-67 in a unit square
        lm = torch.zeros(68, 2)
        lm[17:] = inner
        t = torch.linspace(0, 1, 17)  # a jaw line below the inner points
        lm[:17, 0] = t
        lm[:17, 1] = 0.35 + 0.75 * torch.sin(torch.pi * t)
    except ImportError:
        tmpl = torch.tensor(ARCFACE_TEMPLATE_112) / 112.0
        lm = torch.full((68, 2), 0.5)
        lm[36:42], lm[42:48], lm[30], lm[48], lm[54] = tmpl[0], tmpl[1], tmpl[2], tmpl[3], tmpl[4]
    return (lm * 0.6 * size + 0.2 * size)[None]


def time_net(net, images: torch.Tensor, landmarks: torch.Tensor, repeats: int, with_features: bool) -> tuple[float, float]:
    """(forward ms, forward+backward ms), medians."""
    fwd, both = [], []
    for i in range(repeats + 1):
        x = images.clone().requires_grad_(True)
        t0 = time.perf_counter()
        emb = net.embed(x, landmarks)
        loss = identity_loss(emb, torch.ones_like(emb)).sum()
        if with_features:
            feats = net.features(x, landmarks)
            loss = loss + content_loss(feats, [torch.zeros_like(f) for f in feats]).sum()
        if images.is_cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        loss.backward()
        if images.is_cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if i > 0:  # the first run warms up allocators and kernels
            fwd.append(1e3 * (t1 - t0))
            both.append(1e3 * (t2 - t0))
    return statistics.median(fwd), statistics.median(both)


def build_nets(args) -> list[tuple[str, object]]:
    nets: list[tuple[str, object]] = []
    if args.weights:
        net = ArcFace(args.weights, device=args.device)
        nets.append((net.name + " (weights)", net))
    for arch in args.arch:
        torch.manual_seed(0)
        nets.append((f"arcface-{arch} (random)", ArcFace(iresnet(arch), device=args.device)))
    if not args.skip_dlib:
        try:
            from ganfit.perception.identity.dlib_resnet import DlibResNet

            nets.append(("dlib-resnet", DlibResNet(device=args.device)))
        except Exception as exc:  # noqa: BLE001 - a benchmark reports what it could not run
            print(f"(dlib network skipped: {type(exc).__name__}: {exc})", file=sys.stderr)
    return nets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="*", default=["r50"], help="random-weight iresnets to time (r18 r34 r50 r100)")
    ap.add_argument("--weights", help="also time ArcFace loaded from this .onnx / pack folder / .pth")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=512, help="input image side in pixels")
    ap.add_argument("--features", action="store_true", help="also time embed + content-loss features")
    ap.add_argument("--skip-dlib", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    nets = build_nets(args)
    if not nets:
        print("no network to time", file=sys.stderr)
        return 1
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, net in nets:
        for batch in args.batches:
            images = torch.rand(batch, 3, args.size, args.size, generator=g).to(args.device)
            lm = face_landmarks(args.size).expand(batch, -1, -1).to(args.device)
            modes = [("embed", False)] + ([("embed+features", True)] if args.features else [])
            for mode, with_feats in modes:
                f, fb = time_net(net, images, lm, args.repeats, with_feats)
                rows.append((name, mode, batch, f, fb))
                print(f"  {name} {mode} batch {batch}: fwd {f:.1f} ms, fwd+bwd {fb:.1f} ms", file=sys.stderr)

    print(f"\ndevice {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.size}x{args.size} inputs, median of {args.repeats}\n")
    print("| network | pass | batch | fwd ms | fwd+bwd ms | fwd+bwd ms / image | vs first row |")
    print("|---|---|---:|---:|---:|---:|---:|")
    base = rows[0][4]
    for name, mode, batch, f, fb in rows:
        print(f"| {name} | {mode} | {batch} | {f:.1f} | {fb:.1f} | {fb / batch:.1f} | {fb / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
