"""The jobs of a batch (issue 15): one subject each, a photo, several photos of one person or a video, read
from folders, files or a manifest (CSV or JSON lines)."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .._names import safe_stem
from ..errors import ConfigError

__all__ = ["Job", "collect_jobs", "PHOTO_EXTENSIONS", "VIDEO_EXTENSIONS"]

PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})


@dataclass(frozen=True)
class Job:
    """One unit of work. id: unique, file-name-safe (its output folder). inputs: the files. kind: "photos"
    (each its own person, or all one person when `same_person`) or "video". landmarks: per input a landmark
    file, or empty. overrides: config options for this job (a manifest's `config` column, JSON)."""

    id: str
    inputs: tuple[str, ...]
    kind: str = "photos"
    same_person: bool = False
    landmarks: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "inputs": list(self.inputs), "kind": self.kind, "same_person": self.same_person,
                "landmarks": list(self.landmarks), "overrides": self.overrides}


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "photos" if suffix in PHOTO_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


def _unique(stem: str, seen: set[str]) -> str:
    out, k = stem, 1
    while out.casefold() in seen:
        k += 1
        out = f"{stem}_{k}"
    seen.add(out.casefold())
    return out


def _manifest_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not a JSON object ({exc.msg})") from None
    return rows


def _from_manifest(path: Path, seen: set[str]) -> list[Job]:
    """A CSV (columns `path` or `paths` separated by ';', optional `id`, `subject`, `landmarks`, `config`) or
    JSONL manifest (the same keys; `paths`/`landmarks` may be lists). Rows with one `subject` form one job
    of that person's photos; relative paths are relative to the manifest."""
    groups: dict[str, dict[str, Any]] = {}
    for n, row in enumerate(_manifest_rows(path), 1):
        paths = row.get("paths") or row.get("path")
        if not paths:
            raise ConfigError(f"{path}: row {n} has no path")
        paths = paths.split(";") if isinstance(paths, str) else list(paths)
        lms = row.get("landmarks") or []
        lms = [s for s in lms.split(";") if s] if isinstance(lms, str) else list(lms)
        config = row.get("config") or {}
        if isinstance(config, str):
            try:
                config = json.loads(config)
            except json.JSONDecodeError:
                raise ConfigError(f"{path}: row {n}: config must be a JSON object") from None
        resolve = lambda p: str(p if Path(p).is_absolute() else (path.parent / p))  # noqa: E731
        key = str(row.get("subject") or row.get("id") or f"row{n}")
        g = groups.setdefault(key, {"inputs": [], "landmarks": [], "config": config, "id": row.get("id"),
                                    "subject": row.get("subject")})
        g["inputs"] += [resolve(p) for p in paths]
        g["landmarks"] += [resolve(p) for p in lms]
    jobs = []
    for key, g in groups.items():
        kinds = {_kind(Path(p)) for p in g["inputs"]}
        kind = "video" if kinds == {"video"} else "photos"
        if kind == "video" and len(g["inputs"]) != 1:
            raise ConfigError(f"{path}: job {key}: a video job takes one video")
        if g["landmarks"] and len(g["landmarks"]) != len(g["inputs"]):
            raise ConfigError(f"{path}: job {key}: give one landmark file per photo or none")
        jobs.append(Job(id=_unique(safe_stem(str(g["id"] or key), "job"), seen), inputs=tuple(g["inputs"]), kind=kind,
                        same_person=bool(g["subject"]) and len(g["inputs"]) > 1, landmarks=tuple(g["landmarks"]),
                        overrides=dict(g["config"])))
    return jobs


def collect_jobs(inputs: Sequence[str], *, same_person_by: str | None = None) -> list[Job]:
    """The jobs of `inputs`: photo and video files (one job each), folders (their photos and videos, sorted,
    recursively; with ``same_person_by="folder"`` the photos of each folder are one person's, one job), and
    manifests (.csv / .jsonl; ``same_person_by="manifest"`` is implied: rows sharing a `subject` are one job).

    Raises:
        ConfigError: a missing input, an unknown file type, a bad manifest, or no jobs at all.
    """
    if same_person_by not in (None, "folder", "manifest"):
        raise ConfigError(f"same_person_by must be folder or manifest, got {same_person_by!r}")
    jobs: list[Job] = []
    seen: set[str] = set()
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise ConfigError(f"{raw}: no such file or folder")
        if path.is_file() and path.suffix.lower() in (".csv", ".jsonl"):
            jobs += _from_manifest(path, seen)
        elif path.is_file():
            kind = _kind(path)
            if kind is None:
                raise ConfigError(f"{raw}: not a photo, video or manifest (.csv, .jsonl) by its extension")
            jobs.append(Job(id=_unique(safe_stem(path.stem, "job"), seen), inputs=(str(path),), kind=kind))
        else:
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and _kind(p))
            if same_person_by == "folder":
                by_folder: dict[Path, list[Path]] = {}
                for p in files:
                    if _kind(p) == "video":
                        jobs.append(Job(id=_unique(safe_stem(p.stem, "job"), seen), inputs=(str(p),), kind="video"))
                    else:
                        by_folder.setdefault(p.parent, []).append(p)
                for folder, photos in by_folder.items():
                    jobs.append(Job(id=_unique(safe_stem(folder.name, "job"), seen), inputs=tuple(map(str, photos)),
                                    same_person=len(photos) > 1))
            else:
                for p in files:
                    rel = p.relative_to(path).with_suffix("")
                    jobs.append(Job(id=_unique(safe_stem("__".join(rel.parts), "job"), seen), inputs=(str(p),),
                                    kind=_kind(p) or "photos"))
    if not jobs:
        raise ConfigError(f"no photos, videos or manifest rows found in {', '.join(map(str, inputs))}")
    return jobs
