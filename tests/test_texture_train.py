"""Tests of texture-GAN training (ganfit.training.texture_gan), the sliced Wasserstein distance
(ganfit.training.swd) and the `ganfit texture train|sample` commands, on tiny synthetic UV sets."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from ganfit.errors import ConfigError, GanfitError
from ganfit.io.images import save_png
from ganfit.model.texture.pggan import TexturePGGAN
from ganfit.training.swd import laplacian_pyramid, swd
from ganfit.training.texture_gan import TextureGANTrainer, TrainConfig, train
from ganfit.training.uv_folder import load_uv_folder

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUT = "layout-test"
TINY = dict(latent_dim=16, fmap_base=64, fmap_max=32)



def blobs(n: int, size: int = 16, seed: int = 0, hue=(1.0, 0.6, 0.4)) -> np.ndarray:
    """(n, size, size, 3) smooth 'textures': a dim background with two soft colour blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = []
    for _ in range(n):
        img = np.ones((size, size, 3)) * rng.uniform(0.2, 0.4, 3)
        for _ in range(2):
            cx, cy = rng.uniform(0.25, 0.75, 2)
            s = rng.uniform(0.12, 0.2)
            w = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))[..., None]
            img = img * (1 - w) + rng.uniform(0.5, 1.0, 3) * np.asarray(hue) * w
        out.append(img)
    return np.stack(out).astype(np.float32)


def write_dataset(folder, n: int = 64, size: int = 16, seed: int = 0, layout: str | None = LAYOUT):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(blobs(n, size, seed)):
        save_png(folder / f"uv_{i:03d}.png", img)
        if i < 3:
            save_png(folder / f"uv_{i:03d}_mask.png", np.ones((size, size)))
    if layout:
        (folder / "manifest.json").write_text(json.dumps({"face_model": {"uv_layout": layout}}))
    return folder


@pytest.fixture(scope="module")
def blob_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("uv16"))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- SWD
@pytest.fixture(scope="module")
def swd_sets():
    a = to_tensor(blobs(32, 64, seed=1))
    b = to_tensor(blobs(32, 64, seed=2))  # the same distribution, other samples
    c = to_tensor(blobs(32, 64, seed=3, hue=(0.3, 0.6, 1.0)))  # blue blobs instead of orange
    return a, b, c


def test_swd_levels_and_identical_sets(swd_sets):
    a, _, _ = swd_sets
    assert [lv.shape[-1] for lv in laplacian_pyramid(a)] == [64, 32, 16]
    same = swd(a, a, descriptors_per_image=32)
    assert list(same) == ["64", "32", "16", "mean"]
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in same.values())


def test_swd_ranks_distributions_and_is_repeatable(swd_sets):
    a, b, c = swd_sets
    kw = dict(descriptors_per_image=32)
    same_dist = swd(a, b, **kw)
    other_dist = swd(a, c, **kw)
    shifted = swd(a, (b + torch.tensor([0.15, -0.1, 0.1])[:, None, None]).clamp(0, 1), **kw)
    assert 0 < same_dist["mean"] < other_dist["mean"]
    assert same_dist["mean"] < shifted["mean"]
    assert same_dist["16"] < shifted["16"]  # a colour shift shows in the low-pass level
    assert swd(a, b, **kw) == same_dist  # default generator: seeded, repeatable
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert swd(a, c, generator=g1, **kw) == swd(a, c, generator=g2, **kw)
    assert swd(a, b, **kw)["mean"] == pytest.approx(swd(b, a, **kw)["mean"], rel=0.2)
    # The reference normalisation (each set by its own statistics) cannot see a uniform shift.
    sep = swd(a, (a + 0.1).clamp(0, 1), normalize="separate", **kw)["16"]
    pooled = swd(a, (a + 0.1).clamp(0, 1), **kw)["16"]
    assert sep < 0.3 * pooled


def test_swd_rejects_bad_inputs():
    with pytest.raises(ValueError):
        swd(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 32, 32))
    with pytest.raises(ValueError):
        swd(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8))


