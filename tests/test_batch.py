"""`ganfit batch` on the local engine (`ganfit.batch`): good photos written and bad ones in failures.jsonl,
nothing left of a failed job, resume skips finished jobs and redoes the rest, 1 and 2 workers write the same
bytes, a SIGKILLed driver resumes to the same files, manifests group a person's photos."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ganfit.batch import BatchConfig, collect_jobs, run_batch
from ganfit.cli.main import main
from ganfit.errors import ConfigError
from ganfit.fitting import FitConfig

pytestmark = pytest.mark.assets
PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"
FIT = FitConfig(texture_size=64, device="cpu", quiet=True)


def _folder(root: Path, n: int, bad: bool = True) -> Path:
    src = root / "in"
    (src / "sub").mkdir(parents=True)
    for k in range(n):
        (src / ("sub" if k % 2 else "") / f"p{k}.png").write_bytes(PHOTO.read_bytes())
    if bad:
        (src / "sub" / "broken.jpg").write_bytes(b"not an image")
    return src


def _mesh_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.suffix in (".obj", ".png", ".mtl")}


def test_good_photos_are_written_and_bad_ones_recorded(tmp_path):
    src = _folder(tmp_path, 2)
    jobs = collect_jobs([str(src)])
    assert sorted(j.id for j in jobs) == ["p0", "sub__broken", "sub__p1"]
    out = tmp_path / "out"
    summary = run_batch(jobs, out, FIT, BatchConfig(workers=1, overlay=False), progress=False)
    assert sorted(summary.done) == ["p0", "sub__p1"] and summary.failed == ["sub__broken"]
    assert (out / "p0" / "done.json").is_file() and (out / "p0" / "p0.obj").is_file()
    assert not (out / "sub__broken").exists()  # a failed job leaves nothing
    (line,) = (out / "failures.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["job"] == "sub__broken" and "not an image" in record["error"] and record["retried"] is False
    batch = json.loads((out / "batch.json").read_text())
    assert batch["done"] == 2 and batch["failed"] == ["sub__broken"] and "torch" in batch["versions"]
    assert main(["batch", str(src), "-o", str(tmp_path / "cli"), "-q", "--no-overlay"]) == 1


def test_resume_skips_finished_jobs_and_redoes_a_half_done_one(tmp_path):
    src = _folder(tmp_path, 3, bad=False)
    jobs = collect_jobs([str(src)])
    out = tmp_path / "out"
    run_batch(jobs, out, FIT, BatchConfig(overlay=False), progress=False)
    before = _mesh_bytes(out)
    (out / "p2" / "done.json").unlink()  # p2 "died half-way": no record, a damaged file
    (out / "p2" / "p2.obj").write_text("half")
    stamp = (out / "p0" / "p0.obj").stat().st_mtime_ns
    summary = run_batch(jobs, out, FIT, BatchConfig(overlay=False, resume=True), progress=False)
    assert summary.done == ["p2"] and sorted(summary.skipped) == ["p0", "sub__p1"]
    assert _mesh_bytes(out) == before and (out / "p0" / "p0.obj").stat().st_mtime_ns == stamp


def test_one_and_two_workers_write_the_same_bytes(tmp_path):
    src = _folder(tmp_path, 3, bad=False)
    jobs = collect_jobs([str(src)])
    run_batch(jobs, tmp_path / "one", FIT, BatchConfig(workers=1, overlay=False), progress=False)
    run_batch(jobs, tmp_path / "two", FIT, BatchConfig(workers=2, overlay=False), progress=False)
    assert _mesh_bytes(tmp_path / "one") == _mesh_bytes(tmp_path / "two") != {}


def test_a_killed_driver_resumes_to_the_same_files(tmp_path):
    src = _folder(tmp_path, 6, bad=False)
    args = [sys.executable, "-m", "ganfit", "batch", str(src), "-q", "--no-overlay"]
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("texture_size: 64\ndevice: cpu\n")
    args += ["--config", str(cfg)]
    subprocess.run(args + ["-o", str(tmp_path / "whole")], check=True, timeout=300)
    out = tmp_path / "killed"
    proc = subprocess.Popen(args + ["-o", str(out)], start_new_session=True)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not list(out.glob("*/done.json")):
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers
    proc.wait(timeout=60)
    finished_before = {p.parent.name for p in out.glob("*/done.json")}
    assert finished_before
    subprocess.run(args + ["-o", str(out), "--resume"], check=True, timeout=300)
    assert _mesh_bytes(out) == _mesh_bytes(tmp_path / "whole")
    batch = json.loads((out / "batch.json").read_text())
    assert batch["skipped"] == len(finished_before) and batch["done"] + batch["skipped"] == 6  # none twice


def test_a_manifest_groups_a_persons_photos(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(PHOTO.read_bytes())
    manifest = tmp_path / "jobs.csv"
    manifest.write_text('path,subject,config\na.png,anna,\nb.png,anna,\nc.png,,"{""texture_size"": 32}"\n')
    jobs = collect_jobs([str(manifest)])
    assert [(j.id, len(j.inputs), j.same_person) for j in jobs] == [("anna", 2, True), ("row3", 1, False)]
    assert jobs[1].overrides == {"texture_size": 32}
    summary = run_batch(jobs, tmp_path / "out", FIT, BatchConfig(overlay=False), progress=False)
    assert summary.done == ["anna", "row3"] and (tmp_path / "out" / "anna" / "identity.obj").is_file()
    with pytest.raises(ConfigError, match="no such file"):
        collect_jobs([str(tmp_path / "missing")])


def test_folders_as_people_and_a_video_job(tmp_path):
    """--same-person-by folder: each folder's photos are one job with one identity; a video is its own job."""
    import numpy as np
    from PIL import Image

    from ganfit.io.video import write_video

    src = _folder(tmp_path, 3, bad=False)  # p0, p2 in the top folder; p1 in sub/
    base = np.asarray(Image.open(PHOTO).convert("RGB").resize((256, 256)))
    write_video(src / "sub" / "clip.mp4", [np.roll(base, k, axis=1) for k in range(6)], 10.0)
    jobs = collect_jobs([str(src)], same_person_by="folder")
    assert sorted((j.id, j.kind, len(j.inputs), j.same_person) for j in jobs) == [
        ("clip", "video", 1, False), ("in", "photos", 2, True), ("sub", "photos", 1, False)]
    out = tmp_path / "out"
    summary = run_batch(jobs, out, FIT, BatchConfig(overlay=False), progress=False)
    assert sorted(summary.done) == ["clip", "in", "sub"]
    assert (out / "in" / "identity.obj").is_file() and (out / "clip" / "frames.npz").is_file()
