"""Processes that die or share a store: SIGKILL then --resume, two writers on one SQLite store."""

from __future__ import annotations

import dataclasses
import math
import signal
import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

from genlab import data
from genlab.checks import ConfigError
from genlab.configs import VAEConfig
from genlab.train import vae

from ..conftest import genlab_cmd
from .conftest import child_env, running

EPOCH_METRICS = ("train_recon", "train_kl", "train_neg_elbo", "val_recon", "val_kl", "val_neg_elbo",
                 "active_units", "epoch_seconds", "images_per_second")
FINAL_METRICS = ("test_recon", "test_kl", "test_neg_elbo", "train_eval_neg_elbo")


def kill_cfg(**kw) -> VAEConfig:
    # 16 batches per epoch: epoch 2 is still training when the poll below sees epoch 1's checkpoint.
    # eval_samples=0: the sample-quality scorer (and the classifier it would train) is not what is tested here.
    return VAEConfig(**{**dict(dataset="synthetic", epochs=3, limit=512, batch_size=32, latent_dim=4,
                               experiment="kill", eval_samples=0, nll_images=50), **kw})


def cli_args(cfg: VAEConfig) -> list[str]:
    return [x for k, v in dataclasses.asdict(cfg).items() for x in (f"--{k.replace('_', '-')}", str(v))]


def wait_for_checkpoint(proc: subprocess.Popen, folder, timeout: float = 300) -> dict:
    """Poll the local artifact store until a complete checkpoint of the run is there; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for path in folder.glob("mlruns/*/*/artifacts/checkpoint/last.pt"):
            try:
                return vae.load_checkpoint(path)
            except ConfigError:  # caught while being copied: try again
                pass
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint appeared (process exit code {proc.poll()})")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(store, tmp_path):
    proc = subprocess.Popen(genlab_cmd("train-vae", *cli_args(kill_cfg())), cwd=tmp_path, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        checkpoint = wait_for_checkpoint(proc, tmp_path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and checkpoint["epoch"] < 3, "the run ended before the kill"
    client = MlflowClient()
    (killed,) = client.search_runs([client.get_experiment_by_name("kill").experiment_id])
    run_id = killed.info.run_id
    assert running(store) == [run_id]  # SIGKILL gives no chance to mark it: --resume is the way out

    resumed = subprocess.run(genlab_cmd("train-vae", "--resume", run_id), cwd=tmp_path, env=child_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # The uninterrupted reference, in this process without tracking (logging draws no random numbers).
    _, reference = vae.train(kill_cfg(), data.load("synthetic", limit=512))

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and not running(store)
    assert [m.step for m in client.get_metric_history(run_id, "val_neg_elbo")] == [1, 2, 3]
    # Tolerance: 1e-5 relative. Same code, seed, thread count and CPU give bit-identical numbers in practice;
    # the margin leaves room for a BLAS that orders reductions differently between processes.
    for key in ("train_neg_elbo", "val_neg_elbo", *FINAL_METRICS):
        assert math.isclose(run.data.metrics[key], reference[key], rel_tol=1e-5), (key, run.data.metrics[key],
                                                                                    reference[key])


@pytest.mark.slow
def test_two_processes_write_to_one_sqlite_store_at_once(store, tmp_path):
    # The store exists (the fixture created it): creating one SQLite schema from two processes is not supported.
    cfgs = [kill_cfg(epochs=2, limit=256, batch_size=64, seed=seed, experiment="concurrent") for seed in (0, 1)]
    procs = [subprocess.Popen(genlab_cmd("train-vae", *cli_args(cfg)), cwd=tmp_path, env=child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cfg in cfgs]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outputs]
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("concurrent").experiment_id])
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        for key in EPOCH_METRICS:
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
        assert set(FINAL_METRICS) <= set(run.data.metrics)
        assert {"checkpoint/last.pt"} <= {f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")}


def test_a_run_logs_its_data_set_when_another_run_inserted_it_first(store, monkeypatch):
    # The race the test above can hit: MLflow looked for the data set, found none, and another process inserted
    # it before this one did, so this insert fails on the unique key. Replayed here in one process.
    from genlab import tracking

    real_log_inputs = MlflowClient.log_inputs
    calls = []

    def log_inputs_after_a_concurrent_insert(client, run_id, *args, **kwargs):
        calls.append(run_id)
        if len(calls) == 1:  # the other process's run inserts the same data set, then this insert fails
            other = client.create_run(client.get_run(run_id).info.experiment_id)
            real_log_inputs(client, other.info.run_id, *args, **kwargs)
            client.set_terminated(other.info.run_id)
            raise tracking.MlflowException("UNIQUE constraint failed: datasets.experiment_id, datasets.name")
        return real_log_inputs(client, run_id, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_inputs", log_inputs_after_a_concurrent_insert)
    with tracking.start_run("race", "vae z4 b1.0 s0", {}, {"genlab.kind": "vae"}) as run:
        run.log_dataset("synthetic", "memory://synthetic", "abc123", "train", 10)
    logged = MlflowClient().get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert [(d.dataset.name, d.dataset.digest) for d in logged.inputs.dataset_inputs] == [("synthetic-train", "abc123")]
    assert calls == [run.run_id, run.run_id]
