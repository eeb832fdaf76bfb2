"""`genlab study --workers N` / `--cluster ADDRESS`: the study's runs on Dask workers. The same runs as one
worker, a killed worker fails only its run (and what needs it) and the next invocation completes the study,
Ctrl-C leaves nothing RUNNING, and a real cluster (Dask's own CLI) with MLflow on PostgreSQL."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from genlab import cli

from .conftest import ROOT, free_port, genlab_cmd, wait_for
from .test_study import Q1 as TINY
from .test_study import Q2 as DEPENDENT

SLOW = """
question: q3
defaults: {dataset: synthetic, limit: 1000, latent_dim: 8, beta: 1.0}
runs:
  - name: q3_slow
    entry: train_vae
    arm: slow
    params: {epochs: 8, batch_size: 32, eval_samples: 0, nll_images: 50}
  - name: q3_after_slow
    entry: gradvar
    arm: after
    params: {vae_run: "@q3_slow", latent_dim: 8, beta: 1.0, n_samples: 6, batch_size: 8}
"""
TIMINGS = ("seconds", "per_second", "system/")  # metric names that measure the machine, not the model


def plans(folder: Path, **texts: str) -> str:
    folder.mkdir(exist_ok=True)
    for name, text in texts.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return str(folder)


def study_runs(study: str) -> dict:
    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`genlab.study` = '{study}'")
    return {r.data.tags["genlab.ref"]: r for r in sorted(runs, key=lambda r: r.info.start_time)}  # latest wins


def study_process(folder: str, study: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(genlab_cmd("study", "--plans", folder, "--study", study, *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def running(study: str, ref: str, min_epochs: int = 1):
    """The run of plan name ``ref`` once it is RUNNING and has logged ``min_epochs`` epochs, else None."""
    run = study_runs(study).get(ref)
    if run is None or run.info.status != "RUNNING":
        return None
    history = MlflowClient().get_metric_history(run.info.run_id, "val_neg_elbo")
    return run if len(history) >= min_epochs else None


# ---------------------------------------------------------------- local workers

def test_two_workers_make_the_same_runs_as_one_and_reuse_them(store, tmp_path):
    folder = plans(tmp_path / "plans", q1=TINY, q2=DEPENDENT)
    assert cli.main(["study", "--plans", folder, "--study", "one"]) == 0
    process = study_process(folder, "two", "--workers", "2")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-2000:]
    assert "3 runs trained, 0 reused" in out
    one, two = study_runs("one"), study_runs("two")
    assert set(one) == set(two) == {"q1_vae_s0", "q1_vae_s1", "q2_gradvar"}
    workers = {two[ref].data.tags["genlab.worker"] for ref in two}
    assert len(workers) == 2 and all(w.split(":")[1] != str(process.pid) for w in workers)  # in worker processes
    ref_of = {r.info.run_id: ref for runs in (one, two) for ref, r in runs.items()}
    for ref in one:
        a, b = one[ref].data, two[ref].data
        differ = {"experiment", "vae_run"}  # <study>-<question>; the run id of the same plan run in each study
        assert {k: v for k, v in a.params.items() if k not in differ} == \
            {k: v for k, v in b.params.items() if k not in differ}, ref
        assert ref_of.get(a.params.get("vae_run")) == ref_of.get(b.params.get("vae_run")), ref
        model_metrics = {k for k in a.metrics if not any(t in k for t in TIMINGS)}
        assert model_metrics and model_metrics == {k for k in b.metrics if not any(t in k for t in TIMINGS)}, ref
        for k in model_metrics:
            assert math.isclose(a.metrics[k], b.metrics[k], rel_tol=1e-5, abs_tol=1e-6), (ref, k)
    again = subprocess.run(genlab_cmd("study", "--plans", folder, "--study", "two", "--workers", "2"),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 runs trained, 3 reused" in again.stdout, again.stderr[-2000:]


def test_a_killed_worker_fails_its_run_and_the_next_invocation_completes_it(store, tmp_path):
    folder = plans(tmp_path / "plans", q1=TINY, q3=SLOW)
    process = study_process(folder, "kill", "--workers", "2")
    try:
        victim = wait_for(lambda: running("kill", "q3_slow"), 300, "the slow run's first epoch")
        os.kill(int(victim.data.tags["genlab.worker"].split(":")[1]), signal.SIGKILL)
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 1, err[-2000:]
    runs = study_runs("kill")
    slow = runs["q3_slow"]
    assert slow.info.status == "FAILED" and "worker process died" in slow.data.tags["genlab.failure"]
    assert "q3_after_slow" not in runs and "not run: needs q3_slow, which failed" in err
    assert all(runs[ref].info.status == "FINISHED" for ref in ("q1_vae_s0", "q1_vae_s1"))
    assert "FAILED: q3 slow" in out
    # the next invocation trains only what did not finish
    finished = {ref: runs[ref].info.run_id for ref in ("q1_vae_s0", "q1_vae_s1")}
    assert cli.main(["study", "--plans", folder, "--study", "kill"]) == 0
    runs = study_runs("kill")
    assert runs["q3_slow"].info.status == runs["q3_after_slow"].info.status == "FINISHED"
    assert {ref: runs[ref].info.run_id for ref in finished} == finished


def test_ctrl_c_stops_the_study_and_leaves_no_run_running(store, tmp_path):
    folder = plans(tmp_path / "plans", q3=SLOW)
    process = study_process(folder, "stop", "--workers", "2")
    try:
        wait_for(lambda: running("stop", "q3_slow"), 300, "the slow run's first epoch")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err[-2000:]
    runs = study_runs("stop")
    assert runs["q3_slow"].info.status == "KILLED" and "q3_after_slow" not in runs


def test_cluster_with_a_local_store_is_refused_in_one_line(store, tmp_path, capsys):
    folder = plans(tmp_path / "plans", q1=TINY)
    assert cli.main(["study", "--plans", folder, "--cluster", "tcp://127.0.0.1:8786"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Scale out" in err and "sqlite" in err
    assert study_runs("lab1") == {}


NO_GPU = [] if torch.cuda.is_available() else [(["--gpus-per-run", "0.5"], "gpus_per_run")]  # refused: no GPU


@pytest.mark.parametrize("args,name", [(["--workers", "0"], "workers"), (["--cluster", "not an address"], "cluster"),
                                       (["--gpus-per-run", "2"], "gpus_per_run"),
                                       (["--workers", "4", "--gpus-per-run", "0.5"], "gpus_per_run"), *NO_GPU])
def test_bad_execution_options_are_one_line_exit_2(store, tmp_path, capsys, args, name):
    folder = plans(tmp_path / "plans", q1=TINY)
    assert cli.main(["study", "--plans", folder, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err


# ---------------------------------------------------------------- a running cluster, MLflow on PostgreSQL

def _serve(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.postgres
@pytest.mark.slow
def test_a_small_study_on_a_dask_cluster_with_mlflow_on_postgres(postgres, tmp_path, monkeypatch):
    bin_dir = Path(sys.executable).parent
    mlflow_port, scheduler_port = free_port(), free_port()
    dask_env = {**os.environ, "DASK_CONFIG": str(ROOT / "cluster"), "OMP_NUM_THREADS": "1"}  # as README says
    servers = [
        _serve([str(bin_dir / "mlflow"), "server", "--backend-store-uri",
                postgres.replace("postgresql://", "postgresql+psycopg://") + "/mlflow", "--artifacts-destination",
                str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
               tmp_path / "mlflow.log"),
        _serve([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(scheduler_port),
                "--no-dashboard"], tmp_path / "scheduler.log", env=dask_env),
    ]
    address = f"tcp://127.0.0.1:{scheduler_port}"
    servers.append(_serve([str(bin_dir / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
                           "--no-dashboard", "--host", "127.0.0.1"], tmp_path / "workers.log",
                          env=dask_env))
    try:
        uri = f"http://127.0.0.1:{mlflow_port}"
        wait_for(lambda: _answers(f"{uri}/health"), 120, "the MLflow server")
        from distributed import Client

        with Client(address, timeout="60s") as client:  # both workers registered: the runs can spread over them
            client.wait_for_workers(2, timeout=120)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
        from genlab import tracking

        tracking.init_store()  # this process's MLflow reads the server too (an earlier test pointed it elsewhere)
        folder = plans(tmp_path / "plans", q1=TINY, q2=DEPENDENT)
        result = subprocess.run(genlab_cmd("study", "--plans", folder, "--study", "cl", "--cluster", address),
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs = study_runs("cl")
        assert set(runs) == {"q1_vae_s0", "q1_vae_s1", "q2_gradvar"}
        assert all(r.info.status == "FINISHED" for r in runs.values())
        assert runs["q2_gradvar"].data.params["vae_run"] in {runs[f"q1_vae_s{s}"].info.run_id for s in (0, 1)}
        assert len({r.data.tags["genlab.worker"] for r in runs.values()}) >= 2  # both workers took runs
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
        for server in servers:
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


def test_with_workers_the_feature_classifier_is_trained_first(store, tmp_path):
    """Sample-quality metrics need the data set's classifier: trained before the workers start, with every thread,
    not inside the first run while the other workers wait for it."""
    folder = plans(tmp_path / "plans", q1=TINY.replace("eval_samples: 0", "eval_samples: 200").replace("[0, 1]", "[0]"))
    result = subprocess.run(genlab_cmd("study", "--plans", folder, "--study", "scored", "--workers", "2"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient()
    (classifier,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                       filter_string="tags.`genlab.kind` = 'classifier'")
    (vae,) = study_runs("scored").values()
    assert classifier.info.end_time <= vae.info.start_time
    assert vae.data.params["fid_classifier"] == classifier.info.run_id and "fid_proxy" in vae.data.metrics
