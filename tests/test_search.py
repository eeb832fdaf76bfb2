"""genlab search: nested runs and exact counts with 2 workers, resume, a killed worker, NaN and pruned trials,
the pareto objective, bad input. Synthetic data, 1-2 epochs, tiny limit: these start processes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from genlab import cli, losses, search
from genlab.entries import Context

from .conftest import genlab_cmd, store_in, wait_for

# eval_samples=0: no sample-quality scorer (nor the classifier it trains) except where the objective needs it
TINY = dict(dataset="synthetic", epochs=1, limit=128, latent_dims="2,4,16", study_name="t", eval_samples=0)


def config(tmp_path: Path, **kw) -> search.SearchConfig:
    return search.SearchConfig(**{**TINY, "storage": f"sqlite:///{tmp_path / 'optuna.db'}", **kw})


def cli_args(cfg: search.SearchConfig) -> list[str]:
    return search.worker_command(cfg, 0)[4:-2]  # the flags, without the interpreter, "search" and --worker


def load(cfg: search.SearchConfig) -> optuna.Study:
    return optuna.load_study(study_name=cfg.study_name, storage=cfg.storage)


def search_runs(experiment: str = "genlab-search") -> tuple[list, list]:
    """(parent runs, child runs) of the experiment."""
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get("genlab.kind") == "search"]
    return parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def done(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


def assert_png_artifacts(run_id: str, paths: set[str], tmp_path: Path) -> None:
    """Each path is a readable PNG image among the run's artifacts."""
    import matplotlib.pyplot as plt

    client = MlflowClient()
    for path in paths:
        local = Path(client.download_artifacts(run_id, path, str(tmp_path)))
        assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert min(plt.imread(local).shape[:2]) >= 200, path


