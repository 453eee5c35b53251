"""The checked triangle list in the layout the torch rasterizer's passes share.

`_Triangles` holds the (F, 3) int64 index and its three corner columns as contiguous (F,) tensors:
per-triangle data is kept one component per contiguous 1-D tensor ("structure of arrays"), because
index_select and element-wise ops on those are much faster on the CPU than advanced indexing and strided
(N, 3) columns. `_corner_indices` gives the global vertex rows b * V + v of the corners in a batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class _Triangles:
    """A checked triangle list: index (F, 3) int64 and its corner columns, 3 contiguous (F,) tensors."""

    index: torch.Tensor
    columns: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @staticmethod
    def of(tris: torch.Tensor) -> "_Triangles":
        return _Triangles(tris, tuple(tris[:, k].contiguous() for k in range(3)))  # type: ignore[arg-type]


def _corner_indices(tris: _Triangles, batch: int, num_vertices: int) -> list[torch.Tensor]:
    """3 tensors (B*F,): global vertex index b * V + v of each corner of triangle b * F + f."""
    cols = list(tris.columns)
    if batch == 1:
        return cols
    offs = torch.arange(batch, device=tris.index.device)[:, None] * num_vertices
    return [(offs + c[None]).reshape(-1) for c in cols]
