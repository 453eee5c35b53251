"""Where a fit's files go and how they are written: one set of files per face, all or nothing.

Output path rules (`output_layout`):
- a path ending in ``.obj``, ``.ply`` or ``.glb`` names the mesh file of one photo (numbered
  ``face_<k>.obj`` with several photos, k the photo's position in the input list);
- a path ending in ``/``, a path without an extension, or an existing folder (except one named like a
  mesh file, ``face.obj/``, which is refused unless the path ends in ``/``) is a folder that gets
  ``<photo name>.obj`` per photo (the name made safe by `ganfit._names.safe_stem`);
- any other extension is refused (no silent folder named ``face.stl``).

Each face's files are rendered in memory first, written as temporaries beside their targets and renamed
into place together (`ganfit._atomic.replace_together`), the mesh file last: an interruption (an error,
a full disk, Ctrl-C) leaves either the face's complete new set or its old state, never a mix; faces whose
sets were already written stay written.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .._atomic import replace_together, write_temporary
from .._names import check_name, escape_controls, safe_stem
from ..errors import OutputError

#: Mesh formats `ganfit fit` writes, by extension.
MESH_FORMATS = {".obj": "Wavefront OBJ + MTL + texture PNG", ".ply": "binary PLY + texture PNG",
                ".glb": "binary glTF 2.0 with the texture embedded"}


@dataclass(frozen=True)
class FaceOutputs:
    """The files of one fitted face. mesh: the .obj/.ply/.glb; format: its extension without the dot;
    texture / mtl: the UV texture PNG and the OBJ material file (None where the format has none);
    json: all parameters; overlay: the overlay PNG."""

    mesh: Path
    format: str
    texture: Path | None
    mtl: Path | None
    json: Path
    overlay: Path

    def paths(self) -> list[Path]:
        """Every file this face may have, mesh first."""
        return [p for p in (self.mesh, self.texture, self.mtl, self.json, self.overlay) if p is not None]


def output_layout(path: str | os.PathLike, sources: Sequence[str | None],
                  indices: Sequence[int] | None = None) -> list[FaceOutputs]:
    """The files of each face for the output `path` (rules in the module docstring).

    Args:
        path: the user's output path.
        sources: per face the input's path (None for an array): names the files in folder mode.
        indices: per face its position in the input list (numbers ``face_<k>`` when a file path is
            given for several photos, so names do not depend on which photos failed); default 0..n-1.
        A file path is numbered whenever there is more than one input position (max index > 0).
    Raises:
        OutputError: an unsupported extension, or a file name with line breaks or control characters.
    """
    raw = os.fspath(path)
    p = Path(raw)
    indices = list(range(len(sources))) if indices is None else list(indices)
    suffix = p.suffix.lower()
    folder_mode = raw.endswith(("/", os.sep)) or not suffix or (p.is_dir() and suffix not in MESH_FORMATS)
    if not folder_mode and p.is_dir():
        raise OutputError(f"cannot write {escape_controls(raw)}: it is an existing folder; give another file name, "
                          "or end the path with / to write into that folder")
    if not folder_mode and suffix not in MESH_FORMATS:
        raise OutputError(
            f"cannot write {escape_controls(raw)}: unsupported output format {escape_controls(p.suffix)!r}; "
            f"use {', '.join(MESH_FORMATS)} (e.g. -o out/face.obj), or a folder (end the path with /)")
    if folder_mode:
        folder, fmt, stems, seen = p, "obj", [], set()
        for k, src in zip(indices, sources):
            stem = safe_stem(Path(src).stem if src else None, f"face_{k}")
            while stem.casefold() in seen:  # also distinct on case-insensitive file systems
                stem = f"{stem}_{k}"
            seen.add(stem.casefold())
            stems.append(stem)
    else:
        folder, fmt = p.parent, suffix[1:]
        check_name(p.stem, "the output file")
        many = len(indices) > 1 or max(indices, default=0) > 0
        stems = [f"{p.stem}_{k}" if many else p.stem for k in indices]
    return [FaceOutputs(
        mesh=folder / f"{s}.{fmt}", format=fmt,
        texture=None if fmt == "glb" else folder / f"{s}_texture.png",
        mtl=folder / f"{s}.mtl" if fmt == "obj" else None,
        json=folder / f"{s}.json", overlay=folder / f"{s}_overlay.png") for s in stems]


def identity_layout(path: str | os.PathLike, count: int, faces: Sequence[FaceOutputs] = ()) -> list[FaceOutputs]:
    """The files of `count` people's identities (`Fitter.fit(..., subjects=...)`) for the output `path` (the
    rules of `output_layout`), beside `faces`: ``identity.<ext>`` in folder mode (``identity_<s>`` for several
    people), ``<stem>_identity.<ext>`` for a mesh path; a name a face already has gets ``_<s>`` appended.

    Raises:
        OutputError: as `output_layout`.
    """
    if count < 1:
        return []
    raw = os.fspath(path)
    p = Path(raw)
    probe = output_layout(path, [None])[0]  # the folder and format of this path
    folder, fmt = probe.mesh.parent, probe.format
    folder_mode = folder == p or raw.endswith(("/", os.sep)) or not p.suffix
    base = "identity" if folder_mode else f"{p.stem}_identity"
    taken = {f.mesh.stem.casefold() for f in faces}
    stems = []
    for s in range(count):
        stem = base if count == 1 else f"{base}_{s}"
        while stem.casefold() in taken:
            stem = f"{stem}_{s}"
        taken.add(stem.casefold())
        stems.append(stem)
    return [FaceOutputs(
        mesh=folder / f"{s}.{fmt}", format=fmt, texture=None if fmt == "glb" else folder / f"{s}_texture.png",
        mtl=folder / f"{s}.mtl" if fmt == "obj" else None, json=folder / f"{s}.json",
        overlay=folder / f"{s}_overlay.png") for s in stems]


def check_targets(layout: Sequence[FaceOutputs]) -> None:
    """Fail before any work when an output cannot be written: the folder is a file (or under one), it (or
    the nearest existing folder above it) cannot be written, or a target file is an existing folder.

    Raises:
        OutputError: naming the path and what to do.
    """
    if not layout:
        return
    folder = layout[0].mesh.parent
    where = escape_controls(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"cannot write to {where}: {escape_controls(probe)} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {where}: permission denied")
    if folder.exists():
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise OutputError(f"cannot write to {where}: {exc.strerror or exc}") from None
    for face in layout:
        for target in face.paths():
            if target.is_dir():
                raise OutputError(f"cannot write {escape_controls(target)}: it is a folder; remove it or "
                                  "choose another output name")


def make_folder(folder: Path) -> None:
    """Create the output folder (and its parents).

    Raises:
        OutputError: it cannot be created.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {escape_controls(folder)}: {exc.strerror or exc}") from exc


def write_face_set(face: FaceOutputs, payloads: Sequence[tuple[Path, bytes | str]]) -> list[Path]:
    """Write one face's files as one set: all temporaries first, then renamed together with the mesh
    file last; files of this face's older set that the new one lacks (an overlay from a run with the
    overlay on, now off) are removed in the same step. Returns the paths written, in order.

    `payloads` maps targets (paths of `face`) to their content (str is written as UTF-8).

    Raises:
        OutputError: a file cannot be written; nothing of the new set is left then.
        KeyboardInterrupt: passes through, after the temporaries are removed and the old state restored.
    """
    ordered = sorted(payloads, key=lambda item: item[0] == face.mesh)  # the mesh, which refers to the rest, last
    written = {target for target, _ in ordered}
    stale = [p for p in face.paths() if p not in written and p.is_file()]
    temps: list[tuple[Path, Path]] = []
    try:
        for target, data in ordered:
            temps.append((write_temporary(target, data), target))
        replace_together(temps, remove=stale)
    except BaseException:
        for tmp, _ in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    return [target for _, target in temps]
