"""Where a UV corpus's photos come from: sources with provenance, labels and identities.

A sources file (JSON or YAML) lists photo folders with what a manifest must record about them:

```yaml
sources:
  - name: utkface                       # short id, used in output names and identities
    root: /data/utkface/data/UTKFace/unlabeled
    repo: github:mattans/AgeProgression  # where the files come from (recorded, never fetched here)
    commit: 2d937c615a3d10408db0ea795842e569bc9eedb0
    path: data/UTKFace/unlabeled         # `root`'s path inside the repository
    licence: "UTKFace: non-commercial research only"
    labels: utkface                      # how labels are read: none | utkface | folders | table
    identity: file                       # who is in the photo: file | folder | pattern
    exclude: ["watercolor-*"]            # file-name globs to skip (also: include: path globs to keep)
```

Label readers (`labels`):
- ``utkface``: ``AGE_SEX_RACE_DATE.jpg...`` (UTKFace's names; sex 0 male, 1 female; race 0 white, 1 black,
  2 asian, 3 indian, 4 others);
- ``folders``: sex and ethnicity from folder names (``female/asian/x.jpg``, MEBeauty's layout);
- ``table``: a CSV (``table:``) with ``face_id`` and ``face_age`` / ``face_gender`` / ``face_eth`` columns,
  the row picked by the first group of ``id_pattern`` matched against the file name (the London and Canada
  sets' ``*_info.csv``);
- ``none``.
Identities (`identity`): ``file`` (every photo a different person: UTKFace), ``folder`` (the parent folder
names the person: LFW), ``pattern`` (the first group of ``id_pattern``: London ``001_03.jpg`` -> ``001``).
The train / validation split is by identity (`split_of`), so no person is in both.
"""
from __future__ import annotations

import csv
import fnmatch
import hashlib
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config_file import read_options_file
from ..errors import ConfigError

__all__ = ["PhotoSource", "SourcePhoto", "load_sources", "folder_source", "iterate_photos", "split_of",
           "IMAGE_EXTENSIONS", "LABEL_READERS", "IDENTITY_RULES"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
                              ".pgm", ".pnm"})
LABEL_READERS = ("none", "utkface", "folders", "table")
IDENTITY_RULES = ("file", "folder", "pattern")
UTK_RACES = ("white", "black", "asian", "indian", "others")
SEXES = {"f": "female", "female": "female", "woman": "female", "m": "male", "male": "male", "man": "male"}


