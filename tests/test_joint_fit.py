"""The joint stage inside `Fitter` and `ganfit fit`: the schedule in the config (YAML too), photos of any size
and working-copy scale, face.json's joint fields, the model texture output."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from ganfit.cli.main import build_parser, fit_config, main
from ganfit.errors import ConfigError, GanfitError
from ganfit.fitting import FitConfig
from ganfit.fitting.joint_fit import run_joint_stage
from ganfit.fitting.params import FitParams
from ganfit.fitting.stages import JointStageResult
from ganfit.io.images import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.png"


def test_schedule_in_the_config(tmp_path):
    assert FitConfig().stage_names == ("landmarks",)
    cfg_file = tmp_path / "fit.yaml"
    cfg_file.write_text("stages:\n  - landmarks\n  - name: joint\n    iterations: 12\n    weights: {pixel: 4, identity: 0}\n"
                        "    rates: {latent: 0.1}\nidentity: none\ntexture: model\n")
    cfg = FitConfig.from_file(cfg_file)
    joint = cfg.stage("joint")
    assert cfg.stage_names == ("landmarks", "joint") and joint.iterations == 12
    assert joint.weights.pixel == 4.0 and joint.weights.identity == 0.0
    assert joint.rates.latent == 0.1 and cfg.identity == "none" and cfg.texture == "model"
    assert FitConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # face.json's config round-trips
    for bad, words in ((dict(stages=("joint",)), "start with landmarks"), (dict(stages=("landmarks", "joint", "joint")), "at most once"),
                       (dict(texture="model"), "add the joint stage"), (dict(texture="blend"), "add the joint stage"), (dict(identity="vgg"), "identity must be")):
        with pytest.raises(ConfigError, match=words):
            FitConfig(**bad)
    with pytest.raises(ConfigError, match="stages.joint.weights.pixle"):
        FitConfig.from_dict({"stages": ["landmarks", {"name": "joint", "weights": {"pixle": 1}}]})


def test_command_line_options_reach_each_stages_settings(tmp_path):
    """--stages keeps a config file's settings of the stages it names; --iterations, --optimizer and
    --joint-iterations land in their stage's settings; an option for a stage the schedule lacks is refused."""
    f = tmp_path / "fit.yaml"
    f.write_text("stages: [landmarks, {name: joint, iterations: 12, weights: {pixel: 4}}]\nidentity: none\n")

    def cfg(*extra):
        return fit_config(build_parser().parse_args(["fit", "x.jpg", "--config", str(f), *extra]))

    c = cfg("--stages", "landmarks,joint", "--iterations", "9", "--texture", "blend")
    assert c.stage("joint").iterations == 12 and c.stage("joint").weights.pixel == 4.0 and c.identity == "none"
    assert c.stage("landmarks").iterations == 9 and c.texture == "blend"
    c = cfg("--joint-iterations", "30", "--optimizer", "adam", "--iterations", "77")
    assert c.stage("joint").iterations == 30 and c.stage("joint").warmup_iterations == 10
    assert c.stage("landmarks").optimizer == "adam" and c.stage("landmarks").adam_iterations == 77
    assert c.stage("landmarks").iterations == 50
    assert cfg("--stages", "landmarks").stage_names == ("landmarks",)
    with pytest.raises(GanfitError, match="add --stages landmarks,joint"):
        cfg("--stages", "landmarks", "--joint-iterations", "5")
    with pytest.raises(ConfigError, match="add the joint stage"):
        cfg("--stages", "landmarks", "--texture", "model")


class RecordingStage:
    """Stands in for `JointStage`: records what it is given and moves the shape by a known amount."""

    def __init__(self):
        self.calls = []

    def run(self, images, landmarks, params, vertex_ids, *, generator, landmark_weights, progress, sliding_jaw=False,
            frame_subject=None):
        self.calls.append((images.shape, landmarks.clone(), params))
        moved = FitParams(shape=params.shape + 1, expression=params.expression, rotation=params.rotation,
                          translation=params.translation, focal=params.focal, principal=params.principal)
        z = torch.zeros(1, 4)
        return JointStageResult(params=moved, latent=z, lighting=torch.zeros(1, 9, 3), gain=torch.ones(1, 3),
                                offset=torch.zeros(1, 3), texture=torch.zeros(1, 3, 8, 8),
                                history=[{"pixel": [0.5]}, {"pixel": [0.25]}], stop_reason=["plateau"], iterations=1,
                                warnings=[["w"]])


