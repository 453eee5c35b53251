"""The blended UV texture of a joint fit (`texture="blend"`): the photo's albedo where the photo sees the
surface and the fit explains it, the fitted model texture elsewhere, joined without a seam (not
differentiable).

The joint stage renders (`ganfit.fitting.stages.joint_energy.JointEnergy.render`)

    photo(u) ~ gain * albedo(u) * E(n(u)) + offset,

with E the SH irradiance of the camera-space normal n (Ramamoorthi & Hanrahan, SIGGRAPH 2001, eq. 7;
`ganfit.render.shading.sh_shading`) under the fitted lighting, and gain / offset the camera's per-channel
colour transform. Inverting that per texel of the photo's unwrap gives an albedo estimate

    a(u) = (photo(u) - offset) / (gain * E(u))                                           (1)

which keeps the photo's detail (pores, freckles, eyebrows) that a low-resolution texture model cannot
reproduce, without the photo's shading. Where the fit does not explain the photo, (1) is no albedo: hair,
glasses, a hand, a specular highlight, a clipped pixel or a cast shadow. `explained_weight` tests the
ratio a / t against the model texture t: its log, less its median over the seen texels (the level the fit
got right), must stay within a tolerance in brightness (tighter for brighter: highlights; looser for
darker: hair, shadows) and in chroma. In the model's feature regions (eyes, brows, nose, lips:
`feature_uv`), which a smooth low-resolution model texture does not draw, the tolerances are much looser,
so the photo's eyes and brows are kept rather than replaced by the model's blur. Rejected regions grow by a
small margin (their rims are mixtures). The test cannot tell hair of skin-like colour from skin (a blonde
fringe over the forehead partly passes).

`blend_textures` then composites by Poisson image editing (Perez et al., SIGGRAPH 2003, "seamless
cloning"): texels the photo explains keep (1), every other chart texel solves the Poisson equation whose
guidance field is the model texture's gradient, with (1) as boundary values; so the model texture's
detail joins the photo's albedo with the photo's level at the join (the correction to the model texture
is harmonic, hence smooth, away from it). A feathered weight mixes (1) and the fill over a few texels,
as `ganfit.render.uv_complete.complete` does. The fill is `ganfit.render.uv_fill.poisson_fill_fast`.

`blend_face_textures` does it for a `Fitter`'s meshes: unwrap each photo (`ganfit.render.unwrap.unwrap`,
in the photo's working copy), the fitted shading per texel (`uv_shading`), the model texture at the
texture size, and sets ``mesh.texture`` / ``mesh.texture_mask``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..render.shading import sh_shading
from ..render.unwrap import unwrap
from ..render.uv_fill import CoarseSpace, poisson_fill_fast
from ..render.uv_layout import UVLayout
from ..render.zbuffer import screen_zbuffer

__all__ = ["BlendOptions", "TextureBlend", "albedo_estimate", "explained_weight", "blend_textures", "uv_shading",
           "feature_uv", "FEATURE_REGIONS", "model_texture_uv", "blend_face_textures", "unwrap_mesh"]


@dataclass(frozen=True)
class BlendOptions:
    """Tolerances of `explained_weight` and the blend (log-ratio units: 0.1 is about 10 %).

    bright_tol: the albedo estimate may be this much brighter than the model texture (beyond, the weight
        falls to 0 at twice it): specular highlights.
    dark_tol: the same, darker (eyebrows, lips and nostrils are darker than a smooth model texture; hair,
        shadows and dark occluders much more).
    chroma_tol: the largest per-channel deviation of the log-ratio from its mean (a coloured occluder).
    saturated: photo values at or above this in any channel are clipped, hence not explained.
    min_shading: texels where gain * E is below this (dark, grazing) are not inverted (ramp up to 2x).
    min_visibility: texels the unwrap sees with less weight than this count as unseen.
    feature_tol: in the facial features (`features`: eyes, brows, nostrils, lips, which a smooth model
        texture does not draw), the brightness and chroma tolerances rise to this.
    grow: rejected regions grow by this fraction of the texture's longer side (their rims are mixtures).
    feather: the photo's weight ramps from 0 to 1 over this fraction of the texture's longer side.
    pad: texels outside the chart within this many texels of it take the nearest chart texel's colour.
    """

    bright_tol: float = 0.25
    dark_tol: float = 0.6
    chroma_tol: float = 0.2
    feature_tol: float = 1.5
    saturated: float = 0.985
    min_shading: float = 0.08
    min_visibility: float = 0.05
    grow: float = 0.006
    feather: float = 0.012
    pad: int = 8


@dataclass
class TextureBlend:
    """Result of `blend_textures` (numpy float32, (H, W) texels).

    texture: (H, W, 3) in [0, 1], the blended texture (row 0 = top, v up).
    weight: (H, W) in [0, 1], the photo albedo's share of each texel (visibility x explained, feathered).
    albedo: (H, W, 3) the albedo estimate (1) where the photo sees the surface, 0 elsewhere (not clipped).
    explained: (H, W) in [0, 1], `explained_weight` (0 outside what the photo sees).
    """

    texture: np.ndarray
    weight: np.ndarray
    albedo: np.ndarray
    explained: np.ndarray


def _ramp_down(x: np.ndarray, start: float, stop: float) -> np.ndarray:
    """1 below `start`, 0 above `stop`, smoothstep in between (float32)."""
    t = np.clip((x - start) / np.maximum(stop - start, 1e-12), 0.0, 1.0)
    return (1.0 - t * t * (3.0 - 2.0 * t)).astype(np.float32)


def albedo_estimate(photo_uv: np.ndarray, shading_uv: np.ndarray, gain, offset, *, min_shading: float = 1e-3) -> np.ndarray:
    """Equation (1) of the module doc: the albedo that, lit by the fitted shading, gives the photo.

    Args:
        photo_uv: (H, W, 3) the photo's colours per texel (unwrap), in [0, 1].
        shading_uv: (H, W, 3) the fitted irradiance E per texel (`uv_shading`).
        gain, offset: (3,) the fitted colour transform (render' = gain * render + offset).
        min_shading: gain * E is clamped below at this.
    Returns:
        (H, W, 3) float32, not clipped.
    """
    g = np.asarray(gain, np.float32).reshape(1, 1, 3)
    o = np.asarray(offset, np.float32).reshape(1, 1, 3)
    denom = np.maximum(g * np.asarray(shading_uv, np.float32), np.float32(min_shading))
    return ((np.asarray(photo_uv, np.float32) - o) / denom).astype(np.float32)


def explained_weight(albedo: np.ndarray, model_uv: np.ndarray, seen: np.ndarray, *, photo_uv: np.ndarray | None = None,
                     lit: np.ndarray | None = None, features: np.ndarray | None = None,
                     options: BlendOptions = BlendOptions()) -> np.ndarray:
    """How well the fit explains each seen texel: 1 where the albedo estimate is a plausible albedo of the
    model texture's kind, falling to 0 where it is not (module doc).

    Args:
        albedo: (H, W, 3) `albedo_estimate`.
        model_uv: (H, W, 3) the fitted model texture.
        seen: (H, W) bool, the texels the photo sees (the median is taken over them).
        photo_uv: (H, W, 3) the photo's colours, for the clipping test (None: no test).
        lit: (H, W, 3) gain * E, for the dark-shading test (None: no test).
        features: (H, W) in [0, 1], where the facial features are (`feature_uv`): the tolerances rise
            towards `options.feature_tol` there (None: nowhere).
    Returns:
        (H, W) float32 in [0, 1], 0 where not `seen`.
    """
    from scipy import ndimage

    seen = np.asarray(seen, bool)
    out = np.zeros(seen.shape, np.float32)
    if not seen.any():
        return out
    eps = np.float32(1e-3)
    d = np.log(np.maximum(albedo[seen], eps)) - np.log(np.maximum(np.asarray(model_uv, np.float32)[seen], eps))
    d -= np.median(d, axis=0, keepdims=True)
    lum = d.mean(1)
    chroma = np.abs(d - lum[:, None]).max(1)
    f = 0.0 if features is None else np.clip(np.asarray(features, np.float32)[seen], 0.0, 1.0)

    def tol(base: float) -> np.ndarray:
        return np.float32(base) + f * np.float32(max(options.feature_tol - base, 0.0))

    bright, dark, chrom = tol(options.bright_tol), tol(options.dark_tol), tol(options.chroma_tol)
    w = _ramp_down(lum, bright, 2 * bright) * _ramp_down(-lum, dark, 2 * dark) * _ramp_down(chroma, chrom, 2 * chrom)
    if photo_uv is not None:
        w *= np.asarray(photo_uv, np.float32)[seen].max(1) < options.saturated
    if lit is not None:
        w *= 1.0 - _ramp_down(np.asarray(lit, np.float32)[seen].min(1), options.min_shading, 2 * options.min_shading)
    out[seen] = w
    radius = int(round(options.grow * max(seen.shape)))
    if radius > 0:  # rejected regions grow: the weight is the minimum over a disc around each texel
        yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        disc = yy * yy + xx * xx <= radius * radius
        out = np.where(seen, ndimage.grey_erosion(np.where(seen, out, 1.0), footprint=disc, mode="nearest"), 0.0)
    return out.astype(np.float32)


def _feathered(weight: np.ndarray, coverage: np.ndarray, feather: float, threshold: float) -> np.ndarray:
    """`weight` times a ramp from 0 at the chart texels with weight <= threshold to 1 `feather` texels away."""
    from scipy import ndimage

    low = coverage & (weight <= threshold)
    if feather <= 0 or not low.any():
        return weight.astype(np.float32)
    dist = ndimage.distance_transform_edt(~low)
    return (weight * np.clip((dist - 0.5) / feather, 0.0, 1.0)).astype(np.float32)


def blend_textures(photo_uv: np.ndarray, photo_mask: np.ndarray, shading_uv: np.ndarray, model_uv: np.ndarray,
                   coverage: np.ndarray, *, gain=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0),
                   features: np.ndarray | None = None, options: BlendOptions = BlendOptions(), space: CoarseSpace | None = None,
                   nearest_chart: np.ndarray | None = None, outside_distance: np.ndarray | None = None) -> TextureBlend:
    """The photo's albedo where seen and explained, seamlessly blended into the model texture elsewhere.

    Args:
        photo_uv: (H, W, 3) the photo unwrapped into the UV layout, in [0, 1] (`UVTexture.texture`).
        photo_mask: (H, W) visibility weight in [0, 1] (`UVTexture.mask`; 0: unseen).
        shading_uv: (H, W, 3) the fitted SH irradiance E per texel (`uv_shading`).
        model_uv: (H, W, 3) the fitted model texture (albedo) in [0, 1] (`model_texture_uv`).
        coverage: (H, W) bool, the UV chart.
        gain, offset: (3,) the fitted colour transform (render' = gain * render + offset).
        features: (H, W) in [0, 1] where the facial features are (`feature_uv`; looser tests there).
        space: the chart's `CoarseSpace` (`UVLayout.coarse`; built here if None).
        nearest_chart, outside_distance: (H, W) `UVLayout.nearest_chart` / `outside_distance` for the
            edge padding (computed here if None).
    Returns:
        `TextureBlend`. Outside the chart: the chart's colours padded `options.pad` texels, then the model
        texture.
    """
    from scipy import ndimage

    model = np.clip(np.asarray(model_uv, np.float32), 0.0, 1.0)
    cov = np.asarray(coverage, bool)
    h, w = cov.shape
    for name, a, tail in (("photo_uv", photo_uv, (3,)), ("photo_mask", photo_mask, ()), ("shading_uv", shading_uv, (3,)),
                          ("model_uv", model, (3,))):
        if np.shape(a) != (h, w) + tail:
            raise ValueError(f"{name} must be {(h, w) + tail} like coverage, got {np.shape(a)}")
    photo = np.nan_to_num(np.asarray(photo_uv, np.float32))
    vis = np.nan_to_num(np.clip(np.asarray(photo_mask, np.float32), 0.0, 1.0)) * cov
    seen = vis > options.min_visibility
    lit = np.asarray(gain, np.float32).reshape(1, 1, 3) * np.asarray(shading_uv, np.float32)
    albedo = albedo_estimate(photo, shading_uv, gain, offset) * seen[..., None]
    explained = explained_weight(albedo, model, seen, photo_uv=photo, lit=lit, features=features, options=options)
    weight = _feathered(vis * explained, cov, options.feather * max(h, w), options.min_visibility)
    known = cov & (weight >= 0.5)

    out = model.copy()
    if known.any():
        filled = poisson_fill_fast(np.where(known[..., None], albedo, model), known, cov, guide=model,
                                   guide_weight=cov.astype(np.float32), space=space)
        # chart components the photo does not reach keep the model texture (the fill gives them a flat mean)
        labels, n = ndimage.label(cov)
        reached = np.zeros(n + 1, bool)
        reached[np.unique(labels[known])] = True
        reached[0] = False
        chart = reached[labels]
        mix = weight[..., None] * albedo + (1.0 - weight[..., None]) * filled
        out[chart] = np.clip(mix[chart], 0.0, 1.0)
        out[known] = np.clip(albedo[known], 0.0, 1.0)
        if options.pad > 0:
            if nearest_chart is None or outside_distance is None:
                outside_distance, (iy, ix) = ndimage.distance_transform_edt(~cov, return_indices=True)
                nearest_chart = iy * w + ix
            near = (outside_distance > 0) & (outside_distance <= options.pad)
            out[near] = out.reshape(-1, 3)[np.asarray(nearest_chart)[near]]
    weight = np.where(cov, np.maximum(weight, known.astype(np.float32)), 0.0).astype(np.float32)
    return TextureBlend(texture=out.astype(np.float32), weight=weight, albedo=albedo, explained=explained)


@torch.no_grad()
def uv_shading(layout: UVLayout, normals, lighting) -> np.ndarray:
    """The SH irradiance E per texel of a fitted mesh (`sh_shading` of the renormalised interpolated vertex
    normal, as the `Renderer` shades a pixel).

    Args:
        layout: the model's `UVLayout`.
        normals: (V, 3) camera-space unit vertex normals of the fitted mesh (`FaceMesh.normals_camera`).
        lighting: (9, 3) SH radiance coefficients (`JointStageResult.lighting[i]`).
    Returns:
        (H, W, 3) float32; 0 off the chart.
    """
    h, w = layout.resolution
    n = torch.as_tensor(np.asarray(layout.interpolation @ np.asarray(torch.as_tensor(normals).detach().cpu().float()),
                                   dtype=np.float32))
    n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
    e = sh_shading(n[None], torch.as_tensor(lighting).detach().cpu().float().reshape(1, 9, 3))[0]
    out = np.zeros((h * w, 3), np.float32)
    out[layout.texels.numpy()] = e.numpy()
    return out.reshape(h, w, 3)


#: the model regions `feature_uv` marks by default: what a smooth model texture does not draw
FEATURE_REGIONS = ("eyes", "brows", "nose", "lips")


def feature_uv(layout: UVLayout, regions: dict, names: Sequence[str] = FEATURE_REGIONS, *, margin: float = 0.01) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the model's feature regions (per-vertex masks, `MorphableModel.regions`)
    in UV, grown by `margin` of the texture's longer side and smoothed over as much again."""
    from scipy import ndimage

    h, w = layout.resolution
    masks = [np.asarray(regions[n], np.float32) for n in names if n in regions]
    out = np.zeros(h * w, np.float32)
    if not masks:
        return out.reshape(h, w)
    per_vertex = np.clip(np.sum(masks, 0), 0.0, 1.0)
    out[layout.texels.numpy()] = np.asarray(layout.interpolation @ per_vertex, np.float32)
    out = out.reshape(h, w)
    r = max(1, int(round(margin * max(h, w))))
    out = ndimage.grey_dilation(out, size=(2 * r + 1, 2 * r + 1))
    return np.clip(ndimage.uniform_filter(out, size=2 * r + 1), 0.0, 1.0).astype(np.float32)


@torch.no_grad()
def model_texture_uv(texture: torch.Tensor, resolution: tuple[int, int]) -> np.ndarray:
    """A model texture (3, Hu, Wu) or (1, 3, Hu, Wu) resized bilinearly to `resolution` (H, W), as
    (H, W, 3) float32 in [0, 1] (row 0 = top, as the photo unwrap)."""
    tex = torch.as_tensor(texture).detach().cpu().float()
    tex = tex[None] if tex.ndim == 3 else tex[:1]
    if tuple(tex.shape[-2:]) != tuple(resolution):
        tex = F.interpolate(tex, size=tuple(resolution), mode="bilinear", align_corners=False)
    return tex[0].clamp(0, 1).permute(1, 2, 0).numpy()


def unwrap_mesh(layout: UVLayout, triangles: np.ndarray, mesh, photo, scale: tuple[float, float]):
    """The photo unwrapped onto a fitted mesh (`unwrap`, in the pixels of `photo`: the camera's x `scale`)."""
    proj = mesh.projected.detach().cpu().float()
    if tuple(scale) != (1.0, 1.0):
        proj = proj * torch.tensor(scale, dtype=torch.float32)
    cam = mesh.vertices_camera.detach().cpu().float()
    h, w = np.shape(photo)[:2]
    depth = -cam[:, 2]
    usable = torch.isfinite(proj).all(1) & torch.isfinite(cam).all(1) & (depth > 0)
    zbuffer = screen_zbuffer(proj, depth.where(usable, torch.full_like(depth, float("nan"))),
                             torch.as_tensor(triangles), (w, h))
    normals = None if mesh.normals_camera is None else mesh.normals_camera.detach().cpu().float()
    return unwrap(photo, proj, cam, triangles, layout=layout, zbuffer=zbuffer, normals=normals)


def blend_face_textures(photo_texture, meshes: Sequence, joint, photos: Sequence, photo_scales: Sequence | None = None,
                        *, options: BlendOptions = BlendOptions()) -> list[TextureBlend | None]:
    """Replace each mesh's texture by the blend of its photo's albedo and the joint stage's model texture,
    in place (``mesh.texture``, and ``mesh.texture_mask`` = the photo's share).

    Args:
        photo_texture: the `ganfit.fitting.photo_texture.PhotoTexture` that made the meshes (its UV layout).
        meshes: B `FaceMesh` fitted with the joint stage's parameters (`JointFit.params`).
        joint: the `JointFit` (per photo lighting, gain, offset and model texture).
        photos: B (h, w, 3) photos (the working copies, `Image.pixels`).
        photo_scales: per photo (x, y) pixels of `photos[i]` per camera pixel (`Image.scale`; default 1).
    Returns:
        per mesh its `TextureBlend`, None where the mesh has no texture.
    """
    out: list[TextureBlend | None] = []
    if not photo_texture.makes_texture:
        return [None] * len(meshes)
    layout = photo_texture.layout
    tris = np.asarray(photo_texture.model.triangles, dtype=np.int64)
    features = feature_uv(layout, photo_texture.model.regions)
    for i, (mesh, res) in enumerate(zip(meshes, joint.results)):
        if mesh.texture is None or mesh.normals_camera is None:
            out.append(None)
            continue
        scale = (1.0, 1.0) if photo_scales is None else tuple(float(s) for s in photo_scales[i])
        raw = unwrap_mesh(layout, tris, mesh, photos[i], scale)
        blend = blend_textures(
            raw.texture, raw.mask, uv_shading(layout, mesh.normals_camera, res.lighting[0]),
            model_texture_uv(res.texture, layout.resolution), layout.coverage,
            gain=res.gain[0].detach().cpu().numpy(), offset=res.offset[0].detach().cpu().numpy(), features=features,
            options=options,
            space=layout.coarse, nearest_chart=layout.nearest_chart, outside_distance=layout.outside_distance)
        mesh.texture, mesh.texture_mask = blend.texture, blend.weight
        out.append(blend)
    return out
