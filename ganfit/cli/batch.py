"""`ganfit batch`: fit a folder (or files, or a manifest) of photos and videos, resumably (`ganfit.batch`)."""
from __future__ import annotations

import argparse

from ..errors import EXIT_OK, EXIT_SOME_FAILED


def add_batch_parser(sub) -> None:
    p = sub.add_parser(
        "batch",
        help="fit many photos and videos into a folder, on several processes, resumable",
        description="Fit every job of INPUT... into OUT/<job>/: each photo (or, with --same-person-by folder, "
        "each folder's photos as one person, or each manifest subject) and each video is one job. Each job's "
        "files are written, then its OUT/<job>/done.json record last; --resume skips jobs with a record and "
        "redoes a job that died half-way from scratch. Failures go to OUT/failures.jsonl (a bad input is not "
        "retried; a worker that crashed is, --retries times); OUT/batch.json holds the counts, config, "
        "versions and timings. Manifests: .csv with columns path (or paths separated by ';'), and optional "
        "id, subject, landmarks, config (JSON of FitConfig options), or .jsonl with the same keys.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photos, videos, folders or manifests (.csv/.jsonl)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--engine", choices=["local"], default="local",
                   help="where jobs run: local (a process pool on this machine; the Ray engine is not built yet)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    p.add_argument("--same-person-by", choices=["folder", "manifest"], default=None,
                   help="folder: each folder's photos are one person (one job, one identity); manifest: rows "
                   "with one subject (always on for manifests)")
    p.add_argument("--resume", action="store_true", help="skip jobs finished by an earlier run into OUT")
    p.add_argument("--retries", type=int, default=1, metavar="K",
                   help="times a job whose worker crashed is tried again (default 1; bad inputs never are)")
    p.add_argument("--stages", default=None, metavar="LIST", help="as for ganfit fit (default: landmarks)")
    p.add_argument("--config", default=None, metavar="FILE", help="a YAML/JSON FitConfig (as for ganfit fit)")
    p.add_argument("--no-overlay", action="store_true", help="no overlay PNGs / MP4s")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run_batch_command)


def run_batch_command(args: argparse.Namespace) -> int:
    from ..batch import BatchConfig, collect_jobs, run_batch
    from ..fitting import FitConfig

    fit = FitConfig.from_file(args.config) if args.config else FitConfig()
    fit = fit.with_stages(args.stages, quiet=True) if args.stages else fit.replace(quiet=True)
    jobs = collect_jobs(args.inputs, same_person_by=args.same_person_by)
    summary = run_batch(jobs, args.output, fit, BatchConfig(workers=args.workers, resume=args.resume,
                                                           retries=args.retries, overlay=not args.no_overlay),
                        progress=not args.quiet)
    if not args.quiet:
        print(f"{len(jobs)} jobs: {len(summary.done)} done, {len(summary.skipped)} skipped (done before), "
              f"{len(summary.failed)} failed, {len(summary.partial)} with some inputs failed (see "
              f"{args.output}/failures.jsonl); {summary.seconds:.1f} s, {summary.throughput:.2f} jobs/s")
    return EXIT_SOME_FAILED if summary.failed or summary.partial else EXIT_OK
