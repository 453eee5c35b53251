import json

import pytest

from ganfit.errors import ConfigError
from ganfit.fitting.config import FitConfig, LandmarkStageConfig, LossWeights


def test_defaults_are_valid_and_serialisable():
    cfg = FitConfig()
    d = cfg.to_dict()
    assert [s["name"] for s in d["stages"]] == ["landmarks"]
    assert FitConfig.from_dict(json.loads(json.dumps(d))) == cfg


def test_yaml_and_json_partial(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("seed: 3\nstages:\n  - name: landmarks\n    optimizer: adam\n    weights:\n      shape_prior: 0.5\n"
                 "    iterations: 7\n")
    cfg = FitConfig.from_file(y)
    stage = cfg.stage("landmarks")
    assert cfg.seed == 3 and stage.optimizer == "adam" and cfg.stage("joint") is None
    assert stage.weights == LossWeights(shape_prior=0.5)
    assert stage.iterations == 7 and stage.rigid_iterations == LandmarkStageConfig().rigid_iterations
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"contour": "static", "jaw_weight": 1}))
    cfg = FitConfig.from_file(j)
    assert cfg.contour == "static" and cfg.jaw_weight == 1.0


@pytest.mark.parametrize(
    "text, words",
    [
        ("seeed: 3\n", "unknown config option 'seeed'"),
        ("stages: [{name: landmarks, weights: {shape: 1}}]\n", "unknown config option 'stages.landmarks.weights.shape'"),
        ("stages: [{name: landmarks, optimizer: sgd}]\n", "optimizer must be one of"),
        ("optimizer: adam\n", "'optimizer' moved into the schedule"),
        ("landmark_stage: {iterations: 3}\n", "'landmark_stage' moved into the schedule"),
        ("seed: three\n", "seed must be an integer"),
        ("stages: [landmarks, texture]\n", "unknown stage 'texture'"),
        ("landmark_weights: [1, 2]\n", "68"),
        ("- a\n- b\n", "mapping"),
        ("seed: [\n", "not valid YAML"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, text, words):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("(", r"\(")):
        FitConfig.from_file(p)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        FitConfig.from_file(tmp_path / "nope.yaml")


def test_landmark_convention_options():
    assert FitConfig().landmark_convention == "auto" and FitConfig().contour == "auto"
    assert FitConfig(landmark_convention="3d", contour="static").contour == "static"
    with pytest.raises(ConfigError, match="3d"):
        FitConfig(landmark_convention="3d", contour="dynamic")
    with pytest.raises(ConfigError, match="landmark_convention"):
        FitConfig(landmark_convention="2.5d")
    with pytest.raises(ConfigError, match="landmark_sigma"):
        FitConfig(landmark_sigma=0.0)
    assert FitConfig.from_dict({"landmark_convention": "3d", "detector": "fan3d"}).detector == "fan3d"


def test_model_landmarks_option(tmp_path):
    assert FitConfig().model_landmarks is None
    y = tmp_path / "c.yaml"
    y.write_text("model: 01_MorphableModel.mat\nmodel_landmarks: bfm_landmarks.txt\n")
    cfg = FitConfig.from_file(y)
    assert cfg.model_landmarks == "bfm_landmarks.txt"
    assert FitConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert FitConfig(model_landmarks=tmp_path / "lm.npy").model_landmarks == str(tmp_path / "lm.npy")
    with pytest.raises(ConfigError, match="model_landmarks must be a string"):
        FitConfig.from_dict({"model_landmarks": [1, 2, 3]})
    with pytest.raises(ConfigError, match="model_landmarks must name a file"):
        FitConfig(model_landmarks=" ")