# ----------------------------------------------------------------------------- config and data
def test_schedule_phases():
    cfg = TrainConfig(data="x", resolution=16, fade_kimg=0.1, stable_kimg=0.2, **TINY)
    assert cfg.schedule_images == 200 + 2 * 300 and cfg.total_images == 800
    assert cfg.phase(0) == (0, 1.0) and cfg.phase(199) == (0, 1.0)
    assert cfg.phase(200) == (1, 0.0) and cfg.phase(250) == (1, 0.5) and cfg.phase(300) == (1, 1.0)
    assert cfg.phase(500) == (2, 0.0) and cfg.phase(575) == (2, 0.75) and cfg.phase(10**6) == (2, 1.0)
    assert TrainConfig(data="x", resolution=16, total_kimg=2.0, **TINY).total_images == 2000
    cfg2 = TrainConfig(batch_size=16, batch_size_by_resolution={"256": 8})
    assert cfg2.batch_at(256) == 8 and cfg2.batch_at(64) == 16
    assert TrainConfig.from_dict(cfg2.to_dict()) == cfg2
    for bad in (dict(resolution=24), dict(resolution=4), dict(batch_size=0), dict(lr=0), dict(r1_interval=0)):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)
    with pytest.raises(ConfigError, match="unknown training options"):
        TrainConfig.from_dict({"resolutoin": 8})


def test_load_uv_folder(tmp_path, blob_data):
    data, files = load_uv_folder(blob_data, 8)
    assert data.shape == (64, 3, 8, 8) and data.dtype == torch.uint8
    assert not any(f.stem.endswith("_mask") for f in files)
    with pytest.raises(ConfigError, match="no UV textures"):
        load_uv_folder(tmp_path, 8)
    with pytest.raises(ConfigError, match="not found"):
        load_uv_folder(tmp_path / "missing", 8)
    save_png(tmp_path / "wide.png", np.zeros((8, 16, 3)))
    with pytest.raises(ConfigError, match="square"):
        load_uv_folder(tmp_path, 8)


