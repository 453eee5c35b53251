"""dfmvr.train and dfmvr.losses: a tiny training run on synthetic renders whose loss falls, a run killed and
resumed that continues exactly as an uninterrupted one, and the landmark loss against the renderer's landmarks.

Measured here (tiny preset, 32 px, batch 2 of 2-3 views, a pool of 2 rendered batches, Adam 3e-3, one thread):
40 steps take about 0.6 s after ~2 s of setup; the loss goes from ~4.6 to ~1.0."""
from __future__ import annotations

import pytest
import torch

from dfmvr.losses import landmark_points, supervised_losses
from dfmvr.network import DFMVRConfig, DFMVROutput
from dfmvr.synthetic import SyntheticConfig, SyntheticFaces
from dfmvr.train import DFMVRTrainer, TrainConfig
from ganfit.render.camera import matrix_to_rotation_6d, rotation_matrix
from ganfit.training.jsonl import read_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(bfm, **kw) -> TrainConfig:
    base = dict(steps=40, batch_size=2, min_views=2, max_views=3, lr=3e-3, pool_size=2, checkpoint_every=100,
                network=DFMVRConfig.for_model(bfm, "tiny"), synthetic=SyntheticConfig(image_size=32))
    return TrainConfig(**{**base, **kw})


def test_tiny_run_loss_falls(bfm, tmp_path):
    trainer = DFMVRTrainer(bfm, _config(bfm), tmp_path)
    records = trainer.run()
    losses = [r["loss"] for r in records]
    print("tiny run losses:", [round(x, 3) for x in losses])
    assert len(losses) == 40 and trainer.step == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first
    assert records[-1]["landmark"] < records[0]["landmark"]
    assert [r["step"] for r in read_jsonl(tmp_path / "log.jsonl")] == list(range(1, 41))
    assert (tmp_path / "checkpoint.pt").is_file()


class Killed(Exception):
    pass


def test_killed_and_resumed_run_matches_an_uninterrupted_one(bfm, tmp_path):
    cfg = _config(bfm, steps=7, pool_size=0, checkpoint_every=3)  # fresh renders each step: the data generator is resumed too
    whole = [r["loss"] for r in DFMVRTrainer(bfm, cfg, tmp_path / "whole").run()]

    def kill_at_5(record):
        if record["step"] == 5:
            raise Killed

    first = DFMVRTrainer(bfm, cfg, tmp_path / "cut")
    with pytest.raises(Killed):
        first.run(callback=kill_at_5)  # last checkpoint: step 3; the log holds steps 1-5
    resumed = DFMVRTrainer(bfm, cfg, tmp_path / "cut")
    assert resumed.step == 3
    rest = resumed.run()
    assert [r["step"] for r in rest] == [4, 5, 6, 7]
    log = read_jsonl(tmp_path / "cut" / "log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 8))
    assert [r["loss"] for r in log] == whole
    with pytest.raises(ValueError, match="other options"):
        DFMVRTrainer(bfm, _config(bfm, steps=7, pool_size=0, checkpoint_every=3, lr=1e-2), tmp_path / "cut")


def test_losses_vanish_at_the_true_coefficients(bfm):
    batch = SyntheticFaces(bfm, SyntheticConfig(image_size=48)).sample(1, 2, torch.Generator().manual_seed(4))
    exact = DFMVROutput(shape=batch.shape, texture=torch.zeros(1, 4), expression=batch.expression,
                        rotation=matrix_to_rotation_6d(rotation_matrix(batch.rotation)), translation=batch.translation,
                        lighting=batch.lighting)
    terms = supervised_losses(exact, batch, bfm)
    assert all(float(v) < 1e-4 for v in terms.values()), terms
    pts = landmark_points(bfm, batch.shape, batch.expression[:, 0])
    assert torch.allclose(pts, bfm.vertices(batch.shape, batch.expression[:, 0])[:, bfm.landmark_indices], atol=1e-2)
    off = DFMVROutput(**{**vars(exact), "shape": exact.shape + 1.0})
    assert float(supervised_losses(off, batch, bfm)["shape"]) == pytest.approx(1.0, abs=1e-5)
    assert float(supervised_losses(off, batch, bfm)["landmark"]) > 1e-3
