"""Loss histories: one dict per iteration mapping a term to one value per image."""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["merge_histories"]


def merge_histories(parts: Sequence[tuple[Sequence[int], list[dict[str, Sequence[Any]]]]], batch: int,
                    fill: float = 0.0) -> list[dict[str, list[Any]]]:
    """One history for `batch` images from the histories of disjoint groups of them.

    Args:
        parts: (image indices, history of those images) per group; a history entry maps a term to one value
            per image of its group.
        batch: the number of images.
        fill: the value of an image whose group has no entry for a term (an empty history).
    Returns:
        as long as the longest history; a group whose solve stopped earlier repeats its last entry.
    """
    length = max((len(h) for _, h in parts), default=0)
    merged = []
    for t in range(length):
        entry: dict[str, list[Any]] = {}
        for idx, history in parts:
            if not history:
                continue
            for k, v in history[min(t, len(history) - 1)].items():
                row = entry.setdefault(k, [fill] * batch)
                for j, i in enumerate(idx):
                    row[i] = v[j]
        merged.append(entry)
    return merged
