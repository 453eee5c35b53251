"""`ganfit texture build-dataset` and `ganfit texture build-pca`: the data side of texture models.

`add_data_parsers(subparsers)` adds both sub-commands to the ``ganfit texture`` sub-parser group; each
handler returns an exit code, and errors a user can cause are raised as `GanfitError` subclasses for
`ganfit.cli.main` to print.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import ConfigError, OutputError

log = logging.getLogger("ganfit")

BUILD_DATASET_EPILOG = """\
outputs (in UV_DIR):
  NAME.png        the photo unwrapped into the face model's UV layout, its lighting divided out (SH light
                  fitted with the face's shape and a mean albedo), the unseen side completed by symmetry
                  and Poisson fill (train the GAN / PCA on these)
  NAME_mask.png   per-texel validity (black: completed, white: seen frontally under good light)
  records.jsonl   one line per photo: source repo, commit, path, sha256, licence, identity, split, labels,
                  every filter measure, fit error, pose, light, asymmetry before/after; or why rejected
  manifest.json   all records with the settings, face model, UV layout id and counts
Filters (thresholds below): per-person cap, duplicates, no face, a second large face, small face,
grayscale, blur, landmark error, pose, visibility, light left after de-lighting. A build into a folder
with records.jsonl continues where it stopped.

sources file (--sources, JSON or YAML; see ganfit.training.uv_sources):
  sources:
    - {name: utkface, root: /data/utkface, repo: github:mattans/AgeProgression, commit: 2d937c6,
       path: data/UTKFace/unlabeled, licence: "non-commercial research", labels: utkface, identity: file}

examples:
  ganfit texture build-dataset photos/ -o uv/
  ganfit texture build-dataset --sources sources.yaml -o corpus/ --resolution 256 -v
"""

BUILD_PCA_EPILOG = """\
The model is a PCA of the completed UVs; with masks (the default) it is fitted by EM so the completed
(unseen) texels are predicted by the model instead of being taken as data. Use it as the fitter's
texture model or as a baseline for the GAN.

