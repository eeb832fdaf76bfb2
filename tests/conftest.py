"""Shared fixtures: a throw-away MLflow store per test, and the real data set when it is installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store in a temporary working directory; returns its URI."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    from genlab import tracking

    tracking.init_store()
    return uri


@pytest.fixture
def fashion_mnist_dir() -> Path:
    from genlab import data

    try:
        return data.find_dataset_dir("fashion-mnist")
    except data.DataError as e:
        pytest.skip(f"Fashion-MNIST files absent: {e}")


def genlab_cmd(*args: str) -> list[str]:
    """The command line of the genlab CLI run by this interpreter (for subprocess tests)."""
    return [sys.executable, "-m", "genlab", *args]
