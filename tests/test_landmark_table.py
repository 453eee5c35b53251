"""The calibrated landmark-to-vertex table: shipped for the default model, bound to it, used for 2d landmarks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ganfit import FitConfig, Fitter
from ganfit.errors import ConfigError
from ganfit.fitting.metrics import landmark_nme
from ganfit.model.landmark_table import calibrated_table, model_table

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


def test_no_table_for_a_model_it_was_not_learned_for(tiny_model):
    assert calibrated_table(tiny_model) is None
    assert np.array_equal(model_table(tiny_model).vertices, tiny_model.landmark_indices)


@pytest.mark.assets
def test_shipped_table_is_bound_to_the_default_model(bfm):
    table = calibrated_table(bfm)
    assert table is not None and table.vertices.shape == (68,)
    moved = table.vertices != bfm.landmark_indices
    assert 10 < moved.sum() <= 54  # inner points and the chin are calibrated, the sliding jaw is not
    assert not moved[[0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16]].any()
    shift = np.linalg.norm(bfm.mean[table.vertices] - bfm.mean[bfm.landmark_indices], axis=1)
    assert shift.max() < 12.0  # within the candidate radius
    # another version of the model (its mean moved by 0.1 mm) does not get the table
    import dataclasses

    other = dataclasses.replace(bfm, mean=bfm.mean + 0.1)
    assert calibrated_table(other) is None


@pytest.mark.assets
def test_fitter_uses_the_table_for_2d_landmarks_only(bfm):
    res = Fitter(FitConfig(device="cpu", quiet=True, texture_size=0), model=bfm).fit(str(PHOTO))
    assert res.solver[0]["landmarks"]["landmark_table"] == "calibrated (dlib)"
    ids = res.landmark_vertices[0].numpy()
    assert np.array_equal(ids[17:], calibrated_table(bfm).vertices[17:])
    plain = Fitter(FitConfig(device="cpu", quiet=True, texture_size=0, landmark_table="model"), model=bfm).fit(str(PHOTO))
    assert plain.solver[0]["landmarks"]["landmark_table"] == "model"
    assert np.array_equal(plain.landmark_vertices[0].numpy()[17:], bfm.landmark_indices[17:])
    # on this photo the calibrated vertices follow dlib's points more closely
    nme = lambda r: float(landmark_nme(r.landmarks_fitted, r.landmarks_target)[0])  # noqa: E731
    assert nme(res) < nme(plain)
    lms = res.landmarks_target[0].numpy()
    three = Fitter(FitConfig(device="cpu", quiet=True, texture_size=0, landmark_convention="3d"), model=bfm).fit(str(PHOTO), landmarks=lms)
    assert three.solver[0]["landmarks"]["landmark_table"] == "model"
    with pytest.raises(ConfigError, match="landmark_table"):
        FitConfig(landmark_table="learned")


@pytest.mark.assets
def test_cli_landmark_options(bfm, tmp_path):
    import json

    from ganfit.cli.main import main

    lms = Fitter(FitConfig(device="cpu", quiet=True, texture_size=0), model=bfm).fit(str(PHOTO)).landmarks_target[0].numpy()
    pts = tmp_path / "astronaut.npy"
    np.save(pts, lms)
    out = tmp_path / "face.obj"
    assert main(["fit", str(PHOTO), "--landmarks", str(pts), "-o", str(out), "-q", "--texture-size", "0", "--no-overlay",
                 "--landmark-convention", "3d", "--landmark-sigma", "0.03", "--landmark-table", "model"]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["solver"]["landmarks"]["convention"] == "3d" and doc["solver"]["landmarks"]["landmark_table"] == "model"
    assert doc["config"]["landmark_sigma"] == 0.03 and doc["config"]["contour"] == "auto"
    assert main(["fit", str(PHOTO), "-o", str(out), "-q", "--landmark-convention", "3d", "--contour", "dynamic"]) == 2