examples:
  ganfit texture build-pca uv/ -o pca.npz
  ganfit texture build-pca uv/ -o pca.npz --components 80 --resolution 128
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def add_data_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``build-dataset`` and ``build-pca`` to the ``ganfit texture`` sub-commands."""
    from ..training.uv_dataset import DEFAULT_VALIDATION_FRACTION
    from ..training.uv_filters import FilterConfig

    d = FilterConfig()

    p = subparsers.add_parser(
        "build-dataset",
        help="fit every photo in a folder (or sources file) and write its de-lit, completed UV texture + validity mask",
        description="Build a UV texture corpus for training a texture model: detect and fit the face in every "
        "photo under PHOTOS_DIR (recursively) or of the --sources, unwrap the photo into the face model's UV "
        "layout, divide out its lighting, complete the parts it does not show, and write UV_DIR/NAME.png, "
        "NAME_mask.png, records.jsonl and manifest.json. Resumable.",
        epilog=BUILD_DATASET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("photos_dir", metavar="PHOTOS_DIR", nargs="?", default=None,
                   help="folder of photos (searched recursively; JPEG, PNG, TIFF, WebP, BMP, ...); or use --sources")
    p.add_argument("--sources", metavar="FILE", default=None,
                   help="JSON/YAML list of photo folders with their repository, commit, licence, labels and identities")
    p.add_argument("-o", "--output", required=True, metavar="UV_DIR", help="folder for the UV textures, masks and manifest.json (created if needed)")
    p.add_argument("--resolution", type=_positive_int, default=256, metavar="PX",
                   help="side of the square UV textures written (and unwrapped), 16-1024 (default: %(default)s)")
    p.add_argument("--max-error", type=float, default=d.max_landmark_error, metavar="F",
                   help="reject fits whose mean landmark error exceeds this fraction of the face size "
                   "(default: %(default)s)")
    p.add_argument("--min-visible", type=_fraction, default=d.min_visible, metavar="F",
                   help="reject photos showing less than this fraction of the face region's texels "
                   "(mask > 0.5) (default: %(default)s)")
    p.add_argument("--duplicate-distance", type=int, default=d.duplicate_distance, metavar="BITS",
                   help="photos whose 64-bit perceptual hashes differ in at most this many bits from an accepted "
                   "photo are near duplicates and skipped; -1: only byte-identical duplicates (default: %(default)s)")
    p.add_argument("--min-face-px", type=float, default=d.min_face_px, metavar="PX",
                   help="reject faces narrower than this (landmarks' bounding box, photo pixels) (default: %(default)s)")
    p.add_argument("--min-colourfulness", type=float, default=d.min_colourfulness, metavar="F",
                   help="reject face crops whose mean chroma (max - min of RGB) is below this: grayscale photos "
                   "(default: %(default)s)")
    p.add_argument("--min-sharpness", type=float, default=d.min_sharpness, metavar="F",
                   help="reject face crops whose sharpness (Laplacian std / grey std at 128 px) is below this: blur "
                   "(default: %(default)s)")
    p.add_argument("--max-yaw", type=float, default=d.max_yaw_deg, metavar="DEG",
                   help="reject fits turned further than this (also the pitch limit) (default: %(default)s)")
    p.add_argument("--second-face-ratio", type=float, default=d.second_face_ratio, metavar="F",
                   help="reject photos whose second face is at least this fraction of the largest's width "
                   "(default: %(default)s)")
    p.add_argument("--max-residual-asymmetry", type=float, default=d.max_residual_asymmetry, metavar="F",
                   help="reject UVs whose left/right log-brightness asymmetry after de-lighting is above this "
                   "(default: %(default)s)")
    p.add_argument("--max-per-identity", type=_positive_int, default=None, metavar="N",
                   help="accept at most N photos of one person (default: no cap)")
    p.add_argument("--no-delight", action="store_true", help="keep the photo's lighting (no SH division)")
    p.add_argument("--validation-fraction", type=float, default=DEFAULT_VALIDATION_FRACTION, metavar="F",
                   help="share of identities in the validation split (default: %(default)s)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="stop after N new photos")
    p.add_argument("--seed", type=int, default=0, help="seed of the (shuffled, resumable) build order (default: 0)")
    p.add_argument("--model", default="bfm-3ddfa", metavar="NAME|PATH",
                   help="face model whose UV layout the textures use: bfm-3ddfa (default) or a model file")
    p.add_argument("--detector", choices=["dlib", "fan"], default="dlib",
                   help="landmark detector: dlib (offline default) or fan (needs ganfit[fan] and its weights)")
    p.add_argument("--device", default="auto", metavar="DEV",
                   help="auto (CUDA if available), cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary; errors only")
    p.set_defaults(func=run_build_dataset)

    p = subparsers.add_parser(
        "build-pca",
        help="build a linear (PCA) texture model from a UV dataset",
        description="Principal component analysis of the completed UV textures written by `ganfit texture "
        "build-dataset`, saved as a linear texture model (.npz) for the face model's UV layout.",
        epilog=BUILD_PCA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("uv_dir", metavar="UV_DIR", help="folder written by `ganfit texture build-dataset`")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.npz", help="where to write the model (.npz)")
    p.add_argument("--components", type=_positive_int, default=50, metavar="K",
                   help="number of principal components, at most the number of UVs minus one (default: %(default)s)")
    p.add_argument("--resolution", type=_positive_int, default=None, metavar="PX",
                   help="resize the UVs to PX x PX first (default: the dataset's resolution); lower it for big datasets")
    p.add_argument("--no-masks", action="store_true",
                   help="plain PCA of the completed UVs, treating the completed (unseen) texels as data")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary; errors only")
    p.set_defaults(func=run_build_pca)


def run_build_dataset(args: argparse.Namespace) -> int:
    """Handler of ``ganfit texture build-dataset``; returns the exit code (0, or 1 when nothing was written)."""
    from ..training.uv_dataset import build_uv_dataset
    from ..training.uv_filters import FilterConfig
    from ..training.uv_sources import load_sources

    if (args.photos_dir is None) == (args.sources is None):
        raise ConfigError("give either PHOTOS_DIR or --sources FILE")
    filters = FilterConfig(
        max_landmark_error=args.max_error, min_visible=args.min_visible, duplicate_distance=args.duplicate_distance,
        min_face_px=args.min_face_px, min_colourfulness=args.min_colourfulness, min_sharpness=args.min_sharpness,
        max_yaw_deg=args.max_yaw, max_pitch_deg=args.max_yaw, second_face_ratio=args.second_face_ratio,
        max_residual_asymmetry=args.max_residual_asymmetry, max_per_identity=args.max_per_identity,
    )
    report = build_uv_dataset(
        args.photos_dir, args.output, sources=load_sources(args.sources) if args.sources else None,
        resolution=args.resolution, filters=filters, delight=not args.no_delight,
        validation_fraction=args.validation_fraction, limit=args.limit, seed=args.seed, device=args.device,
        model=args.model, detector=args.detector, quiet=args.quiet,
    )
    if not args.quiet:
        print(report.summary())
        print(f"manifest: {report.manifest}")
    if report.written == 0:
        log.error("no UV texture was written; see the reasons in %s", report.manifest)
        return 1
    return 0


def run_build_pca(args: argparse.Namespace) -> int:
    """Handler of ``ganfit texture build-pca``; returns the exit code."""
    from ..model.texture.linear import build_pca

    out = Path(args.output)
    if out.suffix.lower() != ".npz":
        raise ConfigError(f"the model is written as .npz; give -o a path ending in .npz, got {out}")
    if not out.parent.exists() and str(out.parent):
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {out.parent}: {exc.strerror or exc}") from exc
    model = build_pca(args.uv_dir, components=args.components, resolution=args.resolution, use_masks=not args.no_masks)
    model.save(out)
    if not args.quiet:
        frac = model.meta.get("explained_fraction")
        what = "the photo texels (mask-weighted)" if model.meta.get("use_masks") else "the completed UVs"
        share = "" if frac is None else f", explaining {100 * frac:.1f}% of the variance of {what}"
        h, w = model.resolution
        print(f"PCA of {model.meta.get('num_uvs')} UVs: {model.latent_dim} components at {h}x{w}{share} "
              f"(masks: {'EM' if model.meta.get('use_masks') else 'no'}); wrote {out}")
    return 0
