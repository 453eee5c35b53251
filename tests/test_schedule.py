"""The schedule as data: `FitState` gather/scatter through `frame_subject`, schedules built from the config
(names and per-stage mappings), and a stage of one's own run by `Fitter` in order from the previous state."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganfit.errors import ConfigError
from ganfit.fitting import FitConfig, Fitter, LandmarkStageConfig
from ganfit.fitting.observations import Observations, build_observations, landmark_convention
from ganfit.fitting.params import FitParams
from ganfit.fitting.schedule import build_schedule, default_factories, run_schedule
from ganfit.fitting.stages import JointStageConfig, JointWeights
from ganfit.fitting.stages.base import Stage, StageOutcome
from ganfit.fitting.stages.joint_adapter import JointFitStage
from ganfit.fitting.stages.landmarks import LandmarksStage
from ganfit.fitting.state import FitState, subject_first_frames
from ganfit.fitting.synthetic import make_synthetic_faces
from ganfit.io.images import Image


def _params(b: int) -> FitParams:
    g = torch.Generator().manual_seed(0)
    return FitParams(shape=torch.randn(b, 5, generator=g), expression=torch.randn(b, 3, generator=g),
                     rotation=torch.randn(b, 3, generator=g), translation=torch.randn(b, 3, generator=g),
                     focal=torch.rand(b, generator=g) + 1, principal=torch.rand(b, 2, generator=g))


# ------------------------------------------------------------------------------------------ state
def test_state_round_trip_of_independent_frames():
    p = _params(3)
    state = FitState.from_fit_params(p, torch.arange(3), lighting=torch.zeros(3, 9, 3),
                                     texture_latent=torch.arange(6.0).view(3, 2))
    assert state.num_frames == state.num_subjects == 3 and state.subject.shape.shape == (3, 5)
    back = state.to_fit_params()
    for name in ("shape", "expression", "rotation", "translation", "focal", "principal"):
        assert torch.equal(getattr(back, name), getattr(p, name)), name
    assert torch.equal(state.frame_texture_latent(), torch.arange(6.0).view(3, 2))


def test_shared_subject_gathers_its_shape_into_every_frame():
    """Frames 0 and 2 are one person: one shape row (the first frame's) serves both; frame parameters stay per frame."""
    p = _params(3)
    fs = torch.tensor([0, 1, 0])
    state = FitState.from_fit_params(p, fs, texture_latent=torch.tensor([[1.0], [2.0], [3.0]]))
    assert state.num_subjects == 2 and state.subject.shape.shape == (2, 5)
    assert torch.equal(state.subject.shape, p.shape[[0, 1]])
    back = state.to_fit_params()
    assert torch.equal(back.shape, p.shape[[0, 1, 0]]) and torch.equal(back.expression, p.expression)
    assert state.frame_texture_latent().flatten().tolist() == [1.0, 2.0, 1.0]
    assert subject_first_frames(torch.tensor([1, 0, 1, 2])).tolist() == [1, 0, 3]
    with pytest.raises(ConfigError, match="subject 1 has no frame"):
        subject_first_frames(torch.tensor([0, 2]))


def test_empty_state_is_not_fitted():
    state = FitState.empty(torch.arange(2))
    assert not state.fitted and state.landmark_vertices is None
    with pytest.raises(ConfigError, match="landmark stage"):
        state.to_fit_params()


# ------------------------------------------------------------------------------------------ config
def test_schedules_built_from_the_config(tiny_model):
    one = build_schedule(FitConfig(device="cpu"), tiny_model, "cpu")
    assert [type(s) for s in one] == [LandmarksStage] and isinstance(one[0], Stage)
    cfg = FitConfig(device="cpu", stages=("landmarks", "joint"))
    two = build_schedule(cfg, tiny_model, "cpu")
    assert [s.name for s in two] == ["landmarks", "joint"] and isinstance(two[1], JointFitStage)
    assert [s.timing_key for s in two] == ["landmark_stage", "joint_stage"]
    assert set(default_factories()) == {"landmarks", "joint"}


def test_stage_entries_become_typed_settings(tmp_path):
    f = tmp_path / "fit.yaml"
    f.write_text("stages: [{name: landmarks, iterations: 7}, {name: joint, iterations: 30, weights: {pixel: 4}}]\n"
                 "identity: none\n")
    cfg = FitConfig.from_file(f)
    assert cfg.stage_names == ("landmarks", "joint") and cfg.stage("landmarks").iterations == 7
    assert isinstance(cfg.stages[0], LandmarkStageConfig) and isinstance(cfg.stages[1], JointStageConfig)
    assert cfg.stage("joint").iterations == 30 and cfg.stage("joint").weights.pixel == 4.0
    assert cfg.stage("joint").weights.identity == JointWeights().identity  # the stage's other settings: defaults
    assert FitConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert FitConfig(stages=("landmarks", {"name": "joint"})).stages == (LandmarkStageConfig(), JointStageConfig())
    assert FitConfig(stages="landmarks,joint") == FitConfig(stages=("landmarks", "joint"))
    with pytest.raises(ConfigError, match="stages.joint.iteratons"):
        FitConfig(stages=("landmarks", {"name": "joint", "iteratons": 3}))
    with pytest.raises(ConfigError, match="needs a name"):
        FitConfig(stages=({"iterations": 3},))
    with pytest.raises(ConfigError, match="moved into the schedule"):
        FitConfig.from_dict({"joint_stage": {"iterations": 3}})
    with pytest.raises(ConfigError, match="must be a stage name"):
        FitConfig(stages=("landmarks", 3))


# ------------------------------------------------------------------------------------------ running
class ShiftStage:
    """A stage of one's own: records the state it is given and moves the expression by one."""

    name = "shift"
    timing_key = "shift_stage"

    def __init__(self):
        self.seen: list[FitState] = []

    def run(self, observations, state, *, generator, progress=None):
        self.seen.append(state)
        if progress is not None:
            progress({"step": "1"})
        frame = type(state.frame)(**{**vars(state.frame), "expression": state.frame.expression + 1})
        b = observations.num_frames
        return StageOutcome(state=state.replace(frame=frame), history=[{"moved": [1.0] * b}], stop_reason=["done"] * b,
                            iterations=[1] * b, warnings=[["shifted"]] * b, details=[{"by": 1}] * b)


@pytest.fixture
def face_landmarks(tiny_model) -> np.ndarray:
    syn = make_synthetic_faces(tiny_model, 1, torch.Generator().manual_seed(0), noise_px=0.0, yaw_deg=10)
    return syn.landmarks[0].numpy()


def test_a_stage_of_ones_own_runs_after_the_landmark_stage(tiny_model, face_landmarks):
    cfg = FitConfig(device="cpu", quiet=True, texture_size=0, stages=("landmarks", "joint"))
    shift = ShiftStage()
    schedule = build_schedule(cfg, tiny_model, "cpu", factories={"joint": lambda c, s, m, d: shift})
    assert schedule[1] is shift
    grey = np.full((512, 512, 3), 0.5, np.float32)
    res = Fitter(cfg, model=tiny_model, schedule=schedule).fit([grey, grey], landmarks=[face_landmarks, face_landmarks])
    (seen,) = shift.seen
    assert seen.fitted and seen.landmark_vertices.shape == (2, 68)  # the landmark stage's state
    assert torch.equal(res.params.expression, seen.frame.expression + 1)
    assert torch.equal(res.landmark_stage_params.expression, seen.frame.expression)
    assert res.solver[0]["shift"] == {"stop_reason": "done", "iterations": 1, "by": 1}
    assert res.solver[0]["landmarks"]["convention"] == "2d" and "shifted" in res.warnings[1]
    assert res.timings["shift_stage"] >= 0 and res.timings["landmark_stage"] > 0


def test_run_schedule_threads_the_state(tiny_model, face_landmarks):
    img = Image(np.zeros((256, 256, 3), np.float32), None, 1, "RGB", 8)
    obs = build_observations([img], [face_landmarks], [None], device="cpu")
    assert isinstance(obs, Observations) and obs.frame_subject.tolist() == [0] and obs.conventions == ["2d"]
    assert landmark_convention("auto", None) == "2d" and landmark_convention("3d", None) == "3d"
    first, second = ShiftStage(), ShiftStage()
    outcomes = run_schedule([first, second], obs, generator=torch.Generator(), state=FitState.from_fit_params(
        _params(1).to(dtype=torch.float64), obs.frame_subject))
    assert second.seen[0] is outcomes[0].state and len(outcomes) == 2
    assert torch.allclose(outcomes[1].state.frame.expression, first.seen[0].frame.expression + 2)


def test_the_landmark_stage_shares_a_subjects_shape(tiny_model, face_landmarks):
    img = Image(np.zeros((256, 256, 3), np.float32), None, 1, "RGB", 8)
    obs = build_observations([img, img], [face_landmarks] * 2, [None, None], frame_subject=torch.tensor([0, 0]))
    stage = build_schedule(FitConfig(device="cpu"), tiny_model, "cpu")[0]
    out = stage.run(obs, FitState.empty(obs.frame_subject), generator=torch.Generator())
    assert out.state.num_subjects == 1 and out.state.subject.shape.shape[0] == 1
    params = out.state.to_fit_params()
    assert torch.equal(params.shape[0], params.shape[1])


def test_merge_histories_puts_values_in_photo_order_and_repeats_finished_groups():
    from ganfit.fitting.history import merge_histories

    a = [{"px": [1.0, 2.0]}, {"px": [0.5, 1.5]}, {"px": [0.25, 1.0]}]  # images 2 and 0
    b = [{"px": [9.0]}]  # image 1 stopped after one entry
    merged = merge_histories([([2, 0], a), ([1], b), ([3], [])], 4, fill=-1.0)
    assert merged == [{"px": [2.0, 9.0, 1.0, -1.0]}, {"px": [1.5, 9.0, 0.5, -1.0]}, {"px": [1.0, 9.0, 0.25, -1.0]}]
    assert merge_histories([], 3) == []


@pytest.mark.assets
def test_the_joint_stage_shares_the_fits_landmark_term(bfm):
    """--landmark-sigma and the jaw weight reach the joint stage's landmark term too, not only the landmark stage's."""
    cfg = FitConfig(device="cpu", stages=("landmarks", "joint"), landmark_sigma=0.035, jaw_weight=0.25, identity="none")
    joint = build_schedule(cfg, bfm, "cpu")[1].stage
    assert joint.config.landmark_sigma == 0.035 and joint.config.jaw_weight == 0.25
    assert joint.config.iterations == cfg.stage("joint").iterations
