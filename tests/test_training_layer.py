"""`ganfit.training` sits above model, render, perception, fitting and io: none of them imports it."""
from __future__ import annotations

import ast
from pathlib import Path

import ganfit

ROOT = Path(ganfit.__file__).parent
LOWER = ("model", "render", "perception", "fitting", "io", "assets")


def _imported_modules(path: Path) -> set[str]:
    package = ".".join(("ganfit", *path.relative_to(ROOT).with_suffix("").parts[:-1]))
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def test_lower_packages_do_not_import_training():
    offenders = []
    for sub in LOWER:
        for path in sorted((ROOT / sub).rglob("*.py")):
            bad = sorted(m for m in _imported_modules(path) if m == "ganfit.training" or m.startswith("ganfit.training."))
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {bad}")
    assert not offenders, offenders


def test_the_import_resolver_sees_relative_imports():
    # the check above would pass vacuously if relative imports were resolved wrongly
    mods = _imported_modules(ROOT / "training" / "texture_gan.py")
    assert "ganfit.model.texture.pggan" in mods and "ganfit.training.checkpoint" in mods
