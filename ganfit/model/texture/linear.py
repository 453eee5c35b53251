"""A linear (PCA) texture model in UV space, the classic 3DMM texture model (Blanz & Vetter, SIGGRAPH
1999) laid out as UV images so it is a drop-in `TextureModel` beside the GAN (GANFit, Gecer et al.
CVPR 2019, compares the two):

    texture(z) = clamp(mean + sum_k z_k std_k basis_k, 0, 1),   z ~ N(0, I),   prior 0.5 ||z||^2

Three ways to get one:

- `build_pca(uv_dir)`: PCA of a UV dataset written by `ganfit.training.uv_dataset.build_uv_dataset`
  (``ganfit texture build-pca``).
- `LinearTextureModel.from_vertex_model(face_model, resolution)`: a per-vertex colour model that comes
  with a face model (BFM 2009 ``texMU/texPC/texEV``, BFM 2017 ``color``) rasterised into the face
  model's UV layout, so users with BFM get BFM's own texture basis as a UV model.
- `LinearTextureModel.load(path)`: a model saved with `save` (``.npz``, no pickles).

Arrays: ``mean`` (3, H, W), ``basis`` (K, 3, H, W) with unit-norm components (orthonormal when they
come from PCA), ``std`` (K,) the standard deviation along each; row 0 is the top of the texture (v up),
as everywhere in ganfit.
"""
from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError, ModelFormatError
from .base import model_uv_layout_id

log = logging.getLogger(__name__)

__all__ = ["LinearTextureModel", "build_pca", "rasterize_uv_layout", "FORMAT", "FORMAT_VERSION"]

FORMAT = "ganfit-linear-texture"
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------ UV raster
def _hw(resolution) -> tuple[int, int]:
    from ..geometry import parse_resolution

    return parse_resolution(resolution, max_side=8192, error=ConfigError)


def rasterize_uv_layout(face_model, resolution) -> tuple[torch.Tensor, torch.Tensor]:
    """Which triangle of `face_model`'s UV layout covers each texel, and where.

    Texel (row j, column i) is covered when its centre ``(u, v) = ((i + 0.5) / W, 1 - (j + 0.5) / H)``
    lies in a UV triangle (the convention of `ganfit.render.unwrap`).
    Returns:
        face: (H, W) int64 triangle index (into ``face_model.triangles``), -1 outside the chart.
        bary: (H, W, 3) float64 barycentric weights of that triangle's corners.
    """
    from ..geometry import rasterize_uv

    if face_model.uv is None:
        raise ModelFormatError(f"face model {face_model.name!r} has no UV coordinates")
    h, w = _hw(resolution)
    tris = face_model.triangles if face_model.uv_triangles is None else face_model.uv_triangles
    return rasterize_uv(face_model.uv, tris, h, w)


