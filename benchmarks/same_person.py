"""Several photos of one person (issue 13): independent vs shared vs averaged identity, judged on a held-back
photo. Reads the dev multi-view sets (../shared/faces/dev/multiview) in place.

    python benchmarks/same_person.py [--sets ...] [--no-joint] [--checkpoint /tmp/ganfit-same-person.json]
    python benchmarks/same_person.py --report

For every set of three photos of one person and each photo held back in turn (a "fold"), the other two are
fitted (a) each on its own, (b) as one person with one shared shape (`same_person="shared"`), (c) with GANFit's
average (`"average"`), landmark stage only; and with the joint stage (dlib identity, shipped texture GAN) (a)
on their own, (b) shared (shape and texture latent tied) and (c) averaged (each photo on its own, the mean
shape and latent, then each photo refitted around them). Measures:
- shape: the aligned distance (mm, face region; #6's measure) between each fit's neutral shape and the
  held-back photo's own fit, against the same distance to other people's held-back fits (ratio: lower is a
  more person-specific shape);
- landmark NME (% of face size) of the fitted photos: what sharing costs each view;
- identity (joint stage): dlib cosine of each fitted photo's render over neutral grey (aligned by that photo's
  fitted landmarks) to the held-back photo, minus the mean cosine to every other person's held-back photos
  (gap), and rank-1 (the held-back photo of the same person closer than every other person's).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _joint_measures import Shapes, cos  # noqa: E402

from ganfit.fitting import FitConfig, Fitter  # noqa: E402
from ganfit.fitting.joint_overlay import joint_render  # noqa: E402
from ganfit.fitting.losses import face_size  # noqa: E402
from ganfit.fitting.metrics import aligned_vertex_error  # noqa: E402
from ganfit.perception.identity.dlib_resnet import DlibResNet  # noqa: E402

MULTIVIEW = ROOT.parent / "shared" / "faces" / "dev" / "multiview"
MODES = {"independent": None, "shared": "shared", "average": "average"}
JOINT_MODES = ("independent", "shared", "average")


def photo_sets(names: list[str] | None) -> dict[str, list[Path]]:
    sets = {}
    for folder in sorted(MULTIVIEW.iterdir()) if MULTIVIEW.is_dir() else []:
        if names and folder.name not in names:
            continue
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if len(photos) >= 3:
            sets[folder.name] = photos[:3]
    return sets


def embed_grey(net, model, result, i: int) -> list[float]:
    """dlib embedding of fit i's joint render over neutral grey, aligned by its fitted landmarks."""
    size = tuple(float(v) for v in result.camera.image_size[i])
    rgba = joint_render(model, result.joint, i, size, max_side=512)
    scale = min(1.0, 512 / max(size))
    img = rgba[..., :3] + (1 - rgba[..., 3:]) * 0.5
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    lm = result.landmarks_fitted[i:i + 1].float() * scale
    with torch.no_grad():
        return net.embed(t, lm)[0].tolist()


def run(args, ck: dict, path: Path) -> None:
    sets = photo_sets(args.sets)
    net = DlibResNet()
    base = FitConfig(device="cpu", quiet=True, texture_size=0, threads=1)
    fitter = Fitter(base)
    model = fitter.model
    shapes = Shapes(model)
    t0 = time.perf_counter()
    for name, photos in sets.items():  # every photo alone: the held-back references
        for p in photos:
            key = f"{name}/{p.name}"
            if key in ck["photos"]:
                continue
            try:
                r = fitter.fit([str(p)])
            except Exception as exc:  # a photo without a face: its folds are skipped
                print(f"{key}: {type(exc).__name__}: {exc}", file=sys.stderr)
                ck["photos"][key] = None
                continue
            img = torch.from_numpy(np.asarray(r.images[0], dtype=np.float32)).permute(2, 0, 1)[None]
            with torch.no_grad():
                emb = net.embed(img, r.landmarks_target.float())[0].tolist()
            ck["photos"][key] = dict(person=name, shape=r.params.shape[0].tolist(), emb=emb)
    path.write_text(json.dumps(ck))
    for name, photos in sets.items():
        for held in photos:
            train = [p for p in photos if p != held]
            if ck["photos"].get(f"{name}/{held.name}") is None or any(ck["photos"].get(f"{name}/{p.name}") is None for p in train):
                continue
            runs = [(m, False) for m in MODES] + ([(m, True) for m in JOINT_MODES] if args.joint else [])
            for mode, joint in runs:
                key = f"{'joint' if joint else 'landmarks'}/{mode}/{name}/{held.name}"
                if key in ck["folds"]:
                    continue
                cfg = base.replace(same_person=MODES[mode] or "shared")
                if joint:
                    from ganfit.fitting.stages import JointStageConfig

                    cfg = cfg.with_stages(["landmarks", JointStageConfig(same_person=MODES[mode] or "shared")])
                t = time.perf_counter()
                r = Fitter(cfg, model=model).fit([str(p) for p in train],
                                                 subjects=None if MODES[mode] is None else [0] * len(train))
                seconds = time.perf_counter() - t
                fs = face_size(r.landmarks_target.double())
                rec = dict(person=name, held=f"{name}/{held.name}", seconds=seconds,
                           shapes=r.params.shape.tolist(),
                           nme=(100 * r.reprojection_error_px().double() / fs).tolist())
                if joint:
                    rec["emb_grey"] = [embed_grey(net, model, r, i) for i in range(len(r))]
                ck["folds"][key] = rec
                path.write_text(json.dumps(ck))
                print(f"[{time.perf_counter() - t0:6.0f} s] {key}: NME {np.mean(rec['nme']):.2f} % {seconds:.1f} s",
                      file=sys.stderr, flush=True)
    del shapes


