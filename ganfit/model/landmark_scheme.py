"""Landmark schemes as data: how many points a detector gives, their facial groups, which of them lie on the
face's outline (and slide along it when the landmarks follow the visible silhouette, the "2d" convention)
and which of those stay on their own vertex. Which model vertex each point is, per face model, is the other
half of the data (`MorphableModel.landmark_indices`, `ganfit.model.landmark_table`).

`IBUG68` is the iBUG 300-W 68-point scheme (Sagonas et al., 300 Faces in-the-Wild, 2013) that dlib, 2D-FAN
and 3D-FAN use; a detector with another scheme (98-point WFLW, 106-point, MediaPipe's 468) needs its own
`LandmarkScheme` and a vertex table for the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

__all__ = ["IBUG68", "LandmarkScheme"]


@dataclass(frozen=True)
class LandmarkScheme:
    """A landmark layout.

    name: e.g. "ibug68". num_points: N.
    groups: name -> point indices (facial parts: "jaw", "left_brow", ..., for weights and region seeds).
    contour: the points on the face's outline (the jaw line), in order; under the "2d" convention they are
        re-chosen on the visible silhouette as the head turns (`ganfit.fitting.contour`).
    static_contour: the contour points that stay on their own vertex (the chin, where the outline is the
        landmark itself).
    """

    name: str
    num_points: int
    groups: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    contour: tuple[int, ...] = ()
    static_contour: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        every = [i for g in self.groups.values() for i in g] + list(self.contour) + list(self.static_contour)
        if self.num_points < 1 or any(not 0 <= i < self.num_points for i in every):
            raise ValueError(f"landmark scheme {self.name}: indices must lie in 0..{self.num_points - 1}")
        if not set(self.static_contour) <= set(self.contour):
            raise ValueError(f"landmark scheme {self.name}: static contour points must be contour points")

    def group(self, *names: str) -> tuple[int, ...]:
        """The points of the named groups, in order (KeyError for an unknown group)."""
        return tuple(i for n in names for i in self.groups[n])

    @property
    def inner(self) -> tuple[int, ...]:
        """The points not on the contour: fixed points of the face under either convention (the closed-form
        pose of the landmark stage uses them)."""
        on = set(self.contour)
        return tuple(i for i in range(self.num_points) if i not in on)


IBUG68 = LandmarkScheme(
    name="ibug68",
    num_points=68,
    groups={
        "jaw": tuple(range(0, 17)),
        "left_brow": tuple(range(17, 22)),
        "right_brow": tuple(range(22, 27)),
        "nose": tuple(range(27, 36)),
        "left_eye": tuple(range(36, 42)),
        "right_eye": tuple(range(42, 48)),
        "outer_lips": tuple(range(48, 60)),
        "inner_lips": tuple(range(60, 68)),
    },
    contour=tuple(range(0, 17)),
    static_contour=(7, 8, 9),
)
