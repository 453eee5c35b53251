"""Training the progressive-GAN UV texture model (`ganfit texture train`).

`train(TrainConfig(data=..., out=...))` grows a `Generator`/`Discriminator` pair from 4x4 to the
configured resolution on a folder of UV textures and exports the smoothed generator as a
`TexturePGGAN` file (``OUT/model.pt``).

Loss: **non-saturating logistic loss with a lazy R1 penalty** (Goodfellow et al. 2014; Mescheder et al.,
ICML 2018; lazy regularisation from Karras et al., StyleGAN2, CVPR 2020) rather than the PGGAN paper's
WGAN-GP + drift:

- stability: R1 (penalising ||grad_x D(x)||^2 on *real* data) makes GAN training locally convergent
  (Mescheder et al.), WGAN-GP does not; StyleGAN kept the PGGAN architecture and switched to this loss
  with equal or better FID;
- small data: UV datasets built from photos hold hundreds to a few thousand textures; the discriminator
  over-fits them first, and R1 acts exactly there, keeping D smooth around the real samples;
- cost on CPU: WGAN-GP needs a double backward through D on interpolated samples at every step; R1 needs
  it on the real batch only, and only every `r1_interval` steps (the penalty multiplied by the interval
  to keep its strength), so about 1/r1_interval of that extra cost.

Schedule (PGGAN section 2): level 0 (4x4) is trained for `stable_kimg` thousand images; each next level
fades in over `fade_kimg` thousand images (alpha 0 -> 1, also blending the real images between the
upsampled lower level and the new one, as the reference implementation does) and is then stabilised for
`stable_kimg`. After the last level training goes on until `total_kimg` (default: end of the schedule).
Adam with lr 1e-3, betas (0, 0.99) (paper section A.1). The exported / sampled generator is an
exponential moving average of the generator's weights (paper: "G smoothing"), with a half-life of
`ema_kimg` thousand images ramped up over the first images (`ema_rampup`), so short runs are not
dominated by the random initialisation.

Data: every ``*.png`` / ``*.jpg`` of `data` that is not a ``*_mask.png`` (or the items of its
``manifest.json`` written by `ganfit texture build-dataset`, see `ganfit.training.uv_folder`), resized to `resolution` (Lanczos), held in
memory as uint8. Masks are not used: the dataset builder completes every texture (symmetry + Poisson
fill), and a GAN trained on masked pixels would need a masked discriminator — not implemented.
Augmentation: horizontal flip (the UV layouts of ganfit's face models are mirror-symmetric about the
vertical centre line, so the flipped texture is the mirrored face's texture; turn off with
``mirror=False`` for an asymmetric layout) and a small colour jitter (per-channel gain, shared offset).

Outputs in `out`: ``config.json``; ``checkpoint.pt`` (latest, atomic: generator, discriminator, smoothed
generator, both optimisers, AMP scalers, RNG states, data order, step, level, alpha, images seen, SWD
history); ``model.pt`` (the final `TexturePGGAN`); ``log.jsonl`` (losses); ``swd.jsonl`` (SWD against the
held reals, section 5 of the paper, see `swd.py`); ``samples/reals.png`` and
``samples/fakes_STEP.png`` (fixed latents). ``train(config, resume=True)`` continues from the latest
checkpoint: the next step is bit-for-bit the step an uninterrupted run would have taken (on the same
device and thread count); log lines written after that checkpoint by the interrupted run are dropped.

Mixed precision (float16 autocast + GradScaler) is used on CUDA only, when `mixed_precision` is on.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .._atomic import atomic_write_text
from .._device import resolve_device
from ..errors import ConfigError, FitError, ModelFormatError, OutputError
from ..io.images import save_png
from ..model.texture.pggan import TRAIN_FORMAT, Discriminator, Generator, TexturePGGAN, upsample2x
from .checkpoint import Checkpoint, cpu_state_dict, load_checkpoint, save_checkpoint
from .grids import make_grid
from .jsonl import append_jsonl, truncate_jsonl
from .swd import swd as sliced_wasserstein
from .texture_config import TrainConfig, TrainResult
from .uv_folder import load_uv_folder, manifest_uv_layout

__all__ = ["TrainConfig", "TrainResult", "TextureGANTrainer", "train", "CHECKPOINT", "MODEL"]

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"


def _to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float() / 255.0


def _downsample_to(x: torch.Tensor, side: int) -> torch.Tensor:
    """Box-filter (average-pool) a batch of square images to `side`."""
    f = x.shape[-1] // side
    return F.avg_pool2d(x, f) if f > 1 else x


# --------------------------------------------------------------------------- training state
class TextureGANTrainer:
    """The mutable state of a run and one training step. Everything random comes from `self.rng`
    (a CPU generator saved in the checkpoint), so a resumed run repeats the uninterrupted one."""

    def __init__(self, cfg: TrainConfig, data: torch.Tensor, device: torch.device, uv_layout: str) -> None:
        self.cfg = cfg
        self.device = device
        self.uv_layout = uv_layout
        self.data = data
        self.gcfg = cfg.generator_config()
        init = torch.Generator().manual_seed(cfg.seed)
        with _fork_rng(init):
            self.G = Generator.from_config(self.gcfg)
            self.D = Discriminator(self.gcfg)
        self.G.to(device)
        self.D.to(device)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False).eval()
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps)
        self.amp = bool(cfg.mixed_precision and device.type == "cuda")
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.perm = torch.randperm(len(data), generator=self.rng)
        self.pos = 0
        self.step = 0
        self.images_seen = 0
        self.swd_history: list[dict] = []
        fixed = torch.Generator().manual_seed(cfg.seed + 2)
        self.grid_latents = torch.randn(cfg.sample_grid**2, cfg.latent_dim, generator=fixed)
        self.swd_latents = torch.randn(cfg.swd_images, cfg.latent_dim, generator=fixed)

    # ------------------------------------------------------------------ data
    def _next_indices(self, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            if self.pos >= len(self.perm):
                self.perm = torch.randperm(len(self.data), generator=self.rng)
                self.pos = 0
            take = min(n, len(self.perm) - self.pos)
            out.append(self.perm[self.pos:self.pos + take])
            self.pos += take
            n -= take
        return torch.cat(out)

    def real_batch(self, n: int, level: int, alpha: float) -> torch.Tensor:
        """(n, 3, s, s) augmented reals in [-1, 1] at the level's side, faded like the generator."""
        cfg = self.cfg
        x = _to_unit(self.data[self._next_indices(n)])
        flip = torch.rand(n, generator=self.rng) < 0.5
        gain = 1.0 + cfg.color_jitter * (2 * torch.rand(n, 3, 1, 1, generator=self.rng) - 1)
        offset = 0.5 * cfg.color_jitter * (2 * torch.rand(n, 1, 1, 1, generator=self.rng) - 1)
        if cfg.mirror:
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if cfg.color_jitter > 0:
            x = (x * gain + offset).clamp(0, 1)
        x = x.to(self.device) * 2.0 - 1.0
        side = self.gcfg.resolution_at(level)[0]
        x = _downsample_to(x, side)
        if level > 0 and alpha < 1.0:
            low = upsample2x(F.avg_pool2d(x, 2))
            x = low + alpha * (x - low)
        return x

    def latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.latent_dim, generator=self.rng).to(self.device)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        level, alpha = cfg.phase(self.images_seen)
        side = self.gcfg.resolution_at(level)[0]
        n = cfg.batch_at(side)
        reals = self.real_batch(n, level, alpha)
        z_d, z_g = self.latents(n), self.latents(n)
        do_r1 = cfg.r1_gamma > 0 and self.step % cfg.r1_interval == 0
        def autocast():
            return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp)

        # ---- discriminator
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with torch.no_grad(), autocast():
            fakes = self.G(z_d, level, alpha)
        reals.requires_grad_(do_r1)
        with autocast():
            d_real = self.D(reals, level, alpha).float()
            d_fake = self.D(fakes.detach(), level, alpha).float()
            loss_adv = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        loss_d = loss_adv
        r1 = torch.zeros((), device=self.device)
        if do_r1:
            (grad,) = torch.autograd.grad(self.scaler_d.scale(d_real.sum()), reals, create_graph=True)
            grad = grad.float() / float(self.scaler_d.get_scale()) if self.amp else grad
            r1 = grad.square().sum(dim=(1, 2, 3)).mean()
            loss_d = loss_d + (0.5 * cfg.r1_gamma * cfg.r1_interval) * r1
        self.scaler_d.scale(loss_d).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()

        # ---- generator
        self.D.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with autocast():
            loss_g = F.softplus(-self.D(self.G(z_g, level, alpha), level, alpha).float()).mean()
        self.scaler_g.scale(loss_g).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.D.requires_grad_(True)

        self.images_seen += n
        self.step += 1
        self._update_ema(n)
        return {
            "step": self.step, "images_seen": self.images_seen, "level": level, "alpha": alpha, "resolution": side,
            "loss_d": float(loss_adv.detach()), "loss_g": float(loss_g.detach()),
            "d_real": float(d_real.detach().mean()), "d_fake": float(d_fake.detach().mean()),
            "r1": float(r1.detach()) if do_r1 else None,
        }

    @torch.no_grad()
    def _update_ema(self, n: int) -> None:
        half_life = self.cfg.ema_kimg * 1000.0
        if self.cfg.ema_rampup is not None:
            half_life = min(half_life, self.images_seen * self.cfg.ema_rampup)
        beta = 0.5 ** (n / max(half_life, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def fakes(self, latents: torch.Tensor, level: int, alpha: float, batch: int = 32) -> torch.Tensor:
        """EMA generator output in [0, 1] on the CPU."""
        out = [((self.G_ema(z.to(self.device), level, alpha).float() + 1) / 2).clamp(0, 1).cpu() for z in latents.split(batch)]
        return torch.cat(out)

    def export(self, level: int, alpha: float) -> TexturePGGAN:
        meta = {
            "trainer": "ganfit.training.texture_gan", "loss": "non-saturating logistic + lazy R1",
            "step": self.step, "images_seen": self.images_seen, "dataset": self.cfg.data,
            "dataset_size": int(len(self.data)), "config": self.cfg.to_dict(),
            "swd": self.swd_history[-1] if self.swd_history else None,
        }
        return TexturePGGAN(self.G_ema, self.uv_layout, level=level, alpha=alpha, name=self.cfg.name, meta=meta)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path) -> None:
        """Write the whole run state to `path` atomically (`ganfit.training.checkpoint`)."""
        level, alpha = self.cfg.phase(self.images_seen)
        state = {
            "uv_layout": self.uv_layout,
            "G": cpu_state_dict(self.G), "D": cpu_state_dict(self.D),
            "export": self.export(level, alpha).to_file_dict(),
            "opt_G": self.opt_g.state_dict(), "opt_D": self.opt_d.state_dict(),
            "scaler_G": self.scaler_g.state_dict(), "scaler_D": self.scaler_d.state_dict(),
            "data_order": {"perm": self.perm.clone(), "pos": self.pos},
            "images_seen": self.images_seen, "level": level, "alpha": alpha,
            "swd_history": list(self.swd_history),
        }
        save_checkpoint(path, TRAIN_FORMAT, step=self.step, state=state, config=self.cfg.to_dict(),
                        generators={"train": self.rng})

    def restore(self, ck: Checkpoint) -> None:
        """Continue from a checkpoint written by `save` (networks, optimisers, RNGs, data order, counters)."""
        st = ck.state
        try:
            self.G.load_state_dict(st["G"])
            self.D.load_state_dict(st["D"])
            self.G_ema.load_state_dict(st["export"]["state"])
            self.opt_g.load_state_dict(st["opt_G"])
            self.opt_d.load_state_dict(st["opt_D"])
            if self.amp and st.get("scaler_G"):
                self.scaler_g.load_state_dict(st["scaler_G"])
                self.scaler_d.load_state_dict(st["scaler_D"])
            self.perm = st["data_order"]["perm"].clone()
            self.pos = int(st["data_order"]["pos"])
            self.images_seen = int(st["images_seen"])
            self.swd_history = list(st.get("swd_history", []))
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ModelFormatError(f"{ck.path}: incomplete or mismatched training checkpoint ({type(exc).__name__}: {exc})") from exc
        ck.restore_rng({"train": self.rng})
        self.step = ck.step
        if len(self.perm) != len(self.data):
            raise ConfigError(f"{ck.path}: the checkpoint was trained on {len(self.perm)} textures but the data folder now "
                              f"holds {len(self.data)}; resume with the same data or start a new run")


class _fork_rng:
    """Run a block with torch's global RNG seeded from `gen` (module initialisers use the global RNG),
    restoring the global state afterwards."""

    def __init__(self, gen: torch.Generator) -> None:
        self.seed = int(torch.randint(2**62, (1,), generator=gen))

    def __enter__(self):
        self.state = torch.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        torch.set_rng_state(self.state)


def _crossed(before: int, after: int, every_images: int) -> bool:
    return every_images > 0 and before // every_images != after // every_images


# --------------------------------------------------------------------------- the loop
def train(
    config: TrainConfig,
    progress: bool = True,
    *,
    resume: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train (or, with `resume`, continue training) a texture GAN; see the module doc.

    callback: called after every step with that step's statistics (step, images_seen, level, alpha,
        resolution, loss_d (the adversarial part, log 4 = 1.386 for a D that cannot tell), loss_g,
        d_real, d_fake (mean logits), r1 (the penalty's mean squared gradient norm on R1 steps, else None));
        exceptions it raises stop the run (the last
        checkpoint stays valid).
    Returns a `TrainResult`. Raises ConfigError for bad options or data, ModelFormatError for an
    unreadable checkpoint.
    """
    from tqdm.auto import tqdm

    cfg = config
    t0 = time.perf_counter()
    if not cfg.data:
        raise ConfigError("no training data: set TrainConfig.data (--data DIR) to a folder of UV textures")
    out = Path(cfg.out)
    ck_path = out / CHECKPOINT
    ck = None
    if ck_path.is_file():
        if not resume:
            raise ConfigError(f"{out} already holds a training run ({CHECKPOINT}); pass --resume to continue it or "
                              "choose another --out")
        ck = load_checkpoint(ck_path, TRAIN_FORMAT)
        cfg.check_resume(ck.config, ck_path)
    elif resume:
        log.info("no checkpoint in %s; starting a new run", out)
    device = resolve_device(cfg.device)
    layout = cfg.uv_layout or manifest_uv_layout(cfg.data)
    if not layout:
        raise ConfigError(f"{cfg.data}: no manifest.json naming the UV layout; pass --uv-layout (the face model's "
                          "`uv_layout_id`) or build the dataset with `ganfit texture build-dataset`")
    manifest_layout = manifest_uv_layout(cfg.data)
    if manifest_layout and manifest_layout != layout:
        raise ConfigError(f"{cfg.data}: the manifest says UV layout {manifest_layout}, but uv_layout={layout} was given")
    data, files = load_uv_folder(cfg.data, cfg.resolution, split=cfg.data_split)
    log.info("training data: %d textures from %s at %dx%d", len(data), cfg.data, cfg.resolution, cfg.resolution)
    if len(data) < 2:
        raise ConfigError(f"{cfg.data}: found {len(data)} texture; a GAN needs many (hundreds or more)")

    try:
        (out / "samples").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out}: {exc.strerror or exc}") from exc

    trainer = TextureGANTrainer(cfg, data, device, layout)
    if ck is not None:
        trainer.restore(ck)
        if ck.state.get("uv_layout") != layout:
            raise ConfigError(f"{ck_path}: the run was trained for UV layout {ck.state.get('uv_layout')}, the data is {layout}")
        truncate_jsonl(out / "log.jsonl", trainer.step)
        truncate_jsonl(out / "swd.jsonl", trainer.step)
        log.info("resuming %s at step %d (%d images seen)", out, trainer.step, trainer.images_seen)
    atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=1, sort_keys=True) + "\n")

    # Held reals for the SWD: a fixed subset of swd_data, of data's swd_split, or of the training data; never re-drawn.
    if cfg.swd_data or cfg.swd_split:
        swd_reals, _ = load_uv_folder(cfg.swd_data or cfg.data, cfg.resolution, limit=cfg.swd_images, split=cfg.swd_split)
    else:
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed + 3))[: cfg.swd_images]
        swd_reals = data[pick]
    swd_reals_unit = _to_unit(swd_reals)

    def measure_swd() -> dict | None:
        level, alpha = cfg.phase(trainer.images_seen)
        side = trainer.gcfg.resolution_at(level)[0]
        if side < 16:
            return None
        reals = _downsample_to(swd_reals_unit, side)
        fakes = trainer.fakes(trainer.swd_latents[: len(reals)], level, alpha)
        values = sliced_wasserstein(reals, fakes, generator=torch.Generator().manual_seed(cfg.seed + 4),
                                    descriptors_per_image=cfg.swd_descriptors)
        record = {"step": trainer.step, "images_seen": trainer.images_seen, "kimg": trainer.images_seen / 1000,
                  "level": level, "alpha": alpha, "resolution": side, "swd": values}
        trainer.swd_history.append(record)
        append_jsonl(out / "swd.jsonl", record)
        return record

    def write_samples() -> None:
        level, alpha = cfg.phase(trainer.images_seen)
        save_png(out / "samples" / f"fakes_{trainer.step:07d}.png", make_grid(trainer.fakes(trainer.grid_latents, level, alpha)))

    if ck is None:
        save_png(out / "samples" / "reals.png", make_grid(_to_unit(data[: cfg.sample_grid**2])))
        write_samples()
        if cfg.swd_every_kimg > 0:
            measure_swd()

    total = cfg.total_images
    every = {k: cfg.images_of(getattr(cfg, f"{k}_every_kimg")) for k in ("swd", "sample", "checkpoint")}
    bar = tqdm(total=total, initial=min(trainer.images_seen, total), unit="img", unit_scale=True,
               disable=not progress, desc=f"texture GAN {cfg.resolution}px", dynamic_ncols=True)
    sums: dict[str, float] = {}
    count = bad_steps = 0
    try:
        while trainer.images_seen < total:
            before = trainer.images_seen
            stats = trainer.train_step()
            if all(math.isfinite(v) for v in (stats["loss_d"], stats["loss_g"], stats["r1"] or 0.0)):
                bad_steps = 0
            else:  # with AMP the scaler skips such steps; a run of them (or any without AMP) is divergence
                bad_steps += 1
            if bad_steps > (20 if trainer.amp else 0):
                raise FitError(f"training diverged at step {trainer.step} (loss D {stats['loss_d']}, G {stats['loss_g']}); "
                               f"lower the learning rate or resume from {ck_path}")
            for k in ("loss_d", "loss_g", "d_real", "d_fake"):
                sums[k] = sums.get(k, 0.0) + stats[k]
            count += 1
            after = trainer.images_seen
            bar.update(min(after, total) - min(before, total))
            bar.set_postfix(res=stats["resolution"], alpha=f"{stats['alpha']:.2f}", D=f"{stats['loss_d']:.3f}",
                            G=f"{stats['loss_g']:.3f}", refresh=False)
            last = after >= total
            if _crossed(before, after, every["sample"]) or last:
                write_samples()
            if _crossed(before, after, every["swd"]) or (last and cfg.swd_every_kimg > 0):
                measure_swd()
            if _crossed(before, after, every["checkpoint"]) or _crossed(before, after, every["sample"]) or last:
                append_jsonl(out / "log.jsonl", {"step": trainer.step, "images_seen": after, "kimg": after / 1000,
                                                  "level": stats["level"], "alpha": stats["alpha"],
                                                  **{k: v / count for k, v in sums.items()},
                                                  "seconds": round(time.perf_counter() - t0, 3)})
                sums, count = {}, 0
            if _crossed(before, after, every["checkpoint"]) or last:
                trainer.save(ck_path)
            if callback is not None:
                callback(stats)
    finally:
        bar.close()

    level, alpha = cfg.phase(trainer.images_seen)
    model_path = out / MODEL
    trainer.export(level, alpha).save(model_path)
    return TrainResult(out=out, model_path=model_path, step=trainer.step, images_seen=trainer.images_seen, level=level,
                       alpha=alpha, swd_history=list(trainer.swd_history), seconds=time.perf_counter() - t0)
