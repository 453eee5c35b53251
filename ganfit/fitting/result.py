"""What a fit returns, and how it is written to disk."""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_write_bytes, atomic_write_text
from ..errors import OutputError
from ..render.camera import PinholeCamera
from .params import FitParams


@dataclass
class FaceMesh:
    """One fitted face.

    vertices: (V, 3) model space, mm (the face's own frame: y up, looking down +z).
    vertices_camera: (V, 3) camera space, mm.
    projected: (V, 2) pixels in the photo.
    triangles: (F, 3); uv: (V, 2) or (T, 2) with uv_triangles (F, 3), or None.
    colors: (V, 3) in [0, 1] sampled from the photo (None if not sampled); visible: (V,) bool.
    normals_camera: (V, 3) unit vertex normals in camera space (None for a mesh without triangles).
    texture: (Hu, Wu, 3) UV texture in [0, 1] unwrapped from the photo and completed (row 0 = top, v up),
        or None; texture_mask: (Hu, Wu) how well the photo saw each texel (0 unseen .. 1 frontal).
    """

    vertices: torch.Tensor
    vertices_camera: torch.Tensor
    projected: torch.Tensor
    triangles: torch.Tensor
    uv: torch.Tensor | None = None
    uv_triangles: torch.Tensor | None = None
    colors: torch.Tensor | None = None
    visible: torch.Tensor | None = None
    texture: np.ndarray | None = None
    texture_mask: np.ndarray | None = None
    normals_camera: torch.Tensor | None = None


