"""Joint stage (issue 11) against the landmark stage: identity judged on other photos, shape consistency, an
ablation in GANFit's manner, and time. Reads the dev multi-view sets (../shared/faces/dev/multiview) in place.

    python benchmarks/joint.py [--sets ...] [--ablation-sets ...] [--iterations 40] [--threads 1]
    python benchmarks/joint.py --report          # tables from the checkpoint only
    python benchmarks/joint.py --timing          # ms / iteration at 1 and 2 threads, `ganfit fit` wall time

Per photo: dlib detection, the landmark stage, then `JointStage` (dlib identity, shipped 32x32 PGGAN texture,
torch rasterizer, 224 x 224 crop) for each configuration: "full" (the defaults, iterations cut to --iterations
with a third of them texture/light only, as the defaults' 20 of 60) on every photo; the ablations (no identity,
no id-hat, no content, no pixel, no latent bound, no bound and no latent prior, a loose latent: no bound, no prior
and 10x its learning rate; with --pca a PCA texture model instead of the GAN) on the photos of --ablation-sets.
"landmarks" is the joint stage's start state: landmark-stage geometry, the best of 8 random GAN latents by the
pixel term, least-squares SH light (so the landmark stage is judged with the same texture model).

Every state is judged by (a) dlib cosine of its render to the same person's OTHER photos and to every other
person's photos in the pool, with the render composited over its photo (keeps the photo's hair and background,
which inflates the cosine) and alone over neutral grey (the honest measure; both aligned with the photo's
landmarks); (b) the neutral shapes' consistency: mean aligned distance (mm, face region) between two photos of
one person vs of two people; (c) landmark NME (% of face size); (d) the pixel and identity terms re-evaluated
with every weight on. Records are checkpointed to --checkpoint after each fit; renders go to /tmp/ganfit-joint-bench/.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _joint_measures import tables  # noqa: E402

from ganfit.fitting.landmark_stage import LandmarkStage  # noqa: E402
from ganfit.fitting.losses import face_size, landmark_weights  # noqa: E402
from ganfit.fitting.stages import JointStage, JointStageConfig, JointVariables  # noqa: E402
from ganfit.fitting.stages.joint import JointRates  # noqa: E402
from ganfit.fitting.stages.joint_energy import TERMS  # noqa: E402
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
ALL_SETS = ["df_mvr_00331", "df_mvr_00336", "df_mvr_00352", "df_mvr_10075other", "df_mvr_10086other",
            "df_mvr_10091other", "hrn_armie_hammer", "mvfnet_subject"]
ABLATION_SETS = ["df_mvr_00331", "df_mvr_00336", "hrn_armie_hammer"]
ABLATIONS = {  # name -> (changes of JointWeights, changes of JointStageConfig)
    "full": ({}, {}),
    "no_identity": ({"identity": 0.0}, {}),
    "no_id_hat": ({"identity_hat": 0.0}, {}),
    "no_content": ({"content": 0.0}, {}),
    "no_pixel": ({"pixel": 0.0}, {}),
    "no_bound": ({}, {"latent_truncation": math.inf}),
    "no_bound_no_prior": ({"latent_prior": 0.0}, {"latent_truncation": math.inf}),
    "loose_latent": ({"latent_prior": 0.0}, {"latent_truncation": math.inf, "rates": JointRates(latent=0.5)}),
    "pca": ({}, {}),  # the PCA texture model of --pca instead of the GAN (only with --pca)
}
LABELS = {"landmarks": "landmark stage (start state)", "full": "full joint", "no_identity": "without identity",
          "no_id_hat": "without id-hat", "no_content": "without content", "no_pixel": "without pixel",
          "no_bound": "without latent bound (truncation inf)", "no_bound_no_prior": "without bound and latent prior",
          "loose_latent": "no bound, no prior, latent rate x10",
          "pca": "PCA texture instead of the GAN"}
EVAL_WEIGHTS = {k: 1.0 for k in TERMS} | {"identity_hat": 0.0}


def load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def save(t: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def photo_list(sets: list[str]) -> list[tuple[str, str, Path]]:
    """(name, person, path): the example photo, then every photo of each multi-view set."""
    out = [("astronaut", "astronaut", ROOT / "examples" / "astronaut.png")]
    for s in sets:
        folder = MULTIVIEW / s
        if not folder.is_dir():
            print(f"(no {folder}: skipped)", file=sys.stderr)
            continue
        out += [(f"{s}/{p.stem}", s, p) for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return out


class Bench:
    def __init__(self, iterations: int, pca: str | None = None, library_defaults: bool = False) -> None:
        self.model = load_model("bfm-3ddfa")
        self.det = make_detector("dlib")
        self.net = DlibResNet()
        self.tex = load_texture_model("default", face_model=self.model)
        self.pca = load_texture_model(pca, face_model=self.model) if pca else None
        table = calibrated_table(self.model) or model_table(self.model)
        self.lm_stage = LandmarkStage(self.model, landmark_vertices=table.vertices)
        self.renderer = Renderer(self.model, make_rasterizer("torch", "cpu"))
        # pinned to what was first measured (224 px, id-hat every step) whatever the library's defaults become,
        # or (--library-defaults) exactly the stage `ganfit fit --stages landmarks,joint` runs
        self.base = JointStageConfig() if library_defaults else JointStageConfig(
            iterations=iterations, warmup_iterations=iterations // 3, resolution=224, id_hat_every=1, id_hat_resolution=0)
        self.stages: dict[str, JointStage] = {}
        self.prepared: dict[str, tuple] = {}

    def stage(self, name: str, **extra) -> JointStage:
        key = name + repr(sorted(extra.items()))
        if key not in self.stages:
            w, c = ABLATIONS[name]
            cfg = replace(self.base, weights=replace(self.base.weights, **w), **c, **extra)
            tex = self.pca if name == "pca" else self.tex
            self.stages[key] = JointStage(self.model, self.renderer, self.net, tex, cfg)
        return self.stages[key]

    def prepare(self, name: str, path: Path):
        """Detection and landmark stage (cached per photo), the evaluation targets and the photo's embedding."""
        if name not in self.prepared:
            pixels = load(path)
            t0 = time.perf_counter()
            face = select_face(self.det.detect(pixels))
            lm = torch.as_tensor(np.asarray(face.landmarks), dtype=torch.float64)[None]
            t1 = time.perf_counter()
            sizes = torch.tensor([[pixels.shape[1], pixels.shape[0]]], dtype=torch.float64)
            res = self.lm_stage.solve(lm, sizes, weights=landmark_weights(0.5))
            t2 = time.perf_counter()
            image = torch.as_tensor(pixels)[None].float() / 255.0
            e = self.stage("full").energy
            targets = e.prepare(image.permute(0, 3, 1, 2), lm.float(), res.params.to(dtype=torch.float32), res.vertex_ids,
                                landmark_weights(0.5).float(), self.base.landmark_sigma, default_sh(1), self.base.crop_margin, True)
            self.prepared[name] = (image, lm, res, targets, dict(t_detect=t1 - t0, t_lm=t2 - t1))
        return self.prepared[name]

    def judge(self, v: JointVariables, targets, tag: str, config: str = "full") -> dict:
        """Renders over the photo and over grey, their embeddings, the terms with every weight on (the
        configuration's texture model, the full configuration's targets)."""
        e = self.stage(config).energy
        with torch.no_grad():
            img, out = e.render(v, targets)
            comp = composite(img, out.alpha, targets.photo).clamp(0, 1)
            grey = composite(img, out.alpha, torch.full_like(targets.photo, 0.5)).clamp(0, 1)
            emb_c = self.net.embed(comp, targets.crop_landmarks)[0]
            emb_g = self.net.embed(grey, targets.crop_landmarks)[0]
            terms = e.terms(v, targets, torch.Generator().manual_seed(0), EVAL_WEIGHTS)
        save(comp[0], OUT / f"{tag}_comp.png")
        save(grey[0], OUT / f"{tag}_grey.png")
        z = v.latent[0]
        return dict(emb_comp=emb_c.tolist(), emb_grey=emb_g.tolist(), shape=v.shape[0].double().tolist(),
                    pixel=float(terms["pixel"][0]), identity=float(terms["identity"][0]), content=float(terms["content"][0]),
                    reprojection_px=float(terms["reprojection_px"][0]), zmax=float(z.abs().max()),
                    zrms=float(z.pow(2).mean().sqrt()))

    def start_state(self, name: str, path: Path) -> dict:
        image, lm, res, targets, _ = self.prepare(name, path)
        v = self.stage("full").initial_variables(res.params.to(dtype=torch.float32), targets, torch.Generator().manual_seed(0))
        rec = self.judge(v, targets, f"landmarks/{name}")
        rec["shape"] = res.params.shape[0].double().tolist()
        return rec

    def joint(self, config: str, name: str, path: Path, **extra) -> dict:
        image, lm, res, targets, _ = self.prepare(name, path)
        stage = self.stage(config, **extra)
        t0 = time.perf_counter()
        r = stage.run(image, lm.float(), res.params, res.vertex_ids, generator=torch.Generator().manual_seed(0))
        secs = time.perf_counter() - t0
        v = JointVariables(r.latent, r.lighting, r.gain, r.offset, r.params.shape.float(), r.params.expression.float(),
                           r.params.rotation.float(), r.params.translation.float())
        rec = self.judge(v, targets, f"{config}/{name}", config)
        rec.update(seconds=secs, iterations=r.iterations, per_it=r.seconds / max(r.iterations, 1), stop=r.stop_reason[0],
                   warnings=r.warnings[0])
        return rec


