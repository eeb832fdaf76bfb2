"""End to end through `mlflow run` (the way users launch entry points)."""

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from .conftest import image_steps

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mlflow_run_train_vae_on_synthetic(store, tmp_path):
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    env_path = f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}"
    result = subprocess.run(
        [str(mlflow_bin), "run", str(ROOT), "-e", "train_vae", "-P", "dataset=synthetic", "-P", "epochs=2",
         "-P", "limit=300", "-P", "latent_dim=4", "-P", "eval_samples=0", "--env-manager", "local", "--experiment-name", "e2e"],
        capture_output=True, text=True, env={**__import__("os").environ, "PATH": env_path}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "vae z4 b1.0 s0"
    assert {"train_neg_elbo", "val_neg_elbo", "test_neg_elbo", "active_units"} <= set(run.data.metrics)
    assert image_steps(client, run.info.run_id, "samples") == [1, 2]
    png = client.download_artifacts(run.info.run_id, "pictures/samples.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