@pytest.fixture
def pyplot():
    """matplotlib.pyplot with no figure open: one left by an earlier test of this process would fail the checks
    that the search leaves none open."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    return plt


def test_two_workers_exact_counts_nesting_artifacts_then_resume(store, tmp_path, capsys, monkeypatch, pyplot):
    # The first 3 trials complete (the pruner waits for 3): enough for importances with a lower threshold.
    monkeypatch.setattr(search, "MIN_TRIALS_FOR_IMPORTANCES", 2)
    cfg = config(tmp_path, n_trials=4, workers=2)
    search.run(cfg, Context())  # this process coordinates; the two workers are processes
    assert pyplot.get_fignums() == []
    study = load(cfg)
    assert study.metric_names == ["val_neg_elbo"]
    assert len(done(study)) == 4
    assert study.trials[0].params == search.DEFAULT_TRIAL  # the lab's configuration comes first
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))

    (parent,), children = search_runs()
    assert parent.info.status == "FINISHED" and parent.data.tags["optuna.study_name"] == "t"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert len(by_number) == len(children) == 4 and set(by_number) == {t.number for t in done(study)}
    for trial in done(study):
        run = by_number[trial.number]
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == trial.state.name
        assert trial.user_attrs[search.RUN_ID_ATTR] == run.info.run_id
        assert float(run.data.params["beta"]) == trial.params["beta"]
        assert int(run.data.params["latent_dim"]) == trial.params["latent_dim"]
    client = MlflowClient()
    assert [m.step for m in client.get_metric_history(by_number[0].info.run_id, "val_neg_elbo")] == [1]
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id)}
    figures = {"history.png", "importances.png", "intermediate_values.png", "latent_dim_beta.png"}
    assert {"trials.csv", *figures} <= artifacts and "importances.txt" not in artifacts
    assert_png_artifacts(parent.info.run_id, figures, tmp_path / "artifacts")
    best = study.best_trial
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert parent.data.metrics["best_latent_dim"] == best.params["latent_dim"]
    assert parent.data.metrics["best_beta"] == pytest.approx(best.params["beta"])
    assert parent.data.metrics["trials_complete"] + parent.data.metrics["trials_pruned"] == 4
    assert client.get_model_version_by_alias("genlab-vae", "best").run_id == best.user_attrs[search.RUN_ID_ATTR]
    # the registered decoder draws without code: `genlab sample --model models:/genlab-vae@best`
    assert cli.main(["sample", "--model", "models:/genlab-vae@best", "--n", "64", "--out", str(tmp_path / "s.png")]) == 0
    with Image.open(tmp_path / "s.png") as grid:
        assert grid.size == (8 * 30 + 2, 8 * 30 + 2) and len(set(grid.getextrema())) == 2  # not one flat colour

    # Resume through the CLI after raising n_trials: one more trial, same parent, nothing run twice. The study
    # loses its metric names first (as one made before they were set): the resume sets them.
    study._storage.set_study_system_attr(study._study_id, optuna.study.study._SYSTEM_ATTR_METRIC_NAMES, None)
    assert load(cfg).metric_names is None
    before = {n: r.info.run_id for n, r in by_number.items()}
    capsys.readouterr()
    assert cli.main(["search", *cli_args(config(tmp_path, n_trials=5, workers=1))]) == 0
    assert pyplot.get_fignums() == []
    assert load(cfg).metric_names == ["val_neg_elbo"]
    out = capsys.readouterr().out.strip()
    assert out.startswith("search t: ") and out.endswith(f"parent run {parent.info.run_id}") and "best neg_elbo" in out
    (parent2,), children2 = search_runs()
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    after = {int(r.data.tags["optuna.trial_number"]): r.info.run_id for r in children2}
    assert len(after) == len(children2) == 5 and {n: after[n] for n in before} == before
    assert len(done(load(cfg))) == 5
    # A rerun with a changed search space is refused before anything runs.
    n_trials = len(load(cfg).trials)
    assert cli.main(["search", *cli_args(config(tmp_path, n_trials=6, latent_dims="2,4"))]) == 2
    assert len(load(cfg).trials) == n_trials


def test_killed_worker_trial_fails_its_run_fails_and_it_is_retried(store, tmp_path):
    cfg = config(tmp_path, n_trials=1, epochs=2, heartbeat_seconds=1)
    proc = subprocess.Popen(genlab_cmd("search", *cli_args(cfg)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def running_child():
            experiment = MlflowClient().get_experiment_by_name("genlab-search")
            return experiment and [r for r in search_runs()[1] if r.info.status == "RUNNING"]

        (victim,) = wait_for(running_child, 300, "a running trial")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole search: the worker is this process
        proc.wait()
    assert [t.state.name for t in load(cfg).trials] == ["RUNNING"]

    # Resume: the only missing trial is "running", so the worker waits for its heartbeat to go stale, marks it
    # FAIL (its run FAILED) and runs the queued copy.
    summary = search.run(cfg, Context()).metrics
    study = load(cfg)
    dead, retry = study.trials
    assert dead.state.name == "FAIL" and retry.state.name == "COMPLETE" and summary["trials_complete"] == 1
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == dead.params
    victim = MlflowClient().get_run(victim.info.run_id)
    assert victim.info.status == "FAILED" and victim.data.tags["optuna.state"] == "FAIL"
    assert "heartbeat" in victim.data.tags["optuna.reason"]
    parents, children = search_runs()
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(r.info.status for r in children) == ["FAILED", "FINISHED"]


def test_nan_trial_fails_a_bad_trial_is_pruned_and_ctrl_c_kills(store, tmp_path, monkeypatch):
    cfg = config(tmp_path, n_trials=2)
    study = search.open_study(cfg, create=True)  # queues the lab default first: the pruner's reference
    study.enqueue_trial({"latent_dim": 4, "beta": 7.0})  # its loss becomes NaN (below)
    study.enqueue_trial({"latent_dim": 16, "beta": 10.0})  # trained uphill (below): worse than trial 0, pruned
    study.enqueue_trial({"latent_dim": 2, "beta": 3.0})  # interrupted (below)
    vae_terms = losses.vae_terms

    def sabotaged(logits, x, z_mean, z_log_var, beta):
        terms = vae_terms(logits, x, z_mean, z_log_var, beta)
        if beta == 7.0:
            return {**terms, "loss": terms["loss"] * math.nan}
        if beta == 3.0:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a trial
        # Gradient ascent from the same initial weights as trial 0 (same seed and latent_dim): a worse neg-ELBO.
        return {**terms, "loss": -terms["loss"]} if beta == 10.0 else terms

    monkeypatch.setattr(losses, "vae_terms", sabotaged)
    monkeypatch.setattr(search, "PRUNER_STARTUP_TRIALS", 1)
    summary = search.run(cfg, Context()).metrics
    assert (summary["trials_complete"], summary["trials_pruned"], summary["trials_failed"]) == (1, 1, 1)
    nan_trial, pruned = load(cfg).trials[1:3]
    assert nan_trial.state.name == "FAIL" and "NonFiniteLoss" in nan_trial.user_attrs["fail_reason"]
    client = MlflowClient()
    nan_run = client.get_run(nan_trial.user_attrs[search.RUN_ID_ATTR])
    assert nan_run.info.status == "FAILED" and nan_run.data.tags["optuna.state"] == "FAIL"
    assert "nan" in nan_run.data.tags["optuna.reason"]
    assert pruned.state.name == "PRUNED" and "median" in pruned.user_attrs["prune_reason"]
    pruned_run = client.get_run(pruned.user_attrs[search.RUN_ID_ATTR])
    assert pruned_run.info.status == "FINISHED" and pruned_run.data.tags["optuna.state"] == "PRUNED"
    assert "genlab.failure" not in pruned_run.data.tags
    assert all(r.info.status != "RUNNING" for r in search_runs()[1])

    # Ctrl-C: the trial FAIL, its run KILLED, the parent run KILLED.
    with pytest.raises(KeyboardInterrupt):
        search.run(config(tmp_path, n_trials=3), Context())
    interrupted = load(cfg).trials[3]
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs["fail_reason"] == "interrupted"
    killed = client.get_run(interrupted.user_attrs[search.RUN_ID_ATTR])
    assert killed.info.status == "KILLED" and killed.data.tags["optuna.state"] == "FAIL"
    (parent,), _ = search_runs()
    assert parent.info.status == "KILLED"

    # Every trial failing: the worker stops instead of sampling forever; the parent run FAILED.
    load(cfg).enqueue_trial({"latent_dim": 2, "beta": 7.0})
    monkeypatch.setattr(search, "MAX_FAILURES_IN_A_ROW", 1)
    with pytest.raises(RuntimeError, match="1 trials in a row failed"):
        search.run(config(tmp_path, n_trials=3), Context())
    assert load(cfg).trials[4].state.name == "FAIL" and search_runs()[0][0].info.status == "FAILED"


def test_pareto_objective_logs_the_front(store, tmp_path, pyplot):
    cfg = config(tmp_path, n_trials=2, objective="pareto", eval_samples=200)
    summary = search.run(cfg, Context()).metrics
    assert summary["trials_complete"] == 2 and summary["pareto_trials"] >= 1
    assert all(len(t.values) == 2 for t in load(cfg).trials)
    assert load(cfg).metric_names == ["val_recon", "fid_proxy"]
    assert pyplot.get_fignums() == []
    (parent,), _ = search_runs()
    artifacts = {f.path for f in MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"pareto_front.png", "history.png"} <= artifacts and "intermediate_values.png" not in artifacts
    assert_png_artifacts(parent.info.run_id, {"pareto_front.png", "history.png"}, tmp_path / "artifacts")


def _pop_all(storage_url: str, queue) -> None:
    study = optuna.load_study(study_name="race", storage=search.make_storage(search.SearchConfig(storage=storage_url)))
    popped = []
    while (trial_id := study._pop_waiting_trial_id()) is not None:  # what study.ask() does first
        popped.append(trial_id)
    queue.put(popped)


def test_sqlite_workers_never_take_the_same_queued_trial(tmp_path):
    """Plain Optuna on SQLite hands one queued trial to several processes (seen: 41 pops of 30 trials by 4
    processes); make_storage serialises the transactions."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(study_name="race", storage=search.make_storage(search.SearchConfig(storage=url)))
    for x in range(20):
        study.enqueue_trial({"x": float(x)})
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    procs = [context.Process(target=_pop_all, args=(url, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    popped = [trial_id for _ in procs for trial_id in queue.get(timeout=120)]
    for p in procs:
        p.join()
    assert sorted(popped) == sorted(t._trial_id for t in study.trials)


@pytest.mark.parametrize("objective", ["neg_elbo", "pareto"])
def test_study_figures_from_constructed_trials(tmp_path, objective, pyplot):
    """The summary figures on a study of made-up trials (no training): every state, enough for fANOVA."""
    import matplotlib

    style = dict(matplotlib.rcParams)
    cfg = config(tmp_path, objective=objective)
    study = optuna.create_study(directions=["minimize"] * (2 if objective == "pareto" else 1))
    space = {"latent_dim": optuna.distributions.CategoricalDistribution(search.latent_dims(cfg)),
             "beta": optuna.distributions.FloatDistribution(cfg.beta_min, cfg.beta_max, log=True)}
    for i, (z, beta) in enumerate([(2, 0.2), (4, 0.5), (16, 1.0), (2, 3.0), (4, 8.0), (16, 0.1), (16, 5.0)]):
        values = [300.0 - 10 * i + beta, 50.0 + 5 * i] if objective == "pareto" else [200.0 + z + beta]
        state = {5: "PRUNED", 6: "FAIL"}.get(i, "COMPLETE") if objective == "neg_elbo" else "COMPLETE"
        study.add_trial(optuna.create_trial(
            state=optuna.trial.TrialState[state], params={"latent_dim": z, "beta": beta}, distributions=space,
            values=values if state == "COMPLETE" else None,
            intermediate_values={1: values[0]} if state == "PRUNED" else None))
    figures, texts = search.plot_study(study, cfg)
    expected = {"history.png", "importances.png", "latent_dim_beta.png"}
    # The pruned trial's per-epoch value: only neg_elbo trials report them.
    expected |= {"pareto_front.png"} if objective == "pareto" else {"intermediate_values.png"}
    assert set(figures) == expected and not texts
    assert sorted(pyplot.get_fignums()) == sorted(f.number for f in figures.values())  # nothing else left open
    assert dict(matplotlib.rcParams) == style  # Optuna's plt.style.use("ggplot") did not leak out
    labels = [ax.get_ylabel() for f in figures.values() for ax in f.axes]
    if objective == "pareto":  # every made-up trial trades recon for fid: all on the front
        assert len(study.best_trials) == 7
        front = figures["pareto_front.png"].axes[0]
        assert (front.get_xlabel(), front.get_ylabel()) == ("val_recon (nats/image)", "fid_proxy")
        assert len(front.texts) == 7  # each point says its latent_dim and beta
    else:
        assert labels.count("val_neg_elbo (nats/image)") == 2  # history and per-epoch values
    for figure in figures.values():
        pyplot.close(figure)


def test_study_figures_skip_importances_that_cannot_be_computed(tmp_path, capsys, pyplot):
    """fANOVA raises when the complete trials all have the same parameters: no figure, a note, no crash."""
    cfg = config(tmp_path)
    study = optuna.create_study()
    space = {"latent_dim": optuna.distributions.CategoricalDistribution(search.latent_dims(cfg)),
             "beta": optuna.distributions.FloatDistribution(cfg.beta_min, cfg.beta_max, log=True)}
    for value in range(search.MIN_TRIALS_FOR_IMPORTANCES):
        study.add_trial(optuna.create_trial(params=search.DEFAULT_TRIAL, distributions=space, value=200.0 + value))
    figures, texts = search.plot_study(study, cfg)
    assert "importances.png" not in figures and "history.png" in figures
    assert texts["importances.txt"].startswith("no parameter importances") and "importances" in capsys.readouterr().err
    for figure in figures.values():
        pyplot.close(figure)
    assert pyplot.get_fignums() == []


BAD_SEARCH = [
    (["--latent-dims", ""], "latent_dims"),
    (["--latent-dims", "4,x"], "latent_dims"),
    (["--latent-dims", "0,4"], "latent_dims"),
    (["--latent-dims", "4,4"], "latent_dims"),
    (["--beta-min", "5", "--beta-max", "1"], "beta_min"),
    (["--beta-min", "-1"], "beta_min"),
    (["--beta-max", "0"], "beta_max"),
    (["--beta-max", "nan"], "beta_max"),
    (["--n-trials", "0"], "n_trials"),
    (["--n-trials", "-3"], "n_trials"),
    (["--workers", "0"], "workers"),
    (["--timeout", "-5"], "timeout"),
    (["--epochs", "0"], "epochs"),
    (["--limit", "-1"], "limit"),
    (["--heartbeat-seconds", "0"], "heartbeat_seconds"),
    (["--sampler", "bayes"], "sampler"),
    (["--sampler", "grid", "--n-trials", "1000"], "n_trials"),
    (["--objective", "magic"], "objective"),
    (["--dataset", "cifar10"], "dataset"),
    (["--study-name", "a b"], "study_name"),
    (["--storage", "not a url"], "storage"),
    (["--storage", "ftp://host/x"], "storage"),
    (["--storage", "sqlite:////no/such/dir/optuna.db"], "storage"),
    (["--storage", "sqlite://"], "storage"),
    (["--storage", "postgresql://user:secret@"], "storage"),
    (["--storage", "postgresql://user:secret@127.0.0.1:1/optuna"], "cannot be opened"),
]


@pytest.fixture(scope="module")
def one_store(empty_store_file, tmp_path_factory):
    """One tracking store for all the bad-input cases (none may write to it)."""
    path = tmp_path_factory.mktemp("bad")
    with store_in(path, empty_store_file):
        yield path


@pytest.mark.parametrize("args,names", BAD_SEARCH, ids=[" ".join(a) for a, _ in BAD_SEARCH])
def test_search_bad_input(one_store, tmp_path, capsys, args, names):
    storage = ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]
    code = cli.main(["search", "--dataset", "synthetic", *storage, *args])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and names in err and "Traceback" not in err and "secret" not in err
    assert not (tmp_path / "optuna.db").exists() and not (one_store / "optuna.db").exists()
    client = MlflowClient()
    assert [e.name for e in client.search_experiments()] == ["Default"] and not client.search_runs(["0"])
