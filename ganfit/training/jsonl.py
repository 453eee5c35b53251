"""JSON-lines training logs (one JSON object per line, each with a ``step``), resumable.

`append_jsonl` adds one record; `truncate_jsonl(path, last_step)` drops the records written after the
checkpoint a run resumes from, so a resumed run's log reads as an uninterrupted run's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .._atomic import atomic_write_text

__all__ = ["append_jsonl", "read_jsonl", "truncate_jsonl"]


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append `record` as one line (keys sorted) to `path` (created if missing)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(dict(record), sort_keys=True) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of `path` ([] when missing); unparsable lines (a write cut short) are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def truncate_jsonl(path: str | Path, last_step: int) -> None:
    """Rewrite `path` (atomically) without the records whose ``step`` is after `last_step`; records without a
    step count as step 0; unparsable lines are dropped. Nothing happens when the file is missing."""
    path = Path(path)
    if not path.is_file():
        return
    keep = []
    for record in read_jsonl(path):
        try:
            if int(record.get("step", 0)) <= last_step:
                keep.append(json.dumps(record, sort_keys=True))
        except (TypeError, ValueError):
            continue
    atomic_write_text(path, "".join(k + "\n" for k in keep))