def _nearest_fill_indices(covered: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H*W,) flat index of the nearest covered texel (itself where covered)."""
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return (iy * covered.shape[1] + ix).reshape(-1)


# ------------------------------------------------------------------------------------------ the model
class LinearTextureModel:
    """A PCA texture model in one face model's UV layout; implements `TextureModel`.

    Args:
        mean: (3, H, W) in [0, 1].
        basis: (K, 3, H, W) components (unit norm).
        std: (K,) standard deviation of each component's coefficient.
        uv_layout: `uv_layout_id` of the face model the textures belong to.
        name: identifier.
        meta: JSON-serialisable provenance (what it was built from, how).
    """

    def __init__(self, mean, basis, std, *, uv_layout: str, name: str = "linear", meta: dict | None = None,
                 device: torch.device | str = "cpu") -> None:
        mean_t = torch.as_tensor(np.asarray(mean) if not isinstance(mean, torch.Tensor) else mean).float()
        basis_t = torch.as_tensor(np.asarray(basis) if not isinstance(basis, torch.Tensor) else basis).float()
        std_t = torch.as_tensor(np.asarray(std) if not isinstance(std, torch.Tensor) else std).float().reshape(-1)
        if mean_t.ndim != 3 or mean_t.shape[0] != 3:
            raise ModelFormatError(f"linear texture model {name!r}: mean must be (3, H, W), got {tuple(mean_t.shape)}")
        if basis_t.ndim != 4 or basis_t.shape[1:] != mean_t.shape:
            raise ModelFormatError(
                f"linear texture model {name!r}: basis must be (K, 3, H, W) = (K, {', '.join(map(str, mean_t.shape))}), "
                f"got {tuple(basis_t.shape)}"
            )
        if std_t.shape != (basis_t.shape[0],):
            raise ModelFormatError(f"linear texture model {name!r}: std must have one entry per component ({basis_t.shape[0]})")
        for label, t in (("mean", mean_t), ("basis", basis_t), ("std", std_t)):
            if not bool(torch.isfinite(t).all()):
                raise ModelFormatError(f"linear texture model {name!r}: {label} contains NaN or infinity")
        if not isinstance(uv_layout, str) or not uv_layout:
            raise ModelFormatError(f"linear texture model {name!r}: uv_layout must be a non-empty layout id")
        self.name = name
        self.uv_layout = uv_layout
        self.meta = dict(meta or {})
        self.latent_dim = int(basis_t.shape[0])
        self.resolution = (int(mean_t.shape[1]), int(mean_t.shape[2]))
        dev = torch.device(device)
        self.mean = mean_t.contiguous().to(dev)
        self.basis = basis_t.contiguous().to(dev)
        self.std = std_t.contiguous().to(dev)

    def __repr__(self) -> str:
        h, w = self.resolution
        return f"LinearTextureModel(name={self.name!r}, components={self.latent_dim}, resolution={h}x{w}, uv_layout={self.uv_layout})"

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def to(self, device: torch.device | str) -> "LinearTextureModel":
        """This model with its arrays on `device` (self when already there)."""
        if torch.device(device) == self.device:
            return self
        return LinearTextureModel(self.mean, self.basis, self.std, uv_layout=self.uv_layout, name=self.name,
                                  meta=self.meta, device=device)

    # ------------------------------------------------------------------ TextureModel
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, K) -> (B, 3, H, W) ``clamp(mean + sum_k latent_k std_k basis_k, 0, 1)``, on the latent's
        device and dtype (differentiable in the latent)."""
        if latent.ndim != 2 or latent.shape[1] != self.latent_dim:
            raise ValueError(f"latent must be (B, {self.latent_dim}), got {tuple(latent.shape)}")
        dev, dt = latent.device, latent.dtype if latent.dtype.is_floating_point else torch.float32
        mean = self.mean.to(dev, dt)
        if self.latent_dim == 0:
            return mean.expand(latent.shape[0], -1, -1, -1).clamp(0.0, 1.0)
        basis = self.basis.to(dev, dt).reshape(self.latent_dim, -1)
        flat = (latent.to(dt) * self.std.to(dev, dt)) @ basis
        return (mean[None] + flat.view(latent.shape[0], *mean.shape)).clamp(0.0, 1.0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, K) standard normal latents (on the generator's device when one is given)."""
        device = generator.device if generator is not None else self.device
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def latent_prior(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, K) -> (B,) ``0.5 ||z||^2``, the negative log density of N(0, I) up to a constant."""
        return 0.5 * latent.pow(2).sum(-1)

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` (arrays ``mean``, ``basis``, ``std`` as float32 and ``header``: UTF-8 JSON bytes with
        format, version, name, uv_layout, resolution, meta); atomic; `load` reads it without pickles."""
        from ..._atomic import atomic_open

        header = {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name, "uv_layout": self.uv_layout,
                  "resolution": list(self.resolution), "components": self.latent_dim, "meta": self.meta}
        buf = io.BytesIO()
        np.savez(buf, header=np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8),
                 mean=self.mean.cpu().numpy().astype(np.float32), basis=self.basis.cpu().numpy().astype(np.float32),
                 std=self.std.cpu().numpy().astype(np.float32))
        with atomic_open(path, "wb") as fh:
            fh.write(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, *, face_model=None, uv_layout: str | None = None,
             device: torch.device | str = "cpu") -> "LinearTextureModel":
        """Read a model written by `save`.

        face_model / uv_layout: when given, the model must belong to that face model's UV layout (or that
        layout id); otherwise ModelFormatError says so.
        """
        p = Path(path)
        try:
            data = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            raise ModelFormatError(f"linear texture model not found: {p}") from None
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"{p}: not a readable .npz linear texture model ({exc})") from exc
        try:
            with data:
                missing = [k for k in ("header", "mean", "basis", "std") if k not in data.files]
                if missing:
                    raise ModelFormatError(f"{p}: not a ganfit linear texture model (missing {', '.join(missing)}); "
                                           "make one with `ganfit texture build-pca`")
                try:
                    header = json.loads(bytes(data["header"].astype(np.uint8)).decode("utf-8"))
                except (ValueError, UnicodeDecodeError) as exc:
                    raise ModelFormatError(f"{p}: unreadable header ({exc})") from exc
                mean, basis, std = data["mean"], data["basis"], data["std"]
        except (OSError, ValueError, EOFError) as exc:  # a corrupt zip member
            raise ModelFormatError(f"{p}: corrupt linear texture model ({exc})") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ModelFormatError(f"{p}: format {header.get('format') if isinstance(header, dict) else None!r} "
                                   f"is not {FORMAT!r}")
        if int(header.get("version", 0)) > FORMAT_VERSION:
            raise ModelFormatError(f"{p}: format version {header.get('version')} is newer than this ganfit reads "
                                   f"({FORMAT_VERSION}); upgrade ganfit")
        model = cls(mean, basis, std, uv_layout=str(header.get("uv_layout") or ""), name=str(header.get("name", "linear")),
                    meta=header.get("meta") or {}, device=device)
        want = model_uv_layout_id(face_model) if face_model is not None else uv_layout
        if want is not None and model.uv_layout != want:
            who = f"face model {face_model.name!r}" if face_model is not None else "the face model"
            raise ModelFormatError(
                f"{p}: texture model {model.name!r} belongs to UV layout {model.uv_layout}, but {who} has layout "
                f"{want}; build one for this face model (`ganfit texture build-dataset` + `ganfit texture build-pca`)"
            )
        return model

    # ------------------------------------------------------------------ from a per-vertex model
    @classmethod
    def from_vertex_model(cls, face_model, resolution=256, *, components: int | None = None,
                          name: str | None = None) -> "LinearTextureModel":
        """A face model's per-vertex colour model (``texture_mean`` (V, 3), ``texture_basis`` (V, 3, Kt),
        ``texture_std``; e.g. BFM 2009 texMU/texPC/texEV) rasterised into its UV layout.

        Every texel inside the UV chart gets the barycentric interpolation of its triangle's per-vertex
        mean and basis vectors (`rasterize_uv_layout`), so decoding a latent and sampling the texture at a
        vertex's UV gives that vertex's colour in the per-vertex model (up to the bilinear texture filter).
        Texels outside the chart copy the nearest chart texel (the same for mean and basis, so the model
        stays linear and texture filtering at the chart's border sees no background).
        Basis columns are normalised to unit norm in UV space and `std` rescaled to match, so
        ``mean + basis @ (z * std)`` is unchanged.

        resolution: int or (H, W). Memory: K * 3 * H * W * 4 bytes (199 BFM components at 256^2: 156 MB).
        components: keep the first K components (default all).
        """
        if face_model.texture_mean is None or face_model.texture_basis is None:
            raise ModelFormatError(
                f"face model {face_model.name!r} has no per-vertex colour model (texture_mean/basis/std); "
                "load a model that has one (BFM 2009 01_MorphableModel.mat, BFM 2017 .h5) or build a PCA model "
                "from photos with `ganfit texture build-dataset` + `ganfit texture build-pca`"
            )
        if face_model.uv is None:
            raise ModelFormatError(
                f"face model {face_model.name!r} has a colour model but no UV coordinates, so it has no UV layout "
                "to rasterise it into; give the model UVs (for example convert it to a ganfit .npz with UVs)"
            )
        h, w = _hw(resolution)
        k_all = face_model.num_texture
        k = k_all if components is None else int(components)
        if not 0 <= k <= k_all:
            raise ConfigError(f"components must be between 0 and {k_all}, got {components}")
        face, bary = rasterize_uv_layout(face_model, (h, w))
        face = face.reshape(-1)
        covered = (face >= 0).numpy()
        if not covered.any():
            raise ModelFormatError(f"face model {face_model.name!r}: its UV layout covers no texel at {h}x{w}")
        tid = np.flatnonzero(covered)
        corners = face_model.triangles[face.numpy()[tid]]  # (N, 3) vertex indices
        b = bary.reshape(-1, 3).numpy()[tid].astype(np.float32)  # (N, 3)
        nearest = _nearest_fill_indices(covered.reshape(h, w))

        def to_uv(values: np.ndarray) -> np.ndarray:
            """(V, 3, C) per-vertex -> (C, 3, H, W) texels (nearest chart texel outside the chart)."""
            c = values.shape[2]
            out = np.zeros((h * w, 3, c), np.float32)
            out[tid] = np.einsum("nk,nkdc->ndc", b, values[corners], optimize=True)
            out = out[nearest]
            return np.ascontiguousarray(out.reshape(h, w, 3, c).transpose(3, 2, 0, 1))

        mean = to_uv(face_model.texture_mean[:, :, None].astype(np.float32))[0]
        basis = np.zeros((k, 3, h, w), np.float32)
        chunk = max(1, int(2**26 // max(1, h * w * 3)))  # ~256 MB of float32 work per chunk
        for s in range(0, k, chunk):
            e = min(s + chunk, k)
            basis[s:e] = to_uv(face_model.texture_basis[:, :, s:e].astype(np.float32))
        norms = np.sqrt((basis.reshape(k, -1).astype(np.float64) ** 2).sum(1)) if k else np.zeros(0)
        norms = np.where(norms > 0, norms, 1.0)
        basis /= norms[:, None, None, None].astype(np.float32)
        std = face_model.texture_std[:k].astype(np.float64) * norms
        meta = {
            "source": "per-vertex colour model",
            "face_model": face_model.name,
            "face_model_sha256": face_model.checksum(),
            "vertex_components": k_all,
            "components": k,
            "note": "basis normalised to unit norm in UV space; std rescaled accordingly",
        }
        return cls(mean, basis, std.astype(np.float32), uv_layout=model_uv_layout_id(face_model),
                   name=name or f"{face_model.name}-vertex-texture", meta=meta)


# ------------------------------------------------------------------------------------------ PCA
def _read_uv_png(path: Path, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """PNG -> float32 (H, W, C) in [0, 1], resized (antialiased) to `size` = (H, W) when given."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            if size is not None and (im.height, im.width) != size:
                im = im.resize((size[1], size[0]), Image.Resampling.LANCZOS if channels == 3 else Image.Resampling.BILINEAR,
                               reducing_gap=None)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"cannot read UV image {path}: {exc}") from exc
    return arr if channels == 3 else arr[..., None]


def _dataset_files(uv_dir: Path) -> tuple[list[tuple[Path, Path | None]], dict]:
    """(uv png, mask png or None) pairs of a UV dataset and its manifest (or {})."""
    manifest: dict = {}
    mpath = uv_dir / "manifest.json"
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"{mpath}: unreadable manifest ({exc})") from exc
    pairs: list[tuple[Path, Path | None]] = []
    if manifest.get("items"):
        for item in manifest["items"]:
            out = item.get("outputs") or {}
            uv = uv_dir / out.get("uv", "")
            if not out.get("uv") or not uv.is_file():
                log.warning("%s: listed in the manifest but missing; skipped", uv)
                continue
            mask = uv_dir / out["mask"] if out.get("mask") else None
            pairs.append((uv, mask if mask is not None and mask.is_file() else None))
    else:
        for uv in sorted(uv_dir.glob("*.png")):
            if uv.stem.endswith("_mask"):
                continue
            mask = uv.with_name(uv.stem + "_mask.png")
            pairs.append((uv, mask if mask.is_file() else None))
    return pairs, manifest


def _top_svd(x: torch.Tensor, k: int, generator_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k singular values (k,) and right singular vectors (k, D) of centred `x` (N, D)."""
    n, d = x.shape
    if n <= 2048 or k >= n // 2:
        # thin SVD through the (N, N) Gram matrix (float64, accumulated over column chunks): exact,
        # cheap for small N and any D
        step = max(1, 2**24 // max(n, 1))
        gram = torch.zeros((n, n), dtype=torch.float64)
        for s0 in range(0, d, step):
            c = x[:, s0 : s0 + step].double()
            gram += c @ c.T
        evals, evecs = torch.linalg.eigh(gram)
        order = torch.argsort(evals, descending=True)[:k]
        s = evals[order].clamp_min(0).sqrt()
        good = s > 1e-9 * float(s.max()) if len(s) else s > 0
        s = torch.where(good, s, torch.zeros_like(s))
        coef = torch.where(good[:, None], evecs[:, order].T / s.clamp_min(1e-30)[:, None], 0.0)  # (k, N)
        v = torch.empty((len(order), d), dtype=torch.float32)
        for s0 in range(0, d, step):
            v[:, s0 : s0 + step] = (coef @ x[:, s0 : s0 + step].double()).float()
        return s.float(), v
    torch.manual_seed(generator_seed)
    _, s, v = torch.svd_lowrank(x, q=min(n, k + 10), niter=4)
    return s[:k], v[:, :k].T.contiguous()


def build_pca(
    uv_dir: str | Path,
    *,
    components: int = 50,
    resolution: int | tuple[int, int] | None = None,
    use_masks: bool = True,
    em_iterations: int = 10,
    uv_layout: str | None = None,
    name: str | None = None,
) -> LinearTextureModel:
    """PCA texture model of a UV dataset (`ganfit.training.uv_dataset.build_uv_dataset` output).

    Reads the completed UVs listed in ``uv_dir/manifest.json`` (or every ``NAME.png`` beside a
    ``NAME_mask.png`` without a manifest), resized to `resolution` (default: the dataset's), and takes
    the top `components` principal components of the (N, 3HW) data matrix: an exact thin SVD via the
    N x N Gram matrix for N <= 2048, randomized SVD (`torch.svd_lowrank`) beyond. Memory: N * 3HW * 4
    bytes (1000 UVs at 256^2: 0.8 GB); pass a smaller `resolution` for big datasets.

    use_masks: the completed UVs are part photo, part guess: where the photo did not see the face the
        completion filled in mirrored detail or a smooth Poisson fill. Plain PCA of them treats the
        guesses as data, which pulls every unseen region towards smooth, low-variance colour and biases
        the components (they learn the completion's pattern, not faces). With masks, the PCA is fitted
        as a weighted low-rank model by EM imputation (the "EM-PCA with missing data" of Roweis, NIPS
        1997, with soft weights): start from the completed UVs, then repeat `em_iterations` times:
        PCA -> rank-K reconstruction R -> ``X = m * X_seen + (1 - m) * R`` with m the visibility mask.
        Each unseen texel is thus predicted from what other photos saw there and how it co-varies with
        the texels this photo did see. This needs K clearly below N (with K >= N - 1 the reconstruction
        is exact and nothing changes); it falls back to plain PCA of the completed UVs when masks are
        missing.
    uv_layout: the UV layout id; default the manifest's (required without a manifest).
    Returns:
        `LinearTextureModel` with K = min(components, N - 1) components (fewer when the data has lower rank);
        ``meta["explained_fraction"]``: the share of the variance the components explain, over the seen
        texels weighted by the masks when they are used (the EM-imputed texels would inflate it).
    """
    uv_dir = Path(uv_dir)
    if not uv_dir.is_dir():
        raise ConfigError(f"UV dataset folder not found: {uv_dir}")
    if components < 1:
        raise ConfigError(f"components must be at least 1, got {components}")
    pairs, manifest = _dataset_files(uv_dir)
    if len(pairs) < 2:
        raise ConfigError(f"{uv_dir}: found {len(pairs)} UV image(s); PCA needs at least 2 "
                          "(build a dataset with `ganfit texture build-dataset`)")
    layout = uv_layout or (manifest.get("face_model") or {}).get("uv_layout")
    if not layout:
        raise ModelFormatError(f"{uv_dir}: no manifest.json saying which UV layout the textures use; pass uv_layout "
                               "(the face model's `uv_layout_id`) or rebuild with `ganfit texture build-dataset`")
    if manifest.get("face_model", {}).get("uv_layout") not in (None, layout):
        raise ModelFormatError(f"{uv_dir}: the manifest says UV layout {manifest['face_model']['uv_layout']}, "
                               f"but uv_layout={layout} was given")
    if resolution is None:
        from PIL import Image

        with Image.open(pairs[0][0]) as im:
            size = (im.height, im.width)
    else:
        size = _hw(resolution)
    h, w = size
    n, d = len(pairs), 3 * h * w
    x = torch.empty((n, d), dtype=torch.float32)
    masks = torch.ones((n, h * w), dtype=torch.float32) if use_masks else None
    have_masks = use_masks
    for i, (uv, mask) in enumerate(pairs):
        x[i] = torch.from_numpy(_read_uv_png(uv, size, 3).transpose(2, 0, 1).reshape(-1))
        if masks is not None:
            if mask is None:
                have_masks = False
            else:
                masks[i] = torch.from_numpy(_read_uv_png(mask, size, 1).reshape(-1))
    if use_masks and not have_masks:
        log.warning("%s: some UVs have no mask; using plain PCA of the completed UVs", uv_dir)
    k = min(int(components), n - 1)
    if k < components:
        log.warning("asked for %d components, but %d UVs give at most %d", components, n, k)

    seen = x.clone()
    iterations_run = 0
    if have_masks and em_iterations > 0 and k < n - 1:
        m = masks.repeat(1, 3)  # (N, 3HW): the same weight for the three channels
        for it in range(em_iterations):
            mean = x.mean(0)
            xc = x - mean
            _, v = _top_svd(xc, k)
            recon = mean + (xc @ v.T) @ v
            new = m * seen + (1.0 - m) * recon
            change = float((new - x).norm() / x.norm().clamp_min(1e-12))
            x = new
            iterations_run = it + 1
            log.debug("EM-PCA iteration %d: relative change %.2e", it + 1, change)
            if change < 1e-4:
                break
        del m
    mean = x.mean(0)
    s, v = _top_svd(x - mean, k)
    std = s / math.sqrt(max(n - 1, 1))
    keep = std > 1e-6 * max(float(std.max()) if len(std) else 0.0, 1e-12)
    if not bool(keep.all()):
        log.warning("the data has rank %d; keeping %d components", int(keep.sum()), int(keep.sum()))
        std, v = std[keep], v[keep]
    # share of the variance of the *photo* texels the model explains (weighted by the masks when used;
    # the imputed texels would inflate it)
    xc = seen - mean
    resid = xc - (xc @ v.T) @ v
    if have_masks:
        m = masks.repeat(1, 3)
        explained = 1.0 - float((m * resid**2).sum() / (m * xc**2).sum().clamp_min(1e-12))
        del m
    else:
        explained = 1.0 - float((resid**2).sum() / (xc**2).sum().clamp_min(1e-12))
    del xc, resid
    meta = {
        "source": "pca",
        "uv_dir": str(uv_dir.resolve()),
        "num_uvs": n,
        "uvs_sha256": None,
        "use_masks": bool(have_masks),
        "em_iterations": iterations_run,
        "explained_variance": [float(t) for t in (std**2)],
        "total_variance": float(((x - mean) ** 2).sum() / max(n - 1, 1)),
        "explained_fraction": explained,
        "dataset": {k2: manifest.get(k2) for k2 in ("face_model", "created", "ganfit_version") if k2 in manifest},
    }
    import hashlib

    hsh = hashlib.sha256()
    for uv, _ in pairs:
        hsh.update(uv.name.encode())
        hsh.update(uv.read_bytes())
    meta["uvs_sha256"] = hsh.hexdigest()
    return LinearTextureModel(mean.view(3, h, w), v.view(-1, 3, h, w), std, uv_layout=layout,
                              name=name or f"pca-{uv_dir.name}", meta=meta)
