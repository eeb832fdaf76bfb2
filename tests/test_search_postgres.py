"""Scale-out: two worker processes share one study through a real PostgreSQL server (started by the fixture on a
temporary data directory, 127.0.0.1 and a free port; stopped and removed after), with the MLflow store in the same
server. Skipped, with the reason, when the PostgreSQL server binaries are absent (`apt install postgresql`)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from genlab import search

from .test_search import TINY, done, search_runs

PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres() -> str:
    """``postgresql://postgres@127.0.0.1:PORT`` of a throw-away server with databases ``optuna`` and ``mlflow``."""
    if not PG_BINS:
        pytest.skip("PostgreSQL server binaries absent (/usr/lib/postgresql/*/bin/initdb): apt install postgresql")
    bin_dir = PG_BINS[0].parent
    as_user: list[str] = []
    data_dir = Path(tempfile.mkdtemp(prefix="genlab-pg-"))
    if os.geteuid() == 0:  # initdb and pg_ctl refuse root: run them as the postgres user, on a dir it owns
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(data_dir, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data_dir / "db")]
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data_dir / "db"), "-A", "trust", "-U", "postgres",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    subprocess.run([*pg_ctl, "-l", str(data_dir / "server.log"), "-w", "-t", "60", "start", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {data_dir} -c fsync=off"],
                   check=True, capture_output=True)
    try:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE optuna")
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.postgres
def test_two_workers_share_one_study_in_postgres(postgres, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres.replace("postgresql://", "postgresql+psycopg://") + "/mlflow")
    cfg = search.SearchConfig(**{**TINY, "storage": f"{postgres}/optuna", "n_trials": 3, "workers": 2})
    search.main(cfg)  # this process creates the study and the parent run, then starts and waits for 2 workers

    study = optuna.load_study(study_name=cfg.study_name, storage=search.storage_url(cfg.storage))
    numbers = [t.number for t in study.trials]
    assert len(done(study)) == 3 and len(numbers) == len(set(numbers))
    (parent,), children = search_runs()
    assert parent.info.status == "FINISHED"
    per_trial = sorted(int(r.data.tags["optuna.trial_number"]) for r in children)
    assert per_trial == sorted(t.number for t in done(study))  # exactly one child run per trial
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id
               for r in children)
    assert MlflowClient().get_run(parent.info.run_id).data.metrics["trials_complete"] >= 1
