"""Helpers for the reliability suite: a store shared by a module, isolation from installed data, run checks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from ..conftest import store_in

# Run in a subprocess as `python -c PRELUDE genlab-args...`: the CLI, with the data look-up cut off from any
# installed copy (Debian dir, project ./data) and from the network, so "missing files offline" is real.
PRELUDE = """
import os, sys
from pathlib import Path
from genlab import cli, data
root = Path(os.environ["GENLAB_TEST_ROOT"])
data.DEBIAN_DIRS = {k: str(root / "no-debian" / k) for k in data.DEBIAN_DIRS}
data.PROJECT_ROOT = root / "project"
data.MIRRORS = {k: ["http://127.0.0.1:9/"] for k in data.MIRRORS}
sys.exit(cli.main(sys.argv[1:]))
"""


def isolate_data(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """The in-process twin of PRELUDE."""
    from genlab import data

    monkeypatch.setattr(data, "DEBIAN_DIRS", {k: str(root / "no-debian" / k) for k in data.DEBIAN_DIRS})
    monkeypatch.setattr(data, "PROJECT_ROOT", root / "project")
    monkeypatch.setattr(data, "MIRRORS", {k: ["http://127.0.0.1:9/"] for k in data.MIRRORS})


def isolated_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", PRELUDE, *args]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory, empty_store_file) -> str:
    """One SQLite store for a whole module (creating one costs about a second); returns its URI.
    Tests compare what is in it before and after each case."""
    with store_in(tmp_path_factory.mktemp("store"), empty_store_file) as uri:
        yield uri


def all_runs(uri: str) -> list:
    """Every run of every experiment in the store (deleted ones too)."""
    client = MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    if not experiments:
        return []
    return client.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL, max_results=10000)


def running(uri: str) -> list[str]:
    return [r.info.run_id for r in all_runs(uri) if r.info.status == "RUNNING"]


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env.pop("GENLAB_DEBUG", None)
    return env
