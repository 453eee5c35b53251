"""The whole recipe: triangles and UVs for a face mask given only its vertices.

`build_cylindrical_mesh` chains `ganfit.model.topology.cylinder` (unwrap, occlusion) and
`ganfit.model.topology.triangulate` (Delaunay, flips, cleaning, hole filling) and returns a
`CylindricalMesh` with the triangles, UVs and the statistics of each step.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .cylinder import (
    CylinderAxis,
    cylindrical_unwrap,
    default_cylinder_axis,
    normalize_uv,
    radial_directions,
    radial_occlusion,
)
from .measures import edge_stretch, estimate_normals, local_spacing
from .triangulate import clean_triangulation, delaunay_triangles, fill_small_holes, flip_to_delaunay_3d

__all__ = [
    "build_cylindrical_mesh",
    "CylindricalMesh",
]


@dataclass
class CylindricalMesh:
    """What `build_cylindrical_mesh` made.

    Attributes:
        triangles: (F, 3) int64, counter-clockwise seen from outside (and in UV).
        uv: (V, 2) float64 texture coordinates in [0, 1], v up; same aspect ratio as `uv_mm`.
        uv_mm: (V, 2) the unwrap in millimetres (arc length, height).
        axis: the cylinder.
        hidden: (V,) bool, vertices left out because a fold of the unwrap hides them.
        stats: how many triangles each step made or removed, and the parameters used.
    """

    triangles: np.ndarray
    uv: np.ndarray
    uv_mm: np.ndarray
    axis: CylinderAxis
    hidden: np.ndarray
    stats: dict


def build_cylindrical_mesh(
    points: np.ndarray,
    *,
    axis: CylinderAxis | None = None,
    displacements: np.ndarray | None = None,
    max_edge_factor: float = 3.0,
    max_stretch: float = 2.5,
    splat: float = 1.5,
    margin: float = 0.02,
    min_component_faces: int = 50,
    fill_holes_up_to: int = 6,
    flip_rounds: int = 8,
) -> CylindricalMesh:
    """Triangles and UVs for a face mask given only its vertices (GANFit's cylindrical layout).

    1. Unwrap onto a vertical cylinder (`cylindrical_unwrap`).
    2. Leave out the points a fold of the unwrap hides (`radial_occlusion`): only the outermost
       layer can be triangulated in UV (and textured from a UV map).
    3. Delaunay-triangulate the rest in UV, then flip edges towards a 3-D Delaunay mesh
       (`flip_to_delaunay_3d`, at most `flip_rounds` rounds: the first few make nearly all flips),
       staying a valid triangulation of UV.
    4. Remove long-edged, inward-facing and (given `displacements`) gap-bridging triangles, bow-tie
       fans and islands (`clean_triangulation`).
    5. Fill holes of at most `fill_holes_up_to` boundary vertices that those rules punched into the
       surface (a real hole, like the mouth, is larger).

    Args:
        points: (V, 3) the mean shape, y up, looking down +z.
        axis: the cylinder (default `default_cylinder_axis`).
        displacements: (V, 3, K) deformations the mesh must survive, e.g. 3 standard deviations of
            each expression component; triangles whose edges grow by more than `max_stretch` times
            under one of them are removed (they bridge the lips).
    """
    import time

    p = np.asarray(points, dtype=np.float64)
    started = time.perf_counter()
    axis = axis or default_cylinder_axis(p)
    uv_mm = cylindrical_unwrap(p, axis)
    spacing = local_spacing(p)
    normals = estimate_normals(p)
    hidden = radial_occlusion(p, axis, spacing=spacing, normals=normals, splat=splat)
    visible = np.flatnonzero(~hidden)
    tri = visible[delaunay_triangles(uv_mm[visible])]
    stats: dict = {"hidden_vertices": int(hidden.sum()), "delaunay": int(len(tri))}
    tri, flips = flip_to_delaunay_3d(p, uv_mm, tri, max_rounds=flip_rounds)
    stats["edge_flips"] = int(flips)
    outward = radial_directions(p[tri].mean(axis=1), axis)
    stretch = None if displacements is None else edge_stretch(p, tri, displacements)
    tri, clean_stats = clean_triangulation(
        p,
        tri,
        spacing=spacing,
        max_edge_factor=max_edge_factor,
        outward=outward,
        stretch=stretch,
        max_stretch=max_stretch,
        min_component_faces=min_component_faces,
    )
    stats["clean"] = clean_stats
    filled = fill_small_holes(p, uv_mm, tri, max_vertices=fill_holes_up_to)
    stats["hole_fill_triangles"] = int(len(filled) - len(tri))
    tri = filled
    stats["triangles"] = int(len(tri))
    stats["seconds"] = round(time.perf_counter() - started, 3)
    stats["parameters"] = {
        "axis": asdict(axis),
        "max_edge_factor": max_edge_factor,
        "max_stretch": max_stretch,
        "splat": splat,
        "margin": margin,
        "min_component_faces": min_component_faces,
        "fill_holes_up_to": fill_holes_up_to,
        "flip_rounds": flip_rounds,
    }
    return CylindricalMesh(
        triangles=tri, uv=normalize_uv(uv_mm, margin), uv_mm=uv_mm, axis=axis, hidden=hidden, stats=stats
    )
