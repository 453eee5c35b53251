"""The generic training checkpoint (ganfit.training.checkpoint) and JSONL logs (ganfit.training.jsonl):
round trip, a resumed toy run repeating an uninterrupted one bit for bit, atomic replacement."""
from __future__ import annotations

import json

import pytest
import torch

from ganfit.errors import ModelFormatError
from ganfit.training.checkpoint import cpu_state_dict, load_checkpoint, save_checkpoint
from ganfit.training.jsonl import append_jsonl, read_jsonl, truncate_jsonl

FMT = "toy-train"


class ToyRun:
    """A tiny training loop whose every step draws from a named generator and the global torch RNG
    (dropout), so that a resume that restored anything wrongly would diverge."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-2)
        self.data_rng = torch.Generator().manual_seed(seed + 1)
        self.step = 0

    def train_step(self) -> float:
        x = torch.randn(16, 4, generator=self.data_rng)
        y = x.sum(1, keepdim=True)
        loss = (self.net(x) - y).square().mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.step += 1
        return float(loss.detach())

    def save(self, path) -> None:
        save_checkpoint(path, FMT, step=self.step, config={"lr": 1e-2},
                        state={"net": cpu_state_dict(self.net), "opt": self.opt.state_dict()},
                        generators={"data": self.data_rng})

    def restore(self, path) -> None:
        ck = load_checkpoint(path, FMT)
        self.net.load_state_dict(ck.state["net"])
        self.opt.load_state_dict(ck.state["opt"])
        ck.restore_rng({"data": self.data_rng})
        self.step = ck.step


def test_round_trip(tmp_path):
    run = ToyRun()
    run.train_step()
    path = tmp_path / "ck.pt"
    run.save(path)
    ck = load_checkpoint(path, FMT)
    assert ck.format == FMT and ck.step == 1 and ck.config == {"lr": 1e-2} and ck.path == path
    assert set(ck.state) == {"net", "opt"}
    for k, v in run.net.state_dict().items():
        assert torch.equal(ck.state["net"][k], v)
    assert torch.equal(ck.rng["generators"]["data"], run.data_rng.get_state())
    assert torch.equal(ck.rng["torch"], torch.get_rng_state())


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    full = ToyRun()
    full_losses = [full.train_step() for _ in range(10)]

    first = ToyRun()
    losses = [first.train_step() for _ in range(5)]
    first.save(tmp_path / "ck.pt")
    torch.manual_seed(1234)  # another process: the global RNG is elsewhere
    second = ToyRun(seed=99)  # different initial weights and data stream, all replaced by the checkpoint
    second.restore(tmp_path / "ck.pt")
    losses += [second.train_step() for _ in range(5)]
    assert losses == full_losses and second.step == 10
    for (k, a), b in zip(full.net.state_dict().items(), second.net.state_dict().values()):
        assert torch.equal(a, b), k


def test_restoring_without_the_generator_state_fails(tmp_path):
    run = ToyRun()
    run.save(tmp_path / "ck.pt")
    ck = load_checkpoint(tmp_path / "ck.pt")
    with pytest.raises(ModelFormatError, match="'augment'"):
        ck.restore_rng({"augment": torch.Generator()})


class _Exploding:
    """Pickling it fails half-way through torch.save (after part of the file was written)."""

    def __reduce__(self):
        raise KeyboardInterrupt


def test_interrupted_write_keeps_the_old_checkpoint(tmp_path):
    run = ToyRun()
    run.train_step()
    path = tmp_path / "ck.pt"
    run.save(path)
    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, FMT, step=2, state={"net": cpu_state_dict(run.net), "boom": _Exploding()})
    assert path.read_bytes() == before and load_checkpoint(path, FMT).step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path / "a.pt", FMT, step=0, state={"step": 3})
    with pytest.raises(ModelFormatError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFormatError, match="unreadable"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ModelFormatError, match="not a ganfit training checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    save_checkpoint(tmp_path / "other.pt", "other-format", step=0, state={})
    with pytest.raises(ModelFormatError, match="expected 'toy-train'"):
        load_checkpoint(tmp_path / "other.pt", FMT)


def test_jsonl_truncate_drops_records_after_the_checkpoint(tmp_path):
    log = tmp_path / "log.jsonl"
    for step in (2, 4, 6, 8):
        append_jsonl(log, {"step": step, "loss": step / 10})
    with open(log, "a", encoding="utf-8") as fh:
        fh.write('{"step": 10, "lo')  # a line cut short by a kill
    assert [r["step"] for r in read_jsonl(log)] == [2, 4, 6, 8]
    truncate_jsonl(log, 5)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [2, 4]
    truncate_jsonl(tmp_path / "missing.jsonl", 5)
    assert not (tmp_path / "missing.jsonl").exists()
