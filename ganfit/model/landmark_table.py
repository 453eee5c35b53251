"""Calibrated landmark-to-vertex tables: which model vertex a detector's landmark is.

A detector's 68 points follow its training annotations (dlib and 2D-FAN: iBUG 300-W), not the model's
landmark vertices. A table learned on real photos (`benchmarks/calibrate_landmarks.py`) maps each point to
the vertex whose projection, over thousands of fitted photos, lands closest to the detected point. Tables
ship as package data, ``ganfit/data/landmark_table_<model>_<detector>.json``, and are bound to the model by
the sha256 of its mean shape: another model (or another version of it) never gets a table it was not
learned for.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .morphable import MorphableModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LandmarkTable:
    """vertices: (68,) model vertex ids; name: a label for logs and face.json; source: how it was learned."""

    vertices: np.ndarray
    name: str
    source: str


def mean_shape_sha256(model: MorphableModel) -> str:
    """sha256 of the model's mean shape as float32 (what a table is bound to)."""
    return hashlib.sha256(np.ascontiguousarray(model.mean, dtype=np.float32).tobytes()).hexdigest()


def calibrated_table(model: MorphableModel, detector: str = "dlib") -> LandmarkTable | None:
    """The shipped table of `detector`'s points on `model`, or None when none was learned for this model."""
    name = f"landmark_table_{model.name}_{detector}.json"
    try:
        text = resources.files("ganfit").joinpath("data", name).read_text()
    except (FileNotFoundError, OSError):
        return None
    doc = json.loads(text)
    if doc.get("model_mean_sha256") != mean_shape_sha256(model):
        log.info("landmark table %s was learned for another version of %s; using the model's own vertices", name, model.name)
        return None
    vertices = np.asarray(doc["vertices"], dtype=np.int64)
    if vertices.shape != (68,) or vertices.min() < 0 or vertices.max() >= model.num_vertices:
        return None
    learned = doc.get("learned_on", {})
    return LandmarkTable(vertices=vertices, name=f"calibrated ({detector})",
                         source=f"{learned.get('photos', '?')} photos of {learned.get('people', '?')} people, {learned.get('data', '')}")


def model_table(model: MorphableModel) -> LandmarkTable:
    """The model's own landmark vertices."""
    return LandmarkTable(vertices=np.asarray(model.landmark_indices, dtype=np.int64), name="model", source=model.name)
