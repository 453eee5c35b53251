"""ganfit's landmark stage beside eos on the same landmarks: speed and landmark residual.

    python benchmarks/eos_compare.py [--faces ../shared/faces/dev/photos] [--limit 50]
                                     [--eos-share /work/data/eos] [--threads 2]

eos (Patrik Huber, https://github.com/patrikhuber/eos; `pip install eos-py`, a benchmark-only
dependency: `pip install .[bench]`) fits the Surrey Face Model (SFM, 3448 vertices, 63 shape
components, 6 expression blendshapes) to the 68 iBUG landmarks with `eos.fitting.fit_shape_and_pose`:
alternating linear solves for a scaled-orthographic pose, shape and blendshapes, with contour and
occluding-edge correspondences for the jaw line. Its model files come from the `share/` folder of its
repository (sfm_shape_3448.bin, expression_blendshapes_3448.bin, ibug_to_sfm.txt,
sfm_3448_edge_topology.json, sfm_model_contours.json), kept outside this project (`--eos-share`).

For the first `--limit` photos (sorted by name) the 68 landmarks are detected once with ganfit's dlib
detector; then on exactly those landmarks:
  (a) ganfit: `Fitter(...).fit(pixels, landmarks=lms)` (its `timings["landmark_stage"]`), and
      `solve_landmarks(model, targets, sizes)` called directly for one image and for batches of 16;
  (b) eos: `fit_shape_and_pose` with the settings of eos's examples (5 iterations, lambda_identity 30,
      all shape components, all blendshapes); only the call is timed. Its fitted 2D landmarks are its
      mesh's landmark vertices projected with the returned pose (model-view, orthographic projection
      and eos's OpenCV viewport (0, H, W, -H)). As eos returns them, the pose comes from the last
      iteration's pose step, before that iteration's shape and blendshape update.
Residual: mean distance of fitted to detected landmarks in px, and as NME (over the face size, the
square root of the 68 detected landmarks' bounding-box area, `ganfit.fitting.losses.face_size`; on
all 68 points that is `ganfit.fitting.metrics.landmark_nme`). eos maps 50 of the 68 points to fixed
SFM vertices (ibug_to_sfm.txt: the chin but none of the other 16 jaw points, and not the inner mouth
corners 61 and 65); those 50 are the common subset. eos's 16 other jaw points get a correspondence chosen anew in
each iteration; their residual is reported as the distance to the nearest projected vertex of the
model's contour lines (sfm_model_contours.json, both sides), a lower bound of eos's own measure.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit import FitConfig, Fitter  # noqa: E402
from ganfit.errors import GanfitError  # noqa: E402
from ganfit.fitting.landmark_stage import solve_landmarks  # noqa: E402
from ganfit.fitting.losses import face_size  # noqa: E402
from ganfit.fitting.metrics import landmark_nme  # noqa: E402
from ganfit.io.images import load_image  # noqa: E402
from ganfit.perception.detect import make_detector, select_face  # noqa: E402
from ganfit.render.camera import project_points, transform_points  # noqa: E402

EOS_FILES = ("sfm_shape_3448.bin", "expression_blendshapes_3448.bin", "ibug_to_sfm.txt",
             "sfm_3448_edge_topology.json", "sfm_model_contours.json")
INNER = list(range(17, 68))  # the 51 non-jaw iBUG points
JAW_CONTOUR = [i for i in range(17) if i != 8]  # 0-based iBUG ids of eos's contour landmarks (chin is mapped)
BATCH = 16
BATCH_REPEATS = 5  # each batch is solved this many times, the fastest kept


class EosFit:
    """eos's SFM model and data files, loaded once; `fit` runs `fit_shape_and_pose` on one image."""

    def __init__(self, eos, share: Path, iterations: int = 5, lambda_identity: float = 30.0) -> None:
        self.eos = eos
        base = eos.morphablemodel.load_model(str(share / "sfm_shape_3448.bin"))
        blendshapes = eos.morphablemodel.load_blendshapes(str(share / "expression_blendshapes_3448.bin"))
        # As in eos's python/demo.py: the shape model with the blendshapes as its expression model.
        self.model = eos.morphablemodel.MorphableModel(
            base.get_shape_model(), blendshapes, color_model=eos.morphablemodel.PcaModel(),
            vertex_definitions=None, texture_coordinates=base.get_texture_coordinates())
        self.num_shape = base.get_shape_model().get_num_principal_components()
        self.num_blendshapes = len(blendshapes)
        self.num_vertices = base.get_shape_model().get_data_dimension() // 3
        self.mapper = eos.core.LandmarkMapper(str(share / "ibug_to_sfm.txt"))
        self.edge_topology = eos.morphablemodel.load_edge_topology(str(share / "sfm_3448_edge_topology.json"))
        self.contour_landmarks = eos.fitting.ContourLandmarks.load(str(share / "ibug_to_sfm.txt"))
        self.model_contour = eos.fitting.ModelContour.load(str(share / "sfm_model_contours.json"))
        self.iterations, self.lambda_identity = iterations, lambda_identity
        # (0-based iBUG id, SFM vertex) for every landmark with a fixed vertex.
        self.mapped = [(i, int(self.mapper.convert(str(i + 1)))) for i in range(68)
                       if self.mapper.convert(str(i + 1)) is not None]
        import json

        contour = json.loads((share / "sfm_model_contours.json").read_text())["model_contour"]
        self.contour_vertices = np.array(contour["right_contour"] + contour["left_contour"])

    def fit(self, landmarks: np.ndarray, width: int, height: int):
        """landmarks: (68, 2) px. Returns (seconds of the fit call, (3448, 2) projected vertices, yaw deg)."""
        eos = self.eos
        lms = [eos.core.Landmark(str(i + 1), [float(x), float(y)]) for i, (x, y) in enumerate(landmarks)]
        t0 = time.perf_counter()
        mesh, pose, _shape, _expr = eos.fitting.fit_shape_and_pose(
            self.model, lms, self.mapper, width, height, self.edge_topology, self.contour_landmarks,
            self.model_contour, num_iterations=self.iterations, lambda_identity=self.lambda_identity)
        seconds = time.perf_counter() - t0
        return seconds, project_eos(np.asarray(mesh.vertices), pose, width, height), float(pose.get_yaw_pitch_roll()[0])


