"""`ganfit fit-video`: one identity and per-frame expression and pose from a video (`fitting.video_fit`)."""
from __future__ import annotations

import argparse

from ..errors import EXIT_OK, GanfitError


def _keyframes(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--keyframes takes auto or a number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("--keyframes must be at least 1")
    return n


def add_fit_video_parser(sub) -> None:
    p = sub.add_parser(
        "fit-video",
        help="fit a video: one identity from keyframes, then every frame's expression and pose",
        description="Fit one person's face through a video. The face is tracked (searched every --detect-every "
        "frames, followed in between, landmarks smoothed with a one-euro filter, short gaps filled); sharp, "
        "near-neutral keyframes spread over the head's yaw are fitted as one person with --stages (shape, and "
        "with the joint stage the texture); then every frame's expression and pose are fitted with that "
        "identity fixed, warm-started from the frame before and held to it by a temporal smoothness term. "
        "Writes OUT/identity.obj (+ texture, JSON), OUT/frames.npz (per frame: time, flags, expression, "
        "rotation, translation, focal, landmarks detected and fitted), OUT/overlay.mp4, OUT/keyframes/ (the "
        "keyframes' own fits), OUT/video.json, and with --meshes OUT/meshes/frame_<index>.obj. A run "
        "killed half-way continues with --resume and ends with the same files.",
    )
    p.add_argument("video", help="the video file (anything FFmpeg decodes: mp4, mov, mkv, webm, avi, ...)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="fit every N-th frame (default 1: all)")
    p.add_argument("--start", type=float, default=None, metavar="S", help="start at this time, seconds")
    p.add_argument("--end", type=float, default=None, metavar="S", help="stop at this time, seconds")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="fit at most N frames")
    p.add_argument("--keyframes", type=_keyframes, default=None, metavar="auto|N",
                   help="frames that fit the identity: auto (default: one per 15 deg of the yaw the video covers, "
                   "plus one, 3 to 8) or a number")
    p.add_argument("--face-index", type=int, default=None, metavar="I",
                   help="with several faces in view, follow the I-th from the left (default: the largest)")
    p.add_argument("--detect-every", type=int, default=10, metavar="N",
                   help="search the frame for faces every N frames and when tracking is lost (default 10; 1 "
                   "searches every frame: slower, no tracking)")
    p.add_argument("--smoothing", type=float, default=1.0, metavar="W",
                   help="weight of the temporal smoothness term of the per-frame fits (default 1; 0: each frame "
                   "on its own, warm-started only)")
    p.add_argument("--stages", default=None, metavar="LIST",
                   help="stages that fit the keyframes' identity: landmarks (default) or landmarks,joint (adds the "
                   "texture latent; ~6 s per keyframe on a CPU)")
    p.add_argument("--config", default=None, metavar="FILE", help="a YAML/JSON FitConfig (as for ganfit fit)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=None, help="seed of the fit's random choices (default 0)")
    p.add_argument("--texture-size", type=int, default=None, metavar="PX",
                   help="side of the identity's UV texture (default 768)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default 1)")
    p.add_argument("--meshes", action="store_true", help="also write every frame's mesh (OBJ, model space, mm)")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="N",
                   help="save the per-frame fits every N frames (default 100): what --resume keeps after a kill")
    p.add_argument("--resume", action="store_true",
                   help="continue a run that stopped, from the checkpoint in OUT/.ganfit-video (same video and "
                   "options only)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary; errors only")
    p.set_defaults(func=run_fit_video)


def run_fit_video(args: argparse.Namespace) -> int:
    from ..fitting import FitConfig
    from ..fitting.sequence import TemporalSmoothing
    from ..fitting.video_fit import VideoFitConfig, fit_video

    cfg = FitConfig.from_file(args.config) if args.config else FitConfig()
    changes = {k: getattr(args, k) for k in ("device", "seed", "texture_size", "threads") if getattr(args, k) is not None}
    if args.quiet:
        changes["quiet"] = True
    cfg = cfg.with_stages(args.stages, **changes) if args.stages else cfg.replace(**changes)
    if args.smoothing < 0:
        raise GanfitError("--smoothing must be >= 0")
    video_cfg = VideoFitConfig(every=args.every, start=args.start, end=args.end, max_frames=args.max_frames,
                               keyframes=args.keyframes, face_index=args.face_index, detect_every=args.detect_every,
                               smoothing=TemporalSmoothing(weight=args.smoothing), meshes=args.meshes,
                               overlay=not args.no_overlay, chunk=args.checkpoint_every)
    result = fit_video(args.video, args.output, cfg, video_cfg, resume=args.resume)
    if result.stopped_early:
        print(f"ganfit: {result.stopped_early}; fitted the frames before it")
    if not args.quiet:
        t = result.timings
        total = sum(t.values())
        print(f"{args.video}: {result.fitted} of {result.frames} frames fitted ({', '.join(f'{k} {v}' for k, v in result.flags.items() if v)}), "
              f"keyframes {result.keyframes}; {total:.1f} s ({result.frames / max(total, 1e-9):.1f} frames/s; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()) + f"); wrote into {args.output}: "
              + ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in result.out.iterdir() if not p.name.startswith(".")))
              + (f" (resumed: {', '.join(result.resumed)})" if result.resumed else ""))
    return EXIT_OK
