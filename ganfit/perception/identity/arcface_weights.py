"""Where ArcFace weights come from: a path the user gives, the ganfit assets, or insightface's own folder.

Lookup order of `find_arcface_weights` (the first that holds a network wins):

1. an explicit ``weights`` path (an ``.onnx``, an arcface_torch ``.pth``, or a pack folder); a bare pack
   name such as ``"antelopev2"`` that is not an existing path means ``<insightface root>/models/<name>``;
2. the user-registered ganfit assets ``insightface-buffalo-l``, then ``insightface-antelopev2``
   (``ganfit assets path NAME --set FOLDER`` or ``$GANFIT_INSIGHTFACE_BUFFALO_L`` / ``..._ANTELOPEV2``);
3. insightface's model folder, ``~/.insightface/models`` (insightface's fixed default ``root``:
   ``FaceAnalysis(root='~/.insightface')``, ``model_zoo.get_model``, ``utils/storage.py``; insightface reads no
   environment variable for it): the ``buffalo_l`` pack, then ``antelopev2``, then any other pack folder
   (alphabetically) holding a recognition ``.onnx``, then a recognition ``.onnx`` lying in ``models/``
   itself (where ``model_zoo.get_model('w600k_r50.onnx', download=True)`` puts one).

A recognition ``.onnx`` is one of `PACK_ONNX`, else a pack's only ``.onnx`` that is not one of insightface's
detection / landmark / attribute networks (`NOT_RECOGNITION`) nor a MobileFaceNet (``*mbf*``, the
buffalo_s/buffalo_sc recogniser, which is not an iresnet). Nothing here reads or hashes the files: a found
file that is not an iresnet fails later, when `load_iresnet` reads it, with its own `ModelFormatError`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import AssetError

__all__ = [
    "ArcFaceWeights", "INSIGHTFACE_PACKS", "NOT_RECOGNITION", "PACK_ONNX", "find_arcface_weights",
    "find_recognition_onnx", "insightface_models_dir",
]

#: ArcFace networks inside the insightface packs, in order of preference (buffalo_l, antelopev2).
PACK_ONNX = ("w600k_r50.onnx", "glintr100.onnx")
#: insightface packs tried first, in this order, under ``~/.insightface/models``.
INSIGHTFACE_PACKS = ("buffalo_l", "antelopev2")
#: name prefixes of the packs' other networks (detection, 2D/3D landmarks, gender/age, face swap).
NOT_RECOGNITION = ("det_", "scrfd", "retinaface", "1k3d68", "2d106det", "genderage", "inswapper")
#: the ganfit user-path assets for the packs, in order of preference.
PACK_ASSETS = ("insightface-buffalo-l", "insightface-antelopev2")

_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7/"


@dataclass(frozen=True)
class ArcFaceWeights:
    """Where `find_arcface_weights` found a network.

    path: the file or pack folder to give `load_iresnet`. origin: how it was found ("explicit path",
    "asset insightface-buffalo-l", "insightface pack buffalo_l", ...). looked: every place looked at before,
    with why it did not serve, in order.
    """

    path: Path
    origin: str
    looked: tuple[str, ...] = ()


def insightface_models_dir() -> Path:
    """insightface's model folder: ``~/.insightface/models`` (its default ``root`` plus ``models``)."""
    return Path("~/.insightface").expanduser() / "models"


def _is_recognition(path: Path) -> bool:
    name = path.name.lower()
    return (path.suffix.lower() == ".onnx" and not name.startswith(NOT_RECOGNITION) and "mbf" not in name)


