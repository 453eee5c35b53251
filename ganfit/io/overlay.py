"""Visualisations of a fit (not differentiable): the mesh painted over the photo, and landmarks.

`draw_mesh_overlay` rasterises the projected mesh with a z-buffer (`ganfit.model.geometry.
rasterize_screen`, vectorised; ~0.1-0.3 s for 105k triangles at 512x512 on a CPU), culls back faces,
shades it grey with a Lambert term for a light at the camera, and blends it over the photo.
`draw_landmarks` draws the 68 iBUG points with their standard connecting lines, anti-aliased.
`make_fit_overlay` puts both side by side for a quick look at a result.

Images are (H, W, 3) float arrays in [0, 1] (uint8 is accepted and converted). Pixel coordinates:
x right, y down, origin at the top-left corner of the top-left pixel (pixel centres at +0.5).
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageDraw

from ..model.geometry import rasterize_screen
from .images import save_png

__all__ = [
    "draw_mesh_overlay",
    "draw_landmarks",
    "make_fit_overlay",
    "mesh_outline",
    "save_png",
    "png_bytes",
    "LANDMARK_CONNECTIONS_68",
]

# Chains of the iBUG 68-point markup: (first, last, closed).
_CHAINS_68 = (
    (0, 16, False),  # jaw
    (17, 21, False),  # right brow (subject's)
    (22, 26, False),  # left brow
    (27, 30, False),  # nose bridge
    (31, 35, False),  # nostrils
    (36, 41, True),  # right eye
    (42, 47, True),  # left eye
    (48, 59, True),  # outer lips
    (60, 67, True),  # inner lips
)
LANDMARK_CONNECTIONS_68: tuple[tuple[int, int], ...] = tuple(
    pair
    for first, last, closed in _CHAINS_68
    for pair in [(i, i + 1) for i in range(first, last)] + ([(last, first)] if closed else [])
)
"""(i, j) index pairs of the line segments drawn between the 68 landmarks."""

MESH_GREY = 0.85
"""Albedo of the painted mesh."""
AMBIENT = 0.25
"""Ambient share of the mesh shading (the rest is Lambert from a light at the camera)."""
WIRE_HALF_WIDTH = 0.6
"""Pixels whose centre is this close (px) to an edge of their triangle are drawn as wireframe."""


# ---------------------------------------------------------------------------- helpers
def _to_numpy(x, name: str, dtype=np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=dtype)


def _as_image(image, name: str = "image") -> np.ndarray:
    """(H, W, 3) float32 copy in [0, 1] from float or uint8 input (numpy or torch)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must be (H, W, 3), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a float (H, W, 3) image with Pillow's area-averaging filter, per channel in float."""
    channels = [
        np.asarray(PILImage.fromarray(np.ascontiguousarray(image[..., c])).resize((width, height), PILImage.BOX))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


PNG_COMPRESS_LEVEL = 1
"""zlib level of `png_bytes`: 1 encodes a 768 x 768 texture about 4x faster than Pillow's default 6
(~25 ms instead of ~90 ms on one CPU core) for files about 25% larger; the levels in between gain little."""


def png_bytes(image, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Encode an (H, W, 3) float image in [0, 1] (clipped, rounded to 8 bits) or uint8 as PNG bytes.

    For callers that render every output in memory before writing any (`save_png` writes a file).
    compress_level: zlib level 0 (none, fastest) to 9 (smallest).
    """
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        data = np.ascontiguousarray(image)
    else:
        data = np.clip(_as_image(image) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(data).save(buf, format="PNG", compress_level=int(compress_level))
    return buf.getvalue()


# ---------------------------------------------------------------------------- mesh overlay
def draw_mesh_overlay(
    image,
    projected,
    depth,
    triangles,
    normals_cam=None,
    *,
    alpha: float = 0.6,
    wireframe: bool = False,
    color: Sequence[float] = (MESH_GREY, MESH_GREY, MESH_GREY),
) -> np.ndarray:
    """Paint a projected triangle mesh over a photo.

    Each pixel whose centre lies in a front-facing triangle gets the nearest triangle (z-buffer)
    shaded ``color * (AMBIENT + (1 - AMBIENT) * max(0, n . z))``: Lambert with a light at the camera
    (direction +z in camera space). With `normals_cam` the per-vertex normals are interpolated per pixel
    (smooth shading); without them the mesh is drawn in flat `color` (use ``wireframe=True`` to see
    its structure). Back faces (counter-clockwise on screen, y down) are culled.

    Args:
        image: (H, W, 3) float in [0, 1] (or uint8).
        projected: (V, 2) pixel coordinates of the vertices.
        depth: (V,) depth, larger = farther from the camera (e.g. ``-z`` in camera space).
        triangles: (F, 3) vertex indices, counter-clockwise seen from outside (y-up camera frame).
        normals_cam: (V, 3) unit vertex normals in camera space (y up, camera looking down -z), or None.
        alpha: opacity of the mesh (0 = invisible, 1 = opaque).
        wireframe: darken pixels whose centre lies within `WIRE_HALF_WIDTH` pixels of an edge of
            their visible triangle (dense meshes then look dark all over; zoom in or use for coarse ones).
        color: mesh albedo, RGB in [0, 1].
    Returns:
        (H, W, 3) float32 in [0, 1]; pixels not covered by the mesh are the input photo.
    """
    img = _as_image(image)
    h, w = img.shape[:2]
    proj = _to_numpy(projected, "projected", np.float32)
    dep = _to_numpy(depth, "depth", np.float32)
    tris = _to_numpy(triangles, "triangles", np.int64)
    if proj.ndim != 2 or proj.shape[1] != 2:
        raise ValueError(f"projected must be (V, 2), got {proj.shape}")
    if dep.shape != (proj.shape[0],):
        raise ValueError(f"depth must be (V,) = ({proj.shape[0]},), got {dep.shape}")
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (F, 3), got {tris.shape}")
    if tris.size and (tris.min() < 0 or tris.max() >= proj.shape[0]):
        raise ValueError("triangle index out of range")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")

    face, bary, _ = rasterize_screen(torch.from_numpy(proj), torch.from_numpy(dep), torch.from_numpy(tris), h, w)
    face = face.numpy().reshape(-1)
    covered = np.nonzero(face >= 0)[0]
    out = img.copy()
    if covered.size == 0:
        return out
    f = face[covered]
    b = bary.numpy().reshape(-1, 3)[covered]
    corners = tris[f]  # (P, 3)
    albedo = np.asarray(color, dtype=np.float32).reshape(1, 3)
    if normals_cam is not None:
        nrm = _to_numpy(normals_cam, "normals_cam", np.float32)
        if nrm.shape != (proj.shape[0], 3):
            raise ValueError(f"normals_cam must be (V, 3) = ({proj.shape[0]}, 3), got {nrm.shape}")
        n = np.einsum("pk,pkc->pc", b, nrm[corners])
        nz = n[:, 2] / np.maximum(np.linalg.norm(n, axis=1), 1e-12)
        shade = AMBIENT + (1.0 - AMBIENT) * np.clip(nz, 0.0, 1.0)
    else:
        shade = np.ones(len(f), dtype=np.float32)
    rgb = albedo * shade[:, None].astype(np.float32)
    if wireframe:
        p = proj[corners]  # (P, 3, 2)
        # Distance to the edge opposite corner k = w_k * 2|A| / |edge_k|.
        edge_len = np.stack(
            [np.linalg.norm(p[:, (k + 2) % 3] - p[:, (k + 1) % 3], axis=1) for k in range(3)], axis=1
        )
        e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
        area2 = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
        dist = (b * area2[:, None] / np.maximum(edge_len, 1e-12)).min(axis=1)
        rgb = np.where((dist <= WIRE_HALF_WIDTH)[:, None], rgb * 0.45, rgb)
    flat = out.reshape(-1, 3)
    flat[covered] = (1.0 - alpha) * flat[covered] + alpha * rgb
    return np.clip(out, 0.0, 1.0)


# ---------------------------------------------------------------------------- landmarks
def draw_landmarks(
    image,
    points,
    color: Sequence[float] = (0.0, 1.0, 0.0),
    radius: float = 2.0,
    *,
    lines: bool = True,
    line_width: float | None = None,
    supersample: int = 4,
) -> np.ndarray:
    """Draw landmarks as dots joined by the standard 68-point lines (anti-aliased).

    Args:
        image: (H, W, 3) float in [0, 1] (or uint8).
        points: (N, 2) pixel coordinates. With N = 68 the iBUG chains are drawn (jaw 0-16, brows
            17-21 / 22-26, nose 27-30 + 31-35, eyes 36-41 / 42-47 closed, lips 48-59 / 60-67 closed);
            any other N gives dots only. Rows with NaN are skipped (and their lines).
        color: RGB in [0, 1].
        radius: dot radius in pixels.
        lines: draw the connecting lines (68 points only).
        line_width: line width in pixels (default ``max(1, radius / 2)``).
        supersample: anti-aliasing factor (the mask is drawn this many times larger, then averaged).
    Returns:
        (H, W, 3) float32 in [0, 1].
    """
    img = _as_image(image)
    h, w = img.shape[:2]
    pts = _to_numpy(points, "points", np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got {pts.shape}")
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    valid = np.isfinite(pts).all(axis=1)
    if not valid.any():
        return img
    lw = max(1.0, radius / 2.0) if line_width is None else float(line_width)
    margin = radius + lw + 2.0
    # Draw only in the clipped bounding box of the points, `supersample` times finer.
    x0 = int(max(0, np.floor(pts[valid, 0].min() - margin)))
    y0 = int(max(0, np.floor(pts[valid, 1].min() - margin)))
    x1 = int(min(w, np.ceil(pts[valid, 0].max() + margin)))
    y1 = int(min(h, np.ceil(pts[valid, 1].max() + margin)))
    if x1 <= x0 or y1 <= y0:
        return img
    s = max(1, int(supersample))
    mask = PILImage.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw = ImageDraw.Draw(mask)
    local = (pts - np.array([x0, y0])) * s

    if lines and pts.shape[0] == 68:
        for i, j in LANDMARK_CONNECTIONS_68:
            if valid[i] and valid[j]:
                draw.line([tuple(local[i]), tuple(local[j])], fill=255, width=max(1, int(round(lw * s))))
    r = radius * s
    for (px, py), ok in zip(local, valid):
        if ok:
            draw.ellipse([px - r, py - r, px + r, py + r], fill=255)
    m = np.asarray(mask.resize((x1 - x0, y1 - y0), PILImage.BOX), dtype=np.float32)[..., None] / 255.0
    col = np.asarray(color, dtype=np.float32).reshape(1, 1, 3)
    region = img[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = region * (1.0 - m) + col * m
    return img


# ---------------------------------------------------------------------------- fit panel
def make_fit_overlay(
    image,
    projected,
    depth,
    triangles,
    detected_landmarks=None,
    fitted_landmarks=None,
    normals=None,
    *,
    alpha: float = 0.6,
    max_side: int = 1024,
    render=None,
    render_opacity: float = 0.9,
    image_size: tuple[float, float] | None = None,
    joint_render=None,
    before_projected=None,
    before_depth=None,
    before_landmarks=None,
) -> np.ndarray:
    """A side-by-side picture of a fit: [photo + landmarks | mesh blended on the photo (| render)
    (| joint render) (| before / after)].

    The left panel shows the detected landmarks in green and the fitted model's projected landmarks
    in red; the middle panel is `draw_mesh_overlay`; with `render`, a third panel blends it over the
    photo. Each panel is the photo scaled down (never up) so that its longer side is at most `max_side`
    pixels; coordinates are scaled with it. The photo is scaled before anything else touches it, so a
    large photo costs one resize.

    Args:
        image: (H, W, 3) float in [0, 1] (or uint8).
        projected: (V, 2) pixel coordinates of the mesh vertices in `image`.
        depth: (V,) depth, larger = farther.
        triangles: (F, 3) vertex indices.
        detected_landmarks: (68, 2) pixel coordinates, or None.
        fitted_landmarks: (68, 2) pixel coordinates of the model's landmarks, or None.
        normals: (V, 3) camera-space vertex normals for shading, or None.
        alpha: mesh opacity.
        max_side: longest side of each panel.
        render: (h, w, 4) premultiplied RGBA render of the face in [0, 1] (resized to the panel if its
            size differs), or None.
        render_opacity: opacity of the render over the photo.
        image_size: (W, H) of the photo the coordinates are in, when `image` is a downscaled copy of it
            (`ganfit.io.images.Image.original_size`); None: `image`'s own size.
        joint_render: (h, w, 4) premultiplied RGBA of the joint stage's fitted render (model texture, SH
            lighting, colour gain and offset; `ganfit.fitting.joint_overlay.joint_render`): a panel of it
            composited opaquely over the photo where the face is.
        before_projected, before_depth: (V, 2) / (V,) the mesh under an earlier stage's parameters (the
            landmark stage's), with before_landmarks (68, 2) its landmarks (any may be None): a
            before / after panel with the outlines and landmarks of the earlier fit in cyan and of this
            one (`projected`, `fitted_landmarks`) in red, the detected landmarks in green.
    Returns:
        (h, k * w, 3) float32 in [0, 1], with (h, w) the panel size and k = 2 plus one per optional
        panel (render, joint render, before / after).
    """
    img, (h, w) = _panel_photo(image, max_side)
    if image_size is not None:
        w, h = float(image_size[0]), float(image_size[1])
    nh, nw = img.shape[:2]
    factor = np.array([nw / w, nh / h])
    radius = max(1.5, max(nw, nh) / 300.0)

    left = img.copy()
    if detected_landmarks is not None:
        left = draw_landmarks(left, _to_numpy(detected_landmarks, "detected_landmarks") * factor, (0.0, 1.0, 0.0), radius)
    if fitted_landmarks is not None:
        left = draw_landmarks(left, _to_numpy(fitted_landmarks, "fitted_landmarks") * factor, (1.0, 0.0, 0.0), radius)
    right = draw_mesh_overlay(
        img, _to_numpy(projected, "projected") * factor, depth, triangles, normals, alpha=alpha
    )
    panels = [left, right]
    if render is not None:
        rgba = _panel_rgba(render, nw, nh, "render")
        panels.append(np.clip(img * (1.0 - render_opacity * rgba[..., 3:4]) + render_opacity * rgba[..., :3], 0.0, 1.0))
    if joint_render is not None:
        rgba = _panel_rgba(joint_render, nw, nh, "joint_render")
        panels.append(np.clip(img * (1.0 - rgba[..., 3:4]) + rgba[..., :3], 0.0, 1.0))
    if before_projected is not None or before_landmarks is not None:
        panels.append(_before_after(img, factor, triangles, radius, projected, depth, before_projected, before_depth,
                                    detected_landmarks, fitted_landmarks, before_landmarks))
    return np.concatenate(panels, axis=1)


#: colours of the before / after panel: the earlier stage's fit, this fit, the detected landmarks
BEFORE_COLOR, AFTER_COLOR, DETECTED_COLOR = (0.0, 0.85, 1.0), (1.0, 0.15, 0.1), (0.0, 1.0, 0.0)


def _panel_rgba(render, nw: int, nh: int, name: str) -> np.ndarray:
    """(nh, nw, 4) float32 premultiplied RGBA: `render` checked and resized to the panel."""
    rgba = np.asarray(render, dtype=np.float32)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"{name} must be (h, w, 4) RGBA, got {rgba.shape}")
    if rgba.shape[:2] != (nh, nw):
        rgba = np.concatenate([_resize(rgba[..., :3], nw, nh), _resize(np.repeat(rgba[..., 3:], 3, -1), nw, nh)[..., :1]], -1)
    return rgba


def mesh_outline(shape: tuple[int, int], projected, depth, triangles, width: int = 1) -> np.ndarray:
    """(H, W) bool: the outline of a projected mesh's front faces (covered pixels next to uncovered ones,
    thickened to `width` pixels inwards). projected: (V, 2) pixels; depth: (V,) larger = farther."""
    from scipy import ndimage

    h, w = shape
    face, _, _ = rasterize_screen(torch.from_numpy(_to_numpy(projected, "projected", np.float32)),
                                  torch.from_numpy(_to_numpy(depth, "depth", np.float32)),
                                  torch.from_numpy(_to_numpy(triangles, "triangles", np.int64)), h, w)
    covered = face.numpy() >= 0
    return covered & ~ndimage.binary_erosion(covered, iterations=max(1, int(width)), border_value=0)


def _before_after(img, factor, triangles, radius, projected, depth, before_projected, before_depth,
                  detected, fitted, before) -> np.ndarray:
    """The before / after panel of `make_fit_overlay` (the photo dimmed, outlines and landmarks on it)."""
    out = img * 0.75
    h, w = img.shape[:2]
    width = max(1, int(round(max(h, w) / 400)))
    # the earlier fit drawn wider, under this one: where the two agree a cyan rim shows around the red
    for proj, dep, color, wd in ((before_projected, before_depth, BEFORE_COLOR, 2 * width + 1),
                                 (projected, depth, AFTER_COLOR, width)):
        if proj is not None and dep is not None:
            edge = mesh_outline((h, w), _to_numpy(proj, "projected") * factor, dep, triangles, wd)
            out[edge] = color
    for pts, color, r in ((before, BEFORE_COLOR, 1.6), (detected, DETECTED_COLOR, 1.0), (fitted, AFTER_COLOR, 0.7)):
        if pts is not None:
            out = draw_landmarks(out, _to_numpy(pts, "landmarks") * factor, color, radius * r)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _panel_photo(image, max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The photo scaled down (never up) to at most `max_side` pixels a side, (h, w, 3) float32 in [0, 1],
    and the original (H, W). A float photo already in [0, 1] is read in place (no full-size copy)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {arr.shape}")
    h, w = arr.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return _as_image(arr), (h, w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    in_range = arr.dtype == np.float32 and float(arr.min()) >= 0.0 and float(arr.max()) <= 1.0
    return _resize(arr if in_range else _as_image(arr), nw, nh), (h, w)
