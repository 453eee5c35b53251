"""LinearTextureModel: PCA of a UV folder, decode/sample/prior, save/load, layout checks, per-vertex models."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ganfit.errors import ConfigError, ModelFormatError
from ganfit.model.morphable import MorphableModel
from ganfit.model.texture.base import TextureModel, check_layout, model_uv_layout_id
from ganfit.model.texture.linear import LinearTextureModel, build_pca, rasterize_uv_layout

from conftest import make_tiny_model

H = W = 24


def _known_basis(rng: np.random.Generator) -> np.ndarray:
    """3 smooth orthonormal (3*H*W,) directions."""
    yy, xx = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    imgs = [
        np.stack([np.sin(2 * np.pi * xx), np.cos(np.pi * yy), xx - yy], 0),
        np.stack([yy, np.sin(3 * np.pi * yy), np.cos(2 * np.pi * xx)], 0),
        np.stack([np.cos(np.pi * (xx + yy)), xx * yy, np.sin(np.pi * xx)], 0),
    ]
    q, _ = np.linalg.qr(np.stack([i.reshape(-1) for i in imgs], 1))
    return q.T  # (3, D)


def _write_set(folder, rng, *, n=40, noise=0.004, mask_fn=None, corrupt=False, manifest=True):
    """A UV folder of n = mean + 3 known components + noise, as 8-bit PNGs (+ masks and a manifest)."""
    basis = _known_basis(rng)
    mean = np.full(3 * H * W, 0.5)
    coeffs = rng.normal(size=(n, 3)) * np.array([6.0, 4.0, 2.5])
    data = np.clip(mean + coeffs @ basis + rng.normal(scale=noise, size=(n, 3 * H * W)), 0, 1)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, row in enumerate(data):
        img = row.reshape(3, H, W).transpose(1, 2, 0)
        mask = np.ones((H, W)) if mask_fn is None else mask_fn(i)
        if corrupt:  # what the photo did not see was "completed" with a flat grey guess
            img = np.where(mask[..., None] > 0.5, img, 0.5)
        Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(folder / f"uv{i:03d}.png")
        Image.fromarray((mask * 255 + 0.5).astype(np.uint8)).save(folder / f"uv{i:03d}_mask.png")
        items.append({"name": f"uv{i:03d}", "outputs": {"uv": f"uv{i:03d}.png", "mask": f"uv{i:03d}_mask.png"}})
    if manifest:
        (folder / "manifest.json").write_text(json.dumps({"face_model": {"name": "test", "uv_layout": "abc123"}, "items": items}))
    return basis


def _max_principal_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Largest principal angle between the row spaces of a (k, D) and b (k, D)."""
    qa, _ = np.linalg.qr(a.T)
    qb, _ = np.linalg.qr(b.T)
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.degrees(np.arccos(np.clip(s.min(), -1, 1))))


def test_pca_recovers_known_subspace(tmp_path):
    rng = np.random.default_rng(0)
    basis = _write_set(tmp_path / "uv", rng)
    model = build_pca(tmp_path / "uv", components=3)
    assert isinstance(model, TextureModel)
    assert model.latent_dim == 3 and model.resolution == (H, W) and model.uv_layout == "abc123"
    got = model.basis.reshape(3, -1).numpy().astype(np.float64)
    assert _max_principal_angle_deg(got, basis) < 2.0
    # components come in decreasing std, orthonormal
    assert torch.all(model.std[:-1] >= model.std[1:])
    gram = got @ got.T
    np.testing.assert_allclose(gram, np.eye(3), atol=1e-4)
    # decode(0) is the mean
    out = model.decode(torch.zeros(2, 3))
    assert out.shape == (2, 3, H, W)
    torch.testing.assert_close(out[1], model.mean.clamp(0, 1))
    # sample / prior
    z = model.sample(5, torch.Generator().manual_seed(0))
    assert z.shape == (5, 3)
    torch.testing.assert_close(model.latent_prior(z), 0.5 * (z**2).sum(1))
    # asking for more components than the data has is clamped to N - 1
    assert build_pca(tmp_path / "uv", components=100, use_masks=False).latent_dim <= 39


