"""Plausibility warnings of a finished fit: landmark error, a face turned away or rotated past a quarter
turn, a focal length far from its prior."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ganfit import FitConfig, Fitter
from ganfit.fitting.checks import focal_warnings, pose_warnings
from ganfit.render.camera import matrix_from_euler

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


def _rot(yaw, pitch, roll):
    return matrix_from_euler(torch.tensor([[yaw, pitch, roll]], dtype=torch.float64))[0]


@pytest.mark.parametrize("ypr, expected", [
    ((0, 0, 0), 0), ((60, 20, 10), 0), ((-85, 0, 0), 0), ((0, -80, 0), 0), ((0, 0, 80), 0),
    ((180, 0, 0), 1), ((100, 0, 0), 1), ((0, 0, 120), 1), ((178, -1, -93), 1),
])
def test_pose_warnings(ypr, expected):
    messages = pose_warnings(_rot(*ypr), "photo.jpg")
    assert len(messages) >= expected and (expected or not messages), (ypr, messages)
    assert all(m.startswith("photo.jpg: implausible pose") for m in messages)


def test_focal_warnings():
    assert focal_warnings(800.0, 819.2, 0.5, "a") == []
    assert focal_warnings(819.2 * np.exp(1.9), 819.2, 0.5, "a") == []  # 3.8 sigma
    (message,) = focal_warnings(819.2 * np.exp(2.5), 819.2, 0.5, "a")  # 5 sigma
    assert "5.0 prior standard deviations" in message and "9980 px" in message
    assert focal_warnings(819.2 / 10, 819.2, 0.5, "a")
    assert focal_warnings(5000.0, 819.2, 0.0, "a") == []  # a fixed focal is not fitted


@pytest.mark.assets
def test_swapped_landmarks_are_reported(bfm, caplog):
    fitter = Fitter(FitConfig(device="cpu", quiet=True, texture_size=0), model=bfm)
    good = fitter.fit(str(PHOTO))
    assert good.warnings == [[]]
    lms = good.landmarks_target[0].numpy()
    with caplog.at_level("WARNING", logger="ganfit"):
        swapped = fitter.fit(str(PHOTO), landmarks=lms[:, ::-1].copy())  # x and y swapped: fits as the back of a head
        mirrored = fitter.fit(str(PHOTO), landmarks=np.stack([lms[:, 0], 512 - lms[:, 1]], 1))  # y mirrored
    for res in (swapped, mirrored):
        assert any("turned away from the camera" in m for m in res.warnings[0]), res.warnings
        assert res.to_dict()["warnings"] == res.warnings[0]
    assert any("turned away" in r.getMessage() for r in caplog.records)


@pytest.mark.assets
def test_seed_is_what_the_docs_say(bfm):
    """The landmark stage is deterministic, so any seed gives the same result; the fit's generator is
    re-seeded from the config at the start of every fit."""
    a = Fitter(FitConfig(device="cpu", quiet=True, texture_size=0, seed=0), model=bfm)
    b = Fitter(FitConfig(device="cpu", quiet=True, texture_size=0, seed=7), model=bfm)
    ra, rb = a.fit(str(PHOTO)), b.fit(str(PHOTO))
    assert torch.equal(ra.params.shape, rb.params.shape) and torch.equal(ra.params.translation, rb.params.translation)
    first = torch.rand(3, generator=b.generator)
    b.fit(str(PHOTO))
    assert torch.equal(torch.rand(3, generator=b.generator), first)
    assert not torch.equal(torch.rand(3, generator=a.generator), first)
