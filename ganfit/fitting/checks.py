"""Plausibility checks of a finished fit: warnings a user should see before trusting the result.

Each check is a pure function of one image's fitted quantities and returns warning messages (empty when
the fit looks sound). The `Fitter` logs them and writes them to face.json's ``warnings``.
"""
from __future__ import annotations

import math

import torch

from .metrics import landmark_nme

#: Normalised landmark error (`landmark_nme`) above which a fit is reported as poor. On the 150 photos of
#: ../shared/faces/dev with dlib's landmarks the landmark stage reaches a median of 0.014 and at most 0.022
#: (`benchmarks/landmark_dev.py`, 2026-12-03); random points in a face-sized square give ~0.4.
POOR_FIT_NME = 0.08

#: A focal length this many prior standard deviations (of log f) from the prior mean is reported: the
#: landmarks then describe no face seen through an ordinary lens at the given image size. Over 1,065 real
#: photos (the 150 dev photos and 915 LFW photos) the fitted focal stayed within 3.0 (one photo at 3.0);
#: none of them gets a pose warning either.
FOCAL_SIGMAS = 4.0


def landmark_fit_warnings(target: torch.Tensor, fitted: torch.Tensor, where: str) -> list[str]:
    """A mean landmark error above `POOR_FIT_NME` (target, fitted: (68, 2) px): on real photos this means
    the landmarks do not describe a face the model can take."""
    error = float(landmark_nme(fitted[None], target[None])[0])
    if error <= POOR_FIT_NME:
        return []
    return [f"{where}: poor landmark fit: mean error {100 * error:.1f}% of the face size (real photos fit within "
            f"{100 * POOR_FIT_NME:.0f}%); check the landmarks (order, image, detection) before using the result"]


def pose_warnings(rotation: torch.Tensor, where: str) -> list[str]:
    """A face turned away from the camera or upside down (rotation: (3, 3) model to camera).

    The model looks down +z with y up and the camera looks down -z, so a face seen from the front has
    its forward axis R e_z pointing at the camera (positive z) and its up axis R e_y pointing up
    (positive y). Landmarks with x and y swapped, or mirrored vertically, fit best with the back of the
    head towards the camera (yaw near 180 degrees): that is never a photo of a face."""
    forward, up = rotation[:, 2], rotation[:, 1]
    out = []
    if float(forward[2]) <= 0.0:
        angle = math.degrees(math.acos(max(-1.0, min(1.0, float(forward[2])))))
        out.append(f"{where}: implausible pose: the fitted face is turned away from the camera ({angle:.0f} deg from "
                   f"facing it); the landmarks may have x and y swapped, be mirrored or be in another order")
    if float(up[1]) < 0.0:
        roll = math.degrees(math.atan2(float(up[0]), float(up[1])))
        out.append(f"{where}: implausible pose: the fitted face is rotated {abs(roll):.0f} deg in the image (more than "
                   "a quarter turn); check the photo's orientation (EXIF rotation) or the landmarks' y axis")
    return out


def focal_warnings(focal: float, focal_prior: float, log_sigma: float, where: str) -> list[str]:
    """A focal length more than `FOCAL_SIGMAS` prior standard deviations from the prior (px)."""
    if log_sigma <= 0:
        return []
    z = math.log(focal / focal_prior) / log_sigma
    if abs(z) <= FOCAL_SIGMAS:
        return []
    return [f"{where}: implausible camera: the fitted focal length {focal:.0f} px is {abs(z):.1f} prior standard "
            f"deviations from the expected {focal_prior:.0f} px; the landmarks may be scaled or not belong to this image"]
