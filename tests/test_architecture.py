"""The shape the code promises (docs/architecture.md), checked on the source: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("genlab", "reports")


def imports_of(path: Path) -> set[str]:
    """Every module name an ``import`` or ``from ... import`` of this file names (function-level ones too), with
    ``from genlab import tracking`` read as ``genlab.tracking``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def importers(modules: tuple[str, ...], *folders: str) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in sources(*folders)
            if any(n == m or n.startswith(f"{m}.") for n in imports_of(p) for m in modules)]


def test_only_tracking_imports_mlflow():
    assert importers(("mlflow",), *PACKAGES) == ["genlab/tracking.py"]


@pytest.mark.parametrize("folder, forbidden", [
    ("genlab/train", ("genlab.tracking", "genlab.runs", "genlab.entries", "genlab.study", "genlab.search", "reports")),
    ("genlab/models", ("genlab.tracking", "genlab.runs", "genlab.train", "genlab.entries", "reports")),
    ("genlab/runs", ("genlab.study", "genlab.search", "reports")),
], ids=["loops know no tracking", "models know no loops", "runs know no study"])
def test_layers(folder, forbidden):
    assert importers(forbidden, folder) == []


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """A control: the scan finds an import inside a function, the form the entry modules use for tracking."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from genlab import tracking\n    return tracking\n")
    assert "genlab.tracking" in imports_of(bad)


def test_device_choices_are_spelled_once():
    spelled = [str(p.relative_to(ROOT)) for p in sources("genlab") if '"auto", "cpu", "cuda"' in p.read_text()]
    assert spelled == ["genlab/configs.py"]