def project_eos(vertices: np.ndarray, pose, width: int, height: int) -> np.ndarray:
    """(V, 3) model vertices -> (V, 2) image px with eos's pose, as glm::project with the viewport
    eos fits in (`fitting::get_opencv_viewport`: (0, H, W, -H), y down, origin top-left)."""
    hom = np.concatenate([vertices, np.ones((len(vertices), 1))], axis=1)
    clip = hom @ (np.asarray(pose.get_projection(), np.float64) @ np.asarray(pose.get_modelview(), np.float64)).T
    ndc = clip[:, :3] / clip[:, 3:4]
    x = (ndc[:, 0] + 1.0) / 2.0 * width
    y = height - (ndc[:, 1] + 1.0) / 2.0 * height
    return np.stack([x, y], axis=1)


def fitted_from_result(model, result) -> torch.Tensor:
    """(B, 68, 2) fitted landmark pixels of a `solve_landmarks` result (its params and vertex ids)."""
    p = result.params
    verts = model.vertices(p.shape, p.expression)
    proj = project_points(transform_points(verts, p.rotation_matrix(), p.translation), p.focal, p.principal)
    return proj.gather(1, result.vertex_ids[..., None].expand(-1, -1, 2))


def residual(fitted: np.ndarray, target: np.ndarray, idx) -> tuple[float, float]:
    """(mean px, NME) of `fitted` vs `target` (68, 2) over the landmarks `idx`, face size from all 68."""
    d = np.linalg.norm(fitted[idx] - target[idx], axis=-1).mean()
    return float(d), float(d / float(face_size(torch.as_tensor(target[None]))[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", default=str(ROOT.parent / "shared" / "faces" / "dev" / "photos"), help="folder of photos")
    ap.add_argument("--limit", type=int, default=50, help="the first N photos, sorted by name")
    ap.add_argument("--eos-share", default="/work/data/eos", help="folder with eos's share/ files")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3, help="runs per photo and method; the fastest is kept")
    args = ap.parse_args(argv)

    try:
        import eos
    except ImportError:
        print("skipped: eos is not installed (pip install eos-py, or pip install .[bench])", file=sys.stderr)
        return 0
    share = Path(args.eos_share)
    missing = [f for f in EOS_FILES if not (share / f).is_file()]
    if missing:
        print(f"skipped: eos model files missing from {share}: {', '.join(missing)} (copy them from the share/ "
              "folder of https://github.com/patrikhuber/eos)", file=sys.stderr)
        return 0
    folder = Path(args.faces)
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if folder.is_dir() else []
    photos = photos[: args.limit]
    if not photos:
        print(f"skipped: no photos under {folder}", file=sys.stderr)
        return 0
    torch.set_num_threads(args.threads)

    eos_fit = EosFit(eos, share)
    fitter = Fitter(FitConfig(device="cpu", texture_size=0, quiet=True))
    # Diagnostic: the same fit without the 17 jaw points (zero weight), to see what they cost elsewhere.
    fitter_nojaw = Fitter(FitConfig(device="cpu", texture_size=0, quiet=True, contour="off"))
    model = fitter.model
    detector = make_detector("dlib")

    load_before = os.getloadavg()[0]
    # 1. Landmarks, once per photo.
    images, targets, refused = [], [], []
    for path in photos:
        try:
            img = load_image(str(path))
            det = select_face(detector.detect(img.pixels), source=path.name)
        except GanfitError as exc:
            refused.append(f"{path.name}: {exc}")
            continue
        images.append((path.name, img.pixels))
        targets.append(np.asarray(det.landmarks, dtype=np.float64))
    if not images:
        print("skipped: no face found in any photo", file=sys.stderr)
        return 0

    # Warm-up (model tensors, caches, first-call costs) on the first photo, not timed.
    name0, pix0 = images[0]
    fitter.fit(pix0, landmarks=targets[0])
    fitter_nojaw.fit(pix0, landmarks=targets[0])
    solve_landmarks(model, torch.as_tensor(targets[0][None]), torch.tensor([[pix0.shape[1], pix0.shape[0]]], dtype=torch.float64))
    eos_fit.fit(targets[0], pix0.shape[1], pix0.shape[0])

    rows = {k: [] for k in ("fitter", "nojaw", "solve1", "eos")}
    res = {k: [] for k in ("g_all", "g_common", "g_jaw", "n_inner", "n_common", "s_all", "e_common", "e_jaw", "e_all")}
    common = [i for i, _ in eos_fit.mapped]
    nme_check = []
    per_point = {"ganfit": [], "ganfit, jaw off": [], "eos": []}  # (68,) distances / face size per photo
    for k, ((name, pix), lms) in enumerate(zip(images, targets)):
        h, w = pix.shape[:2]
        # (a) ganfit through the public API, then solve_landmarks alone; (b) eos on the same landmarks.
        # Each is run `--repeats` times in turn and its fastest run kept (the CPUs are shared); the fits
        # repeat to the last digits (LM stops on a tolerance), so the residuals come from the last run.
        times = {key: [] for key in ("fitter", "nojaw", "solve1", "eos")}
        t_in = torch.as_tensor(lms[None], dtype=torch.float64)
        sizes = torch.tensor([[w, h]], dtype=torch.float64)
        for _ in range(args.repeats):
            result = fitter.fit(pix, landmarks=lms)
            times["fitter"].append(result.timings["landmark_stage"])
            nojaw = fitter_nojaw.fit(pix, landmarks=lms)
            times["nojaw"].append(nojaw.timings["landmark_stage"])
            t0 = time.perf_counter()
            direct = solve_landmarks(model, t_in, sizes)
            times["solve1"].append(time.perf_counter() - t0)
            seconds, proj, yaw = eos_fit.fit(lms, w, h)
            times["eos"].append(seconds)
        for key, values in times.items():
            rows[key].append(min(values))
        seconds = rows["eos"][-1]
        g = result.landmarks_fitted[0].double().numpy()
        gn = nojaw.landmarks_fitted[0].double().numpy()
        s = fitted_from_result(model, direct)[0].double().numpy()
        e = lms.copy()  # only the indices filled below are read
        for i, v in eos_fit.mapped:
            e[i] = proj[v]
        contour = proj[eos_fit.contour_vertices]
        e_jaw = lms[JAW_CONTOUR][:, None, :] - contour[None]
        e_jaw_d = np.linalg.norm(e_jaw, axis=-1).min(axis=1).mean()

        fs = float(face_size(torch.as_tensor(lms[None]))[0])
        res["g_all"].append(residual(g, lms, slice(None)))
        nme_check.append(float(landmark_nme(torch.as_tensor(g[None]), torch.as_tensor(lms[None]))[0]))
        res["g_common"].append(residual(g, lms, common))
        res["g_jaw"].append(residual(g, lms, JAW_CONTOUR))
        for key, pts in (("ganfit", g), ("ganfit, jaw off", gn), ("eos", e)):
            per_point[key].append(np.linalg.norm(pts - lms, axis=-1) / fs)
        res["n_inner"].append(residual(gn, lms, INNER))
        res["n_common"].append(residual(gn, lms, common))
        res["s_all"].append(residual(s, lms, slice(None)))
        res["e_common"].append(residual(e, lms, common))
        res["e_jaw"].append((float(e_jaw_d), float(e_jaw_d) / fs))
        n_c, n_j = len(common), len(JAW_CONTOUR)
        all_px = (res["e_common"][-1][0] * n_c + e_jaw_d * n_j) / (n_c + n_j)
        res["e_all"].append((all_px, all_px / fs))
        print(f"[{k + 1}/{len(images)}] {name}: ganfit {1e3 * rows['fitter'][-1]:.0f} ms "
              f"{100 * res['g_common'][-1][1]:.2f}% | eos {1e3 * seconds:.1f} ms {100 * res['e_common'][-1][1]:.2f}% "
              f"(common {n_c}), eos yaw {yaw:+.0f}", file=sys.stderr, flush=True)
    assert np.allclose([r[1] for r in res["g_all"]], nme_check, rtol=1e-6), "NME differs from landmark_nme"

    # Batches of 16 images (whole batches only; the same landmarks), time per image, fastest of the runs.
    batch_times = []
    for start in range(0, len(images) - BATCH + 1, BATCH):
        sl = range(start, start + BATCH)
        t_in = torch.as_tensor(np.stack([targets[i] for i in sl]), dtype=torch.float64)
        sizes = torch.tensor([[images[i][1].shape[1], images[i][1].shape[0]] for i in sl], dtype=torch.float64)
        runs = []
        for _ in range(BATCH_REPEATS):
            t0 = time.perf_counter()
            solve_landmarks(model, t_in, sizes)
            runs.append((time.perf_counter() - t0) / BATCH)
        batch_times.append(min(runs))
    if batch_times:
        rows["solve16"] = batch_times

    n = len(images)
    med = {k: float(np.median(v)) for k, v in rows.items()}
    p90 = {k: float(np.percentile(v, 90)) for k, v in rows.items()}
    mean = lambda key, j: float(np.mean([r[j] for r in res[key]]))  # noqa: E731
    cell = lambda key: f"{mean(key, 0):.2f} / {100 * mean(key, 1):.2f}"  # noqa: E731
    info = model.summary()
    print(f"\n{n} photos ({len(refused)} without a face), landmarks detected once with dlib; eos-py "
          f"{_eos_version()}, SFM {eos_fit.num_vertices} vertices, {eos_fit.num_shape} shape components, "
          f"{eos_fit.num_blendshapes} blendshapes, {eos_fit.iterations} iterations, lambda_identity "
          f"{eos_fit.lambda_identity:g}; ganfit model {info.get('name')} ({info.get('vertices')} vertices, "
          f"{info.get('shape_components')} shape, {info.get('expression_components')} expression); "
          f"torch threads {args.threads}; times: fastest of {args.repeats} runs per photo; 1-min load average {load_before:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} CPUs)")
    for line in refused:
        print(f"  no face: {line}")
    print(f"\n| method | landmarks fitted | median ms / image | p90 ms / image | eos time / this time (medians) "
          f"| residual over the landmarks it fits, px / NME % | residual over the {len(common)} common landmarks, px / NME % "
          f"| jaw ({len(JAW_CONTOUR)} contour points), px / NME % | photos |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratio = lambda k: f"{med['eos'] / med[k]:.2f}x"  # noqa: E731
    print(f"| ganfit `Fitter.fit(landmarks=...)`, `timings['landmark_stage']` | 68 | {1e3 * med['fitter']:.1f} | "
          f"{1e3 * p90['fitter']:.1f} | {ratio('fitter')} | {cell('g_all')} | {cell('g_common')} | {cell('g_jaw')} | {n} |")
    print(f"| ganfit `Fitter.fit`, jaw line off (`FitConfig(contour='off')`), diagnostic | 51 | {1e3 * med['nojaw']:.1f} | "
          f"{1e3 * p90['nojaw']:.1f} | {ratio('nojaw')} | {cell('n_inner')} | {cell('n_common')} | - | {n} |")
    print(f"| ganfit `solve_landmarks`, 1 image, default arguments | 68 | {1e3 * med['solve1']:.1f} | "
          f"{1e3 * p90['solve1']:.1f} | {ratio('solve1')} | {cell('s_all')} | - | - | {n} |")
    if "solve16" in rows:
        print(f"| ganfit `solve_landmarks`, batches of {BATCH} (time / {BATCH}) | 68 | {1e3 * med['solve16']:.1f} | "
              f"{1e3 * p90['solve16']:.1f} | {ratio('solve16')} | (as 1 image) | - | - | {BATCH * len(batch_times)} "
              f"({len(batch_times)} batches, fastest of {BATCH_REPEATS} runs each) |")
    print(f"| eos `fit_shape_and_pose` | {len(common)} + {len(JAW_CONTOUR)} contour | {1e3 * med['eos']:.1f} | "
          f"{1e3 * p90['eos']:.1f} | 1.00x | {cell('e_all')} (jaw: lower bound) | {cell('e_common')} | "
          f"{cell('e_jaw')} (lower bound) | {n} |")
    per_photo = np.array(rows["eos"]) / np.array(rows["fitter"])
    print(f"\nper-photo ratio eos / Fitter landmark stage: median {np.median(per_photo):.3f}, "
          f"p10 {np.percentile(per_photo, 10):.3f}, p90 {np.percentile(per_photo, 90):.3f}")
    gc = np.array([r[1] for r in res["g_common"]])
    ec = np.array([r[1] for r in res["e_common"]])
    print(f"common-subset NME %: ganfit median {100 * np.median(gc):.2f} p90 {100 * np.percentile(gc, 90):.2f}; "
          f"eos median {100 * np.median(ec):.2f} p90 {100 * np.percentile(ec, 90):.2f}; "
          f"ganfit lower on {int((gc < ec).sum())} of {n} photos")
    regions = {"chin": range(8, 9), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48), "mouth": range(48, 68)}
    print("\ncommon-subset NME % by region (mean over photos and points):")
    print("| method | " + " | ".join(f"{r} ({len([i for i in ids if i in common])})" for r, ids in regions.items()) + " |")
    print("|---" * (len(regions) + 1) + "|")
    for key, arr in per_point.items():
        a = np.stack(arr)
        print(f"| {key} | " + " | ".join(f"{100 * a[:, [i for i in ids if i in common]].mean():.2f}"
                                        for ids in regions.values()) + " |")
    return 0


def _eos_version() -> str:
    try:
        from importlib.metadata import version

        return version("eos-py")
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