def test_pca_with_masks_ignores_completed_guesses(tmp_path):
    """Where the 'completion' is a flat grey guess, masked EM-PCA still finds the true subspace; plain
    PCA of the completed images is pulled off it."""
    rng = np.random.default_rng(1)

    def mask(i):
        m = np.ones((H, W))
        if i % 2:
            m[:, W // 2 + (i % 5) :] = 0.0  # a different right part unseen in every other image
        return m

    basis = _write_set(tmp_path / "uv", rng, n=60, mask_fn=mask, corrupt=True)
    em = build_pca(tmp_path / "uv", components=3, use_masks=True, em_iterations=30)
    plain = build_pca(tmp_path / "uv", components=3, use_masks=False)
    a_em = _max_principal_angle_deg(em.basis.reshape(3, -1).numpy().astype(np.float64), basis)
    a_plain = _max_principal_angle_deg(plain.basis.reshape(3, -1).numpy().astype(np.float64), basis)
    assert a_em < 5.0 < a_plain
    assert em.meta["use_masks"] and em.meta["em_iterations"] > 1


def test_save_load_roundtrip_and_layout_checks(tmp_path, tiny_model):
    rng = np.random.default_rng(2)
    layout = model_uv_layout_id(tiny_model)
    model = LinearTextureModel(rng.uniform(0, 1, (3, 8, 6)), rng.normal(size=(4, 3, 8, 6)), [3.0, 2.0, 1.0, 0.5],
                               uv_layout=layout, name="rt", meta={"k": [1, 2]})
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as data:  # no pickles needed
        assert set(data.files) == {"header", "mean", "basis", "std"}
    back = LinearTextureModel.load(path, face_model=tiny_model)
    for name in ("mean", "basis", "std"):
        assert torch.equal(getattr(back, name), getattr(model, name))
    assert (back.name, back.uv_layout, back.meta, back.resolution) == ("rt", layout, {"k": [1, 2]}, (8, 6))
    z = torch.randn(3, 4)
    assert torch.equal(back.decode(z), model.decode(z))
    check_layout(back, tiny_model)

    other = make_tiny_model(seed=0)
    other.uv = other.uv[::-1].copy()  # same mesh, another UV layout
    with pytest.raises(ModelFormatError, match="UV layout"):
        LinearTextureModel.load(path, face_model=other)
    with pytest.raises(ModelFormatError, match="UV layout"):
        LinearTextureModel.load(path, uv_layout="0000")
    with pytest.raises(ModelFormatError, match="layout"):
        check_layout(back, other)
    # not a model / corrupt / missing
    np.savez(tmp_path / "bad.npz", a=np.zeros(3))
    with pytest.raises(ModelFormatError, match="not a ganfit linear texture model"):
        LinearTextureModel.load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ModelFormatError):
        LinearTextureModel.load(tmp_path / "junk.npz")
    with pytest.raises(ModelFormatError, match="not found"):
        LinearTextureModel.load(tmp_path / "missing.npz")


def test_constructor_and_decode_checks():
    with pytest.raises(ModelFormatError):
        LinearTextureModel(np.zeros((3, 4, 4)), np.zeros((2, 3, 4, 5)), [1.0, 1.0], uv_layout="x")
    with pytest.raises(ModelFormatError):
        LinearTextureModel(np.zeros((3, 4, 4)), np.zeros((2, 3, 4, 4)), [1.0], uv_layout="x")
    m = LinearTextureModel(np.full((3, 4, 4), 0.5), np.ones((1, 3, 4, 4)) / np.sqrt(48), [1.0], uv_layout="x")
    with pytest.raises(ValueError):
        m.decode(torch.zeros(1, 2))
    assert float(m.decode(torch.full((1, 1), 1e3)).max()) == 1.0  # clamped
    z = torch.zeros(1, 1, requires_grad=True)
    m.decode(z).sum().backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_build_pca_errors(tmp_path):
    with pytest.raises(ConfigError):
        build_pca(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="at least 2"):
        build_pca(tmp_path / "empty")
    _write_set(tmp_path / "nomani", np.random.default_rng(3), n=4, manifest=False)
    with pytest.raises(ModelFormatError, match="uv_layout"):
        build_pca(tmp_path / "nomani", components=2)
    assert build_pca(tmp_path / "nomani", components=2, uv_layout="given", resolution=12).resolution == (12, 12)


