"""Texture models by name: the shipped default (weights/manifest.json, sha256-checked) or a file."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from ganfit.errors import AssetError, ModelFormatError
from ganfit.model.texture.base import model_uv_layout_id
from ganfit.model.texture.pggan import Generator, TexturePGGAN
from ganfit.model.texture.registry import load_texture_model, read_manifest, weights_dir


def _shipped(tmp_path, model, name="tiny-gan"):
    path = tmp_path / f"{name}.pt"
    model.save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = {"format": "ganfit-weights-manifest", "version": 1, "default_texture_model": name,
                "weights": [{"name": name, "file": path.name, "sha256": digest}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_default_from_manifest_checked_and_layout(tmp_path, monkeypatch, tiny_model):
    gen = Generator(latent_dim=16, max_resolution=16, fmap_base=64, fmap_max=16)
    model = TexturePGGAN(gen, model_uv_layout_id(tiny_model), name="tiny-gan")
    path = _shipped(tmp_path, model)
    monkeypatch.setenv("GANFIT_WEIGHTS", str(tmp_path))
    loaded = load_texture_model("default", face_model=tiny_model)
    z = loaded.sample(2, torch.Generator().manual_seed(0))
    assert loaded.decode(z).shape == (2, 3, 16, 16)
    assert torch.equal(load_texture_model(path).decode(z), loaded.decode(z))  # by path too
    with pytest.raises(AssetError, match="no shipped texture model"):
        load_texture_model("nope")
    other = TexturePGGAN(gen, "0123456789abcdef", name="tiny-gan")
    _shipped(tmp_path, other)
    with pytest.raises(ModelFormatError, match="UV layout"):
        load_texture_model("default", face_model=tiny_model)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(AssetError, match="damaged"):
        load_texture_model("default")


def test_missing_manifest_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFIT_WEIGHTS", str(tmp_path))
    with pytest.raises(AssetError, match="no weights manifest"):
        load_texture_model("default")
    with pytest.raises(AssetError, match="does not exist"):
        load_texture_model(tmp_path / "missing.pt")


def test_shipped_default_texture_model(bfm):
    """The generator this project trained and ships in weights/ (see weights/README.md)."""
    manifest = read_manifest(weights_dir())
    if not manifest.get("default_texture_model"):
        pytest.skip("no texture model shipped in weights/")
    model = load_texture_model("default", face_model=bfm)
    z = model.sample(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        tex = model.decode(z)
    assert tex.shape[:2] == (4, 3) and tex.shape[2] == tex.shape[3] == model.resolution[0]
    assert torch.isfinite(tex).all() and 0 <= tex.min() and tex.max() <= 1
    # textures of faces: the centre of the UV chart (the nose/cheeks) is skin-coloured, red above blue
    h = tex.shape[2]
    centre = tex[:, :, h * 2 // 5 : h * 3 // 5, h * 2 // 5 : h * 3 // 5].mean((2, 3))
    assert (centre[:, 0] > centre[:, 2]).all()
    assert tex.std(0).mean() > 0.01  # different latents, different textures