def find_recognition_onnx(folder: str | os.PathLike) -> Path | None:
    """The ArcFace ``.onnx`` in a pack folder (or one folder below it, as antelopev2.zip unpacks), or None.

    One of `PACK_ONNX` first; otherwise the only recognition candidate (see the module docstring), None when
    there are none or several.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for name in PACK_ONNX:
        for cand in (folder / name, *sorted(folder.glob(f"*/{name}"))):
            if cand.is_file():
                return cand
    for level in (folder.glob("*.onnx"), folder.glob("*/*.onnx")):
        found = sorted(p for p in level if p.is_file() and _is_recognition(p))
        if len(found) == 1:
            return found[0]
        if found:
            return None
    return None


def _pack_problem(folder: Path) -> str:
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "is not a folder"
    onnx = sorted(p.name for p in (*folder.glob("*.onnx"), *folder.glob("*/*.onnx")))
    if not onnx:
        return "holds no .onnx file"
    return f"holds no single ArcFace network (found {', '.join(onnx)}; looked for {', '.join(PACK_ONNX)})"


def _explicit(weights: str | os.PathLike, root: Path) -> ArcFaceWeights:
    p = Path(weights).expanduser()
    if p.exists():
        return ArcFaceWeights(p, "explicit path")
    text = str(weights)
    if text and os.sep not in text and "/" not in text and not p.suffix:
        pack = root / text
        if pack.is_dir():
            return ArcFaceWeights(pack, f"insightface pack {text} (named)")
        raise AssetError(
            f"ArcFace weights {text!r}: neither a path nor an insightface pack in {root} ({pack} "
            f"{_pack_problem(pack)})")
    raise AssetError(f"ArcFace weights {p} do not exist")


def _from_assets(looked: list[str]) -> ArcFaceWeights | None:
    from ...assets.sources import asset_path, status

    for name in PACK_ASSETS:
        st = status([name])[0]
        if st.state == "not-set":
            looked.append(f"ganfit asset {name}: not set")
            continue
        try:
            path = asset_path(name)
        except AssetError as exc:
            # a path the user registered is broken: say so rather than quietly using another network
            raise AssetError(f"{exc}; fix it, or forget it with `ganfit assets path {name} --unset`") from exc
        return ArcFaceWeights(path, f"asset {name}", tuple(looked))
    return None


def _from_insightface(root: Path, looked: list[str]) -> ArcFaceWeights | None:
    for pack in INSIGHTFACE_PACKS:
        folder = root / pack
        onnx = find_recognition_onnx(folder)
        if onnx is not None:
            return ArcFaceWeights(onnx, f"insightface pack {pack}", tuple(looked))
        looked.append(f"{folder}: {_pack_problem(folder)}")
    others = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in INSIGHTFACE_PACKS) \
        if root.is_dir() else []
    for folder in others:
        onnx = find_recognition_onnx(folder)
        if onnx is not None:
            return ArcFaceWeights(onnx, f"insightface pack {folder.name}", tuple(looked))
    if root.is_dir():
        loose = [root / n for n in PACK_ONNX if (root / n).is_file()]
        if loose:
            return ArcFaceWeights(loose[0], "insightface models folder", tuple(looked))
        names = ", ".join(p.name for p in others) or "none"
        looked.append(f"{root}: no other pack with an ArcFace .onnx (other packs: {names}) and no loose "
                      f"{' or '.join(PACK_ONNX)}")
    else:
        looked.append(f"{root}: does not exist")
    return None


def find_arcface_weights(weights: str | os.PathLike | None = None) -> ArcFaceWeights:
    """ArcFace weights by the module's lookup order.

    Args:
        weights: an explicit path (file or pack folder) or insightface pack name; None to look for one.
    Raises:
        AssetError: an explicit path that does not exist, a registered asset path that is broken, or nothing
            found anywhere (the message lists every place looked and how to provide weights).
    """
    root = insightface_models_dir()
    if weights is not None:
        return _explicit(weights, root)
    looked: list[str] = ["explicit path: none given (identity_weights / --identity-weights / weights=)"]
    found = _from_assets(looked) or _from_insightface(root, looked)
    if found is not None:
        return found
    raise AssetError(
        "no ArcFace weights found; looked at: " + "; ".join(looked) + ". To provide them: download an "
        "insightface pack (buffalo_l.zip with w600k_r50.onnx, or antelopev2.zip with glintr100.onnx) from "
        f"{_RELEASE} (non-commercial research licence) and unzip it where insightface keeps it ({root}/buffalo_l), "
        "or run `ganfit assets path insightface-buffalo-l --set FOLDER` (or set "
        "GANFIT_INSIGHTFACE_BUFFALO_L=FOLDER), or pass weights=PATH / --identity-weights PATH (an .onnx file, "
        "a pack folder, or an arcface_torch backbone .pth)")