def checkpoint_io(path: Path, iterations: int) -> dict:
    if path.is_file():
        ck = json.loads(path.read_text())
        if ck["meta"]["iterations"] == iterations:
            return ck
    return {"meta": {"iterations": iterations, "warmup": iterations // 3}, "photos": {}, "states": {}, "timing": {}}


def run_fits(args, ck: dict, path: Path) -> None:
    b = Bench(args.iterations, args.pca, library_defaults=args.library_defaults)
    pool = photo_list(args.sets)
    ablation_people = {"astronaut"} | set(args.ablation_sets)
    todo = [("landmarks", n, p, s) for n, s, p in pool] + [("full", n, p, s) for n, s, p in pool]
    todo += [(c, n, p, s) for c in ABLATIONS if c != "full" and (c != "pca" or args.pca)
             for n, s, p in pool if s in ablation_people]
    t_start = time.perf_counter()
    for config, name, p, person in todo:
        key = f"{config}/{name}"
        if key in ck["states"]:
            continue
        try:
            if name not in ck["photos"]:
                image, lm, res, targets, times = b.prepare(name, p)
                with torch.no_grad():
                    emb = b.net.embed(targets.photo, targets.crop_landmarks)[0]
                save(targets.photo[0], OUT / f"photo/{name}.png")
                ck["photos"][name] = dict(person=person, emb=emb.tolist(), face_size=float(face_size(lm)[0]), **times)
            rec = b.start_state(name, p) if config == "landmarks" else b.joint(config, name, p)
        except Exception as exc:  # a photo without a face, say: reported, not fatal
            print(f"{key}: {type(exc).__name__}: {exc}", file=sys.stderr)
            ck["states"][key] = None
            continue
        ck["states"][key] = rec
        path.write_text(json.dumps(ck))
        print(f"[{time.perf_counter() - t_start:6.0f} s] {key}: pixel {rec['pixel']:.3f} identity {rec['identity']:.3f} "
              f"px {rec['reprojection_px']:.2f} {rec.get('seconds', 0):.1f} s", file=sys.stderr, flush=True)


def run_timing(args, ck: dict, path: Path) -> None:
    """ms / iteration of the full configuration on the example photo at 1 and 2 threads, at 224 and 160 px,
    without the id-hat, and with the library's current speed settings (160 px, id-hat every 4th step at 128 px);
    then `ganfit fit --stages landmarks,joint` wall time (the library's defaults: 60 iterations)."""
    b = Bench(args.iterations)
    photo = ROOT / "examples" / "astronaut.png"
    speed = {"resolution": 160, "id_hat_every": 4, "id_hat_resolution": 128}  # the library's defaults since 7ed45e3
    cases = [("full", 1, {}), ("full", 2, {}), ("no_id_hat", 1, {}), ("full", 1, {"resolution": 160}),
             ("full", 1, speed), ("full", 2, speed), ("full", 1, {})]
    for i, (config, threads, extra) in enumerate(cases):
        key = f"{config}-t{threads}-{extra.get('resolution', 224)}" + ("-idhat/4@128" if extra.get("id_hat_every") else "")
        key += " (again)" if i == len(cases) - 1 else ""
        if key in ck["timing"]:
            continue
        torch.set_num_threads(threads)
        b.prepare("astronaut", photo)
        rec = b.joint(config, "astronaut", photo, **extra)
        ck["timing"][key] = dict(per_it=rec["per_it"], seconds=rec["seconds"], iterations=rec["iterations"])
        path.write_text(json.dumps(ck))
        print(key, ck["timing"][key], file=sys.stderr, flush=True)
    torch.set_num_threads(1)
    for threads in (1, 2):
        key = f"cli-t{threads}"
        if key in ck["timing"]:
            continue
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "ganfit", "fit", str(photo), "-o", str(OUT / f"cli{threads}/face.obj"),
               "--stages", "landmarks,joint", "--threads", str(threads), "-q"]
        rc = subprocess.run(cmd, cwd=ROOT).returncode
        ck["timing"][key] = dict(wall=time.perf_counter() - t0, rc=rc)
        path.write_text(json.dumps(ck))
        print(key, ck["timing"][key], file=sys.stderr, flush=True)


def report(ck: dict) -> str:
    model = load_model("bfm-3ddfa")
    configs = [c for c in ABLATIONS if c != "pca" or any(k.startswith("pca/") for k in ck["states"])]
    text = tables(ck, model, configs, LABELS)
    if ck.get("timing"):
        text += "\n\n| timing case (example photo) | ms / iteration | iterations | joint stage s | `ganfit fit` wall s |\n|---|---|---|---|---|"
        for k, t in ck["timing"].items():
            if k.startswith("cli"):
                text += f"\n| `ganfit fit --stages landmarks,joint --threads {k[-1]}` (library defaults) | | | | {t['wall']:.1f} (rc {t['rc']}) |"
            else:
                text += f"\n| {k} | {1000 * t['per_it']:.0f} | {t['iterations']} | {t['seconds']:.1f} | |"
    failed = [k for k, v in ck["states"].items() if v is None]
    if failed:
        text += f"\n\nFailed: {', '.join(failed)}"
    stops = {}
    for k, v in ck["states"].items():
        if v and "stop" in v:
            stops[v["stop"]] = stops.get(v["stop"], 0) + 1
    text += f"\n\nStop reasons: {stops}"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", default=ALL_SETS)
    ap.add_argument("--ablation-sets", nargs="*", default=ABLATION_SETS)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pca", default=None, help="a PCA texture model (.npz) for the 'pca' ablation")
    ap.add_argument("--checkpoint", default="/tmp/ganfit-joint-bench/results.json")
    ap.add_argument("--report", action="store_true", help="only print the tables of the checkpoint")
    ap.add_argument("--timing", action="store_true", help="only the timing cases")
    ap.add_argument("--library-defaults", action="store_true",
                    help="run the joint stage with JointStageConfig's defaults (what `ganfit fit` runs), not the "
                         "pinned 224 px / id-hat-every-step / --iterations configuration")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    ck = checkpoint_io(path, args.iterations)
    if args.timing:
        run_timing(args, ck, path)
    elif not args.report:
        run_fits(args, ck, path)
    print(report(ck))


if __name__ == "__main__":
    main()
