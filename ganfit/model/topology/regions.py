"""Face-part regions (face, skin, eyes, brows, nose, lips) from the iBUG-68 landmarks.

`landmark_regions` marks vertex masks from landmark polygons in a frontal UV layout, grown in 3-D;
`points_in_polygon` and `distance_to_polyline` are the 2-D/n-D geometry it uses, and the ``IBUG_*``
constants name the landmark groups (0-based).
"""
from __future__ import annotations

import numpy as np

from .checks import boundary_loops
from ..landmark_scheme import IBUG68

__all__ = [
    "distance_to_polyline",
    "IBUG_BROWS",
    "IBUG_EYES",
    "IBUG_JAW",
    "IBUG_NOSE",
    "IBUG_OUTER_LIPS",
    "landmark_regions",
    "points_in_polygon",
]


#: iBUG-68 landmark groups (0-based), subject's right first (image left in a frontal view).
IBUG_JAW = IBUG68.group("jaw")
IBUG_BROWS = (IBUG68.group("left_brow"), IBUG68.group("right_brow"))
IBUG_NOSE = IBUG68.group("nose")
IBUG_EYES = (IBUG68.group("left_eye"), IBUG68.group("right_eye"))
IBUG_OUTER_LIPS = IBUG68.group("outer_lips")


def distance_to_polyline(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """(N,) distance from each point to an open polyline (M, D), any dimension D."""
    x = np.asarray(points, dtype=np.float64)
    line = np.asarray(polyline, dtype=np.float64)
    best = np.full(len(x), np.inf)
    for a, b in zip(line[:-1], line[1:]):
        ab = b - a
        s = np.clip(((x - a) @ ab) / max(float(ab @ ab), 1e-30), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(x - (a + s[:, None] * ab), axis=1))
    if len(line) == 1:
        best = np.linalg.norm(x - line[0], axis=1)
    return best


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) bool: which 2-D points lie inside a simple polygon (even-odd ray casting).

    Args:
        points: (N, 2); polygon: (M, 2) corners in order (closed implicitly).
    """
    q = np.asarray(points, dtype=np.float64)
    poly = np.asarray(polygon, dtype=np.float64)
    x, y = q[:, 0:1], q[:, 1:2]
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    hits = crosses & (x < xint)
    return (hits.sum(axis=1) % 2) == 1


def _grow(points: np.ndarray, mask: np.ndarray, radius: float, allowed: np.ndarray) -> np.ndarray:
    """`mask` plus the `allowed` points within `radius` (3-D) of a point in it."""
    from scipy.spatial import cKDTree

    if radius <= 0 or not mask.any():
        return mask & allowed
    dist, _ = cKDTree(points[mask]).query(points, k=1, distance_upper_bound=radius)
    return (mask | np.isfinite(dist)) & allowed


def _convex_hull_polygon(q: np.ndarray) -> np.ndarray:
    """Corners (counter-clockwise) of the 2-D convex hull of `q`."""
    from scipy.spatial import ConvexHull

    return q[ConvexHull(q).vertices]


def landmark_regions(
    points: np.ndarray,
    uv: np.ndarray,
    triangles: np.ndarray,
    landmark_indices: np.ndarray,
    *,
    border_mm: float = 3.0,
    face_grow_mm: float = 2.0,
    eye_grow_mm: float = 1.0,
    brow_halfwidth_mm: float = 4.0,
    nose_grow_mm: float = 3.0,
    lip_grow_mm: float = 1.0,
) -> dict[str, np.ndarray]:
    """Vertex masks of face parts, from the iBUG-68 landmarks of a face mask with a frontal UV layout.

    Polygons are taken in `uv` (an unwrap in which the face is seen from the front, u growing to the
    subject's left, v up, such as `cylindrical_unwrap`) and include their corner landmarks; growing
    by a distance is done in 3-D. Every mask contains only vertices some triangle uses.

    * ``face``: inside the jaw line (landmarks 0-16) closed over the top of the mask by vertical lines
      up from landmarks 0 and 16 (the forehead up to the mask's border, no ears, no neck), grown by
      `face_grow_mm`, minus the vertices within `border_mm` of the outer border of the mesh.
    * ``eyes``: inside the eyelid contours (36-41, 42-47), grown by `eye_grow_mm`.
    * ``brows``: within `brow_halfwidth_mm` of the brow polylines (17-21, 22-26).
    * ``nose``: the convex hull of the nose landmarks (27-35), grown by `nose_grow_mm`.
    * ``lips``: inside the outer lip contour (48-59), grown by `lip_grow_mm`.
    * ``skin``: ``face`` without ``eyes``, ``brows`` and ``lips``.

    Args:
        points: (V, 3); uv: (V, 2); triangles: (F, 3); landmark_indices: (68,).
    Returns:
        name -> (V,) bool.
    """
    p = np.asarray(points, dtype=np.float64)
    q = np.asarray(uv, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    lm = np.asarray(landmark_indices, dtype=np.int64)
    used = np.zeros(len(p), bool)
    used[t.reshape(-1)] = True

    def seeded(inside: np.ndarray, group: tuple[int, ...]) -> np.ndarray:
        # a polygon's own corners sit on its edge, where the in/out test is arbitrary: add them
        seed = inside & used
        seed[lm[list(group)]] = True
        return seed & used

    jaw = q[lm[list(IBUG_JAW)]]
    top = float(q[:, 1].max()) + 1.0
    face_poly = np.concatenate([jaw, [[jaw[-1, 0], top], [jaw[0, 0], top]]])
    face = _grow(p, seeded(points_in_polygon(q, face_poly), IBUG_JAW), face_grow_mm, used)
    loops = boundary_loops(t)
    if loops and border_mm > 0:
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(p[loops[0]]).query(p, k=1)
        face &= dist > border_mm

    eyes = np.zeros(len(p), bool)
    for group in IBUG_EYES:
        eyes |= seeded(points_in_polygon(q, q[lm[list(group)]]), group)
    eyes = _grow(p, eyes, eye_grow_mm, used)

    brows = np.zeros(len(p), bool)
    for group in IBUG_BROWS:
        brows |= distance_to_polyline(p, p[lm[list(group)]]) <= brow_halfwidth_mm
    brows &= used

    nose = seeded(points_in_polygon(q, _convex_hull_polygon(q[lm[list(IBUG_NOSE)]])), IBUG_NOSE)
    nose = _grow(p, nose, nose_grow_mm, used)

    lips = seeded(points_in_polygon(q, q[lm[list(IBUG_OUTER_LIPS)]]), IBUG_OUTER_LIPS)
    lips = _grow(p, lips, lip_grow_mm, used)

    skin = face & ~eyes & ~brows & ~lips
    return {"face": face, "skin": skin, "eyes": eyes, "brows": brows, "nose": nose, "lips": lips}
