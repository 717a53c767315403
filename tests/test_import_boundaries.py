"""The device side must not depend on host-only frameworks.

Boards install ``edge_runtime`` without torch, TensorFlow or the
``converters`` package, so neither a static import nor an import pulled in
at run time may reach them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "edge_runtime"
FORBIDDEN = ("torch", "torchvision", "timm", "tensorflow", "tf_keras", "keras", "converters")


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_source_has_no_host_imports(path: Path) -> None:
    forbidden = _imported_roots(path) & set(FORBIDDEN)
    assert not forbidden, f"{path} imports host-only packages: {sorted(forbidden)}"


def test_importing_every_module_loads_no_host_framework() -> None:
    script = f"""
import importlib, json, pkgutil, sys
import edge_runtime
for info in pkgutil.walk_packages(edge_runtime.__path__, "edge_runtime."):
    if info.name.endswith("__main__"):
        continue
    importlib.import_module(info.name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {list(FORBIDDEN)!r})))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
