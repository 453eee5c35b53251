"""Measures and tables of benchmarks/joint.py, computed from its checkpoint (a JSON of per-photo, per-state
records), so the tables can be rebuilt without refitting: ``python benchmarks/joint.py --report``.

A record per state (the landmark stage's start state, or a joint-stage configuration's end state) holds the dlib
embeddings of its render composited over the photo (``emb_comp``) and over neutral grey (``emb_grey``), both
aligned with the photo's landmarks; the terms re-evaluated with every weight on (``pixel``, ``identity``,
``content``, ``reprojection_px``); the neutral shape's coefficients; times.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ganfit.fitting.metrics import aligned_vertex_error


def cos(a, b) -> float:
    return float(np.dot(np.asarray(a), np.asarray(b)))


def identity_scores(photos: dict, states: dict, config: str, key: str) -> dict:
    """Per state of `config`: mean cosine of its render (`key`: emb_comp or emb_grey) to the same person's
    OTHER photos and to other people's photos (all of them in the pool); means over the photos that have
    another photo of their person. Also the photo itself as the ceiling (config "photo")."""
    same, other, gap, rank1 = [], [], [], []
    for name, p in photos.items():
        mates = [n for n, q in photos.items() if q["person"] == p["person"] and n != name]
        strangers = [n for n, q in photos.items() if q["person"] != p["person"]]
        if not mates:
            continue
        if config == "photo":
            emb = p["emb"]
        else:
            rec = states.get(f"{config}/{name}")
            if rec is None:
                continue
            emb = rec[key]
        s = np.mean([cos(emb, photos[m]["emb"]) for m in mates])
        o_all = [cos(emb, photos[m]["emb"]) for m in strangers]
        same.append(s)
        other.append(np.mean(o_all))
        gap.append(s - np.mean(o_all))
        rank1.append(float(s > max(o_all)))  # same person's photos closer than every other person's photo
    if not same:
        return {}
    return dict(n=len(same), same=float(np.mean(same)), other=float(np.mean(other)), gap=float(np.mean(gap)),
                rank1=float(np.mean(rank1)))


class Shapes:
    """Neutral shapes (expression 0) of the fits over the face region (every 8th vertex), in mm."""

    def __init__(self, model) -> None:
        self.model = model
        self.sub = torch.as_tensor(np.flatnonzero(model.regions["face"])[::8])

    def neutral(self, coeffs) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(coeffs), dtype=torch.float64)[None]
        return self.model.vertices(s)[:, self.sub]

    def consistency(self, photos: dict, states: dict, config: str) -> dict:
        """Mean aligned distance (mm) between neutral shapes of two photos of one person, and of two different
        people (all pairs among the photos of `config`), and their ratio."""
        names = [n for n in photos if f"{config}/{n}" in states]
        if len(names) < 2:
            return {}
        v = {n: self.neutral(states[f"{config}/{n}"]["shape"]) for n in names}
        same, diff = [], []
        for a, b in itertools.combinations(names, 2):
            d = float(aligned_vertex_error(v[a], v[b])[0])
            (same if photos[a]["person"] == photos[b]["person"] else diff).append(d)
        if not same or not diff:
            return {}
        return dict(same=float(np.mean(same)), diff=float(np.mean(diff)), ratio=float(np.mean(same) / np.mean(diff)),
                    pairs_same=len(same), pairs_diff=len(diff))


def mean_of(photos: dict, states: dict, config: str, field: str, names=None) -> float:
    vals = [states[f"{config}/{n}"][field] for n in (names or photos) if f"{config}/{n}" in states]
    return float(np.mean(vals)) if vals else math.nan


def nme(photos: dict, states: dict, config: str, names=None) -> float:
    vals = [100 * states[f"{config}/{n}"]["reprojection_px"] / photos[n]["face_size"]
            for n in (names or photos) if f"{config}/{n}" in states]
    return float(np.mean(vals)) if vals else math.nan


def fmt(x, spec=".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def tables(ck: dict, model, configs: list[str], labels: dict[str, str]) -> str:
    photos, states = ck["photos"], {k: v for k, v in ck["states"].items() if v is not None}
    shapes = Shapes(model)
    out = []
    people = sorted({p["person"] for p in photos.values()})
    out.append(f"{len(photos)} photos of {len(people)} people ({', '.join(people)}); joint stage "
               f"{ck['meta']['iterations']} iterations ({ck['meta']['warmup']} texture/light only).\n")
    # 1. identity and shape, landmark vs joint, all photos
    out.append("| state | render over photo: same / other / gap / rank-1 | render over grey: same / other / gap / rank-1 "
               "| shape same mm / diff mm / ratio | landmark NME % | pixel | identity (1-cos, optimised photo) |")
    out.append("|---|---|---|---|---|---|---|")
    ph = identity_scores(photos, states, "photo", "")
    out.append(f"| the photo itself (ceiling) | {ph['same']:.3f} / {ph['other']:.3f} / {ph['gap']:.3f} / {ph['rank1']:.2f} | | | | | |")
    for label, cfg in (("landmark stage (start: LM geometry, initial GAN latent, LS light)", "landmarks"),
                       ("joint stage (full)", "full")):
        row = [label]
        for key in ("emb_comp", "emb_grey"):
            s = identity_scores(photos, states, cfg, key)
            row.append(f"{s['same']:.3f} / {s['other']:.3f} / {s['gap']:.3f} / {s['rank1']:.2f}" if s else "-")
        c = shapes.consistency(photos, states, cfg)
        row.append(f"{c['same']:.2f} / {c['diff']:.2f} / {c['ratio']:.3f}" if c else "-")
        names = [n for n in photos if f"full/{n}" in states]
        row += [fmt(nme(photos, states, cfg, names), ".2f"), fmt(mean_of(photos, states, cfg, "pixel", names)),
                fmt(mean_of(photos, states, cfg, "identity", names))]
        out.append("| " + " | ".join(row) + " |")
    # 1b. per person: is the gap the person's face, or the shared session (light, camera, skin tone)?
    out.append("\nPer person (render over grey; gap = cosine to own other photos - to other people's):\n")
    out.append("| person | photos | photo gap (ceiling) | landmark stage gap | joint gap |")
    out.append("|---|---|---|---|---|")
    for person in people:
        names = [n for n, p in photos.items() if p["person"] == person]
        if len(names) < 2:
            continue
        cells = [f"{identity_scores_subset(photos, states, c, k, names).get('gap', math.nan):.3f}"
                 for c, k in (("photo", "emb"), ("landmarks", "emb_grey"), ("full", "emb_grey"))]
        out.append(f"| {person} | {len(names)} | " + " | ".join(cells) + " |")
    # 2. ablation on the ablation subset
    sub = [n for n in photos if all(f"{c}/{n}" in states for c in configs)]
    out.append(f"\nAblation ({len(sub)} photos, every configuration on each; identity over grey, shape pairs among these):\n")
    out.append("| configuration | pixel | identity (optimised) | grey: same / other / gap | over photo: gap | shape same / diff / ratio "
               "| NME % | max abs latent | latent rms | ms / iteration |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    sub_photos = {n: photos[n] for n in sub}  # shape pairs among these; other-people cosines over the whole pool
    for cfg in ["landmarks"] + configs:
        g = identity_scores_subset(photos, states, cfg, "emb_grey", sub)
        p = identity_scores_subset(photos, states, cfg, "emb_comp", sub)
        c = shapes.consistency(sub_photos, states, cfg)
        row = [labels.get(cfg, cfg),
               fmt(mean_of(photos, states, cfg, "pixel", sub)), fmt(mean_of(photos, states, cfg, "identity", sub)),
               f"{g['same']:.3f} / {g['other']:.3f} / {g['gap']:.3f}" if g else "-", fmt(p.get("gap") if p else None),
               f"{c['same']:.2f} / {c['diff']:.2f} / {c['ratio']:.3f}" if c else "-",
               fmt(nme(photos, states, cfg, sub), ".2f"), fmt(mean_of(photos, states, cfg, "zmax", sub), ".2f"),
               fmt(mean_of(photos, states, cfg, "zrms", sub), ".2f"),
               fmt(1000 * mean_of(photos, states, cfg, "per_it", sub), ".0f") if cfg != "landmarks" else "-"]
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def identity_scores_subset(photos: dict, states: dict, config: str, key: str, names: list[str]) -> dict:
    """`identity_scores` over the photos `names` only (their mates and strangers from the whole pool)."""
    same, other, gap = [], [], []
    for name in names:
        rec = {"emb": photos[name]["emb"]} if config == "photo" else states.get(f"{config}/{name}")
        mates = [n for n, q in photos.items() if q["person"] == photos[name]["person"] and n != name]
        strangers = [n for n, q in photos.items() if q["person"] != photos[name]["person"]]
        if rec is None or not mates:
            continue
        s = np.mean([cos(rec[key], photos[m]["emb"]) for m in mates])
        o = np.mean([cos(rec[key], photos[m]["emb"]) for m in strangers])
        same.append(s)
        other.append(o)
        gap.append(s - o)
    if not same:
        return {}
    return dict(same=float(np.mean(same)), other=float(np.mean(other)), gap=float(np.mean(gap)))