def _tiny_with_colour(k: int = 3) -> MorphableModel:
    """The tiny model with a random per-vertex colour model and UVs that put vertex (row r, column c)
    of its 24 x 24 grid at ((c + 0.5) / 24, (r + 0.5) / 24): on a texel centre at 24 m texels."""
    base = make_tiny_model()
    rng = np.random.default_rng(4)
    v = base.num_vertices
    r, c = np.divmod(np.arange(v), 24)
    uv = np.stack([(c + 0.5) / 24, (r + 0.5) / 24], 1)
    return MorphableModel(
        name="tiny-colour", mean=base.mean, shape_basis=base.shape_basis, shape_std=base.shape_std,
        expression_basis=base.expression_basis, expression_std=base.expression_std, triangles=base.triangles,
        landmark_indices=base.landmark_indices, uv=uv, regions=base.regions,
        texture_mean=rng.uniform(0.3, 0.7, (v, 3)), texture_basis=rng.normal(scale=0.05, size=(v, 3, k)),
        texture_std=np.array([2.0, 1.0, 0.5][:k]),
    )


def test_from_vertex_model_reproduces_vertex_colours():
    fm = _tiny_with_colour()
    res = 72  # vertices on texel centres: texel (70 - 3 r, 3 c + 1)
    model = LinearTextureModel.from_vertex_model(fm, res)
    assert model.uv_layout == model_uv_layout_id(fm) and model.latent_dim == 3 and model.resolution == (res, res)
    check_layout(model, fm)
    z = torch.tensor([[1.0, -2.0, 0.5]])
    tex = model.decode(z)[0].numpy()  # (3, H, W)
    per_vertex = fm.texture_mean + np.einsum("vck,k->vc", fm.texture_basis, z[0].numpy() * fm.texture_std)
    # at every covered texel centre: the barycentric mix of its triangle's vertex colours
    face, bary = rasterize_uv_layout(fm, res)
    cov = face >= 0
    assert float(cov.float().mean()) > 0.5
    corners = fm.triangles[face[cov].numpy()]
    want = np.einsum("nk,nkc->nc", bary[cov].numpy(), per_vertex[corners])
    got = tex.transpose(1, 2, 0)[cov.numpy()]
    np.testing.assert_allclose(got, np.clip(want, 0, 1), atol=1e-5)
    # the texel centred on each vertex has exactly that vertex's colour (vertices on the chart's border
    # may fall a rounding error outside it: those texels copy a neighbour)
    xy = np.stack([fm.uv[:, 0] * res, (1 - fm.uv[:, 1]) * res], 1) - 0.5
    ij = np.round(xy).astype(int)
    np.testing.assert_allclose(xy, ij, atol=1e-4)
    on = cov.numpy()[ij[:, 1], ij[:, 0]]
    r, c = np.divmod(np.arange(fm.num_vertices), 24)
    assert on[(r > 0) & (r < 23) & (c > 0) & (c < 23)].all()
    at_vertex = tex[:, ij[:, 1], ij[:, 0]].T
    np.testing.assert_allclose(at_vertex[on], np.clip(per_vertex, 0, 1)[on], atol=1e-5)
    # the mean alone, too
    np.testing.assert_allclose(model.mean.numpy()[:, ij[:, 1], ij[:, 0]].T[on], fm.texture_mean[on], atol=1e-6)
    # outside the chart: no background (nearest chart texel), finite everywhere
    assert np.isfinite(tex).all()
    # components option; basis normalised and std rescaled (decode unchanged)
    two = LinearTextureModel.from_vertex_model(fm, res, components=2)
    assert two.latent_dim == 2
    torch.testing.assert_close(two.decode(z[:, :2]), model.decode(torch.tensor([[1.0, -2.0, 0.0]])))
    norms = model.basis.reshape(3, -1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(3), atol=1e-4, rtol=0)


def test_from_vertex_model_errors(tiny_model):
    with pytest.raises(ModelFormatError, match="colour model"):
        LinearTextureModel.from_vertex_model(tiny_model, 16)
    fm = _tiny_with_colour()
    no_uv = MorphableModel(
        name="no-uv", mean=fm.mean, shape_basis=fm.shape_basis, shape_std=fm.shape_std,
        expression_basis=fm.expression_basis, expression_std=fm.expression_std, triangles=fm.triangles,
        landmark_indices=fm.landmark_indices, texture_mean=fm.texture_mean, texture_basis=fm.texture_basis,
        texture_std=fm.texture_std,
    )
    with pytest.raises(ModelFormatError, match="no UV"):
        LinearTextureModel.from_vertex_model(no_uv, 16)
    with pytest.raises(ConfigError):
        LinearTextureModel.from_vertex_model(fm, 16, components=9)
