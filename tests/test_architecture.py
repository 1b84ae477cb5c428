"""Issue #15: the house's rules, checked rather than hoped for.

The floors are import-linter contracts in pyproject.toml (docs/ARCHITECTURE.md draws them); the rest are
rules import-linter cannot state: ctypes lives in one module, every error in errors.py, every file a user
keeps written through files.atomic_write.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pocket_ggml"


def _modules() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_imports_never_climb_a_floor():
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 2 kept, 0 broken." in r.stdout, r.stdout


def test_ctypes_and_ggml_only_in_the_binding():
    """ggml-python is imported once, by the binding, which sets its environment up and fixes its
    restypes before anyone calls it; every other module takes `ggml` from there."""
    for low_level in ("ctypes", "ggml"):
        users = sorted(str(p.relative_to(ROOT)) for p, tree in _modules().items() if low_level in _imported(tree))
        assert users == ["pocket_ggml/ggml_binding.py"], (low_level, users)


def test_every_pocket_error_lives_in_errors_py():
    errors = ast.parse((PACKAGE / "errors.py").read_text())
    family = {node.name for node in errors.body if isinstance(node, ast.ClassDef)}
    assert "PocketError" in family
    elsewhere = []
    for path, tree in _modules().items():
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                if bases & family:
                    elsewhere.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not elsewhere, elsewhere


def test_one_atomic_writer():
    """Only files.py (atomic_write, atomic_folder) renames a finished result over its destination."""
    renames = []
    for path, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("replace", "rename") and isinstance(node.func.value, ast.Name):
                    if node.func.value.id == "os":
                        renames.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert {r.split(":")[0] for r in renames} == {"pocket_ggml/files.py"}, renames
