"""Scale-out: two worker processes share one study through a real PostgreSQL server (started by the fixture on a
temporary data directory, 127.0.0.1 and a free port; stopped and removed after), with the MLflow store in the same
server. Skipped, with the reason, when the PostgreSQL server binaries are absent (`apt install postgresql`)."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient

from genlab import search
from genlab.entries import Context

from .test_search import TINY, done, search_runs


@pytest.mark.postgres
def test_two_workers_share_one_study_in_postgres(postgres, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres.replace("postgresql://", "postgresql+psycopg://") + "/mlflow")
    cfg = search.SearchConfig(**{**TINY, "storage": f"{postgres}/optuna", "n_trials": 3, "workers": 2})
    search.run(cfg, Context())  # this process creates the study and the parent run, then starts and waits for 2 workers

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
