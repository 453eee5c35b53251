"""Where `find_arcface_weights` looks: explicit path > registered ganfit asset > ~/.insightface/models packs
(buffalo_l, antelopev2, then any pack with a recognition .onnx). A fake home folder; the .onnx files here are
placeholders (the lookup never reads them; loading a real one is in test_arcface.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ganfit.errors import AssetError
from ganfit.perception.identity import find_arcface_weights
from ganfit.perception.identity.arcface_weights import find_recognition_onnx, insightface_models_dir


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fake user home (``~``) with an empty ganfit cache and no insightface asset variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GANFIT_HOME", str(tmp_path / "ganfit-cache"))
    monkeypatch.delenv("GANFIT_INSIGHTFACE_BUFFALO_L", raising=False)
    monkeypatch.delenv("GANFIT_INSIGHTFACE_ANTELOPEV2", raising=False)
    return home


def pack(home: Path, name: str, *files: str, nested: bool = False) -> Path:
    folder = home / ".insightface" / "models" / name
    inner = folder / name if nested else folder
    inner.mkdir(parents=True, exist_ok=True)
    for f in files:
        (inner / f).write_bytes(b"onnx placeholder")
    return folder


BUFFALO_L = ("1k3d68.onnx", "2d106det.onnx", "det_10g.onnx", "genderage.onnx", "w600k_r50.onnx")
ANTELOPEV2 = ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "glintr100.onnx", "scrfd_10g_bnkps.onnx")


def test_models_dir_is_insightfaces_default_root(home):
    assert insightface_models_dir() == home / ".insightface" / "models"


def test_buffalo_l_is_preferred_to_antelopev2(home):
    b = pack(home, "buffalo_l", *BUFFALO_L)
    pack(home, "antelopev2", *ANTELOPEV2, nested=True)
    found = find_arcface_weights()
    assert found.path == b / "w600k_r50.onnx" and found.origin == "insightface pack buffalo_l"


def test_antelopev2_as_its_zip_unpacks(home):
    a = pack(home, "antelopev2", *ANTELOPEV2, nested=True)   # antelopev2.zip holds antelopev2/*.onnx
    pack(home, "buffalo_l")                                  # an empty buffalo_l folder is passed over
    found = find_arcface_weights()
    assert found.path == a / "antelopev2" / "glintr100.onnx"
    assert any("buffalo_l: holds no .onnx" in s for s in found.looked)


def test_any_other_pack_with_a_recognition_network(home):
    pack(home, "buffalo_s", "det_500m.onnx", "w600k_mbf.onnx")   # MobileFaceNet: not an iresnet, skipped
    c = pack(home, "custom", "det_10g.onnx", "my_r100.onnx")
    found = find_arcface_weights()
    assert found.path == c / "my_r100.onnx" and found.origin == "insightface pack custom"
    assert find_recognition_onnx(home / ".insightface" / "models" / "buffalo_s") is None


def test_a_loose_onnx_in_the_models_folder(home):
    models = home / ".insightface" / "models"
    models.mkdir(parents=True)
    (models / "w600k_r50.onnx").write_bytes(b"x")
    assert find_arcface_weights().path == models / "w600k_r50.onnx"


def test_registered_asset_beats_insightface_home(home, tmp_path):
    from ganfit.assets import set_user_path

    pack(home, "buffalo_l", *BUFFALO_L)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "glintr100.onnx").write_bytes(b"x")
    set_user_path("insightface-antelopev2", mine)
    found = find_arcface_weights()
    assert found.path == mine and found.origin == "asset insightface-antelopev2"


def test_broken_registered_asset_is_an_error_not_skipped(home, tmp_path, monkeypatch):
    pack(home, "buffalo_l", *BUFFALO_L)
    monkeypatch.setenv("GANFIT_INSIGHTFACE_BUFFALO_L", str(tmp_path / "gone"))
    with pytest.raises(AssetError, match=r"does not exist.*--unset"):
        find_arcface_weights()


def test_explicit_path_beats_everything(home, tmp_path):
    pack(home, "buffalo_l", *BUFFALO_L)
    mine = tmp_path / "backbone.pth"
    mine.write_bytes(b"x")
    assert find_arcface_weights(mine).path == mine
    assert find_arcface_weights(str(mine)).origin == "explicit path"
    with pytest.raises(AssetError, match="do not exist"):
        find_arcface_weights(tmp_path / "nope.onnx")


def test_a_pack_name_means_insightfaces_folder(home):
    a = pack(home, "antelopev2", *ANTELOPEV2)
    assert find_arcface_weights("antelopev2").path == a
    with pytest.raises(AssetError, match=r"neither a path nor an insightface pack"):
        find_arcface_weights("buffalo_m")


def test_nothing_found_lists_every_place_and_how_to_provide(home):
    pack(home, "buffalo_sc", "det_500m.onnx", "w600k_mbf.onnx")
    with pytest.raises(AssetError) as err:
        find_arcface_weights()
    msg = str(err.value)
    models = home / ".insightface" / "models"
    for place in ("explicit path: none given", "ganfit asset insightface-buffalo-l: not set",
                  "ganfit asset insightface-antelopev2: not set", f"{models / 'buffalo_l'}: does not exist",
                  f"{models / 'antelopev2'}: does not exist", "other packs: buffalo_sc"):
        assert place in msg, place
    for how in ("buffalo_l.zip", f"{models / 'buffalo_l'}", "ganfit assets path insightface-buffalo-l --set",
                "GANFIT_INSIGHTFACE_BUFFALO_L", "--identity-weights"):
        assert how in msg, how
