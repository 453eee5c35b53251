"""Resumable supervised training of DF-MVR on synthetic multi-view renders (`dfmvr.synthetic`).

`DFMVRTrainer(model, TrainConfig(...), out_dir).run()` trains with Adam on `dfmvr.losses.supervised_losses`,
writes ``out_dir/log.jsonl`` (one record per step, `ganfit.training.jsonl`) and ``out_dir/checkpoint.pt``
(`ganfit.training.checkpoint`: network, optimiser, step and the data generator's state) every
`checkpoint_every` steps and at the end. A trainer built on a folder holding a checkpoint resumes from it: the
log is cut back to the checkpoint's step and the following steps are those an uninterrupted run would take
(same device and thread count).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ganfit.training.checkpoint import cpu_state_dict, load_checkpoint, save_checkpoint
from ganfit.training.jsonl import append_jsonl, truncate_jsonl

from .losses import LossWeights, supervised_losses, total_loss
from .network import DFMVRConfig, DFMVRNet
from .synthetic import MultiViewBatch, SyntheticConfig, SyntheticFaces

__all__ = ["TrainConfig", "DFMVRTrainer", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "dfmvr-train"


@dataclass(frozen=True)
class TrainConfig:
    """Training options (plain data: `to_dict` / `from_dict`).

    steps: total optimiser steps; batch_size: people per step, each in V views with V drawn uniformly from
    [min_views, max_views]; lr: Adam's step size; weights: loss weights. pool_size: 0 renders fresh samples
    every step; N > 0 renders N batches once (seeded) and draws from them (fast, for smoke runs).
    network: its config (its num_shape / num_expression must match the face model); synthetic: the renders.
    """

    steps: int = 1000
    batch_size: int = 4
    min_views: int = 2
    max_views: int = 5
    lr: float = 1e-3
    weights: LossWeights = field(default_factory=LossWeights)
    pool_size: int = 0
    checkpoint_every: int = 50
    seed: int = 0
    network: DFMVRConfig = field(default_factory=DFMVRConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("network", "synthetic", "weights")}
        return {**d, "weights": self.weights.as_dict(), "network": self.network.to_dict(), "synthetic": self.synthetic.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        d = dict(data)
        return cls(**{**d, "weights": LossWeights(**d.get("weights", {})), "network": DFMVRConfig.from_dict(d.get("network", {})),
                      "synthetic": SyntheticConfig.from_dict(d.get("synthetic", {}))})


class DFMVRTrainer:
    """Trains a `DFMVRNet` for a `MorphableModel` (see the module doc).

    Attributes: net, optimizer, step (steps done), checkpoint_path, log_path.
    """

    def __init__(self, model, config: TrainConfig, out_dir: str | Path, *, device: str | torch.device = "cpu") -> None:
        c = config
        if (c.network.num_shape, c.network.num_expression) != (model.num_shape, model.num_expression):
            raise ValueError(f"network config is for Ks={c.network.num_shape}, Ke={c.network.num_expression}; the face model "
                             f"{model.name!r} has {model.num_shape}, {model.num_expression} (use DFMVRConfig.for_model)")
        if not 1 <= c.min_views <= c.max_views:
            raise ValueError(f"need 1 <= min_views <= max_views, got {c.min_views}, {c.max_views}")
        self.model, self.config, self.device = model, c, torch.device(device)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path, self.log_path = self.out_dir / "checkpoint.pt", self.out_dir / "log.jsonl"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            self.net = DFMVRNet(c.network).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        self.data = SyntheticFaces(model, c.synthetic)
        self.generator = torch.Generator().manual_seed(c.seed + 1)
        self.pool = self._render_pool() if c.pool_size else []
        self.step = 0
        if self.checkpoint_path.is_file():
            self._resume()

    def _views(self, g: torch.Generator) -> int:
        c = self.config
        return int(torch.randint(c.min_views, c.max_views + 1, (1,), generator=g))

    def _render_pool(self) -> list[MultiViewBatch]:
        g = torch.Generator().manual_seed(self.config.seed + 2)
        return [self.data.sample(self.config.batch_size, self._views(g), g) for _ in range(self.config.pool_size)]

    def next_batch(self) -> MultiViewBatch:
        """The next training batch, from the data generator (saved in checkpoints)."""
        if self.pool:
            return self.pool[int(torch.randint(len(self.pool), (1,), generator=self.generator))]
        return self.data.sample(self.config.batch_size, self._views(self.generator), self.generator)

    def _resume(self) -> None:
        ckpt = load_checkpoint(self.checkpoint_path, CHECKPOINT_FORMAT, map_location=self.device)
        if ckpt.config != self.config.to_dict():
            raise ValueError(f"{self.checkpoint_path} was written by a run with other options; use another folder "
                             f"or the same TrainConfig")
        self.net.load_state_dict(ckpt.state["network"])
        self.optimizer.load_state_dict(ckpt.state["optimizer"])
        ckpt.restore_rng({"data": self.generator})
        self.step = ckpt.step
        truncate_jsonl(self.log_path, self.step)

    def save(self) -> Path:
        """Write the checkpoint now (atomic)."""
        return save_checkpoint(self.checkpoint_path, CHECKPOINT_FORMAT, step=self.step, config=self.config.to_dict(),
                               state={"network": cpu_state_dict(self.net), "optimizer": self.optimizer.state_dict(),
                                      "network_config": self.config.network.to_dict()},
                               generators={"data": self.generator})

    def train_step(self) -> dict:
        """One optimiser step; returns its log record (step, loss, each term, views, seconds)."""
        start = time.perf_counter()
        batch = self.next_batch().to(self.device)
        self.net.train()
        out = self.net(batch.images)
        terms = supervised_losses(out, batch, self.model, translation_scale_mm=self.config.network.translation_scale_mm)
        loss = total_loss(terms, self.config.weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        record = {"step": self.step, "loss": float(loss.detach()), "views": batch.num_views,
                  **{k: float(v.detach()) for k, v in terms.items()}, "seconds": round(time.perf_counter() - start, 4)}
        append_jsonl(self.log_path, record)
        return record

    def run(self, max_steps: int | None = None, callback: Callable[[dict], None] | None = None) -> list[dict]:
        """Train up to `config.steps` (or `max_steps`, if smaller) steps in all; returns this call's records.
        `callback(record)` is called after each step (an exception from it stops the run without a final save)."""
        last = min(self.config.steps, max_steps) if max_steps is not None else self.config.steps
        records = []
        while self.step < last:
            record = self.train_step()
            records.append(record)
            if callback is not None:
                callback(record)
            if self.step % self.config.checkpoint_every == 0:
                self.save()
        if records:
            self.save()
        return records
