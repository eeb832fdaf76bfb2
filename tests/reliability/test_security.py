"""Unsafe deserialisation and exposed servers, checked on the source text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("genlab", "reports") for p in (ROOT / d).rglob("*.py"))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is(node: ast.AST | None, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(source: str) -> list[str]:
    """torch.load without weights_only=True, numpy.load without allow_pickle=False, any pickle load, and
    ``from torch/numpy import load`` (which would hide a call from this check)."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "numpy", "pickle") and \
                any(a.name in ("load", "loads") for a in node.names):
            bad.append(f"line {node.lineno}: from {node.module} import load")
        if not isinstance(node, ast.Call):
            continue
        name, kw = _dotted(node.func), {k.arg: k.value for k in node.keywords}
        if name == "torch.load" and not _is(kw.get("weights_only"), True):
            bad.append(f"line {node.lineno}: torch.load without weights_only=True")
        elif name in ("np.load", "numpy.load") and not _is(kw.get("allow_pickle"), False):
            bad.append(f"line {node.lineno}: {name} without allow_pickle=False")
        elif name in ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads"):
            bad.append(f"line {node.lineno}: {name}")
    return bad


def test_the_checker_catches_unsafe_calls():
    assert unsafe_loads("import torch\ntorch.load(p)") and unsafe_loads("torch.load(p, weights_only=False)")
    assert unsafe_loads("np.load(f)") and unsafe_loads("numpy.load(f, allow_pickle=True)")
    assert unsafe_loads("pickle.loads(b)") and unsafe_loads("from torch import load")
    assert not unsafe_loads("torch.load(p, map_location='cpu', weights_only=True)\nnp.load(f, allow_pickle=False)")


def test_genlab_reads_checkpoints_and_arrays_safely():
    assert SOURCES, "no sources found"
    found = {str(p.relative_to(ROOT)): unsafe_loads(p.read_text()) for p in SOURCES}
    assert not {k: v for k, v in found.items() if v}
    assert any("torch.load(" in p.read_text() for p in SOURCES)  # the check looked at real loads


def test_make_ui_binds_localhost_only():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^ui:.*\n((?:\t.*\n?)+)", makefile, re.M)
    assert recipe and "mlflow ui" in recipe.group(1)
    servers = [line for line in makefile.splitlines() if re.search(r"mlflow (ui|server)|--host", line)]
    assert servers and all("--host 127.0.0.1" in line for line in servers), servers
    assert "0.0.0.0" not in makefile