def test_photos_of_any_size_run_in_working_copy_pixels():
    """A photo downscaled to a working copy (scale 0.5) gets landmarks, focal length and principal point in the
    copy's pixels; the merged result is in the photos' own pixels, in photo order."""
    small = Image(np.zeros((40, 30, 3), np.float32), "a.png", 1, "RGB", 8)
    big = Image(np.zeros((50, 60, 3), np.float32), "b.jpg", 1, "RGB", 8, original_size=(120, 100))
    assert big.scale == (0.5, 0.5)
    params = FitParams(shape=torch.zeros(2, 3, dtype=torch.float64), expression=torch.zeros(2, 2, dtype=torch.float64),
                       rotation=torch.zeros(2, 3, dtype=torch.float64), translation=torch.zeros(2, 3, dtype=torch.float64),
                       focal=torch.tensor([48.0, 192.0], dtype=torch.float64),
                       principal=torch.tensor([[15.0, 20.0], [60.0, 50.0]], dtype=torch.float64))
    targets = torch.full((2, 68, 2), 10.0, dtype=torch.float64)
    stage = RecordingStage()
    out = run_joint_stage(stage, [small, big], targets, params, torch.zeros(2, 68, dtype=torch.long), torch.ones(68),
                          torch.Generator().manual_seed(0))
    (shape_a, lm_a, p_a), (shape_b, lm_b, p_b) = stage.calls
    assert shape_a == (1, 40, 30, 3) and shape_b == (1, 50, 60, 3)
    assert torch.allclose(lm_a, targets[:1]) and torch.allclose(lm_b, targets[1:] * 0.5)
    assert float(p_a.focal) == 48.0 and float(p_b.focal) == 96.0
    assert p_b.principal.tolist() == [[30.0, 25.0]]
    assert torch.equal(out.params.focal, params.focal) and torch.equal(out.params.principal, params.principal)
    assert torch.equal(out.params.shape, params.shape + 1)
    assert out.stop_reason == ["plateau", "plateau"] and out.warnings == [["w"], ["w"]]
    s = out.summary(1)
    assert s["losses"]["pixel"] == [0.5, 0.25] and len(s["sh_lighting"]) == 9 and s["stop_reason"] == "plateau"


@pytest.mark.assets
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("texture", ["model", "blend"])
def test_fit_with_the_joint_stage_end_to_end(tmp_path, capsys, texture):
    out = tmp_path / "out"
    code = main(["fit", str(PHOTO), "-o", str(out / "face.obj"), "--stages", "landmarks,joint", "--joint-iterations", "8",
                 "--texture", texture, "--texture-size", "64", "--no-overlay", "-q"])
    err = capsys.readouterr().err
    assert code == 0, err
    data = json.loads((out / "face.json").read_text())
    joint = data["joint"]
    assert data["solver"]["joint"]["iterations"] == joint["iterations"] <= 8
    assert len(joint["texture_latent"]) > 0 and np.array(joint["sh_lighting"]).shape == (9, 3)
    pixel, identity = joint["losses"]["pixel"], joint["losses"]["identity"]
    assert pixel[-1] < pixel[0] and identity[-1] < identity[0]  # what it optimises went down
    before, after = data["landmark_stage_params"], data["params"]
    assert before["focal_px"] == after["focal_px"]
    assert data["landmarks"]["reprojection_error_px"] < 4.0 and data["timings_s"]["joint_stage"] > 0
    tex = np.asarray(PILImage.open(out / "face_texture.png"))
    assert tex.shape == (64, 64, 3) and tex.std() > 5  # the model texture (or the blend), not empty
    if texture == "blend":
        assert data["timings_s"]["texture_blend"] > 0
    from ganfit.io.mesh import read_obj

    assert np.isfinite(read_obj(out / "face.obj").vertices).all()
