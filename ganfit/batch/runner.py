"""Running a batch's jobs (issue 15) on this machine: a pool of worker processes, each loading the models once;
every job writes its folder ``OUT/<job id>/`` and a ``done.json`` record last, so a batch killed at any point
and run again with ``resume=True`` skips finished jobs and redoes the one that died half-way from scratch.

Failures are lines of ``OUT/failures.jsonl`` (the job, its inputs, the error, whether it is retried): a bad
input (unreadable, no face: a `GanfitError`) is never retried; a crash of the worker (a lost process) is,
up to `retries` times. ``OUT/batch.json`` holds the versions, the config, the counts and the timings.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .._atomic import write_temporary
from ..errors import ConfigError, GanfitError, OutputError
from ..fitting.config import FitConfig
from .jobs import Job

__all__ = ["BatchConfig", "BatchSummary", "run_batch", "run_job"]

DONE = "done.json"


@dataclass(frozen=True)
class BatchConfig:
    """workers: worker processes (1: one process besides the driver). resume: skip jobs with a done record.
    retries: times a job whose worker crashed is tried again. overlay: write the overlay PNGs / MP4."""

    workers: int = 1
    resume: bool = False
    retries: int = 1
    overlay: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1 or self.retries < 0:
            raise ConfigError("workers must be >= 1 and retries >= 0")


@dataclass
class BatchSummary:
    """done / skipped (resumed) / failed job ids; partial: done jobs with some inputs that failed (each in
    failures.jsonl); seconds, jobs per second."""

    done: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.done) / self.seconds if self.seconds > 0 else 0.0


def _write(path: Path, text: str) -> None:
    os.replace(write_temporary(path, text), path)


#: per worker process: its Fitter, built once by `_start_worker` (a process pool's initializer state)
_WORKER: dict[str, Any] = {}


def _start_worker(fit: dict[str, Any]) -> None:
    from ..fitting.fitter import Fitter

    _WORKER["fitter"] = Fitter(FitConfig.from_dict(fit))


def run_job(job: Job, out: Path, fit: FitConfig, overlay: bool = True, fitter=None) -> dict[str, Any]:
    """Fit one job into ``out/<job.id>/`` (cleared first: a job that died half-way is redone from scratch) and
    write its done record last. Returns the record.

    Raises:
        GanfitError: the job's inputs cannot be fitted (nothing of the job is left then).
    """
    t0 = time.perf_counter()
    folder = out / job.id
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    try:
        return _fit_job(job, folder, fit, overlay, fitter, t0)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a failed job leaves nothing
        raise


def _fit_job(job: Job, folder: Path, fit: FitConfig, overlay: bool, fitter, t0: float) -> dict[str, Any]:
    from ..fitting.fitter import Fitter
    from ..fitting.video_fit import VideoFitConfig, fit_video

    cfg = FitConfig.from_dict({**fit.to_dict(), **job.overrides}) if job.overrides else fit
    cfg = cfg.replace(quiet=True)
    failed: list[str] = []
    if job.kind == "video":
        fit_video(job.inputs[0], folder, cfg, VideoFitConfig(overlay=overlay))
    else:
        if fitter is None or job.overrides:
            fitter = Fitter(cfg)
        result = fitter.fit(list(job.inputs), landmarks=list(job.landmarks) or None, on_error="skip",
                            subjects=[0] * len(job.inputs) if job.same_person else None)
        result.save(f"{folder}/", overlay=overlay)
        failed = [f.error for f in result.failures]
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".ganfit-video" not in p.parts)
    record = {"job": job.to_dict(), "files": files, "failed_inputs": failed, "seconds": time.perf_counter() - t0}
    _write(folder / DONE, json.dumps(record, indent=1))
    return record


def _pool_job(job: Job, out: str, fit: dict[str, Any], overlay: bool) -> dict[str, Any]:
    return run_job(job, Path(out), FitConfig.from_dict(fit), overlay, fitter=_WORKER.get("fitter"))


def run_batch(jobs: Sequence[Job], out: str | os.PathLike, fit: FitConfig | None = None,
              config: BatchConfig | None = None, *, progress: bool = True) -> BatchSummary:
    """Run `jobs` into the folder `out` on `config.workers` local processes.

    Raises:
        OutputError: `out` is a file.
    """
    from tqdm.auto import tqdm

    fit = fit or FitConfig()
    cfg = config or BatchConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write into {out}: it is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = BatchSummary()
    failures = out / "failures.jsonl"
    if not cfg.resume and failures.exists():
        failures.unlink()
    todo = []
    for job in jobs:
        if cfg.resume and (out / job.id / DONE).is_file():
            summary.skipped.append(job.id)
        else:
            todo.append(job)
    attempts = {job.id: 0 for job in todo}
    bar = tqdm(total=len(jobs), initial=len(summary.skipped), desc="batch", unit="job", disable=not progress)
    fit_dict = fit.to_dict()

    def failed(job: Job, error: str, kind: str, retried: bool) -> None:
        with failures.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"job": job.id, "inputs": list(job.inputs), "error": error, "kind": kind,
                                "attempt": attempts[job.id], "retried": retried}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    while todo:
        pending = {}
        # spawned, not forked: a fork of a process whose torch/OpenMP threads have run can crash in the child
        with ProcessPoolExecutor(max_workers=cfg.workers, initializer=_start_worker, initargs=(fit_dict,),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            queue = list(todo)
            todo = []
            broken = False
            while queue or pending:
                while queue and len(pending) < 2 * cfg.workers and not broken:
                    job = queue.pop(0)
                    attempts[job.id] += 1
                    pending[pool.submit(_pool_job, job, str(out), fit_dict, cfg.overlay)] = job
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    try:
                        record = future.result()
                        summary.done.append(job.id)
                        for error in record["failed_inputs"]:
                            failed(job, error, "InputFailed", False)
                        if record["failed_inputs"]:
                            summary.partial.append(job.id)
                    except GanfitError as exc:  # the input's fault: never retried
                        failed(job, str(exc), type(exc).__name__, False)
                        summary.failed.append(job.id)
                    except Exception as exc:  # a lost worker (BrokenProcessPool) or a crash inside the job
                        broken = broken or isinstance(exc, BrokenProcessPool)
                        retry = attempts[job.id] <= cfg.retries
                        kind = "WorkerLost" if isinstance(exc, BrokenProcessPool) else type(exc).__name__
                        failed(job, f"{kind}: {exc}", kind, retry)
                        if retry:
                            todo.append(job)
                        else:
                            summary.failed.append(job.id)
                        continue
                    bar.update()
            if broken:
                todo += queue
    bar.close()
    summary.seconds = time.perf_counter() - t0
    _write(out / "batch.json", json.dumps({
        "jobs": len(jobs), "done": len(summary.done), "skipped": len(summary.skipped), "failed": summary.failed,
        "partial": summary.partial,
        "seconds": summary.seconds, "jobs_per_second": summary.throughput, "workers": cfg.workers,
        "batch_config": asdict(cfg), "config": fit_dict, "versions": _versions()}, indent=1))
    return summary


def _versions() -> dict[str, str]:
    import sys

    import numpy as np
    import torch

    from .. import __version__

    return {"ganfit": __version__, "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__}
