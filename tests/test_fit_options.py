"""`FitConfig.threads` / `--threads`, `FitConfig.detector_upsample` / `--detector-upsample`, and the
progress shown during slow steps (texture bar, notices of one-off work)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganfit import FitConfig, Fitter
from ganfit._notices import NOTICES, notice
from ganfit.cli.main import main
from ganfit.errors import ConfigError, NoFaceError
from ganfit.fitting.synthetic import make_synthetic_faces
from ganfit.perception.detect import Detection, select_face

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"


class _RecordingDetector:
    """Finds the face of a synthetic fit (or none) and records torch's thread count when asked."""

    backend = "fake"

    def __init__(self, landmarks: np.ndarray | None) -> None:
        self.landmarks = landmarks
        self.threads: list[int] = []

    def detect(self, pixels: np.ndarray) -> list[Detection]:
        self.threads.append(torch.get_num_threads())
        if self.landmarks is None:
            return []
        box = np.r_[self.landmarks.min(0), self.landmarks.max(0)]
        return [Detection(box=box, score=1.0, landmarks=self.landmarks, backend=self.backend)]


@pytest.fixture
def face_landmarks(tiny_model) -> np.ndarray:
    syn = make_synthetic_faces(tiny_model, 1, torch.Generator().manual_seed(0), noise_px=0.0, yaw_deg=10,
                               pitch_deg=5, roll_deg=2)
    return syn.landmarks[0].numpy()


@pytest.fixture
def ambient_threads():
    """torch at 3 threads (neither the default 1 nor this machine's 2) for the test, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


GREY = np.full((256, 256, 3), 0.5, np.float32)


# ------------------------------------------------------------------------------------------ threads
@pytest.mark.parametrize(("threads", "inside"), [(1, 1), (2, 2), (None, 3)])
def test_threads_apply_during_the_fit_and_are_restored(tiny_model, face_landmarks, ambient_threads, threads, inside):
    detector = _RecordingDetector(face_landmarks)
    cfg = FitConfig(device="cpu", quiet=True, texture_size=0, threads=threads)
    result = Fitter(cfg, model=tiny_model, detector=detector).fit(GREY)
    assert detector.threads == [inside] and torch.get_num_threads() == ambient_threads
    assert result.reprojection_error_px().item() < 1.0


def test_threads_restored_when_the_fit_fails(tiny_model, ambient_threads):
    detector = _RecordingDetector(None)
    with pytest.raises(NoFaceError):
        Fitter(FitConfig(device="cpu", quiet=True, threads=1), model=tiny_model, detector=detector).fit(GREY)
    assert detector.threads == [1] and torch.get_num_threads() == ambient_threads


def test_default_is_one_thread():
    assert FitConfig().threads == 1 and FitConfig.from_dict({"threads": None}).threads is None


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "2"])
def test_bad_thread_counts_refused(value):
    with pytest.raises(ConfigError, match="threads"):
        FitConfig(threads=value)
    with pytest.raises(ConfigError, match="threads"):
        FitConfig.from_dict({"threads": value})


def test_cli_threads_reach_the_config_and_bad_ones_exit_2(capsys):
    assert main(["fit", str(PHOTO), "-o", "unused/face.obj", "--threads", "0", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ganfit: error: threads must be") and err.count("\n") == 1
    assert "--threads N" in _fit_help(capsys)


def _fit_help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["fit", "-h"])
    return capsys.readouterr().out


# ------------------------------------------------------------------------------- detector upsample
def test_no_face_message_names_the_cli_option():
    with pytest.raises(NoFaceError, match=r"raise --detector-upsample .*--detector fan.*--landmarks"):
        select_face([], source="photo.jpg")


@pytest.mark.parametrize("value", [-1, 4, 1.0, False])
def test_bad_detector_upsample_refused(value):
    with pytest.raises(ConfigError, match="detector_upsample must be 0, 1, 2 or 3"):
        FitConfig(detector_upsample=value)


def test_cli_offers_detector_upsample(capsys):
    assert "--detector-upsample N" in _fit_help(capsys)
    assert main(["fit", str(PHOTO), "-o", "unused/face.obj", "--detector-upsample", "7", "-q"]) == 2
    assert "detector_upsample must be" in capsys.readouterr().err


@pytest.mark.assets
def test_detector_upsample_reaches_the_detector(bfm):
    # the astronaut at 256 px has a ~45 px face: found only by the detector's upsampled pass
    small = np.asarray(Image.open(PHOTO).convert("RGB").resize((256, 256), Image.Resampling.LANCZOS))
    none = Fitter(FitConfig(device="cpu", quiet=True, detector_upsample=0), model=bfm)
    assert none.detector.upsample == 0
    with pytest.raises(NoFaceError, match="--detector-upsample"):
        none.fit(small)
    default = Fitter(FitConfig(device="cpu", quiet=True), model=bfm)
    assert default.detector.upsample == 1 and len(default.detector.detect(small)) == 1


# ----------------------------------------------------------------------------------------- progress
def test_texture_progress_bar_names_its_steps_unless_quiet(tiny_model, face_landmarks, capsys):
    for quiet in (False, True):
        Fitter(FitConfig(device="cpu", quiet=quiet, texture_size=64), model=tiny_model,
               detector=_RecordingDetector(face_landmarks)).fit(GREY)
        err = capsys.readouterr().err
        if quiet:
            assert err == ""
        else:
            assert "fit: texture" in err and "UV layout" in err and "completion" in err


def test_cli_prints_notices_unless_quiet(capsys):
    try:
        main(["fit", str(PHOTO), "-o", "unused/face.obj", "--threads", "0"])  # fails early, after the setup
        capsys.readouterr()
        notice("building something slow (once, ~5 s)...")
        assert capsys.readouterr().err == "ganfit: building something slow (once, ~5 s)...\n"
        main(["fit", str(PHOTO), "-o", "unused/face.obj", "--threads", "0", "-q"])
        capsys.readouterr()
        notice("not shown under -q")
        assert capsys.readouterr().err == ""
    finally:
        logging.getLogger(NOTICES).propagate = True


@pytest.mark.assets
@pytest.mark.slow
def test_triangulation_build_is_announced(bfm, caplog):
    from ganfit.assets import asset_path
    from ganfit.model.loaders.bfm3ddfa import load_bfm_3ddfa

    logger = logging.getLogger(NOTICES)  # caplog's handler on it directly: an earlier CLI run may have
    before = logger.level                # stopped its records from reaching the root logger
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    try:
        load_bfm_3ddfa(asset_path("bfm-3ddfa"), cache=False)  # builds it (~5 s), as the first fit does
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(before)
    assert any(r.name == NOTICES and "triangulation" in r.getMessage() and "once" in r.getMessage()
               for r in caplog.records)
