"""Joint stage (issue 11, first slice) against the landmark stage, on the example photo and on the dev multi-view
sets (../shared/faces/dev/multiview, read in place, never copied).

    python benchmarks/joint.py [--sets hrn_armie_hammer df_mvr_00331] [--iterations N] [--threads 1]

Per photo: landmark stage (LM) then `JointStage` (dlib identity, shipped 32x32 PGGAN texture, torch rasterizer at
224 x 224). Reported: landmark error (px) at the start / end of the joint stage, the optimised pixel and identity
terms, and the dlib cosine between the fitted render composited over its photo and ANOTHER photo of the same
person (the optimised photo would be an unfair judge), for the joint stage's start state (landmark-stage geometry,
best random latent, least-squares light) and its end; time per iteration and per fit. A render strip per photo is
written to /tmp/ganfit-joint-bench/.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganfit.fitting.landmark_stage import LandmarkStage  # noqa: E402
from ganfit.fitting.losses import landmark_weights  # noqa: E402
from ganfit.fitting.stages import JointStage, JointStageConfig, JointVariables  # noqa: E402
from ganfit.fitting.stages.joint_terms import composite  # noqa: E402
from ganfit.model.landmark_table import calibrated_table, model_table  # noqa: E402
from ganfit.model.registry import load_model  # noqa: E402
from ganfit.model.texture.registry import load_texture_model  # noqa: E402
from ganfit.perception.detect import make_detector, select_face  # noqa: E402
from ganfit.perception.identity.dlib_resnet import DlibResNet  # noqa: E402
from ganfit.render.renderer import Renderer, make_rasterizer  # noqa: E402
from ganfit.render.shading import default_sh  # noqa: E402

MULTIVIEW = ROOT.parent / "shared" / "faces" / "dev" / "multiview"
OUT = Path("/tmp/ganfit-joint-bench")


def load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


class Bench:
    def __init__(self, iterations: int | None) -> None:
        self.model = load_model("bfm-3ddfa")
        self.det = make_detector("dlib")
        self.net = DlibResNet()
        self.tex = load_texture_model("default", face_model=self.model)
        table = calibrated_table(self.model) or model_table(self.model)
        self.lm_stage = LandmarkStage(self.model, landmark_vertices=table.vertices)
        cfg = JointStageConfig() if iterations is None else JointStageConfig(iterations=iterations)
        self.stage = JointStage(self.model, Renderer(self.model, make_rasterizer("torch", "cpu")), self.net, self.tex, cfg)

    def fit(self, pixels: np.ndarray, name: str) -> dict:
        t0 = time.perf_counter()
        face = select_face(self.det.detect(pixels))
        lm = torch.as_tensor(np.asarray(face.landmarks), dtype=torch.float64)[None]
        t1 = time.perf_counter()
        sizes = torch.tensor([[pixels.shape[1], pixels.shape[0]]], dtype=torch.float64)
        res = self.lm_stage.solve(lm, sizes, weights=landmark_weights(0.5))
        t2 = time.perf_counter()
        image = torch.as_tensor(pixels)[None].float() / 255.0
        joint = self.stage.run(image, lm.float(), res.params, res.vertex_ids, generator=torch.Generator().manual_seed(0))
        t3 = time.perf_counter()
        # the start state, rebuilt as `run` builds it (same seed)
        e = self.stage.energy
        targets = e.prepare(image.permute(0, 3, 1, 2), lm.float(), res.params, res.vertex_ids, landmark_weights(0.5).float(),
                            0.02, default_sh(1), 1.3, False)
        start = self.stage.initial_variables(res.params, targets, torch.Generator().manual_seed(0))
        end = JointVariables(joint.latent, joint.lighting, joint.gain, joint.offset, joint.params.shape,
                             joint.params.expression, joint.params.rotation, joint.params.translation)
        with torch.no_grad():
            comps = []
            for v in (start, end):
                img, out = e.render(v, targets)
                comps.append(composite(img, out.alpha, targets.photo).clamp(0, 1))
            strip = torch.cat([targets.photo[0], comps[0][0], comps[1][0]], 2).permute(1, 2, 0).numpy()
        OUT.mkdir(exist_ok=True)
        Image.fromarray((strip * 255).astype(np.uint8)).save(OUT / f"{name}.png")
        h0, h1 = joint.history[0], joint.history[-1]
        return dict(name=name, comps=comps, crop_lm=targets.crop_landmarks, photo=targets.photo,
                    px0=h0["reprojection_px"][0], px1=h1["reprojection_px"][0], pix0=h0["pixel"][0], pix1=h1["pixel"][0],
                    id0=h0["identity"][0], id1=h1["identity"][0], its=joint.iterations, stop=joint.stop_reason[0],
                    t_detect=t1 - t0, t_lm=t2 - t1, t_joint=t3 - t2, per_it=joint.seconds / max(joint.iterations, 1))

    def embed(self, image: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net.embed(image, lm)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="*", default=["hrn_armie_hammer", "df_mvr_00331"])
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    b = Bench(args.iterations)
    rows = [b.fit(load(ROOT / "examples" / "astronaut.png"), "astronaut")]
    cross = []
    for s in args.sets:
        folder = MULTIVIEW / s
        if not folder.is_dir():
            print(f"(no {folder}: skipped)")
            continue
        fits = [b.fit(load(p), f"{s}_{p.stem}") for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".png")]
        rows += fits
        photos = [(b.embed(f["photo"], f["crop_lm"])) for f in fits]
        for i, f in enumerate(fits):  # render of photo i against every other photo of the person
            others = [photos[j] for j in range(len(fits)) if j != i]
            c0 = np.mean([float(b.embed(f["comps"][0], f["crop_lm"]) @ o) for o in others])
            c1 = np.mean([float(b.embed(f["comps"][1], f["crop_lm"]) @ o) for o in others])
            cross.append((f["name"], c0, c1))
    print("\n| photo | landmark px start -> end | pixel start -> end | identity (1-cos, optimised) start -> end | iterations (stop) | detect s | landmark stage s | joint s | ms / iteration |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['px0']:.2f} -> {r['px1']:.2f} | {r['pix0']:.3f} -> {r['pix1']:.3f} | {r['id0']:.3f} -> {r['id1']:.3f} "
              f"| {r['its']} ({r['stop']}) | {r['t_detect']:.2f} | {r['t_lm']:.3f} | {r['t_joint']:.1f} | {1000 * r['per_it']:.0f} |")
    if cross:
        print("\n| photo | cosine to the person's other photos: start render | joint render |")
        print("|---|---|---|")
        for name, c0, c1 in cross:
            print(f"| {name} | {c0:.3f} | {c1:.3f} |")
        print(f"| mean | {np.mean([c[1] for c in cross]):.3f} | {np.mean([c[2] for c in cross]):.3f} |")


if __name__ == "__main__":
    main()
