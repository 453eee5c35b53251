"""`--device` / `FitConfig.device`: a device this machine cannot run on is refused with a one-line
`ConfigError` before any work (before the face model, the photos or the detector are touched)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ganfit.cli.main import main
from ganfit.errors import ConfigError
from ganfit.fitting import FitConfig, Fitter, resolve_device


def _no_cuda() -> bool:
    return not torch.cuda.is_available()


def _no_xpu() -> bool:
    return not (hasattr(torch, "xpu") and torch.xpu.is_available())


@pytest.mark.parametrize("name", ["auto", "", None, "cpu", "CPU", " cpu "])
def test_cpu_and_auto_work(name):
    device = resolve_device(name)
    assert device.type == ("cuda" if name in ("auto", "", None) and torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name, fragment", [
    ("garbage", "unknown device 'garbage'"),
    ("cuda:x", "unknown device 'cuda:x'"),
    ("tpu", "unknown device 'tpu'"),
    ("meta", "device 'meta' holds shapes without data"),
    ("hpu", "device 'hpu' (hpu) is not supported"),
    ("vulkan", "not supported"),
])
def test_devices_that_never_run_a_fit(name, fragment):
    with pytest.raises(ConfigError) as info:
        resolve_device(name)
    assert fragment in str(info.value)
    assert "auto, cpu, cuda" in str(info.value)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple MPS GPU")
@pytest.mark.parametrize("name", ["mps", "mps:0"])
def test_mps_without_an_apple_gpu(name):
    with pytest.raises(ConfigError, match=f"device '{name}' asked for, but this PyTorch build sees no Apple MPS GPU"):
        resolve_device(name)


def test_mps_cannot_run_the_float64_fit(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")  # fine for float32 work (texture training)
    with pytest.raises(ConfigError, match="float64, which MPS does not support"):
        resolve_device("mps", float64=True)
    with pytest.raises(ConfigError, match="one MPS device"):
        resolve_device("mps:1")


@pytest.mark.skipif(not _no_xpu(), reason="this machine has an Intel XPU")
@pytest.mark.parametrize("name", ["xpu", "xpu:0"])
def test_xpu_without_an_intel_gpu(name):
    with pytest.raises(ConfigError, match=f"device '{name}' asked for, but this PyTorch build sees no Intel XPU"):
        resolve_device(name)


@pytest.mark.skipif(not _no_cuda(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_without_a_gpu(name):
    with pytest.raises(ConfigError, match=f"device '{name}' asked for, but this PyTorch build sees no CUDA GPU"):
        resolve_device(name)


def test_cuda_index_past_the_last_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"device 'cuda:7' asked for, but only 2 CUDA GPUs are visible \(cuda:0..cuda:1\)"):
        resolve_device("cuda:7")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"only 1 CUDA GPU is visible \(cuda:0\)"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("name", ["meta", "mps", "xpu", "cuda:7", "garbage"])
def test_fitter_refuses_the_device_when_built(name):
    if (name == "mps" and torch.backends.mps.is_available()) or (name == "xpu" and not _no_xpu()) \
            or (name == "cuda:7" and torch.cuda.device_count() > 7):
        pytest.skip(f"this machine has {name}")
    with pytest.raises(ConfigError, match=f"device '{name}'"):
        Fitter(FitConfig(device=name))


@pytest.mark.parametrize("name", ["meta", "mps", "xpu", "cuda:7", "garbage"])
def test_cli_refuses_the_device_before_detecting(name, tmp_path, capsys, monkeypatch):
    """Before: detection ran (seconds on a large photo), then a traceback."""
    if (name == "mps" and torch.backends.mps.is_available()) or (name == "xpu" and not _no_xpu()) \
            or (name == "cuda:7" and torch.cuda.device_count() > 7):
        pytest.skip(f"this machine has {name}")
    import ganfit.model.registry
    import ganfit.perception.detect

    def must_not_run(*args, **kwargs):
        raise AssertionError("work started before the device was checked")

    monkeypatch.setattr(ganfit.perception.detect, "make_detector", must_not_run)
    monkeypatch.setattr(ganfit.model.registry, "load_model", must_not_run)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo)
    out = tmp_path / "out"
    rc = main(["fit", str(photo), "-o", str(out / "face.obj"), "-q", "--device", name])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("ganfit: error:") and err.count("\n") == 1 and f"device '{name}'" in err, err
    assert not out.exists() or not any(out.iterdir())
