"""The `ganfit` command line: parse, call the Python API, print. Errors a user can cause are printed as
one line (no traceback) with a non-zero exit status."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Sequence

from .. import __version__
from .._names import escape_controls
if TYPE_CHECKING:
    from ..fitting import FitConfig
from ..errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, GanfitError, NothingFittedError

log = logging.getLogger("ganfit")

FIT_EPILOG = """\
outputs (for -o out/face.obj):
  out/face.obj          mesh in millimetres (model frame: y up, face looking down +z) with UVs and
                        per-vertex colours sampled from the photo where the surface faces the camera
  out/face.mtl          material pointing at the texture
  out/face_texture.png  UV texture unwrapped from the photo; unseen parts completed by symmetry
  out/face.json         all parameters, camera, model name and checksum, losses per iteration,
                        timings and versions
  out/face_overlay.png  detected (green) vs fitted (red) landmarks | the mesh drawn over the photo |
                        the shaded, textured render blended on the photo
-o out/face.ply writes a binary PLY (colours, UVs, texture PNG beside it) instead of the OBJ and MTL;
-o out/face.glb a binary glTF in metres with the texture embedded. Other extensions are refused.
With several photos and -o naming a folder (a path ending in / or without an extension), each photo
gets <name>.obj/.mtl/_texture.png/.json/_overlay.png there; with a file path they are numbered
face_0.obj, face_1.obj, ... by the photo's position. Each face's files are written as one set:
an error or Ctrl-C leaves all of them or none.

exit status:
  0    every photo was fitted and written
  1    some photos failed (one error line each); the others were fitted and written
  2    nothing was done: bad options, model, landmarks or output path, or every photo failed
  130  interrupted (Ctrl-C); faces already written stay complete

examples:
  ganfit fit examples/astronaut.png -o out/face.obj
  ganfit fit a.jpg b.jpg -o out/ --device cuda --seed 1
  ganfit fit photo.jpg -o out/face.glb
  ganfit fit photo.jpg --landmarks photo.pts -o out/face.obj
