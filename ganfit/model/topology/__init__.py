"""Building and checking a triangle mesh for a face model that ships only vertices.

Some face-model files (3DDFA's BFM arrays, for one) carry a mean shape and bases but no triangles and
no texture coordinates. This package makes both from the mean shape in a cylindrical UV layout (the
kind of UV map GANFit's texture generator works in: the face unwrapped around a vertical axis).
`build_cylindrical_mesh` (in `build`) runs the whole recipe:

1. `cylindrical_unwrap` (in `cylinder`): angle around a vertical axis inside the head (times a
   radius, so both UV axes are in millimetres) and height ``y``.
2. `radial_occlusion` (in `cylinder`): where the unwrap folds (the inside of a nostril, the back of
   an ear's rim, the inner lips) a second layer of the surface lies under the first in UV; those
   points are left out, since no UV triangulation (and no UV texture) can hold both layers.
3. `delaunay_triangles` (in `triangulate`) of the rest in UV (counter-clockwise in UV, which is
   counter-clockwise seen from outside: outward normals), then `flip_to_delaunay_3d` to undo the
   long, spiky triangles a squeezing projection (slopes seen at a grazing angle) gives.
4. `clean_triangulation` (in `triangulate`): drop triangles bridging holes (mouth, nostrils) and the
   long thin ones along the convex hull of the UV domain (edge length against the local vertex
   spacing), triangles facing inward, triangles a deformation of the model would stretch
   (`edge_stretch`, in `measures`: the lips, which touch in the mean shape), bow-tie fans and small
   islands; `fill_small_holes` closes the pin-holes that leaves.
5. `mesh_report` (in `checks`): the checks (degenerate and UV-flipped triangles, edge manifoldness
   and consistent orientation, manifold vertices, outward normals, longest edge relative to the
   local vertex spacing, unused vertices, Euler characteristic and boundary loops).

`landmark_regions` (in `regions`) then marks face parts (face, skin, eyes, brows, nose, lips) from
the iBUG-68 landmarks. `mirror_vertices` and `harmonic_fill` (in `fill`) complete per-vertex values
(colours) where they are unknown. Everything is numpy/scipy, pure functions of arrays, and
independent of any particular model. Coordinates: y up, the face looking down +z (the
`MorphableModel` convention).

Modules (each importable on its own; every public name is re-exported here):

=============== ==================================================================================
module          what it holds
=============== ==================================================================================
``measures``    areas, normals, edge lengths, local spacing, estimated normals, `edge_stretch`
``cylinder``    `CylinderAxis`, the unwrap, `normalize_uv`, `radial_directions`, `radial_occlusion`
``checks``      `edge_table`, `boundary_loops`, `nonmanifold_vertices`, `MeshReport`, `mesh_report`
``triangulate`` Delaunay in UV, 3-D Delaunay flips, `clean_triangulation`, `fill_small_holes`
``build``       `CylindricalMesh`, `build_cylindrical_mesh` (the recipe above)
``regions``     the ``IBUG_*`` landmark groups, `points_in_polygon`, `distance_to_polyline`,
                `landmark_regions`
``fill``        `mirror_vertices`, `vertex_adjacency`, `harmonic_fill`
=============== ==================================================================================
"""
from __future__ import annotations

from .build import CylindricalMesh, build_cylindrical_mesh
from .checks import MeshReport, boundary_loops, edge_table, mesh_report, nonmanifold_vertices
from .cylinder import (
    CylinderAxis,
    cylindrical_unwrap,
    default_cylinder_axis,
    normalize_uv,
    radial_directions,
    radial_occlusion,
)
from .fill import harmonic_fill, mirror_vertices, vertex_adjacency
from .measures import (
    edge_lengths,
    edge_stretch,
    estimate_normals,
    face_normals,
    local_spacing,
    triangle_areas,
    uv_signed_areas,
    vertex_normals,
)
from .regions import (
    IBUG_BROWS,
    IBUG_EYES,
    IBUG_JAW,
    IBUG_NOSE,
    IBUG_OUTER_LIPS,
    distance_to_polyline,
    landmark_regions,
    points_in_polygon,
)
from .triangulate import clean_triangulation, delaunay_triangles, fill_small_holes, flip_to_delaunay_3d

__all__ = [
    "boundary_loops",
    "build_cylindrical_mesh",
    "clean_triangulation",
    "CylinderAxis",
    "cylindrical_unwrap",
    "CylindricalMesh",
    "default_cylinder_axis",
    "delaunay_triangles",
    "distance_to_polyline",
    "edge_lengths",
    "edge_stretch",
    "edge_table",
    "estimate_normals",
    "face_normals",
    "fill_small_holes",
    "flip_to_delaunay_3d",
    "harmonic_fill",
    "IBUG_BROWS",
    "IBUG_EYES",
    "IBUG_JAW",
    "IBUG_NOSE",
    "IBUG_OUTER_LIPS",
    "landmark_regions",
    "local_spacing",
    "mesh_report",
    "MeshReport",
    "mirror_vertices",
    "nonmanifold_vertices",
    "normalize_uv",
    "points_in_polygon",
    "radial_directions",
    "radial_occlusion",
    "triangle_areas",
    "uv_signed_areas",
    "vertex_adjacency",
    "vertex_normals",
]
