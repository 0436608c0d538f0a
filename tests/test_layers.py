"""The code's shape (../shared/DESIGN.md): higher layers import lower ones,
never the reverse, and packages of one layer do not import each other. Every
import counts, including those inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import forebay

ROOT = Path(forebay.__file__).parent

# Lowest first. A package may import its own modules and any package of a lower rank.
RANKS = {
    "errors": 0,
    "config": 1,
    "db": 2,
    "telemetry": 2,
    "planner": 2,
    "tenancy": 3,
    "ledger": 3,
    "state": 4,
    "sim": 4,
    "upstreams": 4,
    "protocols": 5,
    "cache": 6,
    "gateway": 7,
    "api": 8,
    "dashboard": 8,
    "app": 9,
    "cli": 10,
    "__main__": 11,
}


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "forebay" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def test_every_package_has_a_rank() -> None:
    packages = {_package_of(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    assert packages <= set(RANKS), f"give these a layer in RANKS: {packages - set(RANKS)}"


def test_no_import_runs_back_up_the_layers() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        mine = _package_of(path)
        if mine == "__init__":
            continue
        for line, target in _imports(path):
            if target == mine:
                continue
            if RANKS[target] >= RANKS[mine]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports forebay.{target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_empty_package() -> None:
    empty = [
        d.relative_to(ROOT)
        for d in ROOT.rglob("*")
        if d.is_dir()
        and (d / "__init__.py").exists()
        and not [p for p in d.iterdir() if p.suffix == ".py" and p.name != "__init__.py"]
        and not [p for p in d.iterdir() if p.is_dir() and p.name != "__pycache__"]
    ]
    assert not empty, f"packages without a module: {empty}"
