"""Identity benchmark, dlib part: the PyTorch port of dlib's face-descriptor ResNet against dlib itself,
and its speed.

    python benchmarks/identity_dlib.py [--photos 40] [--threads 2] [--repeats 5] [--skip-timing]

Parity: for the bundled astronaut photo, rescaled and shifted copies of it, and the photos in
../shared/faces/dev/photos (largest face each), dlib detects the face and its 68 landmarks; dlib's
``face_recognition_model_v1.compute_face_descriptor`` and ``get_face_chip`` run on the uint8 image
with those (integer) landmarks, and `DlibResNet` on the same image as float [0, 1]. Reported: the
pyramid level dlib samples the chip from (-1: full resolution), chip differences in grey levels
(mean signed, mean absolute; rounding "exact" and "mean"), and the largest absolute difference of the
128-D descriptors for each rounding mode, plus the cosine for "mean" (the default). "net only" feeds
dlib's own chip to both networks.

Speed: forward + backward (gradient to the input pixels) of `embed` on 512x512 images, batch 1 and 16,
median of repeats; and the descriptor network alone on 150x150 chips. dlib's own CPU time for one
descriptor (chip extraction included) for comparison. Parse time of the .dat file.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit.io.images import load_image  # noqa: E402
from ganfit.perception.detect import DlibDetector, select_face  # noqa: E402
from ganfit.perception.identity.dlib_chip import face_chip_details, pyramid_plan  # noqa: E402
from ganfit.perception.identity.dlib_resnet import DlibResNet, default_weights_path, read_dlib_net  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "faces" / "dev" / "photos"


def astronaut_variants() -> list[tuple[str, np.ndarray]]:
    """(name, uint8 (H, W, 3)) copies of the astronaut: original, rescaled, shifted/cropped."""
    base = np.asarray(PILImage.open(ROOT / "examples" / "astronaut.png").convert("RGB"))
    pil = PILImage.fromarray(base)
    out = [("astronaut", base)]
    for factor in (0.6, 1.5, 2.0, 3.0):
        size = (round(base.shape[1] * factor), round(base.shape[0] * factor))
        out.append((f"astronaut x{factor:g}", np.asarray(pil.resize(size, PILImage.Resampling.BICUBIC))))
    out.append(("astronaut crop+17+9", np.ascontiguousarray(base[9:400, 17:430])))
    out.append(("astronaut crop+40+3 x1.3", np.asarray(PILImage.fromarray(base[3:450, 40:470]).resize(
        (round(430 * 1.3), round(447 * 1.3)), PILImage.Resampling.BILINEAR))))
    return out


def photo_set(limit: int) -> list[tuple[str, np.ndarray]]:
    if not PHOTOS.is_dir():
        return []
    out = []
    for path in sorted(PHOTOS.iterdir())[:limit]:
        try:
            pixels = load_image(path).pixels
        except Exception:  # noqa: BLE001 - a benchmark skips unreadable files
            continue
        out.append((path.name[:44], np.clip(pixels * 255 + 0.5, 0, 255).astype(np.uint8)))
    return out


def parity_row(name, u8, detector, rec, models, dlib) -> dict | None:
    faces = detector.detect(u8)
    if not faces:
        return None
    face = select_face(faces) if len(faces) > 1 else faces[0]
    lm = np.round(face.landmarks)
    rect = dlib.rectangle(*[int(v) for v in np.round(face.box)])
    shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in lm])
    ref = np.array(rec.compute_face_descriptor(u8, shape))
    ref_chip = np.asarray(dlib.get_face_chip(u8, shape, 150, 0.25)).astype(np.float64)
    ref_net = np.array(rec.compute_face_descriptor(np.asarray(dlib.get_face_chip(u8, shape, 150, 0.25))))
    x = torch.from_numpy(np.array(u8)).permute(2, 0, 1)[None].float() / 255.0
    lmt = torch.from_numpy(lm)[None]
    det = face_chip_details(lmt)
    _, level = pyramid_plan(tuple(det.center[0].tolist()), float(det.extent[0]), float(det.cos[0]),
                            float(det.sin[0]), 150, u8.shape[:2])
    row = {"name": name, "size": f"{u8.shape[1]}x{u8.shape[0]}", "scale": float(det.scale[0]), "level": level,
           "norm": float(np.linalg.norm(ref))}
    with torch.no_grad():
        chip_t = torch.from_numpy(ref_chip).permute(2, 0, 1)[None].float() / 255.0
        row["net_only"] = float(np.abs(models["mean"].net(chip_t).numpy()[0] - ref_net).max())
        for mode, model in models.items():
            chip = model.chips(x, lmt)[0].permute(1, 2, 0).double().numpy() * 255.0
            d = model.descriptor(x, lmt).double().numpy()[0]
            row[f"chip_{mode}"] = (float((chip - ref_chip).mean()), float(np.abs(chip - ref_chip).mean()))
            row[f"desc_{mode}"] = float(np.abs(d - ref).max())
            if mode == "mean":
                row["cos"] = float(d @ ref / np.linalg.norm(d) / np.linalg.norm(ref))
    return row


def timed(fn, repeats: int) -> str:
    """Median wall time and median process CPU time (all threads) of `fn`, in ms. CPU time is the
    steadier number on a shared machine."""
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return f"{statistics.median(walls) * 1000:7.1f} ms (cpu {statistics.median(cpus) * 1000:7.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=40, help="how many dev photos to compare on (0: none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-timing", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import dlib

    path = default_weights_path()
    t0 = time.perf_counter()
    parsed = read_dlib_net(path)
    parse_s = time.perf_counter() - t0
    print(f"parsed {path.name}: {len(parsed.layers)} layers, {parsed.num_parameters():,} values in "
          f"{parse_s * 1000:.0f} ms")
    t0 = time.perf_counter()
    models = {mode: DlibResNet(rounding=mode) for mode in ("exact", "mean", "none")}
    print(f"DlibResNet() load + build: {(time.perf_counter() - t0) / 3 * 1000:.0f} ms")
    rec = dlib.face_recognition_model_v1(str(path))
    detector = DlibDetector()

    rows = []
    for name, u8 in astronaut_variants() + photo_set(args.photos):
        row = parity_row(name, u8, detector, rec, models, dlib)
        if row is not None:
            rows.append(row)
    head = (f"{'image':44s} {'size':>9s} {'scale':>5s} {'lvl':>3s} {'norm':>5s} | {'chip exact':>12s} "
            f"{'chip mean':>12s} | {'net only':>8s} {'exact':>8s} {'mean':>8s} {'none':>8s} {'cos mean':>10s}")
    print("\nParity with dlib (chip: mean signed / mean abs grey-level difference; descriptors: max abs diff)")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['name']:44s} {r['size']:>9s} {r['scale']:5.2f} {r['level']:3d} {r['norm']:5.2f} | "
              f"{r['chip_exact'][0]:+5.2f}/{r['chip_exact'][1]:5.2f} {r['chip_mean'][0]:+5.2f}/{r['chip_mean'][1]:5.2f} | "
              f"{r['net_only']:8.1e} {r['desc_exact']:8.1e} {r['desc_mean']:8.1e} {r['desc_none']:8.1e} {r['cos']:10.7f}")
    for key in ("net_only", "desc_exact", "desc_mean", "desc_none"):
        vals = np.array([r[key] for r in rows])
        print(f"{key:10s}: median {np.median(vals):.1e}, max {vals.max():.1e} over {len(vals)} faces")
    print(f"cos (mean): min {min(r['cos'] for r in rows):.7f}; descriptor norms "
          f"{min(r['norm'] for r in rows):.2f}-{max(r['norm'] for r in rows):.2f}")

    if args.skip_timing:
        return
    model = models["mean"]
    base = np.asarray(PILImage.open(ROOT / "examples" / "astronaut.png").convert("RGB"))
    face = detector.detect(base)[0]
    print(f"\nSpeed on CPU ({args.threads} threads), median of {args.repeats}:")
    for batch in (1, 16):
        images = (torch.from_numpy(base.copy()).permute(2, 0, 1)[None].float() / 255).repeat(batch, 1, 1, 1)
        lms = torch.from_numpy(face.landmarks)[None].repeat(batch, 1, 1)

        def fwd_bwd():
            x = images.clone().requires_grad_(True)
            model.embed(x, lms).sum().backward()

        def fwd():
            with torch.no_grad():
                model.embed(images, lms)

        chips = torch.rand(batch, 3, 150, 150)

        def net_fwd_bwd():
            c = chips.clone().requires_grad_(True)
            model.net(c).sum().backward()

        print(f"  batch {batch:2d}: embed fwd {timed(fwd, args.repeats)}, embed fwd+bwd {timed(fwd_bwd, args.repeats)}, "
              f"network alone fwd+bwd {timed(net_fwd_bwd, args.repeats)}")
    rect = dlib.rectangle(*[int(v) for v in np.round(face.box)])
    shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in np.round(face.landmarks)])
    print(f"  dlib compute_face_descriptor (1 face): {timed(lambda: rec.compute_face_descriptor(base, shape), args.repeats)}")


if __name__ == "__main__":
    main()
