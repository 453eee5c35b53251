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

from ..render.camera import PinholeCamera
from .outputs import FaceOutputs, check_targets, identity_layout, make_folder, output_layout, write_face_set
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


@dataclass(frozen=True)
class FitFailure:
    """An input that could not be fitted. index: its position in the input list; source: its path (None
    for an array); error: the one-line message; kind: the error's class name (ImageError, NoFaceError, ...)."""

    index: int
    source: str | None
    error: str
    kind: str

    def __str__(self) -> str:
        return self.error


@dataclass
class FitResult:
    """The result of `Fitter.fit` for B images.

    meshes: B `FaceMesh`; params: `FitParams` (B batched); camera: `PinholeCamera`;
    landmarks_target / landmarks_fitted: (B, 68, 2) pixels; history: one dict per iteration mapping a loss
    name to B values; timings: seconds per step; sources: the input paths (or None for arrays);
    renders: per image a shaded, textured render (h, w, 4) premultiplied RGBA at overlay resolution, or None;
    warnings: per image the warnings about its fit (e.g. a poor landmark fit), also logged.
    solver: per image how each stage's solve ended: {"landmarks": {"stop_reason": ..., "iterations": ...}}.
    input_index: per fitted image its position in the list given to `Fitter.fit` (empty: 0..B-1).
    failures: the inputs that could not be fitted (`Fitter.fit(..., on_error="skip")`), in input order.
    landmark_stage_params: the landmark stage's `FitParams` when a later stage changed them (else None:
        `params` are the landmark stage's). joint: the joint stage's `joint_fit.JointFit` (texture latent,
        SH lighting, colour gain/offset, model texture and loss history per photo), or None.
    frame_subject: per image its person 0..S-1 when `Fitter.fit` got `subjects` (else empty); identities:
        then per person the neutral face of its shared shape with a texture blended from its photos
        (`ganfit.fitting.identity`), written by `save` as ``identity.obj`` (etc.) beside the faces.
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
    input_index: list[int] = field(default_factory=list)
    failures: list[FitFailure] = field(default_factory=list)
    landmark_stage_params: FitParams | None = None
    joint: Any = None
    frame_subject: list[int] = field(default_factory=list)
    identities: list[FaceMesh] = field(default_factory=list)

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
            "landmark_stage_params": None if self.landmark_stage_params is None else self.landmark_stage_params.to_dict(index),
            "joint": None if self.joint is None else self.joint.summary(index),
            "subject": self.frame_subject[index] if index < len(self.frame_subject) else None,
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

    def output_paths(self, path: str | Path) -> list[FaceOutputs]:
        """Where `save(path)` writes each face's files (`outputs.output_layout`): a path ending in .obj,
        .ply or .glb is one face's mesh file (numbered ``face_<k>`` for several input photos), a folder gets
        ``<photo name>.obj`` per face; other extensions are refused.

        Raises:
            OutputError: an unsupported extension or an unsafe file name.
        """
        return output_layout(path, self.sources, self.input_index or None)

    def save(self, path: str | Path, *, overlay: bool = True, progress: bool = False) -> list[Path]:
        """Write every face's mesh (OBJ with MTL and UV texture PNG, PLY with the PNG, or GLB with the
        texture embedded; `output_paths`), JSON (parameters, camera, losses, timings, versions, model name
        and checksum) and overlay PNG.

        Each face's files are one set (`outputs.write_face_set`): rendered in memory, written as
        temporaries, then renamed together, the mesh last, so an error or Ctrl-C leaves a face's full set
        or none of it; faces already written stay. Targets are checked before anything is written (a
        folder where a file should go is refused).

        The seconds each kind of output takes are recorded in `timings`: ``save_png`` (UV texture),
        ``save_mtl``, ``save_obj`` (the mesh file, any format), ``save_overlay`` (drawing and encoding it),
        ``save_json``, ``save_write`` (writing and renaming the files) and ``save`` (all of it). The JSON
        files hold the timings of the fit as they were when `save` started.

        Args:
            path: output path (see `output_paths`).
            overlay: write the overlay PNG.
            progress: show a progress bar over the faces.
        Returns the paths written.
        Raises:
            OutputError: a target cannot be written (nothing of that face's set is left).
        """
        from tqdm.auto import tqdm

        t_start = time.perf_counter()
        spent = dict.fromkeys(("save_png", "save_mtl", "save_obj", "save_overlay", "save_json", "save_write"), 0.0)
        layout = self.output_paths(path)
        people = identity_layout(path, len(self.identities), layout)
        check_targets(layout + people)
        if layout:
            make_folder(layout[0].mesh.parent)
        fit_timings = dict(self.timings)
        written: list[Path] = []
        for i, files in enumerate(tqdm(layout, desc="fit: saving", unit="face", disable=not progress, leave=False)):
            payloads = self._payloads(i, files, overlay, spent)
            t = time.perf_counter()
            record = self.to_dict(i)
            record["timings_s"] = fit_timings
            payloads.append((files.json, json.dumps(record, indent=1)))
            t = _spend(spent, "save_json", t)
            written += write_face_set(files, payloads)
            _spend(spent, "save_write", t)
        written += self._write_identities(people, spent)
        self.timings.update(spent)
        self.timings["save"] = time.perf_counter() - t_start
        return written

    def save_identities(self, path: str | Path) -> list[Path]:
        """Write only the people's neutral faces (`identities`) for the output `path` (`outputs.identity_layout`:
        ``identity.obj`` etc. in a folder, ``<stem>_identity.obj`` beside a mesh path). Returns the paths."""
        people = identity_layout(path, len(self.identities))
        check_targets(people)
        if people:
            make_folder(people[0].mesh.parent)
        return self._write_identities(people, dict.fromkeys(("save_png", "save_mtl", "save_obj"), 0.0))

    def _write_identities(self, people: list[FaceOutputs], spent: dict[str, float]) -> list[Path]:
        written: list[Path] = []
        for s, files in enumerate(people):
            frames = [i for i, fs in enumerate(self.frame_subject) if fs == s]
            payloads = self._mesh_payloads(self.identities[s], files, f"neutral identity of {len(frames)} photos",
                                           spent)
            record = {"subject": s, "mode": self.config.get("same_person"), "photos": [self.sources[i] for i in frames],
                      "input_index": [self.input_index[i] if self.input_index else i for i in frames],
                      "shape": self.params.shape[frames[0]].tolist(), "model": self.model_info}
            if self.joint is not None:
                record["texture_latent"] = self.joint.results[frames[0]].latent[0].detach().cpu().tolist()
            payloads.append((files.json, json.dumps(record, indent=1)))
            written += write_face_set(files, payloads)
        return written

    def _payloads(self, i: int, files: FaceOutputs, overlay: bool, spent: dict[str, float]
                  ) -> list[tuple[Path, bytes | str]]:
        """The content of face `i`'s mesh, texture, material and overlay files (not the JSON)."""
        from ..io.overlay import png_bytes

        payloads = self._mesh_payloads(self.meshes[i], files, f"fit of {self.sources[i] or 'an array'}", spent)
        t = time.perf_counter()
        if overlay and i < len(self.images):
            payloads.append((files.overlay, png_bytes(self._overlay_panel(i))))
            _spend(spent, "save_overlay", t)
        return payloads

    def _mesh_payloads(self, mesh: FaceMesh, files: FaceOutputs, what: str, spent: dict[str, float]
                       ) -> list[tuple[Path, bytes | str]]:
        """The content of a mesh's mesh, texture and material files; `what` goes into the mesh's comment."""
        from ..io.mesh import Material, glb_bytes, mtl_text, obj_text, ply_bytes, split_uv_seams
        from ..io.overlay import png_bytes

        vertices = mesh.vertices.detach().cpu().numpy()
        triangles = mesh.triangles.cpu().numpy()
        uv = None if mesh.uv is None else mesh.uv.cpu().numpy()
        uv_triangles = None if mesh.uv_triangles is None else mesh.uv_triangles.cpu().numpy()
        colors = None if mesh.colors is None else mesh.colors.cpu().numpy()
        textured = mesh.texture is not None and uv is not None
        comment = (f"ganfit {what}; model {self.model_info.get('name')}; "
                   "millimetres, y up, face looking down +z")
        payloads: list[tuple[Path, bytes | str]] = []
        t = time.perf_counter()
        if textured and files.texture is not None:
            payloads.append((files.texture, png_bytes(mesh.texture)))
            t = _spend(spent, "save_png", t)
        if files.format == "obj":
            material = Material(name="face", texture=files.texture.name) if textured else None
            if material is not None:
                payloads.append((files.mtl, mtl_text(material)))
                t = _spend(spent, "save_mtl", t)
            data: bytes | str = obj_text(vertices, triangles, uv=uv, uv_triangles=uv_triangles, vertex_colors=colors,
                                         mtl=material, mtllib=None if material is None else files.mtl.name,
                                         comment=comment)
        else:
            if uv is not None and uv_triangles is not None:  # one UV per vertex: split the seams
                source, uv, triangles = split_uv_seams(triangles, uv, uv_triangles)
                vertices = vertices[source]
                colors = None if colors is None else colors[source]
            if files.format == "ply":
                data = ply_bytes(vertices, triangles, vertex_colors=colors, uv=uv if textured else None,
                                 texture=files.texture.name if textured else None, comment=comment)
            else:  # glTF: metres
                data = glb_bytes(vertices * 1e-3, triangles, uv=uv if textured else None,
                                 texture=mesh.texture if textured else None, vertex_colors=colors)
        payloads.append((files.mesh, data))
        _spend(spent, "save_obj", t)
        return payloads

    def _overlay_panel(self, i: int) -> np.ndarray:
        """The overlay picture of image `i`: landmarks | mesh on the photo | textured render on the photo
        (when there is one) | with a joint stage: its fitted render on the photo | before / after (the landmark
        stage's outline and landmarks against the joint stage's); (h, k * w, 3) float32."""
        from ..io.overlay import make_fit_overlay

        mesh = self.meshes[i]
        normals = None if mesh.normals_camera is None else mesh.normals_camera.cpu().numpy()
        image_size = tuple(float(v) for v in self.camera.image_size[i])  # images[i] may be a downscaled copy
        return make_fit_overlay(
            self.images[i],
            mesh.projected.detach().cpu().numpy(),
            (-mesh.vertices_camera[:, 2]).detach().cpu().numpy(),
            mesh.triangles.cpu().numpy(),
            self.landmarks_target[i].cpu().numpy(),
            self.landmarks_fitted[i].cpu().numpy(),
            normals,
            render=self.renders[i] if i < len(self.renders) else None,
            image_size=image_size,
            **self._joint_panels(i, image_size),
        )

    def _joint_panels(self, i: int, image_size: tuple[float, float]) -> dict[str, Any]:
        """`make_fit_overlay`'s joint-stage arguments for image `i` (none without a joint stage, or without
        the model it fitted): its fitted render and the landmark stage's geometry."""
        model = getattr(self.joint, "model", None)
        if self.joint is None or model is None or i >= len(self.joint.results):
            return {}
        from .joint_overlay import joint_render, stage_geometry

        out: dict[str, Any] = {"joint_render": joint_render(model, self.joint, i, image_size)}
        if self.landmark_stage_params is not None:
            before = stage_geometry(model, self.landmark_stage_params, i, self.landmark_vertices)
            out.update(before_projected=before.projected, before_depth=before.depth, before_landmarks=before.landmarks)
        return out


def _spend(spent: dict[str, float], key: str, start: float) -> float:
    """Add the seconds since `start` to spent[key]; returns now."""
    now = time.perf_counter()
    spent[key] += now - start
    return now