@dataclass
class PhotoSource:
    """One folder of photos and its provenance (see the module doc for the fields)."""

    name: str
    root: str
    repo: str | None = None
    commit: str | None = None
    path: str | None = None
    licence: str | None = None
    labels: str = "none"
    identity: str = "file"
    id_pattern: str | None = None
    table: str | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name or ""):
            raise ConfigError(f"source name {self.name!r}: use letters, digits, '.', '_' or '-'")
        if self.labels not in LABEL_READERS:
            raise ConfigError(f"source {self.name}: labels must be one of {', '.join(LABEL_READERS)}, got {self.labels!r}")
        if self.identity not in IDENTITY_RULES:
            raise ConfigError(f"source {self.name}: identity must be one of {', '.join(IDENTITY_RULES)}, got {self.identity!r}")
        if (self.identity == "pattern" or self.labels == "table") and not self.id_pattern:
            raise ConfigError(f"source {self.name}: identity 'pattern' and labels 'table' need id_pattern")
        if self.labels == "table" and not self.table:
            raise ConfigError(f"source {self.name}: labels 'table' needs table: the CSV file")
        self._rows: dict[str, dict[str, str]] | None = None

    # ------------------------------------------------------------------ files
    def photos(self, exclude_dir: Path | None = None) -> list[Path]:
        """The source's image files (relative to `root`), sorted; hidden files (``._*`` included) skipped."""
        root = Path(self.root)
        if not root.is_dir():
            raise ConfigError(f"source {self.name}: photo folder not found: {root}")
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and (exclude_dir is None or (here / d).resolve() != exclude_dir))
            for name in sorted(filenames):
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                if any(fnmatch.fnmatch(name, pat) for pat in self.exclude):
                    continue
                rel = (here / name).relative_to(root)
                if self.include and not any(fnmatch.fnmatch(rel.as_posix(), pat) for pat in self.include):
                    continue
                found.append(rel)
        return found

    def repo_path(self, rel: Path) -> str:
        """The photo's path inside the source repository (or relative to `root` when `path` is not set)."""
        return f"{self.path.rstrip('/')}/{rel.as_posix()}" if self.path else rel.as_posix()

    # ------------------------------------------------------------------ who and what
    def _key(self, rel: Path) -> str | None:
        m = re.search(self.id_pattern or "", rel.name)
        return m.group(1) if m and m.groups() else None

    def identity_of(self, rel: Path) -> str:
        """A string naming the person in the photo, unique across sources (``NAME:...``)."""
        if self.identity == "folder":
            who = rel.parent.as_posix() or rel.stem
        elif self.identity == "pattern":
            who = self._key(rel) or rel.stem
        else:
            who = rel.as_posix()
        return f"{self.name}:{who}"

    def labels_of(self, rel: Path) -> dict[str, Any]:
        """{"age": int, "sex": "female"|"male", "ethnicity": str} as far as the source says ({} otherwise)."""
        if self.labels == "utkface":
            parts = rel.name.split("_")
            try:
                age, sex, race = int(parts[0]), int(parts[1]), int(parts[2])
            except (IndexError, ValueError):
                return {}
            out: dict[str, Any] = {"age": age}
            if sex in (0, 1):
                out["sex"] = ("male", "female")[sex]
            if 0 <= race < len(UTK_RACES):
                out["ethnicity"] = UTK_RACES[race]
            return out
        if self.labels == "folders":
            out = {}
            for part in rel.parent.parts:
                low = part.lower()
                if low in SEXES:
                    out["sex"] = SEXES[low]
                elif "ethnicity" not in out and "sex" in out:
                    out["ethnicity"] = low
            return out
        if self.labels == "table":
            row = self._table().get(self._key(rel) or "")
            if row is None:
                return {}
            out = {}
            if (row.get("face_age") or "").strip().isdigit():
                out["age"] = int(row["face_age"])
            if (row.get("face_gender") or "").strip().lower() in SEXES:
                out["sex"] = SEXES[row["face_gender"].strip().lower()]
            if row.get("face_eth"):
                out["ethnicity"] = row["face_eth"].strip().lower()
            return out
        return {}

    def _table(self) -> dict[str, dict[str, str]]:
        if self._rows is None:
            try:
                with open(self.table, newline="", encoding="utf-8") as fh:
                    self._rows = {r["face_id"]: r for r in csv.DictReader(fh) if r.get("face_id")}
            except (OSError, KeyError, csv.Error) as exc:
                raise ConfigError(f"source {self.name}: cannot read the label table {self.table}: {exc}") from exc
        return self._rows

    def provenance(self) -> dict[str, Any]:
        return {"source": self.name, "repo": self.repo, "commit": self.commit, "licence": self.licence}


@dataclass(frozen=True)
class SourcePhoto:
    """One photo of a source: `rel` its path below the source's root; `key` its unique id in a corpus."""

    source: PhotoSource
    rel: Path

    @property
    def key(self) -> str:
        return f"{self.source.name}/{self.rel.as_posix()}"

    @property
    def file(self) -> Path:
        return Path(self.source.root) / self.rel


def load_sources(path: str | Path) -> list[PhotoSource]:
    """Read a sources file (module doc). Raises ConfigError for a bad file or entry."""
    data = read_options_file(path, "photo sources")
    entries = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected a 'sources:' list of photo folders")
    known = set(PhotoSource.__dataclass_fields__)
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) - known:
            bad = sorted(set(entry) - known) if isinstance(entry, dict) else entry
            raise ConfigError(f"{path}: bad source entry ({bad}); known fields: {', '.join(sorted(known))}")
        out.append(PhotoSource(**entry))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: source names must be unique, got {names}")
    return out


def folder_source(folder: str | Path) -> PhotoSource:
    """A source for a plain photo folder: no provenance, no labels, every file a different person."""
    folder = Path(folder)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.resolve().name).strip("._") or "photos"
    return PhotoSource(name=name, root=str(folder))


def iterate_photos(sources: list[PhotoSource], *, seed: int = 0, shuffle: bool = True,
                   exclude_dir: Path | None = None) -> list[SourcePhoto]:
    """All photos of all sources in build order: each source's photos shuffled with `seed` (so a partial
    build is a random sample, not the first names in sort order), the sources interleaved in proportion to
    their size. The same sources and seed always give the same order (resuming relies on it)."""
    lists = []
    for src in sources:
        files = src.photos(exclude_dir)
        if shuffle:
            random.Random(f"{seed}:{src.name}").shuffle(files)
        lists.append([SourcePhoto(src, rel) for rel in files])
    keyed = []
    for si, items in enumerate(lists):
        keyed += [((i + 0.5) / len(items), si, p) for i, p in enumerate(items)]
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [p for _, _, p in keyed]


def split_of(identity: str, validation_fraction: float) -> str:
    """"validation" or "train" for a person, from a hash of the identity (the same person always lands in
    the same split, whatever the build order)."""
    h = int(hashlib.sha256(identity.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "validation" if h < validation_fraction else "train"