def _split_dataset(folder, n_train: int = 12, n_val: int = 4):
    """A dataset whose manifest (as `ganfit texture build-dataset` writes it) puts textures in two splits."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, img in enumerate(blobs(n_train + n_val, 16, seed=3)):
        save_png(folder / f"uv_{i:03d}.png", img)
        items.append({"name": f"uv_{i:03d}", "split": "train" if i < n_train else "validation",
                      "outputs": {"uv": f"uv_{i:03d}.png"}})
    (folder / "manifest.json").write_text(json.dumps({"face_model": {"uv_layout": LAYOUT}, "items": items}))
    return folder


def test_splits_of_a_dataset_manifest(tmp_path):
    data_dir = _split_dataset(tmp_path / "d")
    train_uv, train_files = load_uv_folder(data_dir, 8, split="train")
    val_uv, val_files = load_uv_folder(data_dir, 8, split="validation")
    assert len(train_uv) == 12 and len(val_uv) == 4 and not set(train_files) & set(val_files)
    with pytest.raises(ConfigError, match="in split 'test'"):
        load_uv_folder(data_dir, 8, split="test")
    cfg = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), resolution=16, batch_size=4, fade_kimg=0.008,
                      stable_kimg=0.008, total_kimg=0.04, data_split="train", swd_split="validation",
                      swd_every_kimg=0.04, swd_images=4, swd_descriptors=8, sample_every_kimg=0, **TINY)
    result = train(cfg, progress=False)
    model = TexturePGGAN.load(result.model_path)
    assert model.meta["dataset_size"] == 12 and result.swd_history  # trained on train, SWD on validation
    plain = write_dataset(tmp_path / "plain", n=4)
    with pytest.raises(ConfigError, match="no manifest.json with items"):
        load_uv_folder(plain, 8, split="train")


def test_real_batches_are_mirrored_dataset_images(blob_data):
    cfg = TrainConfig(data=str(blob_data), resolution=16, color_jitter=0.0, batch_size=32, **TINY)
    data, _ = load_uv_folder(blob_data, 16)
    trainer = TextureGANTrainer(cfg, data, torch.device("cpu"), LAYOUT)
    batch = trainer.real_batch(32, level=2, alpha=1.0)
    assert batch.shape == (32, 3, 16, 16) and float(batch.min()) >= -1 and float(batch.max()) <= 1
    ref = data.float() / 127.5 - 1
    flipped = 0
    for img in batch:
        direct = (ref - img).abs().amax(dim=(1, 2, 3)).min() < 1e-5
        mirror = (ref.flip(-1) - img).abs().amax(dim=(1, 2, 3)).min() < 1e-5
        assert bool(direct or mirror)
        flipped += int(bool(mirror) and not bool(direct))
    assert 4 < flipped < 28
    low = trainer.real_batch(4, level=1, alpha=0.0)  # fading in level 1: the upsampled 4x4 image
    assert low.shape == (4, 3, 8, 8)
    assert torch.equal(low[:, :, ::2, ::2], low[:, :, 1::2, 1::2])


def test_layout_is_required(tmp_path):
    data = write_dataset(tmp_path / "d", n=4, layout=None)
    with pytest.raises(ConfigError, match="uv-layout"):
        train(TrainConfig(data=str(data), out=str(tmp_path / "run"), resolution=8, **TINY), progress=False)


# ----------------------------------------------------------------------------- training
def test_short_training_run_learns(tmp_path, blob_data):
    cfg = TrainConfig(
        data=str(blob_data), out=str(tmp_path / "run"), resolution=16, batch_size=16, fade_kimg=0.2, stable_kimg=0.2,
        total_kimg=2.4, r1_gamma=1.0, ema_kimg=0.1, color_jitter=0.0, swd_every_kimg=0.8, swd_images=64,
        swd_descriptors=32, sample_every_kimg=0.8, checkpoint_every_kimg=1.2, **{**TINY, "latent_dim": 32},
    )
    steps: list[dict] = []
    result = train(cfg, progress=False, callback=steps.append)
    assert result.step == len(steps) == 150 and result.images_seen == 2400 and (result.level, result.alpha) == (2, 1.0)
    assert [s["level"] for s in steps][::25] == [0, 1, 2, 2, 2, 2]
    # The thresholds hold for every seed from 0 to 9, not only the one used here, so that other CPUs' float
    # rounding (a different training trajectory) cannot fail them: over those seeds the last 20 steps'
    # discriminator loss was 0.91-1.24 and the SWD ratio below 0.26-0.69.
    # The discriminator tells real from fake better than chance (log 4 is chance level).
    d_loss = [s["loss_d"] for s in steps]
    assert np.mean(d_loss[-20:]) < math.log(4)
    assert all(math.isfinite(s["loss_g"]) for s in steps)
    assert sum(s["r1"] is not None for s in steps) == 38  # lazy R1 every 4 steps
    # The generator's samples move towards the data: SWD at 16x16 against the data vs initialisation.
    data, _ = load_uv_folder(blob_data, 16)
    reals = data.float() / 255
    z = torch.randn(64, 32, generator=torch.Generator().manual_seed(9))
    init = TextureGANTrainer(cfg, data, torch.device("cpu"), LAYOUT)
    before = swd(reals, init.fakes(z, 2, 1.0), descriptors_per_image=32)["mean"]
    model = TexturePGGAN.load(result.model_path, resolution=16, uv_layout=LAYOUT)
    with torch.no_grad():
        after = swd(reals, model.decode(z), descriptors_per_image=32)["mean"]
    assert after < 0.8 * before, (before, after)
    # What the run wrote.
    out = tmp_path / "run"
    swd_log = [json.loads(line) for line in (out / "swd.jsonl").read_text().splitlines()]
    assert [r["step"] for r in swd_log] == [50, 100, 150] and swd_log == result.swd_history
    assert all(math.isfinite(r["swd"]["mean"]) and r["swd"]["mean"] > 0 for r in swd_log)
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert logs[-1]["step"] == 150 and {"loss_d", "loss_g"} <= set(logs[-1])
    assert (out / "samples" / "reals.png").is_file() and (out / "samples" / "fakes_0000150.png").is_file()
    assert json.loads((out / "config.json").read_text())["resolution"] == 16
    assert model.meta["images_seen"] == 2400 and model.meta["dataset_size"] == 64
    assert (out / "model.pt").stat().st_size < 0.3 * (out / "checkpoint.pt").stat().st_size


def _resume_config(data, out, **kw) -> TrainConfig:
    options = dict(
        data=str(data), out=str(out), resolution=8, batch_size=8, fade_kimg=0.032, stable_kimg=0.032,
        total_kimg=0.096, swd_every_kimg=0, sample_every_kimg=0.048, checkpoint_every_kimg=0.048, **TINY,
    )
    return TrainConfig(**{**options, **kw})


def _assert_same(a, b, where="checkpoint"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            if k not in ("meta_json", "config"):  # these name the run folder
                _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_killed_run_resumes_bit_for_bit(tmp_path, blob_data):
    # 12 steps: level 0 (4 steps), fade-in of 8x8 (4), stabilise (4); checkpoints at steps 6 and 12.
    full = train(_resume_config(blob_data, tmp_path / "full"), progress=False)
    assert full.step == 12

    def kill(stats):
        if stats["step"] == 8:  # two steps after the checkpoint of step 6
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_resume_config(blob_data, tmp_path / "cut"), progress=False, callback=kill)
    cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert cut["step"] == 6 and cut["level"] == 1 and 0 < cut["alpha"] < 1  # mid fade-in
    assert not (tmp_path / "cut" / "model.pt").exists()

    seen: list[dict] = []
    resumed = train(_resume_config(blob_data, tmp_path / "cut"), progress=False, resume=True, callback=seen.append)
    assert [s["step"] for s in seen] == list(range(7, 13)) and resumed.step == 12
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    _assert_same(a, b)  # networks, EMA, optimisers, RNG, data order, schedule: identical
    ma = TexturePGGAN.load(tmp_path / "full" / "model.pt")
    mb = TexturePGGAN.load(tmp_path / "cut" / "model.pt")
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(va, vb), k
    logs = [json.loads(line)["step"] for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert logs == [6, 12]


def test_the_next_step_after_resume_is_identical(tmp_path, blob_data):
    """Step 7 taken right after resuming from the checkpoint of step 6 equals step 7 of a run that never
    stopped (runs end with a checkpoint, so `total_kimg` picks where they stop)."""
    train(_resume_config(blob_data, tmp_path / "a", total_kimg=0.056), progress=False)  # steps 1..7
    train(_resume_config(blob_data, tmp_path / "b", total_kimg=0.048), progress=False)  # steps 1..6
    steps: list[dict] = []
    train(_resume_config(blob_data, tmp_path / "b", total_kimg=0.056), progress=False, resume=True, callback=steps.append)
    assert [s["step"] for s in steps] == [7]
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 7
    _assert_same(a, b)


def test_existing_run_needs_resume_and_the_same_architecture(tmp_path, blob_data):
    cfg = _resume_config(blob_data, tmp_path / "run", total_kimg=0.048)
    train(cfg, progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, progress=False)
    with pytest.raises(ConfigError, match="latent_dim"):
        train(_resume_config(blob_data, tmp_path / "run", total_kimg=0.096, latent_dim=8), progress=False, resume=True)
    # A longer total on resume continues the run.
    more = train(_resume_config(blob_data, tmp_path / "run", total_kimg=0.096), progress=False, resume=True)
    assert more.step == 12


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    from ganfit.cli.texture_train import add_train_parser

    parser = argparse.ArgumentParser(prog="ganfit texture")
    add_train_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_train_and_sample(tmp_path, blob_data, capsys):
    from PIL import Image

    parser = _parser()
    out = tmp_path / "run"
    args = parser.parse_args([
        "train", "--data", str(blob_data), "--out", str(out), "--resolution", "8", "--kimg", "0.064",
        "--fade-kimg", "0.016", "--stable-kimg", "0.016", "--batch-size", "8", "--latent-dim", "16",
        "--fmap-base", "64", "--fmap-max", "32", "--seed", "3", "--device", "cpu",
    ])
    assert args.func(args) == 0
    assert "wrote" in capsys.readouterr().out
    stored = json.loads((out / "config.json").read_text())
    assert stored["seed"] == 3 and stored["batch_size_by_resolution"] == {} and stored["total_kimg"] == 0.064

    # --resume picks up the stored options; a longer --kimg continues the run.
    args = parser.parse_args(["train", "--out", str(out), "--resume", "--kimg", "0.08", "--quiet"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == ""
    assert torch.load(out / "checkpoint.pt", weights_only=True)["images_seen"] == 80

    grid = tmp_path / "grid.png"
    args = parser.parse_args(["sample", str(out / "model.pt"), "-n", "4", "-o", str(grid), "--seed", "1", "--device", "cpu"])
    assert args.func(args) == 0
    with Image.open(grid) as im:
        assert im.size == (17, 17)  # 2 x 2 tiles of 8 px with a 1 px gap
        first = np.asarray(im)
    args = parser.parse_args(["sample", str(out / "checkpoint.pt"), "-n", "4", "-o", str(grid), "--seed", "1", "-q"])
    assert args.func(args) == 0
    with Image.open(grid) as im:
        assert np.array_equal(np.asarray(im), first)  # the checkpoint holds the same exported generator

    with pytest.raises(GanfitError):
        args = parser.parse_args(["train", "--out", str(tmp_path / "new")])
        args.func(args)
    with pytest.raises(GanfitError):
        args = parser.parse_args(["sample", str(tmp_path / "missing.pt")])
        args.func(args)


def test_cli_options_all_have_help():
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("train", "sample"):
        for action in sub.choices[name]._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
