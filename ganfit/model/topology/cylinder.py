"""The cylindrical unwrap: a face mask's vertices onto a vertical cylinder, in millimetres.

`CylinderAxis` and `default_cylinder_axis` place the cylinder inside the head, `cylindrical_unwrap`
maps points to (arc length, height), `normalize_uv` scales that into [0, 1] texture coordinates, and
`radial_occlusion` finds the points a fold of the unwrap hides under another layer of the surface
(the inside of a nostril, the back of an ear's rim, the inner lips). Coordinates: y up, the face
looking down +z.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .measures import estimate_normals, local_spacing

__all__ = [
    "CylinderAxis",
    "cylindrical_unwrap",
    "default_cylinder_axis",
    "normalize_uv",
    "radial_directions",
    "radial_occlusion",
]


@dataclass(frozen=True)
class CylinderAxis:
    """A vertical (y) axis through ``(x, z) = (center_x, center_z)`` and the radius that turns its
    angle into millimetres of arc (``u = radius * angle``)."""

    center_x: float
    center_z: float
    radius: float


def default_cylinder_axis(points: np.ndarray, depth_fraction: float = 0.7) -> CylinderAxis:
    """A cylinder axis for unwrapping a face mask that looks down +z.

    The axis is vertical, at the mean ``x`` of the points and ``depth_fraction`` of the mask's
    depth behind its frontmost point (``z_max - depth_fraction * (z_max - z_min)``): about the
    centre of the head for a mask that reaches back to the ears. That keeps the angle of every point
    well inside (-180, 180) degrees and looks at the sides of the face (and the ears) from the side,
    not at a grazing angle. The radius is the median distance of the points from the axis, so arc
    length in UV is close to arc length on the surface.

    Args:
        points: (V, 3) vertices.
    """
    p = np.asarray(points, dtype=np.float64)
    cx = float(p[:, 0].mean())
    zmin, zmax = float(p[:, 2].min()), float(p[:, 2].max())
    cz = zmax - depth_fraction * (zmax - zmin)
    radius = float(np.median(np.hypot(p[:, 0] - cx, p[:, 2] - cz)))
    return CylinderAxis(cx, cz, radius)


def cylindrical_unwrap(points: np.ndarray, axis: CylinderAxis | None = None) -> np.ndarray:
    """Unwrap points onto a vertical cylinder.

    ``u = radius * atan2(x - center_x, z - center_z)`` (grows towards +x, i.e. to the right in a
    frontal view) and ``v = y`` (up), both in the units of the points.

    Args:
        points: (V, 3) vertices; axis: the cylinder (default `default_cylinder_axis`).
    Returns:
        (V, 2) float64 unwrapped coordinates.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (V, 3), got {p.shape}")
    axis = axis or default_cylinder_axis(p)
    angle = np.arctan2(p[:, 0] - axis.center_x, p[:, 2] - axis.center_z)
    return np.stack([axis.radius * angle, p[:, 1]], axis=1)


def normalize_uv(uv: np.ndarray, margin: float = 0.02) -> np.ndarray:
    """Scale 2-D coordinates into [margin, 1 - margin] keeping the aspect ratio (longer side fills it).

    The shorter side is centred. Used for texture coordinates (v up, as in OBJ).

    Returns:
        (V, 2) float64 in [0, 1].
    """
    uv = np.asarray(uv, dtype=np.float64)
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    extent = hi - lo
    scale = (1.0 - 2.0 * margin) / max(float(extent.max()), 1e-12)
    offset = (1.0 - extent * scale) / 2.0
    return (uv - lo) * scale + offset


def radial_directions(points: np.ndarray, axis: CylinderAxis) -> np.ndarray:
    """(V, 3) unit horizontal directions from the cylinder axis out through each point."""
    p = np.asarray(points, dtype=np.float64)
    d = np.stack([p[:, 0] - axis.center_x, np.zeros(len(p)), p[:, 2] - axis.center_z], axis=1)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-30)


def radial_occlusion(
    points: np.ndarray,
    axis: CylinderAxis,
    *,
    spacing: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    splat: float = 1.5,
    self_distance: float = 2.5,
) -> np.ndarray:
    """(V,) bool: points hidden from outside the cylinder by another part of the surface.

    A fold of the unwrap (the inside of a nostril, the back of the ear's rim, the inner lips) puts
    a second layer of the surface under the first in UV. A point is hidden when the ray from it
    straight out from the axis (a ray of constant UV) passes through the surface near another point
    ``j``: the surface there is approximated by a disc ("splat") around ``j`` in the plane of its
    normal, of radius ``splat * spacing[j]``. Points closer than ``self_distance * spacing`` to the
    hidden point are ignored (that is the point's own sheet, met at a grazing angle).

    Args:
        points: (V, 3); axis: the unwrap's cylinder; spacing: (V,) `local_spacing`;
        normals: (V, 3) `estimate_normals` (sign does not matter).
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    if spacing is None:
        spacing = local_spacing(p)
    if normals is None:
        normals = estimate_normals(p)
    uv = cylindrical_unwrap(p, axis)
    # the splat around j covers rays within splat * spacing[j] of it in 3-D; the unwrap scales
    # horizontal distances by radius / (distance of j from the axis), vertical ones by 1
    rho = np.hypot(p[:, 0] - axis.center_x, p[:, 2] - axis.center_z)
    reach = splat * spacing * np.maximum(1.0, axis.radius / np.maximum(rho, 1e-9)) * 1.01
    hidden = np.zeros(len(p), bool)
    near = cKDTree(uv).query_ball_point(uv, reach)
    counts = np.fromiter((len(n) for n in near), dtype=np.int64, count=len(near))
    if counts.sum() == 0:
        return hidden
    j_all = np.repeat(np.arange(len(p)), counts)
    i_all = np.concatenate([np.asarray(n, dtype=np.int64) for n in near])
    pairs = np.stack([i_all, j_all], axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    i, j = pairs[:, 0], pairs[:, 1]
    far = np.linalg.norm(p[i] - p[j], axis=1) > self_distance * np.maximum(spacing[i], spacing[j])
    i, j = i[far], j[far]
    ray = radial_directions(p, axis)[i]
    nj = normals[j]
    den = np.einsum("ij,ij->i", ray, nj)
    num = np.einsum("ij,ij->i", p[j] - p[i], nj)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = num / den
    hit = p[i] + t[:, None] * ray
    occluded = (np.abs(den) > 1e-9) & (t > 0) & (np.linalg.norm(hit - p[j], axis=1) < splat * spacing[j])
    hidden[i[occluded]] = True
    return hidden