def report(ck: dict) -> str:
    from ganfit.model.registry import load_model

    shapes = Shapes(load_model("bfm-3ddfa"))
    photos = {k: v for k, v in ck["photos"].items() if v is not None}
    held_of = {k: v for k, v in photos.items()}
    lines = []
    people = sorted({v["person"] for v in photos.values()})
    for stage in ("landmarks", "joint"):
        rows = []
        for mode in (MODES if stage == "landmarks" else JOINT_MODES):
            folds = {k: v for k, v in ck["folds"].items() if k.startswith(f"{stage}/{mode}/")}
            if not folds:
                continue
            same, diff, nmes, secs, gaps, rank1, cs = [], [], [], [], [], [], []
            for rec in folds.values():
                ref = shapes.neutral(held_of[rec["held"]]["shape"])
                others = [shapes.neutral(v["shape"]) for k, v in held_of.items() if v["person"] != rec["person"]]
                for s in rec["shapes"]:
                    mine = shapes.neutral(s)
                    same.append(float(aligned_vertex_error(mine, ref)[0]))
                    diff.append(float(np.mean([float(aligned_vertex_error(mine, o)[0]) for o in others])))
                nmes += rec["nme"]
                secs.append(rec["seconds"])
                for emb in rec.get("emb_grey", []):
                    c_same = cos(emb, held_of[rec["held"]]["emb"])
                    c_other = [cos(emb, v["emb"]) for v in held_of.values() if v["person"] != rec["person"]]
                    cs.append(c_same)
                    gaps.append(c_same - float(np.mean(c_other)))
                    rank1.append(float(c_same > max(c_other)))
            ident = (f"{np.mean(cs):.3f} / {np.mean(gaps):.3f} / {np.mean(rank1):.2f}" if gaps else "-")
            rows.append(f"| {stage} | {mode} | {len(folds)} | {np.mean(same):.2f} / {np.mean(diff):.2f} / "
                        f"{np.mean(same) / np.mean(diff):.3f} | {np.mean(nmes):.2f} | {ident} | {np.mean(secs):.1f} |")
        lines += rows
    head = (f"{len(people)} people ({', '.join(people)}), 3 photos each, each held back in turn; the other two fitted.\n\n"
            "| stages | identity | folds | shape to held-back photo mm / to other people mm / ratio | NME % | "
            "identity over grey: cos to held-back / gap / rank-1 | s per fold (2 photos) |\n|---|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", default=None, help="multi-view set names (default: all with 3 photos)")
    ap.add_argument("--no-joint", dest="joint", action="store_false", help="landmark stage only")
    ap.add_argument("--checkpoint", default="/tmp/ganfit-same-person.json")
    ap.add_argument("--report", action="store_true", help="only print the table of the checkpoint")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = Path(args.checkpoint)
    ck = json.loads(path.read_text()) if path.is_file() else {"photos": {}, "folds": {}}
    if not args.report:
        run(args, ck, path)
    print(report(ck))


if __name__ == "__main__":
    main()
