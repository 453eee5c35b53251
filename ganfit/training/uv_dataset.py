"""Photos -> a corpus of de-lit UV textures for training texture models (the GAN, the PCA model).

`build_uv_dataset(photos_dir, out_dir)` (or ``sources=`` a list of `uv_sources.PhotoSource`) fits the face
model's geometry to every photo (the landmark stage of `Fitter`), unwraps the photo into the face model's UV
layout, removes the photo's lighting as far as the fit allows (SH light estimated with the fitted shape and
a mean albedo, divided out: `uv_delight`), completes the unseen side by symmetry + Poisson fill
(`ganfit.render.uv_complete`), and writes per accepted photo

- ``NAME.png``: the completed, de-lit UV texture at `resolution`, 8-bit sRGB, row 0 = top (v up);
- ``NAME_mask.png``: the per-texel validity, 8-bit (0: not from the photo (completed) .. 255: seen frontally
  under good light): the unwrap's visibility x the de-lighting's confidence;

Each photo, accepted or rejected, gets one line in ``records.jsonl`` (its manifest entry: source repo,
commit, path in the repo, sha256, licence, identity, train/validation split, the labels the source has
(age, sex, ethnicity), every filter measure, fit error and pose, SH light, left/right asymmetry before and
after de-lighting, skin tone ITA; or the reason it was rejected). ``manifest.json`` gathers them with the
settings and counts; it is rewritten every `manifest_every` photos and at the end.

Which data should a texture GAN train on? **The completed UVs**: GANFit (Gecer et al., CVPR 2019, sec. 3.1)
trains on complete UV maps, and the fitter renders every texel. The masks say which texels are photo and
which are guesses, for filtering, for the PCA's EM (`ganfit.model.texture.linear.build_pca`), for evaluation
on seen texels only.

**Resumable**: a build into a folder that holds ``records.jsonl`` skips the photos recorded there and
rebuilds its duplicate index and per-person counts from them. Recorded measures are judged again with the
current thresholds (`FilterConfig.judge`): an accepted sample that now fails one is rejected (its files
removed, a record line appended: a photo's last line counts), and a photo rejected by a threshold it now
passes, or by the per-person cap, is made again; so thresholds can be changed without refitting. Outputs
are written atomically before their record line, so a killed build loses at most the photo it was working
on. Photos are processed in a fixed,
shuffled, source-interleaved order (`uv_sources.iterate_photos`), so a partial build is a sample of all
sources. Filters and their thresholds: `uv_filters.FilterConfig` / `REASONS`; a bad photo is rejected
with its reason, never an exception.
"""
from __future__ import annotations

import collections
import datetime as _dt
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from .._atomic import atomic_write_text
from ..errors import ConfigError, ImageError, OutputError
from .jsonl import append_jsonl, read_jsonl
from .uv_delight import DelightOptions
from .uv_filters import REASONS, THRESHOLD_REASONS, DuplicateIndex, FilterConfig, hash_distance, perceptual_hash
from .uv_sources import IMAGE_EXTENSIONS, PhotoSource, folder_source, iterate_photos, split_of

log = logging.getLogger(__name__)

__all__ = ["build_uv_dataset", "DatasetReport", "perceptual_hash", "hash_distance", "IMAGE_EXTENSIONS",
           "MANIFEST_FORMAT", "REASONS", "RECORDS", "DEFAULT_MAX_LANDMARK_ERROR", "DEFAULT_MIN_VISIBLE",
           "DEFAULT_DUPLICATE_DISTANCE", "DEFAULT_VALIDATION_FRACTION"]

MANIFEST_FORMAT = "ganfit-uv-dataset"
MANIFEST_VERSION = 2
RECORDS = "records.jsonl"

DEFAULT_MAX_LANDMARK_ERROR = FilterConfig.max_landmark_error
DEFAULT_MIN_VISIBLE = FilterConfig.min_visible
DEFAULT_DUPLICATE_DISTANCE = FilterConfig.duplicate_distance
DEFAULT_VALIDATION_FRACTION = 0.1