"""


def _add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a 3D face to one or more photos",
        description="Fit the face model to photos (GANFit, Gecer et al. CVPR 2019): detect 68 landmarks, solve for "
        "shape, expression, head pose and focal length from them (landmark stage, ~0.1 s), then optimise the "
        "texture latent, lighting, colour, shape, expression and pose against identity, content, pixel and "
        "landmark losses (joint stage, ~10-12 s per photo on a 2-core CPU, with --stages landmarks,joint), and "
        "write a mesh, parameters and an overlay.",
        epilog=FIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos to fit (JPEG, PNG, TIFF, WebP, ...); each is fitted as its own face")
    p.add_argument("-o", "--output", default="out/face.obj", metavar="PATH",
                   help="output mesh file (.obj, .ply or .glb) for one photo, or a folder (ending in /) for several (default: %(default)s)")
    p.add_argument("--device", default=None, metavar="DEV",
                   help="auto (CUDA if available), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--seed", type=int, default=None, help="seed of the fit's random choices (default: 0); the landmark stage makes none (it is "
                   "deterministic), so today any seed gives the same result")
    p.add_argument("--iterations", type=int, default=None, metavar="N",
                   help="most iterations of the landmark stage after the rigid warm-up; each photo stops earlier once "
                   "converged (default: 50 for lm, 400 for adam)")
    p.add_argument("--stages", default=None, metavar="LIST",
                   help="comma-separated stages to run, in order: landmarks (default, ~0.1 s) or landmarks,joint "
                   "(GANFit's joint stage too, ~10-12 s per photo on a 2-core CPU)")
    p.add_argument("--joint-iterations", type=int, default=None, metavar="N",
                   help="most Adam iterations of the joint stage; it stops earlier on a plateau (default: 60)")
    p.add_argument("--identity", choices=["dlib", "arcface", "none"], default=None,
                   help="face-recognition network of the joint stage's identity and content losses: dlib (offline "
                   "default), arcface (an insightface pack or checkpoint: --identity-weights), none (losses off)")
    p.add_argument("--identity-weights", default=None, metavar="PATH",
                   help="weights file or folder of the identity network (default: its own)")
    p.add_argument("--texture-model", default=None, metavar="NAME|PATH",
                   help="texture model of the joint stage: default (the shipped texture GAN), a .pt texture GAN "
                   "(ganfit texture train) or a .npz PCA model (ganfit texture build-pca)")
    p.add_argument("--texture", choices=["photo", "model", "blend"], default=None,
                   help="what face_texture.png holds: photo (default: the photo unwrapped onto the mesh, completed "
                   "by symmetry), model (the joint stage's fitted texture, without lighting) or blend (the photo's "
                   "colours divided by the fitted shading where seen, blended into the model texture elsewhere); "
                   "model and blend need --stages landmarks,joint")
    p.add_argument("--same-person", action="store_true",
                   help="the photos all show one person: they share one identity (shape) while each keeps its "
                   "expression, pose and camera; also writes that person's neutral face as identity.obj (with "
                   "identity_texture.png blended from every photo that sees each texel and identity.json) beside "
                   "the photos' meshes. With the joint stage the photos also share one texture latent")
    p.add_argument("--same-person-mode", choices=["shared", "average"], default=None,
                   help="with --same-person: average (default, GANFit's: the mean of the photos' own shapes, then "
                   "each photo refitted with it fixed) or shared (one shape fitted to all photos together); on 9 "
                   "real people the two are about equal, both more person-specific than single-photo fits")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file with FitConfig options; command-line options override it")
    p.add_argument("--landmarks", nargs="+", metavar="FILE",
                   help="68-point landmark files (.pts, .json, .npy, .txt), one per photo, instead of detecting")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="face model: bfm-3ddfa (default) or a model file/folder (.npz, BFM .mat/.h5, FLAME .pkl, ICT-FaceKit folder)")
    p.add_argument("--model-landmarks", default=None, metavar="FILE",
                   help="the model's 68 landmark vertex indices (.txt, .json or .npy; for FLAME also DECA's "
                   "landmark_embedding.npy), for models without iBUG-68 landmarks: BFM 2009/2017, FLAME")
    p.add_argument("--detector", choices=["dlib", "fan", "fan3d"], default=None,
                   help="landmark detector: dlib (offline default), fan (2D-FAN) or fan3d (3D-FAN, 3d landmark "
                   "convention); fan and fan3d need ganfit[fan] and their weights")
    p.add_argument("--landmark-convention", choices=["auto", "2d", "3d"], default=None,
                   help="2d: the jaw line follows the visible outline (dlib, 300-W); 3d: every landmark is a fixed "
                   "point of the face, also when hidden (AFLW2000-3D, 3D-FAN); auto (default): the detector's, "
                   "2d for --landmarks files")
    p.add_argument("--landmark-table", choices=["auto", "model"], default=None,
                   help="which model vertex each 2d landmark is: auto (default) uses the table calibrated on real "
                   "photos for the model and dlib's points when one ships, model the model's own landmark vertices")
    p.add_argument("--landmark-sigma", type=float, default=None, metavar="S",
                   help="expected landmark error per coordinate as a fraction of the face size; smaller follows "
                   "the landmarks more closely, larger keeps the shape nearer the mean face (default: 0.02)")
    p.add_argument("--face-index", type=int, default=None, metavar="K",
                   help="which face to fit when a photo has several, counted left to right from 0 (default: the largest)")
    p.add_argument("--optimizer", choices=["lm", "adam"], default=None,
                   help="lm: Levenberg-Marquardt (default, fast); adam: first-order, for comparison")
    p.add_argument("--contour", choices=["auto", "dynamic", "static", "off"], default=None,
                   help="jaw-line landmarks: slide along the silhouette (dynamic), fixed vertices (static), or "
                   "ignored (off); auto (default): dynamic for the 2d convention, static for 3d")
    p.add_argument("--texture-size", type=int, default=None, metavar="PX",
                   help="side of the UV texture unwrapped from the photo, 0 for none (default: 768)")
    p.add_argument("--detector-upsample", type=int, default=None, metavar="N",
                   help="extra passes of the dlib detector, each at twice the resolution, when it finds no face: "
                   "0-3; raise it for small faces (each pass finds faces half as wide for ~4x the time) (default: 1)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads during the fit (default: 1; on the 2-core test machine a second "
                   "thread gained nothing when idle and made fits up to 2.8x slower when busy)")
    p.add_argument("--no-overlay", action="store_true", help="do not write the overlay PNG")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary; errors only")
    p.set_defaults(func=_run_fit)


def fit_config(args: argparse.Namespace) -> "FitConfig":
    """The `FitConfig` of `ganfit fit`'s arguments: the --config file (or the defaults) with each option given
    on the command line applied; --stages keeps the file's settings of every stage it names.

    Raises:
        GanfitError / ConfigError: an option out of range or one that needs a stage the schedule lacks.
    """
    from ..fitting import FitConfig

    cfg = FitConfig.from_file(args.config) if args.config else FitConfig()
    changes: dict = {}
    for name in ("device", "seed", "model", "model_landmarks", "detector", "face_index", "contour", "texture_size",
                 "landmark_convention", "landmark_sigma", "landmark_table", "detector_upsample", "threads",
                 "identity", "identity_weights", "texture_model"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.quiet:
        changes["quiet"] = True
    if args.texture is not None:
        changes["texture"] = args.texture
    if args.same_person_mode is not None:
        if not args.same_person:
            raise GanfitError("--same-person-mode says how photos of one person share their identity; add --same-person")
        changes["same_person"] = args.same_person_mode
    # each stage --stages names keeps a --config file's settings for it
    cfg = cfg.with_stages(args.stages, **changes) if args.stages else cfg.replace(**changes)
    if args.optimizer is not None:
        cfg = cfg.with_stage("landmarks", optimizer=args.optimizer)
    if args.iterations is not None:
        if args.iterations < 1:
            raise GanfitError("--iterations must be at least 1")
        field = "adam_iterations" if cfg.stage("landmarks").optimizer == "adam" else "iterations"
        cfg = cfg.with_stage("landmarks", **{field: args.iterations})
    if args.joint_iterations is not None:
        if args.joint_iterations < 0:
            raise GanfitError("--joint-iterations must be >= 0")
        joint = cfg.stage("joint")
        if joint is None:
            raise GanfitError("--joint-iterations sets the joint stage's iterations; add --stages landmarks,joint")
        n = args.joint_iterations  # the texture-and-light warm-up keeps its share of a shorter run
        cfg = cfg.with_stage("joint", iterations=n, warmup_iterations=min(joint.warmup_iterations, n // 3))
    return cfg


def _run_fit(args: argparse.Namespace) -> int:
    from ..fitting import Fitter
    from ..fitting.outputs import check_targets, output_layout

    cfg = fit_config(args)
    if args.landmarks and len(args.landmarks) != len(args.images):
        raise GanfitError(f"--landmarks got {len(args.landmarks)} files for {len(args.images)} photos; give one per photo")
    layout = output_layout(args.output, args.images)  # refuses unknown extensions and unsafe names up front
    check_targets(layout)  # and that the folder can be written

    try:
        subjects = [0] * len(args.images) if args.same_person else None
        result = Fitter(cfg).fit(args.images, landmarks=args.landmarks, on_error="skip", subjects=subjects)
    except NothingFittedError as exc:
        for failure in exc.failures:
            _print_error(failure.error)
        if len(exc.failures) > 1:
            _print_error(f"none of the {len(exc.failures)} photos could be fitted; nothing written")
        return EXIT_ERROR
    for failure in result.failures:
        _print_error(failure.error)
    written = result.save(args.output, overlay=not args.no_overlay, progress=not args.quiet)
    if not args.quiet:
        err = result.reprojection_error_px()
        for i, src in enumerate(result.sources):
            ypr = result.params.euler_deg()[i].tolist()
            print(f"{escape_controls(src)}: landmark error {float(err[i]):.2f} px, yaw {ypr[0]:+.1f} pitch {ypr[1]:+.1f} "
                  f"roll {ypr[2]:+.1f} deg, focal {float(result.params.focal[i]):.0f} px")
        failed = f"; {len(result.failures)} of {len(args.images)} photos failed (see above)" if result.failures else ""
        print(f"fitted {len(result)} face(s) in {result.timings['total']:.2f} s "
              f"(landmark stage {result.timings['landmark_stage']:.3f} s); wrote "
              + ", ".join(escape_controls(p) for p in written) + failed)
    return EXIT_SOME_FAILED if result.failures else EXIT_OK


def _print_error(message: object) -> None:
    """One line on stderr: ``ganfit: error: <message>`` (control characters escaped)."""
    print(f"ganfit: error: {escape_controls(message)}", file=sys.stderr)


def _add_assets(sub: argparse._SubParsersAction) -> None:
    from ..assets.commands import add_subcommands

    p = sub.add_parser(
        "assets",
        help="list, fetch, verify or locate model files",
        description="Model files (face model arrays, landmark predictor, user-supplied models) and the cache "
        "they live in ($GANFIT_HOME, default: the user cache folder).",
    )
    add_subcommands(p)


def _add_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="inspect or convert face models", description="Inspect face models or convert them to ganfit's .npz format.")
    msub = p.add_subparsers(dest="model_command", metavar="{info,convert}")
    msub.required = True
    info = msub.add_parser(
        "info", help="print a face model's sizes, regions and checksum",
        description="Load a face model (a built-in name, or a file or folder in any supported format) and print "
        "its name, vertex, triangle and component counts, UVs, regions, sha256 checksum and metadata (source "
        "format, units, licence) as JSON.")
    info.add_argument("model", nargs="?", default="bfm-3ddfa", help="name or path (default: %(default)s)")
    info.add_argument("--model-landmarks", dest="landmarks", metavar="FILE",
                      help="68 landmark vertex indices (.txt, .json or .npy), for BFM 2009/2017 and FLAME files")
    info.set_defaults(func=_run_model_info)
    conv = msub.add_parser(
        "convert", help="load a model in any supported format and save it as .npz",
        description="Load a face model in any supported format (.npz, BFM 2009 / BFM_model_front .mat, BFM 2017 "
        ".h5, FLAME .pkl, ICT-FaceKit or 3DDFA BFM folder), convert it to millimetres and save it as ganfit's "
        ".npz, which loads fast and needs no --model-landmarks afterwards.")
    conv.add_argument("model", help="name or path of the source model")
    conv.add_argument("output", help="destination .npz")
    conv.add_argument("--landmarks", "--model-landmarks", dest="landmarks", metavar="FILE",
                      help="68 landmark vertex indices (.txt, .json or .npy; for FLAME also DECA's "
                      "landmark_embedding.npy), needed by BFM 2009/2017 and FLAME; for other formats they "
                      "replace the model's own")
    conv.set_defaults(func=_run_model_convert)


def _run_model_info(args: argparse.Namespace) -> int:
    import json

    from ..model.registry import load_model

    print(json.dumps(load_model(args.model, landmarks=args.landmarks).summary(), indent=1))
    return 0


def _run_model_convert(args: argparse.Namespace) -> int:
    from ..model.registry import load_model

    model = load_model(args.model, landmarks=args.landmarks)
    model.save_npz(args.output)
    print(f"wrote {args.output} ({model.num_vertices} vertices, sha256 {model.checksum()[:12]})")
    return 0


def _add_texture(sub: argparse._SubParsersAction) -> None:
    from .texture_data import add_data_parsers
    from .texture_train import add_train_parser

    p = sub.add_parser(
        "texture",
        help="texture models: build a UV dataset from photos, train or sample the texture GAN, build a PCA model",
        description="Texture models in the face model's UV layout: `build-dataset` turns photos into UV textures, "
        "`train` trains the progressive GAN on them, `sample` draws textures from a trained model, `build-pca` "
        "makes a linear (PCA) texture model.",
    )
    tsub = p.add_subparsers(dest="texture_command", metavar="{build-dataset,build-pca,train,sample}")
    tsub.required = True
    add_data_parsers(tsub)
    add_train_parser(tsub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganfit",
        description="Reconstruct textured 3D faces from photos by fitting a 3D Morphable Model (GANFit).",
    )
    parser.add_argument("--version", action="version", version=f"ganfit {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="{fit,fit-video,batch,assets,model,texture}")
    sub.required = True
    _add_fit(sub)
    from .batch import add_batch_parser
    from .video import add_fit_video_parser

    add_fit_video_parser(sub)
    add_batch_parser(sub)
    _add_assets(sub)
    _add_model(sub)
    _add_texture(sub)
    return parser


class _Notices(logging.Handler):
    """Prints `ganfit._notices` records as ``ganfit: <message>`` on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"ganfit: {escape_controls(record.getMessage())}", file=sys.stderr)


def _show_notices(show: bool) -> None:
    """Print notices of slow one-off steps on stderr (not under -q); replaces an earlier call's setting."""
    from .._notices import NOTICES

    logger = logging.getLogger(NOTICES)
    for handler in [h for h in logger.handlers if isinstance(h, _Notices)]:
        logger.removeHandler(handler)
    logger.propagate = not show  # shown once, not also by the root handler under -v
    if show:
        logger.addHandler(_Notices(logging.INFO))
        logger.setLevel(logging.INFO)
    else:
        logger.setLevel(logging.NOTSET)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _show_notices(not getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except GanfitError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ganfit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
