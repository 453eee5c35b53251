"""Mesh files: Wavefront OBJ (+ MTL), binary PLY, binary glTF (GLB), and a minimal OBJ reader.

OBJ as written here::

    mtllib face.mtl                 (when a material is given; first, so that readers which search the
                                     text for "mtllib" never find it in a comment)
    # comment
    v x y z r g b                   (colours in [0, 1]: the extension read by MeshLab, Blender, trimesh)
    vt u v                          (v up, OBJ convention)
    vn nx ny nz
    usemtl face
    f a/b/c ...                     (1-based; a/b, a//c or a as the attributes present)

Vertices, UVs and normals are written with 6 decimals (micrometres for millimetre meshes), colours
with 4. Names written into a file (``mtllib``, ``usemtl``/``newmtl``, ``map_Kd``, PLY ``TextureFile``)
must be free of line breaks and control characters (`OutputError` otherwise); comments are escaped onto
their lines (`ganfit._names.escape_controls`), so no string can add a line to a file. Every file is written atomically (`ganfit._atomic.atomic_open`): a failure leaves no
half-written file and an existing file untouched. Formatting is vectorised (one ``%`` over all rows),
so a 53k-vertex / 105k-triangle mesh writes in a fraction of a second.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from .._atomic import atomic_open
from .._names import check_name, escape_controls, has_unsafe
from ..errors import ModelFormatError, OutputError

__all__ = ["Material", "ObjMesh", "write_obj", "obj_text", "mtl_text", "write_ply", "ply_bytes", "write_glb", "split_uv_seams",
           "glb_bytes", "read_obj"]

_CHUNK_ROWS = 65536  # rows formatted per `%` call (bounds the size of the temporary tuple)


@dataclass(frozen=True)
class Material:
    """An OBJ material (written to the ``.mtl`` next to the ``.obj``).

    Attributes:
        name: material name (no whitespace), used by ``newmtl`` / ``usemtl``.
        texture: diffuse texture file name written as ``map_Kd``, relative to the ``.mtl``
            (e.g. ``"face_texture.png"``), or None for an untextured material. The image itself is
            written by the caller.
        diffuse / ambient / specular: ``Kd`` / ``Ka`` / ``Ks`` colours in [0, 1].
    """

    name: str = "material0"
    texture: str | None = None
    diffuse: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: tuple[float, float, float] = (1.0, 1.0, 1.0)
    specular: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class ObjMesh:
    """What `read_obj` returns (numpy arrays; optional parts are None when absent).

    Attributes:
        vertices: (V, 3) float64.
        triangles: (F, 3) int64 0-based vertex indices (polygons are fan-triangulated).
        uv: (T, 2) float64 texture coordinates, or None.
        uv_triangles: (F, 3) int64 0-based indices into `uv`, or None.
        colors: (V, 3) float64 vertex colours from ``v x y z r g b``, or None.
        normals: (N, 3) float64 ``vn`` entries, or None.
        normal_triangles: (F, 3) int64 0-based indices into `normals`, or None.
        mtllib: the ``mtllib`` file name, or None.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    uv: np.ndarray | None = None
    uv_triangles: np.ndarray | None = None
    colors: np.ndarray | None = None
    normals: np.ndarray | None = None
    normal_triangles: np.ndarray | None = None
    mtllib: str | None = None


