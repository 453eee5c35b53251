"""Atomic file writes: write to a temporary file beside the target, then rename.

A failed or interrupted write never leaves a half-written file at the target path. A set of files that
belong together (an OBJ, its MTL and texture) is written as temporaries (`write_temporary`) and renamed
into place together (`replace_together`): either the whole new set or the old state remains.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import signal
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterator, Sequence

from .errors import OutputError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to `path`; on clean exit, fsync and rename it onto `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open supports only 'w' and 'wb'")
    target = Path(path)
    fd, tmp = _temporary_beside(target)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": "\n"} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (read without changing it where the platform allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def _temporary_beside(target: Path) -> tuple[int, str]:
    """A new hidden temporary file in `target`'s folder, with the permissions a plain new file gets: (fd, path).

    Raises:
        OutputError: the folder cannot be written.
    """
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot write to {directory}: {exc.strerror or exc}") from exc
    try:
        os.chmod(tmp, 0o666 & ~_umask())
    except OSError:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


# ---------------------------------------------------------------------------- sets of files
def write_temporary(target: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` (str as UTF-8) to a new temporary file beside `target`, fsynced; return its path.

    The caller renames it into place (`replace_together`) or removes it. On failure nothing is left.

    Raises:
        OutputError: the folder cannot be written (missing, read-only, disk full, ...).
    """
    target = Path(target)
    fd, tmp = _temporary_beside(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise
    return Path(tmp)


def replace_together(moves: Sequence[tuple[Path, Path]], remove: Sequence[Path] = ()) -> None:
    """Rename each temporary file onto its target and delete the `remove` paths, all or nothing.

    `moves` is ``[(temporary, target), ...]`` in the order to rename (put the file that refers to the
    others last: an OBJ after its MTL and texture); `remove` lists files of an older set that the new set
    does not have (deleted after the renames). Every replaced or removed file is first kept under a backup
    name; if anything fails, or an exception (KeyboardInterrupt included) arrives, the targets are put back
    as they were and the exception propagates; on success the backups are deleted. A Ctrl-C that arrives
    while the renames run (in the main thread) is held until they are done. The temporaries of `moves` are
    the caller's to remove on failure.

    Raises:
        OutputError: a target cannot be replaced (e.g. it is a folder); nothing is changed then.
    """
    backups: list[tuple[Path, Path]] = []  # (target, backup of its old content)
    placed: list[Path] = []  # targets that did not exist before and now hold a new file
    with _sigint_held():  # a Ctrl-C from here on is raised after the set is complete
        try:
            for tmp, target in moves:
                backup = _keep_backup(target, link=True)
                if backup is not None:
                    backups.append((target, backup))
                try:
                    os.replace(tmp, target)
                except OSError as exc:
                    raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
                if backup is None:
                    placed.append(target)
            for target in remove:
                backup = _keep_backup(target, link=False)
                if backup is not None:
                    backups.append((target, backup))
        except BaseException:
            for target in placed:
                with contextlib.suppress(OSError):
                    os.unlink(target)
            for target, backup in reversed(backups):
                with contextlib.suppress(OSError):
                    if os.path.lexists(target) and os.path.samefile(backup, target):
                        os.unlink(backup)  # never replaced (a hard link to itself: rename would do nothing)
                    else:
                        os.replace(backup, target)
            raise
        for _, backup in backups:
            with contextlib.suppress(OSError):
                os.unlink(backup)
        if moves:
            _fsync_dir(Path(moves[0][1]).parent)


def _keep_backup(target: Path, *, link: bool) -> Path | None:
    """Keep `target`'s current file under a hidden backup name beside it (a hard link, so the target stays
    in place, where `link` and the file system allow; else a rename). None when there is no such file."""
    if not os.path.lexists(target):
        return None
    if target.is_dir() and not target.is_symlink():
        raise OutputError(f"cannot write {target}: it is a folder; remove it or choose another output name")
    backup = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
    if link:
        try:
            os.link(target, backup, follow_symlinks=False)
            return backup
        except OSError:
            pass
    try:
        os.replace(target, backup)
    except OSError as exc:
        raise OutputError(f"cannot replace {target}: {exc.strerror or exc}") from exc
    return backup


def _fsync_dir(directory: Path) -> None:
    """Make the renames in `directory` durable (where the platform allows)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold a SIGINT (Ctrl-C) that arrives inside the block and raise KeyboardInterrupt after it. Only in the
    main thread and only while Python's default SIGINT handler is installed; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
