"""What a UV corpus (`ganfit texture build-dataset`) holds: acceptance per filter, the measures' distributions,
the labels (sex, age, ethnicity per source) and the skin tone (ITA category) of what was accepted, and the
left/right brightness asymmetry before and after de-lighting. Reads ``records.jsonl`` (so it works while the
build runs; a photo's last line counts, as for the builder).

    python benchmarks/uv_corpus.py /work/data/uv_corpus
    python benchmarks/uv_corpus.py /work/data/uv_corpus --sheet sheet.png --n 48     # contact sheet of UVs
    python benchmarks/uv_corpus.py /work/data/uv_corpus --compare cmp.png --n 6 --sources sources.json
        # per photo: the photo's unwrap, de-lit, completed (re-made from the photos)
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ganfit.training.jsonl import read_jsonl  # noqa: E402
from ganfit.training.uv_delight import ITA_CATEGORIES, ita_category  # noqa: E402
from ganfit.training.uv_filters import REASONS  # noqa: E402

AGE_BINS = ((0, 13, "0-12"), (13, 20, "13-19"), (20, 40, "20-39"), (40, 60, "40-59"), (60, 200, "60+"))


def _age_bin(age) -> str:
    if age is None:
        return "unknown"
    return next(name for lo, hi, name in AGE_BINS if lo <= age < hi)


def _pct(values, q) -> str:
    v = np.asarray([x for x in values if x is not None], np.float64)
    return "-" if not len(v) else " / ".join(f"{x:.3g}" for x in np.percentile(v, q))


def _table(title: str, counts: dict[str, collections.Counter], order: list[str]) -> None:
    cols = sorted(counts)
    print(f"\n{title}")
    print("| " + " | ".join(["", *cols, "all"]) + " |")
    print("|" + "---|" * (len(cols) + 2))
    for row in order:
        vals = [counts[c].get(row, 0) for c in cols]
        if sum(vals):
            print("| " + " | ".join([row, *map(str, vals), str(sum(vals))]) + " |")


def report(records: list[dict]) -> None:
    accepted = [r for r in records if "reason" not in r]
    rejected = [r for r in records if "reason" in r]
    by_source = collections.Counter(r.get("source") for r in records)
    print(f"{len(records)} photos recorded, {len(accepted)} accepted ({100 * len(accepted) / max(len(records), 1):.1f} %)")
    # ---- acceptance per filter, in the order the filters run: how many reached it and how many it rejected
    print("\n| filter | reached | rejected | rejected % of reached |\n|---|---|---|---|")
    reached = len(records)
    reasons = collections.Counter(r["reason"] for r in rejected)
    for reason in REASONS:
        n = reasons.get(reason, 0)
        print(f"| {reason} | {reached} | {n} | {100 * n / max(reached, 1):.1f} |")
        reached -= n
    print(f"| accepted | {reached} | | |")
    print("\n| source | photos | accepted | % |\n|---|---|---|---|")
    acc_source = collections.Counter(r.get("source") for r in accepted)
    for s, n in sorted(by_source.items()):
        print(f"| {s} | {n} | {acc_source.get(s, 0)} | {100 * acc_source.get(s, 0) / n:.1f} |")
    # ---- measure distributions (all photos that got that far): 5th / 50th / 95th percentiles
    print("\n| measure | accepted p5 / p50 / p95 | all measured p5 / p50 / p95 |\n|---|---|---|")
    for key in ("fit_error_rel", "face_width_px", "colourfulness", "sharpness", "yaw_deg", "visible_fraction",
                "second_face_ratio"):
        print(f"| {key} | {_pct([r.get(key) for r in accepted], [5, 50, 95])} | "
              f"{_pct([r.get(key) for r in records], [5, 50, 95])} |")
    # ---- de-lighting
    before = [abs(r["asymmetry_photo"]) for r in accepted if r.get("asymmetry_photo") is not None]
    after = [abs(r["asymmetry_delit"]) for r in accepted if r.get("asymmetry_delit") is not None]
    print("\n| left/right log-luminance asymmetry (accepted) | p25 / p50 / p75 / p90 |\n|---|---|")
    print(f"| photo unwrap | {_pct(before, [25, 50, 75, 90])} |\n| de-lit | {_pct(after, [25, 50, 75, 90])} |")
    # ---- who is in it
    sex = collections.defaultdict(collections.Counter)
    age = collections.defaultdict(collections.Counter)
    eth = collections.defaultdict(collections.Counter)
    tone = collections.defaultdict(collections.Counter)
    for r in accepted:
        s, lab = r.get("source"), r.get("labels") or {}
        sex[s][lab.get("sex", "unknown")] += 1
        age[s][_age_bin(lab.get("age"))] += 1
        eth[s][lab.get("ethnicity", "unknown")] += 1
        tone[s][ita_category(r.get("skin_ita"))] += 1
    _table("sex (source labels)", sex, ["female", "male", "unknown"])
    _table("age (source labels)", age, [b[2] for b in AGE_BINS] + ["unknown"])
    _table("ethnicity (source labels, each source's own words)", eth,
           sorted({k for c in eth.values() for k in c}))
    _table("skin tone: ITA category of the de-lit skin (Del Bino & Bernerd 2013)", tone,
           [name for name, _ in ITA_CATEGORIES] + ["unknown"])
    # does the ITA follow the sources' own labels? (a check of the measure, not of the people)
    by_label = collections.defaultdict(list)
    for r in accepted:
        eth = (r.get("labels") or {}).get("ethnicity")
        if eth and r.get("skin_ita") is not None:
            by_label[f"{r.get('source')}: {eth}"].append(r["skin_ita"])
    print("\n| source label | photos | skin ITA p25 / p50 / p75 |\n|---|---|---|")
    for label, values in sorted(by_label.items()):
        print(f"| {label} | {len(values)} | {_pct(values, [25, 50, 75])} |")
    ids = {r.get("identity") for r in accepted}
    splits = collections.Counter(r.get("split") for r in accepted)
    print(f"\n{len(ids)} identities accepted; split: {dict(splits)}")


def sheet(folder: Path, records: list[dict], n: int, out: Path, seed: int = 0) -> None:
    import torch
    from PIL import Image

    from ganfit.io.images import save_png
    from ganfit.training.grids import make_grid

    picked = [r for r in records if "reason" not in r]
    rng = np.random.default_rng(seed)
    picked = [picked[i] for i in sorted(rng.choice(len(picked), min(n, len(picked)), replace=False))]
    uvs = []
    for r in picked:
        with Image.open(folder / r["outputs"]["uv"]) as im:
            uvs.append(np.asarray(im.convert("RGB"), np.float32) / 255.0)
    save_png(out, make_grid(torch.from_numpy(np.stack(uvs)).permute(0, 3, 1, 2), min_tile=1))
    print(f"wrote {out}: {len(uvs)} UVs")


def compare(records: list[dict], sources_file: Path, n: int, out: Path, resolution: int, seed: int = 0) -> None:
    """Rows of (photo unwrap, de-lit unwrap, completed) for `n` accepted photos, re-made from the photos."""
    import torch

    from ganfit import FitConfig, Fitter
    from ganfit.io.images import save_png
    from ganfit.training.grids import make_grid
    from ganfit.training.uv_filters import DuplicateIndex, FilterConfig
    from ganfit.training.uv_sample import SampleMaker
    from ganfit.training.uv_sources import SourcePhoto, load_sources

    sources = {s.name: s for s in load_sources(sources_file)}
    accepted = [r for r in records if "reason" not in r]
    rng = np.random.default_rng(seed)
    picked = [accepted[i] for i in rng.choice(len(accepted), min(n, len(accepted)), replace=False)]
    maker = SampleMaker(Fitter(FitConfig(device="cpu", quiet=True, texture_size=0)), resolution,
                        FilterConfig(max_landmark_error=1, min_face_px=0, min_colourfulness=0, min_sharpness=0,
                                     max_yaw_deg=180, max_pitch_deg=180, min_visible=0, second_face_ratio=1))
    tiles = []
    for r in picked:
        src = sources[r["source"]]
        sample = maker.make(SourcePhoto(src, Path(r["key"].split("/", 1)[1])), DuplicateIndex(-1))
        if not sample.accepted:
            continue
        tiles += [sample.raw, sample.delit, sample.uv]
    save_png(out, make_grid(torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2), columns=3, min_tile=1))
    print(f"wrote {out}: {len(tiles) // 3} photos x (unwrap, de-lit, completed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--sheet", type=Path, help="write a contact sheet of accepted UVs here")
    ap.add_argument("--compare", type=Path, help="write unwrap / de-lit / completed rows here (needs --sources)")
    ap.add_argument("--sources", type=Path)
    ap.add_argument("--n", type=int, default=36)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    latest = {r["key"]: r for r in read_jsonl(args.corpus / "records.jsonl") if "key" in r}  # last line wins
    records = list(latest.values())
    if not records:
        sys.exit(f"{args.corpus}: no records.jsonl (or it is empty)")
    report(records)
    if args.sheet:
        sheet(args.corpus, records, args.n, args.sheet, args.seed)
    if args.compare:
        if not args.sources:
            sys.exit("--compare needs --sources")
        compare(records, args.sources, args.n, args.compare, args.resolution, args.seed)


if __name__ == "__main__":
    main()