# ---------------------------------------------------------------------------- helpers
def _as_numpy(x, name: str, dtype) -> np.ndarray:
    if x is None:
        return None
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    try:
        return np.ascontiguousarray(np.asarray(x), dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise OutputError(f"cannot write mesh: {name} is not a numeric array ({exc})") from exc


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise OutputError(f"cannot write mesh: {what}")


def _format_rows(fh: IO[str], fmt_row: str, rows: np.ndarray) -> None:
    """Write ``fmt_row % tuple(row)`` for every row, vectorised in chunks."""
    n = rows.shape[0]
    for start in range(0, n, _CHUNK_ROWS):
        block = rows[start : start + _CHUNK_ROWS]
        fh.write((fmt_row * block.shape[0]) % tuple(block.ravel().tolist()))


def _check_indices(tris: np.ndarray, n: int, name: str) -> None:
    _check(tris.ndim == 2 and tris.shape[1] == 3, f"{name} must be (F, 3), got {tris.shape}")
    if tris.size:
        _check(int(tris.min()) >= 0 and int(tris.max()) < n, f"{name} index out of range for {n} entries")


def _check_material_name(name: str) -> None:
    _check(bool(name) and not any(c.isspace() for c in name) and not has_unsafe(name),
           "material name must be non-empty, without spaces or control characters")


def _comment_lines(comment: str | None) -> list[str]:
    """A comment as lines without line breaks or control characters (each escaped)."""
    if not comment:
        return []
    return [escape_controls(line) for line in str(comment).splitlines()] or [""]


def mtl_text(material: Material) -> str:
    """The ``.mtl`` file content for `material` (``newmtl``, ``Ka/Kd/Ks``, ``map_Kd`` if textured).

    Raises:
        OutputError: a material name with whitespace or control characters, or a texture name with a line
            break or control character.
    """
    _check_material_name(material.name)
    if material.texture:
        check_name(material.texture, "the texture file name")
    lines = [
        "# written by ganfit",
        f"newmtl {material.name}",
        "Ka {:.6g} {:.6g} {:.6g}".format(*material.ambient),
        "Kd {:.6g} {:.6g} {:.6g}".format(*material.diffuse),
        "Ks {:.6g} {:.6g} {:.6g}".format(*material.specular),
        "d 1",
        "illum 1",
    ]
    if material.texture:
        lines.append(f"map_Kd {material.texture}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- OBJ
def _obj_writer(vertices, triangles, uv, uv_triangles, vertex_colors, normals, mtl, mtllib, comment):
    """Validate the arrays (raising `OutputError` before anything is written) and return a function
    that writes the OBJ text to a text file object."""
    verts = _as_numpy(vertices, "vertices", np.float64)
    tris = _as_numpy(triangles, "triangles", np.int64)
    _check(verts.ndim == 2 and verts.shape[1] == 3, f"vertices must be (V, 3), got {verts.shape}")
    _check(bool(np.isfinite(verts).all()), "vertices contain NaN or infinity")
    nv = verts.shape[0]
    _check_indices(tris, nv, "triangles")

    cols = _as_numpy(vertex_colors, "vertex_colors", np.float64)
    if cols is not None:
        _check(cols.shape == (nv, 3), f"vertex_colors must be (V={nv}, 3), got {cols.shape}")
        _check(bool(np.isfinite(cols).all()), "vertex_colors contain NaN or infinity")
        cols = np.clip(cols, 0.0, 1.0)
    uvs = _as_numpy(uv, "uv", np.float64)
    uv_tris = _as_numpy(uv_triangles, "uv_triangles", np.int64)
    if uv_tris is not None and uvs is None:
        raise OutputError("cannot write mesh: uv_triangles given without uv")
    if uvs is not None:
        _check(uvs.ndim == 2 and uvs.shape[1] == 2, f"uv must be (V, 2) or (T, 2), got {uvs.shape}")
        _check(bool(np.isfinite(uvs).all()), "uv contains NaN or infinity")
        if uv_tris is None:
            _check(uvs.shape[0] == nv, f"per-vertex uv must be (V={nv}, 2), got {uvs.shape}; pass uv_triangles")
            uv_tris = tris
        else:
            _check(uv_tris.shape == tris.shape, f"uv_triangles must be {tris.shape}, got {uv_tris.shape}")
            _check_indices(uv_tris, uvs.shape[0], "uv_triangles")
    nrm = _as_numpy(normals, "normals", np.float64)
    if nrm is not None:
        _check(nrm.shape == (nv, 3), f"normals must be (V={nv}, 3), got {nrm.shape}")
        _check(bool(np.isfinite(nrm).all()), "normals contain NaN or infinity")
    if mtl is not None:
        _check_material_name(mtl.name)
        if mtllib:
            check_name(mtllib, "the material library name")
    comment_lines = _comment_lines(comment)

    # Face rows: 1-based, interleaved per corner as the attributes present require.
    columns = [tris + 1]
    corner = "%d"
    if uvs is not None and nrm is not None:
        columns, corner = [tris + 1, uv_tris + 1, tris + 1], "%d/%d/%d"
    elif uvs is not None:
        columns, corner = [tris + 1, uv_tris + 1], "%d/%d"
    elif nrm is not None:
        columns, corner = [tris + 1, tris + 1], "%d//%d"
    face_rows = np.stack(columns, axis=2).reshape(tris.shape[0], -1)  # (F, 3 * k): corner-major
    face_fmt = "f " + " ".join([corner] * 3) + "\n"

    def write_body(fh: IO[str]) -> None:
        if mtl is not None and mtllib:
            fh.write(f"mtllib {mtllib}\n")
        for line in comment_lines:
            fh.write(f"# {line}\n")
        fh.write(f"# {nv} vertices, {tris.shape[0]} triangles\n")
        if cols is not None:
            _format_rows(fh, "v %.6f %.6f %.6f %.4f %.4f %.4f\n", np.concatenate([verts, cols], axis=1))
        else:
            _format_rows(fh, "v %.6f %.6f %.6f\n", verts)
        if uvs is not None:
            _format_rows(fh, "vt %.6f %.6f\n", uvs)
        if nrm is not None:
            _format_rows(fh, "vn %.6f %.6f %.6f\n", nrm)
        if mtl is not None:
            fh.write(f"usemtl {mtl.name}\n")
        _format_rows(fh, face_fmt, face_rows)

    return write_body


def obj_text(
    vertices,
    triangles,
    *,
    uv=None,
    uv_triangles=None,
    vertex_colors=None,
    normals=None,
    mtl: Material | None = None,
    mtllib: str | None = None,
    comment: str | None = None,
) -> str:
    """The OBJ file content as a string (for callers that prepare every output before writing any).

    Arguments as in `write_obj`; with `mtl`, ``usemtl`` is written and, when `mtllib` (the ``.mtl``
    file name) is given, ``mtllib`` too. Write the material file with `mtl_text`.

    Raises:
        OutputError: inconsistent arrays or non-finite values.
    """
    buf = io.StringIO()
    _obj_writer(vertices, triangles, uv, uv_triangles, vertex_colors, normals, mtl, mtllib, comment)(buf)
    return buf.getvalue()


def write_obj(
    path: str | os.PathLike,
    vertices,
    triangles,
    *,
    uv=None,
    uv_triangles=None,
    vertex_colors=None,
    normals=None,
    mtl: Material | None = None,
    comment: str | None = None,
) -> Path:
    """Write a triangle mesh as Wavefront OBJ (and its ``.mtl`` when `mtl` is given).

    Args:
        path: output ``.obj`` path; the material file is ``path`` with suffix ``.mtl``.
        vertices: (V, 3) positions (numpy or torch).
        triangles: (F, 3) 0-based vertex indices (written 1-based).
        uv: (V, 2) per-vertex texture coordinates, or (T, 2) with `uv_triangles`; v up (OBJ convention).
        uv_triangles: (F, 3) 0-based indices into `uv` per triangle corner (a UV layout with seams).
        vertex_colors: (V, 3) colours in [0, 1] (clipped), written as ``v x y z r g b``.
        normals: (V, 3) per-vertex normals, written as ``vn`` and referenced per corner.
        mtl: a `Material`; writes ``mtllib``/``usemtl`` and the ``.mtl`` file (with ``map_Kd``).
        comment: text written as ``#`` lines at the top.
    Returns:
        The path written.
    Raises:
        OutputError: inconsistent arrays, non-finite values, or the file cannot be written (missing or
            read-only directory, disk full, ...).
    """
    path = Path(path)
    mtl_path = path.with_suffix(".mtl")
    write_body = _obj_writer(
        vertices, triangles, uv, uv_triangles, vertex_colors, normals, mtl, mtl_path.name, comment
    )
    try:
        if mtl is not None:
            material = mtl_text(mtl)
            # Nested: if the OBJ fails, the MTL's temporary file is discarded too (nothing is renamed).
            with atomic_open(mtl_path, "w") as fm:
                fm.write(material)
                with atomic_open(path, "w") as fo:
                    write_body(fo)
        else:
            with atomic_open(path, "w") as fo:
                write_body(fo)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


# ---------------------------------------------------------------------------- seams
def split_uv_seams(triangles: np.ndarray, uv: np.ndarray, uv_triangles: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-corner texture coordinates as per-vertex ones, for formats with one UV per vertex (PLY, glTF):
    one new vertex per distinct (position, uv) pair, so vertices on a UV seam are split.

    Args: triangles (F, 3) vertex indices; uv (T, 2); uv_triangles (F, 3) indices into uv.
    Returns: source (V',) the original vertex of each new vertex (index per-vertex arrays with it),
        uv (V', 2), triangles (F, 3) into the new vertices.
    """
    pairs, inverse = np.unique(np.stack([np.asarray(triangles).ravel(), np.asarray(uv_triangles).ravel()], 1),
                               axis=0, return_inverse=True)
    return pairs[:, 0], np.asarray(uv)[pairs[:, 1]], inverse.reshape(-1, 3)


# ---------------------------------------------------------------------------- PLY
def ply_bytes(
    vertices,
    triangles,
    *,
    vertex_colors=None,
    normals=None,
    uv=None,
    texture: str | None = None,
    comment: str | None = None,
) -> bytes:
    """The content of a binary PLY file; see `_ply_parts`."""
    return b"".join(_ply_parts(vertices, triangles, vertex_colors, normals, uv, texture, comment))


def _ply_parts(vertices, triangles, vertex_colors, normals, uv, texture, comment) -> tuple[bytes, bytes, bytes]:
    """Header, vertex records and face records of a binary PLY. The content of a binary little-endian PLY: float32 ``x y z`` (+ ``nx ny nz``) (+ uchar
    ``red green blue``) (+ float32 ``texture_u texture_v``) per vertex and ``uchar count, int32 indices``
    per face; with `texture`, a ``comment TextureFile <name>`` header line (read by MeshLab and trimesh).

    Args as in `write_ply`. Raises:
        OutputError: inconsistent arrays, non-finite values, or a texture name with a line break or
            control character.
    """
    verts = _as_numpy(vertices, "vertices", np.float64)
    tris = _as_numpy(triangles, "triangles", np.int64)
    _check(verts.ndim == 2 and verts.shape[1] == 3, f"vertices must be (V, 3), got {verts.shape}")
    _check(bool(np.isfinite(verts).all()), "vertices contain NaN or infinity")
    nv = verts.shape[0]
    _check_indices(tris, nv, "triangles")
    _check(nv < 2**31, "too many vertices for int32 PLY indices")

    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    props = ["property float x", "property float y", "property float z"]
    nrm = _as_numpy(normals, "normals", np.float64)
    if nrm is not None:
        _check(nrm.shape == (nv, 3), f"normals must be (V={nv}, 3), got {nrm.shape}")
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        props += ["property float nx", "property float ny", "property float nz"]
    cols = _as_numpy(vertex_colors, "vertex_colors", np.float64)
    if cols is not None:
        _check(cols.shape == (nv, 3), f"vertex_colors must be (V={nv}, 3), got {cols.shape}")
        _check(bool(np.isfinite(cols).all()), "vertex_colors contain NaN or infinity")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        props += ["property uchar red", "property uchar green", "property uchar blue"]
    uvs = _as_numpy(uv, "uv", np.float64)
    if uvs is not None:
        _check(uvs.shape == (nv, 2), f"PLY uv must be per vertex (V={nv}, 2), got {uvs.shape}")
        _check(bool(np.isfinite(uvs).all()), "uv contains NaN or infinity")
        fields += [("texture_u", "<f4"), ("texture_v", "<f4")]
        props += ["property float texture_u", "property float texture_v"]
    if texture is not None:
        check_name(texture, "the PLY texture file name")

    vrec = np.empty(nv, dtype=fields)
    vrec["x"], vrec["y"], vrec["z"] = verts[:, 0], verts[:, 1], verts[:, 2]
    if nrm is not None:
        vrec["nx"], vrec["ny"], vrec["nz"] = nrm[:, 0], nrm[:, 1], nrm[:, 2]
    if cols is not None:
        c8 = np.round(np.clip(cols, 0.0, 1.0) * 255.0).astype(np.uint8)
        vrec["red"], vrec["green"], vrec["blue"] = c8[:, 0], c8[:, 1], c8[:, 2]
    if uvs is not None:
        vrec["texture_u"], vrec["texture_v"] = uvs[:, 0], uvs[:, 1]
    frec = np.empty(tris.shape[0], dtype=[("n", "u1"), ("i", "<i4", (3,))])
    frec["n"] = 3
    frec["i"] = tris

    header = ["ply", "format binary_little_endian 1.0"]
    # Comments: one escaped, ASCII line each (the header is ASCII; a non-ASCII name must not fail the write).
    header += [f"comment {line}".encode("ascii", "backslashreplace").decode("ascii") for line in _comment_lines(comment)]
    if texture is not None:
        header.append(f"comment TextureFile {texture}")
    header += [f"element vertex {nv}", *props, f"element face {tris.shape[0]}",
               "property list uchar int vertex_indices", "end_header"]
    return ("\n".join(header) + "\n").encode("utf-8"), vrec.tobytes(), frec.tobytes()


def write_ply(
    path: str | os.PathLike,
    vertices,
    triangles,
    *,
    vertex_colors=None,
    normals=None,
    uv=None,
    texture: str | None = None,
    comment: str | None = None,
) -> Path:
    """Write a binary little-endian PLY (the content of `ply_bytes`), atomically.

    Args:
        path: output ``.ply`` path.
        vertices: (V, 3) positions.
        triangles: (F, 3) 0-based vertex indices.
        vertex_colors: (V, 3) colours in [0, 1] (clipped, rounded to 8 bits), or None.
        normals: (V, 3) normals, or None.
        uv: (V, 2) per-vertex texture coordinates (v up), or None.
        texture: the texture image's file name, relative to the PLY, or None.
        comment: header comment (each line escaped to printable ASCII).
    Raises:
        OutputError: inconsistent arrays or the file cannot be written.
    """
    path = Path(path)
    parts = _ply_parts(vertices, triangles, vertex_colors, normals, uv, texture, comment)
    try:
        with atomic_open(path, "wb") as fh:
            for part in parts:
                fh.write(part)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


# ---------------------------------------------------------------------------- GLB
def glb_bytes(
    vertices,
    triangles,
    *,
    uv=None,
    uv_triangles=None,
    texture=None,
    vertex_colors=None,
) -> bytes:
    """The content of a binary glTF 2.0 file (GLB) of one triangle mesh, written with trimesh.

    glTF's conventions: metres, y up, right-handed (pass model-space millimetres times 1e-3). With `uv` and
    `texture` the mesh gets a PBR material whose base colour is the texture (embedded as PNG); otherwise
    `vertex_colors` become the ``COLOR_0`` attribute. A UV layout with seams (`uv_triangles`) is turned
    into per-vertex UVs by splitting the seam vertices (so the vertex count can grow).

    Args:
        vertices: (V, 3) positions in metres.
        triangles: (F, 3) 0-based vertex indices.
        uv: (V, 2) per-vertex, or (T, 2) with `uv_triangles` (F, 3); v up (as in OBJ).
        texture: (H, W, 3) image in [0, 1] (float) or uint8, row 0 at the top; needs `uv`.
        vertex_colors: (V, 3) colours in [0, 1], used when there is no texture.
    Raises:
        OutputError: inconsistent arrays, non-finite values, or trimesh is not installed.
    """
    verts = _as_numpy(vertices, "vertices", np.float64)
    tris = _as_numpy(triangles, "triangles", np.int64)
    _check(verts.ndim == 2 and verts.shape[1] == 3, f"vertices must be (V, 3), got {verts.shape}")
    _check(bool(np.isfinite(verts).all()), "vertices contain NaN or infinity")
    nv = verts.shape[0]
    _check_indices(tris, nv, "triangles")
    uvs = _as_numpy(uv, "uv", np.float64)
    uv_tris = _as_numpy(uv_triangles, "uv_triangles", np.int64)
    cols = _as_numpy(vertex_colors, "vertex_colors", np.float64)
    if cols is not None:
        _check(cols.shape == (nv, 3), f"vertex_colors must be (V={nv}, 3), got {cols.shape}")
        _check(bool(np.isfinite(cols).all()), "vertex_colors contain NaN or infinity")
    image = None
    if texture is not None:
        _check(uvs is not None, "a GLB texture needs uv")
        tex = np.asarray(texture)
        _check(tex.ndim == 3 and tex.shape[2] in (3, 4), f"texture must be (H, W, 3), got {tex.shape}")
        if tex.dtype != np.uint8:
            tex = np.round(np.clip(np.nan_to_num(tex.astype(np.float64)), 0.0, 1.0) * 255.0).astype(np.uint8)
        image = tex
    if uvs is not None:
        _check(uvs.ndim == 2 and uvs.shape[1] == 2, f"uv must be (V, 2) or (T, 2), got {uvs.shape}")
        _check(bool(np.isfinite(uvs).all()), "uv contains NaN or infinity")
        if uv_tris is not None:
            _check(uv_tris.shape == tris.shape, f"uv_triangles must be {tris.shape}, got {uv_tris.shape}")
            _check_indices(uv_tris, uvs.shape[0], "uv_triangles")
            source, uvs, tris = split_uv_seams(tris, uvs, uv_tris)
            verts = verts[source]
            cols = None if cols is None else cols[source]
        else:
            _check(uvs.shape[0] == nv, f"per-vertex uv must be (V={nv}, 2), got {uvs.shape}; pass uv_triangles")
    try:
        import trimesh
        from PIL import Image as PILImage
    except ImportError as exc:  # pragma: no cover - trimesh is a dependency
        raise OutputError(f"writing GLB needs trimesh ({exc}); install it: pip install 'trimesh>=4.0'") from exc

    if image is not None:
        visual = trimesh.visual.TextureVisuals(uv=uvs, image=PILImage.fromarray(image))
    elif cols is not None:
        rgba = np.concatenate([np.round(np.clip(cols, 0, 1) * 255), np.full((len(cols), 1), 255)], 1).astype(np.uint8)
        visual = trimesh.visual.ColorVisuals(vertex_colors=rgba)
    else:
        visual = None
    mesh = trimesh.Trimesh(vertices=verts, faces=tris, visual=visual, process=False, validate=False)
    return bytes(mesh.export(file_type="glb"))


def write_glb(path: str | os.PathLike, vertices, triangles, **kwargs) -> Path:
    """Write `glb_bytes(vertices, triangles, **kwargs)` to `path` atomically.

    Raises:
        OutputError: as `glb_bytes`, or the file cannot be written.
    """
    path = Path(path)
    data = glb_bytes(vertices, triangles, **kwargs)
    try:
        with atomic_open(path, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


# ---------------------------------------------------------------------------- reader
def read_obj(path: str | os.PathLike) -> ObjMesh:
    """Read the geometry of an OBJ file (a minimal reader for tests and round trips).

    Understands ``v`` (with optional ``r g b``), ``vt``, ``vn``, ``f`` (``a``, ``a/b``, ``a//c``,
    ``a/b/c``; negative indices; polygons fan-triangulated) and ``mtllib``; ignores everything else.
    Every ``v`` line must have the same number of values (3, 4 = with w, or 6 = with colour).

    Raises:
        ModelFormatError: the file cannot be read or is malformed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ModelFormatError(f"cannot read OBJ file {path}: {exc.strerror or exc}") from exc

    groups: dict[str, list[str]] = {"v": [], "vt": [], "vn": [], "f": []}
    face_counts: list[tuple[int, int, int]] = []  # entries defined before each face (negative indices)
    mtllib = None
    for raw in text.splitlines():
        if "#" in raw:
            raw = raw.split("#", 1)[0]
        parts = raw.split(None, 1)
        if len(parts) < 2:
            continue
        key, rest = parts
        if key in groups:
            groups[key].append(rest)
            if key == "f":
                face_counts.append((len(groups["v"]), len(groups["vt"]), len(groups["vn"])))
        elif key == "mtllib":
            mtllib = rest.strip()

    def to_array(rows: list[str], what: str, allowed: tuple[int, ...]) -> np.ndarray | None:
        if not rows:
            return None
        widths = {len(r.split()) for r in rows}
        width = widths.pop() if len(widths) == 1 else None
        if width not in allowed:
            raise ModelFormatError(f"{path}: '{what}' lines must all have {' or '.join(map(str, allowed))} values")
        try:
            return np.array(" ".join(rows).split(), dtype=np.float64).reshape(len(rows), width)
        except ValueError as exc:
            raise ModelFormatError(f"{path}: non-numeric '{what}' line ({exc})") from exc

    v = to_array(groups["v"], "v", (3, 4, 6))
    if v is None:
        raise ModelFormatError(f"{path}: no vertices")
    colors = v[:, 3:6] if v.shape[1] == 6 else None  # 4 values: x y z w (w ignored)
    vertices = v[:, :3]
    vt = [" ".join(r.split()[:2]) for r in groups["vt"]]  # drop an optional w
    uv = to_array(vt, "vt", (2,))
    normals = to_array(groups["vn"], "vn", (3,))

    corners = _parse_faces(groups["f"], face_counts, path)  # (F, 3, 3): vertex, uv, normal; -1 = none
    triangles = corners[:, :, 0]
    if triangles.size and (triangles.min() < 0 or triangles.max() >= len(vertices)):
        raise ModelFormatError(f"{path}: face vertex index out of range")

    def attribute(k: int, table: np.ndarray | None, what: str) -> np.ndarray | None:
        idx = corners[:, :, k]
        if table is None or idx.size == 0 or idx.min() < 0:
            return None
        if idx.max() >= len(table):
            raise ModelFormatError(f"{path}: face {what} index out of range")
        return np.ascontiguousarray(idx)

    return ObjMesh(
        vertices=vertices,
        triangles=np.ascontiguousarray(triangles),
        uv=uv,
        uv_triangles=attribute(1, uv, "texture"),
        colors=colors,
        normals=normals,
        normal_triangles=attribute(2, normals, "normal"),
        mtllib=mtllib,
    )


def _parse_faces(rows: list[str], counts: list[tuple[int, int, int]], path: Path) -> np.ndarray:
    """(F, 3, 3) int64 0-based (vertex, texture, normal) index per triangle corner, -1 where absent."""
    if not rows:
        return np.zeros((0, 3, 3), dtype=np.int64)
    # Fast path: every face a triangle with the same corner layout and no negative index.
    first = rows[0].split()
    layout = [c.count("/") for c in first]
    if "-" not in "".join(rows) and len(first) == 3:
        joined = " ".join(rows).replace("//", "/0/")
        tokens = joined.split()
        if len(tokens) == 3 * len(rows):
            k = layout[0] + 1
            flat = joined.replace("/", " ").split()
            if len(flat) == 3 * k * len(rows):
                try:
                    ids = np.array(flat, dtype=np.int64).reshape(len(rows), 3, k)
                except ValueError as exc:
                    raise ModelFormatError(f"{path}: bad face line ({exc})") from exc
                out = np.full((len(rows), 3, 3), -1, dtype=np.int64)
                out[:, :, :k] = ids - 1  # 0 (absent) becomes -1
                return out
    # General path: polygons, mixed layouts, negative indices.
    tris: list[tuple[tuple[int, int, int], ...]] = []
    for row, count in zip(rows, counts):
        corners = []
        for c in row.split():
            fields = c.split("/")
            try:
                ids = [int(s) if s else 0 for s in fields[:3]] + [0] * (3 - len(fields[:3]))
            except ValueError as exc:
                raise ModelFormatError(f"{path}: bad face corner {c!r}") from exc
            # 1-based; a negative index counts back from the last entry defined before this face.
            corners.append(tuple((i - 1) if i > 0 else (n + i if i < 0 else -1) for i, n in zip(ids, count)))
        if len(corners) < 3:
            raise ModelFormatError(f"{path}: a face needs at least 3 corners")
        for j in range(1, len(corners) - 1):
            tris.append((corners[0], corners[j], corners[j + 1]))
    return np.array(tris, dtype=np.int64).reshape(-1, 3, 3)