@dataclass
class FitResult:
    """The result of `Fitter.fit` for B images.

    meshes: B `FaceMesh`; params: `FitParams` (B batched); camera: `PinholeCamera`;
    landmarks_target / landmarks_fitted: (B, 68, 2) pixels; history: one dict per iteration mapping a loss
    name to B values; timings: seconds per step; sources: the input paths (or None for arrays);
    renders: per image a shaded, textured render (h, w, 4) premultiplied RGBA at overlay resolution, or None;
    warnings: per image the warnings about its fit (e.g. a poor landmark fit), also logged.
    solver: per image how each stage's solve ended: {"landmarks": {"stop_reason": ..., "iterations": ...}}.
    """

    meshes: list[FaceMesh]
    params: FitParams
    camera: PinholeCamera
    landmarks_target: torch.Tensor
    landmarks_fitted: torch.Tensor
    history: list[dict[str, list[float]]]
    timings: dict[str, float]
    model_info: dict[str, Any]
    config: dict[str, Any]
    sources: list[str | None]
    images: list[np.ndarray] = field(default_factory=list, repr=False)
    detections: list[Any] = field(default_factory=list, repr=False)
    landmark_vertices: torch.Tensor | None = None
    renders: list[np.ndarray | None] = field(default_factory=list, repr=False)
    warnings: list[list[str]] = field(default_factory=list)
    solver: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.meshes)

    def losses(self, index: int = 0) -> dict[str, list[float]]:
        """Per-iteration values of each loss term for image `index`."""
        if not self.history:
            return {}
        return {k: [h[k][index] for h in self.history] for k in self.history[0]}

    def reprojection_error_px(self) -> torch.Tensor:
        """(B,) mean landmark distance between fitted and target landmarks, pixels."""
        return (self.landmarks_fitted - self.landmarks_target).norm(dim=-1).mean(-1)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, index: int = 0) -> dict[str, Any]:
        """Everything about image `index` that is not the mesh itself, JSON-ready."""
        from .. import __version__

        det = self.detections[index] if index < len(self.detections) else None
        return {
            "ganfit_version": __version__,
            "source": self.sources[index],
            "model": self.model_info,
            "params": self.params.to_dict(index),
            "camera": self.camera.to_dict(index),
            "landmarks": {
                "target_px": self.landmarks_target[index].tolist(),
                "fitted_px": self.landmarks_fitted[index].tolist(),
                "reprojection_error_px": float(self.reprojection_error_px()[index]),
                "detector": None if det is None else det.backend,
                "face_box_px": None if det is None else [float(v) for v in det.box],
            },
            "warnings": self.warnings[index] if index < len(self.warnings) else [],
            "losses": self.losses(index),
            "solver": self.solver[index] if index < len(self.solver) else {},
            "timings_s": self.timings,
            "config": self.config,
            "versions": {
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "numpy": np.__version__,
                "platform": platform.platform(),
            },
        }

    def output_paths(self, path: str | Path) -> list[dict[str, Path]]:
        """Where `save(path)` writes each image's files: obj, mtl-free json, overlay png.

        A path ending in .obj is used as is for one image and numbered (``face_0.obj``) for several; any
        other path is a folder that gets ``<photo name>.obj`` per image.
        """
        p = Path(path)
        if p.suffix.lower() == ".obj":
            stems = [p.stem] if len(self) == 1 else [f"{p.stem}_{i}" for i in range(len(self))]
            folder = p.parent
        else:
            folder = p
            stems, seen = [], set()
            for i, src in enumerate(self.sources):
                stem = Path(src).stem if src else f"face_{i}"
                while stem in seen:
                    stem = f"{stem}_{i}"
                seen.add(stem)
                stems.append(stem)
        return [
            {
                "obj": folder / f"{s}.obj", "mtl": folder / f"{s}.mtl", "texture": folder / f"{s}_texture.png",
                "json": folder / f"{s}.json", "overlay": folder / f"{s}_overlay.png",
            }
            for s in stems
        ]

    def save(self, path: str | Path, *, overlay: bool = True) -> list[Path]:
        """Write OBJ (vertices, triangles, UVs, photo colours) with its MTL and UV texture PNG, JSON
        (parameters, camera, losses, timings, versions, model name and checksum) and an overlay PNG for
        every image. Each file is written atomically, and everything is rendered in memory before the
        first file is written.

        The seconds each kind of output takes are recorded in `timings` (so in the JSON files too):
        ``save_png`` (UV texture), ``save_mtl``, ``save_obj``, ``save_overlay`` (drawing and encoding it),
        ``save_json``, ``save_write`` (writing the files) and ``save`` (all of it). The JSON files are
        serialised twice, the second time with these timings; ``save_json`` is the first pass.

        Returns the paths written.
        """
        from ..io.mesh import Material, mtl_text, obj_text
        from ..io.overlay import png_bytes

        t_start = time.perf_counter()
        spent = dict.fromkeys(("save_png", "save_mtl", "save_obj", "save_overlay", "save_json", "save_write"), 0.0)
        plan = self.output_paths(path)
        folder = plan[0]["obj"].parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from exc
        files_out: list[list[tuple[Path, bytes | str]]] = []
        for i, (mesh, files) in enumerate(zip(self.meshes, plan)):
            payloads: list[tuple[Path, bytes | str]] = []
            t = time.perf_counter()
            material = None
            if mesh.texture is not None and mesh.uv is not None:
                material = Material(name="face", texture=files["texture"].name)
                payloads.append((files["texture"], png_bytes(mesh.texture)))
                t = _spend(spent, "save_png", t)
                payloads.append((files["mtl"], mtl_text(material)))
                t = _spend(spent, "save_mtl", t)
            payloads.append((files["obj"], obj_text(
                mesh.vertices.detach().cpu().numpy(),
                mesh.triangles.cpu().numpy(),
                uv=None if mesh.uv is None else mesh.uv.cpu().numpy(),
                uv_triangles=None if mesh.uv_triangles is None else mesh.uv_triangles.cpu().numpy(),
                vertex_colors=None if mesh.colors is None else mesh.colors.cpu().numpy(),
                mtl=material,
                mtllib=None if material is None else files["mtl"].name,
                comment=f"ganfit fit of {self.sources[i] or 'an array'}; model {self.model_info.get('name')}; millimetres, y up, face looking down +z",
            )))
            t = _spend(spent, "save_obj", t)
            if overlay and i < len(self.images):
                payloads.append((files["overlay"], png_bytes(self._overlay_panel(i))))
                _spend(spent, "save_overlay", t)
            files_out.append(payloads)
        t = time.perf_counter()
        for i in range(len(self.meshes)):  # a first pass: serialisable (and timed) before anything is written
            json.dumps(self.to_dict(i), indent=1)
        t = _spend(spent, "save_json", t)
        written = []
        for target, data in (item for payloads in files_out for item in payloads):
            (atomic_write_text if isinstance(data, str) else atomic_write_bytes)(target, data)
            written.append(target)
        _spend(spent, "save_write", t)
        self.timings.update(spent)
        self.timings["save"] = time.perf_counter() - t_start + spent["save_json"]
        for i, files in enumerate(plan[: len(self.meshes)]):
            atomic_write_text(files["json"], json.dumps(self.to_dict(i), indent=1))
            written.append(files["json"])
        return written

    def _overlay_panel(self, i: int) -> np.ndarray:
        """The overlay picture of image `i`: landmarks | mesh on the photo | textured render on the photo
        (when there is one); (h, 2 or 3 * w, 3) float32."""
        from ..io.overlay import make_fit_overlay

        mesh = self.meshes[i]
        normals = None if mesh.normals_camera is None else mesh.normals_camera.cpu().numpy()
        return make_fit_overlay(
            self.images[i],
            mesh.projected.detach().cpu().numpy(),
            (-mesh.vertices_camera[:, 2]).detach().cpu().numpy(),
            mesh.triangles.cpu().numpy(),
            self.landmarks_target[i].cpu().numpy(),
            self.landmarks_fitted[i].cpu().numpy(),
            normals,
            render=self.renders[i] if i < len(self.renders) else None,
        )


def _spend(spent: dict[str, float], key: str, start: float) -> float:
    """Add the seconds since `start` to spent[key]; returns now."""
    now = time.perf_counter()
    spent[key] += now - start
    return now