@dataclass
class DatasetReport:
    """What `build_uv_dataset` did (this run and the records of earlier runs into the same folder).

    out_dir: the dataset folder; manifest: path of its manifest.json; items: one dict per written UV;
    rejected: one dict per rejected photo (``reason`` a key of `REASONS`, ``message`` the details);
    resumed: photos skipped because an earlier run recorded them; seconds: this run's wall time;
    processed: photos this run looked at.
    """

    out_dir: Path
    manifest: Path
    items: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed: int = 0
    processed: int = 0

    @property
    def written(self) -> int:
        return len(self.items)

    @property
    def by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rejected:
            counts[r["reason"]] = counts.get(r["reason"], 0) + 1
        return dict(sorted(counts.items()))

    @property
    def photos(self) -> int:
        return len(self.items) + len(self.rejected)

    @property
    def rate(self) -> float:
        """Photos per second in this run."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in self.by_reason.items()) or "none"
        resumed = f" ({self.resumed} recorded by an earlier run)" if self.resumed else ""
        return (f"{self.photos} photos{resumed}: {self.written} UV textures in {self.out_dir}, rejected "
                f"{len(self.rejected)} ({reasons}); this run {self.processed} photos in {self.seconds:.0f} s "
                f"({self.rate:.2f} photos/s)")


def _output_name(key: str, taken: set[str]) -> str:
    """A file-name-safe, unique stem for the photo `key` (``source/sub/name.jpg``; parts joined with '__')."""
    parts = list(Path(key).with_suffix("").parts)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(parts)).strip("._") or "photo"
    if name.endswith("_mask"):  # NAME_mask.png is the mask convention; keep UV names distinct from it
        name += "_"
    base, k = name, 2
    while name.lower() in taken:
        name = f"{base}-{k}"
        k += 1
    taken.add(name.lower())
    return name


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def build_uv_dataset(
    photos_dir: str | Path | None,
    out_dir: str | Path,
    *,
    sources: Sequence[PhotoSource] | None = None,
    fitter=None,
    resolution: int = 256,
    filters: FilterConfig | None = None,
    max_landmark_error: float | None = None,
    min_visible: float | None = None,
    duplicate_distance: int | None = None,
    delight: bool = True,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    limit: int | None = None,
    seed: int = 0,
    manifest_every: int = 1000,
    device: str = "auto",
    model: str = "bfm-3ddfa",
    detector: str = "dlib",
    quiet: bool = False,
) -> DatasetReport:
    """Build (or continue building) a UV corpus in `out_dir` from `photos_dir` or `sources` (module doc).

    Args:
        photos_dir: one folder of photos (searched recursively), or None with `sources`.
        sources: photo sources with provenance and labels (`uv_sources.load_sources`).
        fitter: a `Fitter` (its model, detector and landmark stage are used; a texture size > 0 only costs
            time); default one built from `device`, `model` and `detector` with ``texture_size=0``.
        resolution: side of the written square UVs (16..1024), also the unwrap's resolution.
        filters: thresholds (`FilterConfig`); `max_landmark_error`, `min_visible`, `duplicate_distance`
            override its fields.
        delight: remove the lighting (off: the photo's colours are completed as they are).
        validation_fraction: share of identities in the validation split (`uv_sources.split_of`).
        limit: stop after this many new photos (None: all).
        seed: the build order's shuffle.
        manifest_every: rewrite manifest.json after this many photos.
        quiet: no progress bar or progress log lines.
    Returns:
        `DatasetReport`. Raises only for user errors about the whole run (missing folder, no images,
        unwritable output, a face model without UVs); a bad photo is rejected with its reason instead.
    """
    from .. import __version__
    from ..fitting.config import FitConfig
    from ..fitting.fitter import Fitter
    from ..io.images import save_png
    from ..model.texture.base import model_uv_layout_id
    from .uv_sample import Sample, SampleMaker

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    overrides = {k: v for k, v in (("max_landmark_error", max_landmark_error), ("min_visible", min_visible),
                                    ("duplicate_distance", duplicate_distance)) if v is not None}
    filters = FilterConfig(**{**(filters or FilterConfig()).to_dict(), **overrides})
    if not 16 <= int(resolution) <= 1024:
        raise ConfigError(f"resolution must be between 16 and 1024, got {resolution}")
    if not 0 <= validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if sources is None:
        if photos_dir is None:
            raise ConfigError("give a photo folder or a sources file")
        if not Path(photos_dir).is_dir():
            raise ImageError(f"photo folder not found: {photos_dir}")
        sources = [folder_source(photos_dir)]
    sources = list(sources)
    if fitter is None:
        fitter = Fitter(FitConfig(device=device, model=model, detector=detector, quiet=True, texture_size=0))
    face_model = fitter.model
    layout_id = model_uv_layout_id(face_model)  # raises when the model has no UVs
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    photos = iterate_photos(sources, seed=seed, exclude_dir=out_dir.resolve())
    if not photos:
        raise ImageError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in "
                         f"{', '.join(s.root for s in sources)}")

    report = DatasetReport(out_dir=out_dir, manifest=out_dir / "manifest.json")
    duplicates = DuplicateIndex(filters.duplicate_distance)
    taken: set[str] = set()
    done: set[str] = set()
    per_identity: collections.Counter[str] = collections.Counter()  # accepted photos per person
    latest: dict[str, dict] = {}
    for record in read_jsonl(out_dir / RECORDS):  # an earlier run's work; a photo's last line wins
        if isinstance(record.get("key"), str):
            latest[record["key"]] = record
    for key, record in latest.items():
        reason = record.get("reason")
        failed = filters.judge(record) if reason is None or reason in THRESHOLD_REASONS else None
        if reason == "identity_cap" or (reason in THRESHOLD_REASONS and failed is None):
            continue  # made again: the cap or a threshold has changed
        outputs = record.get("outputs") or {}
        if reason is None and not (outputs and all((out_dir / rel).is_file() for rel in outputs.values())):
            continue  # its files are gone: do it again
        if failed and failed[0] != reason:  # the current thresholds reject it (first) for another reason
            for rel in outputs.values():
                (out_dir / rel).unlink(missing_ok=True)
            record = {k: v for k, v in record.items() if k not in ("outputs", "name")}
            record.update(reason=failed[0], message=failed[1])
            append_jsonl(out_dir / RECORDS, record)
            reason = failed[0]
        done.add(key)
        if reason is not None:
            report.rejected.append(record)
        else:
            report.items.append(record)
            per_identity[record["identity"]] += 1
            taken.add(record["name"].lower())
            duplicates.add(record["sha256"], int(record["phash"], 16), record["key"])
    report.resumed = len(done)
    todo = [p for p in photos if p.key not in done]
    if limit is not None:
        todo = todo[: max(0, int(limit))]
    maker = SampleMaker(fitter, int(resolution), filters, DelightOptions() if delight else None)

    settings = {
        "stage": "landmarks", "detector": fitter.config.detector, "device": str(fitter.device),
        "filters": filters.to_dict(), "delight": bool(delight), "validation_fraction": validation_fraction,
        "seed": seed, "visible_threshold": 0.5, "face_size": "sqrt(w*h) of the detected landmarks' bounding box",
    }

    def write_manifest(complete: bool) -> None:
        manifest = {
            "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "complete": complete,
            "ganfit_version": __version__, "created": _now(),
            "sources": [{**s.provenance(), "root": str(Path(s.root).resolve()), "path": s.path} for s in sources],
            "face_model": {"name": face_model.name, "sha256": face_model.checksum(), "uv_layout": layout_id},
            "resolution": [int(resolution)] * 2,
            "training_data": "NAME.png: completed, de-lit UV textures (train the GAN / PCA on these); NAME_mask.png: "
                             "validity of each texel (0 completed .. 1 seen frontally under good light)",
            "settings": settings,
            "counts": {"photos": report.photos, "written": report.written, "rejected": len(report.rejected),
                       "by_reason": report.by_reason,
                       "splits": {s: sum(i.get("split") == s for i in report.items) for s in ("train", "validation")}},
            "reasons": REASONS,
            "items": report.items,
            "rejected": report.rejected,
        }
        atomic_write_text(report.manifest, json.dumps(manifest, indent=1))

    bar = tqdm(todo, desc="UV corpus", unit="photo", disable=quiet, mininterval=5.0)
    complete = False
    t_run = time.perf_counter()
    try:
        for photo in bar:
            who = photo.source.identity_of(photo.rel)
            if filters.max_per_identity is not None and per_identity[who] >= filters.max_per_identity:
                sample = Sample({"key": photo.key, **photo.source.provenance(), "path": photo.source.repo_path(photo.rel),
                                 "identity": who, "reason": "identity_cap",
                                 "message": f"{per_identity[who]} photos of {who} already accepted"})
            else:
                sample = maker.make(photo, duplicates)
            entry = sample.entry
            entry["split"] = split_of(entry["identity"], validation_fraction)
            if sample.accepted:
                name = _output_name(photo.key, taken)
                outputs = {"uv": f"{name}.png", "mask": f"{name}_mask.png"}
                save_png(out_dir / outputs["uv"], sample.uv)
                save_png(out_dir / outputs["mask"], sample.mask)
                entry = {"name": name, **entry, "outputs": outputs}
                report.items.append(entry)
                per_identity[who] += 1
                duplicates.add(entry["sha256"], int(entry["phash"], 16), photo.key)
            else:
                report.rejected.append(entry)
                log.debug("skipped %s: %s (%s)", photo.key, entry["reason"], entry["message"])
            append_jsonl(out_dir / RECORDS, entry)
            report.processed += 1
            bar.set_postfix(written=report.written, rejected=len(report.rejected), refresh=False)
            if manifest_every > 0 and report.processed % manifest_every == 0:
                write_manifest(False)
                if not quiet:
                    rate = report.processed / max(time.perf_counter() - t_run, 1e-9)
                    log.info("%d/%d photos this run (%.2f photos/s); corpus: %d written, %d rejected (%s)",
                             report.processed, len(todo), rate, report.written, len(report.rejected),
                             ", ".join(f"{k} {v}" for k, v in report.by_reason.items()))
        complete = len(done) + report.processed == len(photos)
    finally:
        bar.close()
        report.seconds = time.perf_counter() - t_start
        try:
            write_manifest(complete)
        except OutputError:
            if complete:
                raise
    if not quiet:
        log.info(report.summary())
    return report

