"""Dynamic jaw-line (contour) correspondence.

Landmark detectors put the 17 jaw-line points on the visible outline of the face, which moves over the
surface as the head turns: on the side turned away the outline runs over the cheek, on the side turned
towards the camera it runs near the ear. A fixed vertex per jaw point is therefore wrong off-frontal.
Following Zhu et al., "High-fidelity Pose and Expression Normalization for Face Recognition in the Wild"
(CVPR 2015) and 3DDFA, each jaw point gets a set of candidate vertices on a horizontal band ("parallel")
of the mean face, and at every iteration the candidate that lies furthest out along the face's lateral
direction in the image -- the outline -- is used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model.landmark_scheme import IBUG68, LandmarkScheme
from ..model.morphable import MorphableModel

#: jaw points whose correspondence stays fixed (the chin, where the outline is the landmark itself).
STATIC_JAW = IBUG68.static_contour


@dataclass(frozen=True)
class ContourCandidates:
    """Candidate vertices of the J contour (jaw-line) landmarks.

    indices: (J, C) vertex ids (rows padded by repeating the landmark's own vertex).
    sides: (J,) -1 for the model's -x side (the subject's right, image left in a frontal view),
        +1 for the +x side, 0 for static points.
    points: (J,) which landmarks of the scheme the rows are (`LandmarkScheme.contour`).
    """

    indices: np.ndarray
    sides: np.ndarray
    points: tuple[int, ...] = IBUG68.contour

    @property
    def vertex_ids(self) -> np.ndarray:
        """All distinct vertex ids used by the candidates."""
        return np.unique(self.indices)


def build_contour_candidates(
    model: MorphableModel, band_mm: float = 2.5, outward_mm: float = 25.0, max_candidates: int = 40,
    scheme: LandmarkScheme = IBUG68,
) -> ContourCandidates:
    """Candidate vertices for each jaw landmark, from the model's mean shape.

    For jaw point j with vertex position (x_j, y_j, z_j) on side s = sign(x_j): the vertices with
    |y - y_j| < `band_mm`, on the same side (s*x > 0), facing sideways or forward (not the back of the
    head), and no further out than `outward_mm` beyond the landmark (s*x < s*x_j + outward_mm), thinned
    to at most `max_candidates` spread evenly along x.
    """
    mean = model.mean
    lm = model.landmark_indices[list(scheme.contour)]
    region = model.regions.get("face")
    rows, sides = [], []
    for j, vid in enumerate(lm):
        x_j, y_j, _ = mean[vid]
        if scheme.contour[j] in scheme.static_contour or abs(x_j) < 1e-6:
            rows.append(np.array([vid]))
            sides.append(0)
            continue
        s = 1.0 if x_j > 0 else -1.0
        band = np.abs(mean[:, 1] - y_j) < band_mm
        side = s * mean[:, 0] > 0.25 * s * x_j
        reach = s * mean[:, 0] < s * x_j + outward_mm
        mask = band & side & reach
        if region is not None and region.any():
            mask &= region | (np.arange(len(mean)) == vid)
        cand = np.flatnonzero(mask)
        if cand.size == 0:
            cand = np.array([vid])
        if cand.size > max_candidates:
            order = cand[np.argsort(s * mean[cand, 0])]
            cand = order[np.linspace(0, order.size - 1, max_candidates).round().astype(int)]
        if vid not in cand:
            cand = np.append(cand, vid)
        rows.append(cand)
        sides.append(int(s))
    width = max(r.size for r in rows)
    indices = np.stack([np.concatenate([r, np.full(width - r.size, lm[i])]) for i, r in enumerate(rows)])
    return ContourCandidates(indices=indices.astype(np.int64), sides=np.asarray(sides, dtype=np.int64),
                             points=tuple(scheme.contour))


def lateral_direction(rotation: torch.Tensor) -> torch.Tensor:
    """The model's +x axis as a unit direction in the image (x right, y down).

    Args:
        rotation: (B, 3, 3) model-to-camera rotation.
    Returns:
        (B, 2).
    """
    d = torch.stack([rotation[:, 0, 0], -rotation[:, 1, 0]], dim=-1)
    return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def select_contour(projected_candidates: torch.Tensor, rotation: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
    """Pick, per jaw point, the candidate on the image outline.

    Args:
        projected_candidates: (B, J, C, 2) candidate vertices projected to pixels.
        rotation: (B, 3, 3) model-to-camera rotation.
        sides: (J,) -1 / +1 / 0 as in `ContourCandidates`.
    Returns:
        (B, J) column index into C of the chosen candidate (0 for static points).
    """
    d = lateral_direction(rotation)  # (B, 2)
    score = (projected_candidates * d[:, None, None, :]).sum(-1)  # (B, J, C)
    score = score * sides.to(score.dtype)[None, :, None]
    choice = score.argmax(dim=-1)
    return torch.where(sides[None] == 0, torch.zeros_like(choice), choice)
