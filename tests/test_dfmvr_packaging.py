"""dfmvr is installed next to ganfit and sits above it: importing ganfit (its API, fitting and CLI) never imports
dfmvr, and dfmvr's modules import only torch and ganfit."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dfmvr

ROOT = Path(__file__).resolve().parents[1]


def test_ganfit_never_imports_dfmvr():
    code = ("import sys, ganfit, ganfit.fitting, ganfit.render, ganfit.model, ganfit.training, ganfit.cli.main; "
            "print('dfmvr' in sys.modules or any(m.startswith('dfmvr.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_dfmvr_is_the_repository_package_and_imports_only_torch_and_ganfit():
    assert Path(dfmvr.__file__).resolve().parent == ROOT / "dfmvr"
    for path in (ROOT / "dfmvr").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in {"torch", "ganfit", "__future__", "dataclasses", "pathlib", "time", "typing"}, (path.name, name)
