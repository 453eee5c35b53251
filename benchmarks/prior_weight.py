"""How strong should the shape/expression priors of the landmark stage be? Three measures, one table.

    python benchmarks/prior_weight.py [--faces ../shared/faces/dev] [--weights 2e-6 6e-7 2e-7] [--photos 50]

For each prior weight w (`LossWeights.shape_prior` = `expression_prior` = w):
1. Synthetic 3D error (mm, face region, after similarity alignment) on 100 faces drawn from the model's
   priors, with 1 px and with 3 px of landmark noise (as `benchmarks/landmark_fit.py`). This has 3D ground
   truth, but the faces lie inside the model and follow its prior.
2. Held-out landmarks on real photos: fit to the even-numbered landmarks only and measure the error on
   the odd-numbered ones, then the other way round (2-fold cross-validation over landmarks; NME in % of
   the face size; `--photos` photos of ../shared/faces/dev/photos, every third one). Too strong a prior
   cannot follow the face; too weak a prior follows dlib's noise.
3. Identity consistency on real photos of the same person (the video frames and multi-view sets of
   ../shared/faces/dev, the synthetic ffhq-uv set left out): the neutral shapes fitted to frames of one person should
   agree, and those of different people should differ. Reported: mean pairwise distance (mm, after
   similarity alignment) within people, between people, and their ratio (lower is better).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ganfit import FitConfig, Fitter  # noqa: E402
from ganfit.errors import GanfitError  # noqa: E402
from ganfit.fitting.config import LossWeights  # noqa: E402
from ganfit.fitting.losses import face_size  # noqa: E402
from ganfit.fitting.metrics import aligned_vertex_error  # noqa: E402
from ganfit.fitting.synthetic import make_synthetic_faces  # noqa: E402
from ganfit.io.images import load_image  # noqa: E402
from ganfit.perception.detect import make_detector, select_face  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def detected(paths, detector) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for p in paths:
        try:
            img = load_image(p)
            out.append((img.pixels, np.asarray(select_face(detector.detect(img.pixels), None).landmarks, np.float64)))
        except GanfitError:
            pass
    return out


def fitter(w: float, landmark_weights=None) -> Fitter:
    return Fitter(FitConfig(texture_size=0, quiet=True, device="cpu", landmark_weights=landmark_weights,
                            weights=LossWeights(shape_prior=w, expression_prior=w)))


def synthetic_mm(model, w: float, noise: float) -> float:
    from landmark_fit import accuracy

    syn = make_synthetic_faces(model, 100, torch.Generator().manual_seed(0), noise_px=noise)
    mask = torch.as_tensor(model.regions["face"])
    return float(accuracy(model, syn, torch.full((100, 2), 512.0), mask, w_shape=w, w_expr=w)["vertex_mm"].mean())


def held_out_nme(photos, w: float) -> float:
    errors = []
    for fold in (np.arange(68) % 2 == 0, np.arange(68) % 2 == 1):
        fit = fitter(w, tuple(float(x) for x in fold))
        for pixels, lms in photos:
            res = fit.fit(pixels, landmarks=lms)
            t, f = res.landmarks_target[0].double(), res.landmarks_fitted[0].double()
            e = (f - t).norm(dim=-1) / face_size(t[None])[0]
            errors.append(float(e[torch.as_tensor(~fold)].mean()))
    return float(np.mean(errors))


def consistency(sets: dict, w: float) -> tuple[float, float]:
    fit = fitter(w)
    model = fit.model
    mask = torch.as_tensor(model.regions["face"])
    neutral = {}
    for name, items in sets.items():
        shapes = torch.stack([fit.fit(px, landmarks=lm).params.shape[0].detach().double() for px, lm in items])
        neutral[name] = model.vertices(shapes, torch.zeros(len(shapes), model.num_expression, dtype=torch.float64))
    dist = lambda a, b: float(aligned_vertex_error(a[None], b[None], mask)[0])  # noqa: E731
    within = [dist(v[i], v[j]) for v in neutral.values() for i, j in itertools.combinations(range(len(v)), 2)]
    between = [dist(a[i], b[j]) for a, b in itertools.combinations(neutral.values(), 2) for i in range(min(3, len(a)))
               for j in range(min(3, len(b)))]
    return float(np.mean(within)), float(np.mean(between))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", default=str(ROOT.parent / "shared" / "faces" / "dev"), help="the dev corpus folder")
    ap.add_argument("--weights", type=float, nargs="+", default=[2e-6, 6e-7, 2e-7], help="prior weights to compare")
    ap.add_argument("--photos", type=int, default=50, help="photos for the held-out landmark measure")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    faces = Path(args.faces)
    detector = make_detector("dlib")
    images = lambda d: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)  # noqa: E731
    photos = detected(images(faces / "photos")[::3][: args.photos], detector)
    sets = {}
    for d in sorted((faces / "sequences").iterdir()) + sorted((faces / "multiview").iterdir()):
        if d.is_dir() and not d.name.startswith("ffhq"):
            items = detected(images(d)[:12], detector)
            if len(items) >= 2:
                sets[d.name] = items
    print(f"{len(photos)} photos for held-out landmarks; {len(sets)} people with {sum(map(len, sets.values()))} "
          f"frames/views for consistency\n", file=sys.stderr)
    model = fitter(args.weights[0]).model
    print("| prior weight | synthetic 3D mm, 1 px noise | synthetic 3D mm, 3 px noise | real photos: held-out landmark "
          "NME % | same person mm | different people mm | ratio |")
    print("|---|---|---|---|---|---|---|")
    for w in args.weights:
        s1, s3 = synthetic_mm(model, w, 1.0), synthetic_mm(model, w, 3.0)
        nme = held_out_nme(photos, w)
        within, between = consistency(sets, w)
        print(f"| {w:.0e} | {s1:.3f} | {s3:.3f} | {100 * nme:.2f} | {within:.2f} | {between:.2f} | {within / between:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
