"""Binning for the visibility pass: the triangles' bounding boxes sorted into unit shapes.

A box of two or more pixel centres gets a unit class by its size, 2**kx x 2**ky pixels up to ``tile`` x
``tile`` (`_unit_classes`); larger boxes are cut into tile x tile blocks (`_class_units`). Classes too
small to pay for their own pass are merged into a larger shape (`_merge_classes`). The units of a class
are then evaluated densely by `ganfit.render.torch_raster.visibility`; the grouping changes the cost
only, never the image (the z-buffer keeps the same nearest fragment whatever the evaluation order).
"""
from __future__ import annotations

import torch


def _unit_classes(tri: dict, rows: torch.Tensor, tile: int) -> torch.Tensor:
    """(M,) int64 unit class of the boxes of triangles `rows` (boxes of 2+ centres):
    kx * (n + 1) + ky for a box of sides up to 2**kx x 2**ky (kx, ky <= n = log2(tile)), and
    (n + 1)**2 for boxes with a side over tile (split into tile blocks).
    """
    n1 = tile.bit_length()  # n + 1 sizes per side: 1, 2, 4, ..., tile
    bw = tri["x1"].index_select(0, rows) - tri["x0"].index_select(0, rows) + 1.0
    bh = tri["y1"].index_select(0, rows) - tri["y0"].index_select(0, rows) + 1.0
    big = torch.maximum(bw, bh) > tile
    code = torch.ceil(torch.log2(bw.clamp_(1, tile))) * n1 + torch.ceil(torch.log2(bh.clamp_(1, tile)))
    return (code * ~big + (n1 * n1) * big).long()


# A unit class costs about as much fixed work (gathers, launches) as evaluating this many extra
# candidates; classes whose separation saves less are merged into a larger unit shape.
_CLASS_OVERHEAD_CANDIDATES = 20000


def _merge_classes(counts: list[int], tile: int) -> dict[int, list[int]]:
    """Group unit classes: {target class: [member classes]}.

    counts: number of boxes per class of `_unit_classes` (index (n + 1)**2 = tile blocks). A rectangle
    class (kx, ky) joins the square (m, m), m = max(kx, ky), and a square joins the next larger one,
    when its boxes would cost fewer extra candidates than `_CLASS_OVERHEAD_CANDIDATES`.
    """
    n1 = tile.bit_length()
    target = {c: c for c, k in enumerate(counts) if k}
    load = list(counts)
    for c in sorted(target, key=lambda c: (max(c // n1, c % n1) if c < n1 * n1 else n1, c)):
        if c >= n1 * n1:
            continue
        kx, ky = c // n1, c % n1
        m = max(kx, ky)
        if kx != ky:
            parent = m * n1 + m
        elif m + 1 < n1:
            parent = (m + 1) * n1 + (m + 1)
        else:
            continue
        extra = load[c] * ((1 << (2 * (parent // n1))) - (1 << (kx + ky)))
        if extra < _CLASS_OVERHEAD_CANDIDATES:
            for k, t in target.items():
                if t == c:
                    target[k] = parent
            load[parent] += load[c]
            load[c] = 0
    groups: dict[int, list[int]] = {}
    for c, t in target.items():
        groups.setdefault(t, []).append(c)
    return groups


def _class_units(tri: dict, cls: int, rows: torch.Tensor, tile: int):
    """Units of the triangles `rows` (M,) whose boxes fit unit class `cls` (see `_unit_classes`).

    Returns (sw, sh, rows (n,), ox (n,), oy (n,), whole): unit shape, the triangle of each unit,
    integer top-left pixel of each unit, and whether the units are whole boxes (starting at the box
    origin, whose centre the first-pixel pass has already tested).
    """
    n1 = tile.bit_length()
    x0 = tri["x0"].index_select(0, rows).long()
    y0 = tri["y0"].index_select(0, rows).long()
    if cls < n1 * n1:
        return 1 << (cls // n1), 1 << (cls % n1), rows, x0, y0, True
    bw = tri["x1"].index_select(0, rows).long() - x0 + 1
    bh = tri["y1"].index_select(0, rows).long() - y0 + 1
    nbx = (bw + tile - 1) // tile
    cnt = nbx * ((bh + tile - 1) // tile)
    rep = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), cnt)
    k_in = torch.arange(int(cnt.sum()), device=rows.device) - (torch.cumsum(cnt, 0) - cnt)[rep]
    nbr = nbx.index_select(0, rep)
    ox = x0.index_select(0, rep) + (k_in % nbr) * tile
    oy = y0.index_select(0, rep) + torch.div(k_in, nbr, rounding_mode="floor") * tile
    return tile, tile, rows.index_select(0, rep), ox, oy, False
