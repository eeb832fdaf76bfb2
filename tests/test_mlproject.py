"""MLproject: every entry point of genlab.entries.ENTRIES, with its config's parameters; and end to end through
`mlflow run` (the way users launch entry points)."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from genlab.entries import ENTRIES

from .conftest import image_steps

ROOT = Path(__file__).resolve().parents[1]
MLFLOW_TYPES = {"int": "float", "float": "float", "str": "string"}  # MLflow has no integer parameter type
# Defaults that differ on purpose: `mlflow run` starts in the project folder, so the search's SQLite file is relative.
RELATIVE_DEFAULTS = {("search", "storage"): "sqlite:///optuna.db"}


def mlproject() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


def test_mlproject_has_exactly_the_entries():
    assert sorted(mlproject()) == sorted(entry.name for entry in ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry.name for entry in ENTRIES])
def test_mlproject_entry_is_its_config(entry):
    """Each config field is a parameter of the same type and default, passed as its flag to the entry's command;
    nothing else is. A parameter without a default is one the user must give (a config default of "")."""
    spec = mlproject()[entry.name]
    fields = dataclasses.fields(entry.config)
    assert list(spec["parameters"]) == [f.name for f in fields]
    for f in fields:
        parameter, where = spec["parameters"][f.name], f"{entry.name}.{f.name}"
        assert parameter["type"] == MLFLOW_TYPES[f.type], where
        if "default" not in parameter:
            assert f.default == "", f"{where} has no default in MLproject but {f.default!r} in its config"
        elif f.type == "str":
            assert parameter["default"] == RELATIVE_DEFAULTS.get((entry.name, f.name), f.default), where
        else:
            assert float(parameter["default"]) == f.default, where
    command = " ".join(spec["command"].split())
    assert command.startswith(f"python -m genlab {entry.command} "), entry.name
    assert re.findall(r"(--[a-z0-9-]+) \{([a-z0-9_]+)\}", command) == [
        (f"--{f.name.replace('_', '-')}", f.name) for f in fields], entry.name
    assert command.count("{") == len(fields), entry.name


@pytest.mark.slow
def test_mlflow_run_train_vae_on_synthetic(store, tmp_path):
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    env_path = f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}"
    result = subprocess.run(
        [str(mlflow_bin), "run", str(ROOT), "-e", "train_vae", "-P", "dataset=synthetic", "-P", "epochs=2",
         "-P", "limit=300", "-P", "latent_dim=4", "-P", "eval_samples=0", "-P", "nll_images=50",
         "--env-manager", "local", "--experiment-name", "e2e"],
        capture_output=True, text=True, env={**__import__("os").environ, "PATH": env_path}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "vae z4 b1.0 n300 s0"
    assert {"train_neg_elbo", "val_neg_elbo", "test_neg_elbo", "active_units"} <= set(run.data.metrics)
    assert image_steps(client, run.info.run_id, "samples") == [1, 2]
    png = client.download_artifacts(run.info.run_id, "pictures/samples.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
