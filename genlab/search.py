"""Optuna search over the latent size and the KL weight (latent_dim x beta) around the VAE training loop.

One study = one MLflow parent run (experiment ``genlab-search``, tag ``optuna.study_name``); one trial = one call
of ``genlab.runs.vae.run`` = one child run. The study lives in an Optuna RDB storage (SQLite by default,
PostgreSQL to spread workers over machines), so a search can be killed and resumed: ``n_trials`` is the number
of COMPLETE + PRUNED trials wanted in the study, not "this many more".

Read top to bottom: config -> validate -> storage and study -> objective (one trial) -> worker loop ->
coordinator (``run``: parent run, local worker processes, summary) -> summary (figures, trials.csv, registry).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from genlab import data, tags
from genlab.checks import ConfigError, check, check_declared
from genlab.configs import PROJECT_ROOT, SearchConfig, VAEConfig, redacted
from genlab.entries import Context, Result
from genlab.runs import last_checkpoint
from genlab.runs import vae as vae_entry
from genlab.train import loop, vae

# What Optuna calls each objective value (dashboard, trials.csv, plots), in the order objective_values() returns.
METRIC_NAMES = {"neg_elbo": ["val_neg_elbo"], "fid": ["fid_proxy"], "pareto": ["val_recon", "fid_proxy"]}
AXIS_LABELS = {"val_neg_elbo": "val_neg_elbo (nats/image)", "val_recon": "val_recon (nats/image)",
               "fid_proxy": "fid_proxy"}
STORAGE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "mysql", "mysql+pymysql")
DEFAULT_TRIAL = {"latent_dim": 16, "beta": 1.0}  # the lab's configuration: every search includes it
MODEL_NAME, MODEL_ALIAS = "genlab-vae", "best"
GRID_BETAS = 5  # log-spaced beta values per latent_dim for sampler=grid
PRUNER_STARTUP_TRIALS = 3  # complete trials before the median pruner may stop one
PRUNER_WARMUP_EPOCHS = 0  # a clearly bad trial may be stopped after its first epoch already
MIN_TRIALS_FOR_IMPORTANCES = 5
MAX_FAILURES_IN_A_ROW = 5  # a worker stops rather than sample forever when every trial fails
MAX_RETRIES = 2  # a trial whose worker died is re-queued at most this many times
RUN_ID_ATTR = "mlflow_run_id"  # trial user attr: its child run


# ---------------------------------------------------------------- validation

def latent_dims(cfg: SearchConfig) -> list[int]:
    return [int(d) for d in cfg.latent_dims.split(",")]


def storage_url(storage: str) -> str:
    """The SQLAlchemy URL for Optuna: plain ``postgresql://`` means psycopg 3 (the driver genlab installs)."""
    return re.sub(r"^postgresql://", "postgresql+psycopg://", storage)


def validate(cfg: SearchConfig) -> None:
    """Raise ConfigError (one line) for any invalid value; nothing is created before this passes."""
    check(bool(re.fullmatch(r"[A-Za-z0-9._-]+", cfg.study_name)), "study_name", cfg.study_name,
          "a non-empty name of letters, digits, '.', '_' or '-'")
    check_declared(cfg)
    _validate_storage(cfg.storage)
    try:
        dims = latent_dims(cfg)
    except ValueError:
        dims = []
    check(bool(dims) and all(d >= 1 for d in dims) and len(set(dims)) == len(dims), "latent_dims", cfg.latent_dims,
          "a comma list of distinct integers >= 1, e.g. 2,4,8,16,32,64")
    check(cfg.beta_min <= cfg.beta_max, "beta_min", cfg.beta_min, f"<= beta_max ({cfg.beta_max})")
    if cfg.sampler == "grid":
        size = len(dims) * len(grid_betas(cfg))
        check(cfg.n_trials <= size, "n_trials", cfg.n_trials, f"<= the {size} points of the grid for sampler grid")
    vae_entry.validate(trial_config(cfg, dims[0], cfg.beta_min))  # dataset, epochs, limit, eval_samples, seed, experiment
    check(cfg.objective == "neg_elbo" or cfg.eval_samples > 0, "eval_samples", cfg.eval_samples,
          f"> 0 for objective {cfg.objective} (it minimises fid_proxy)")


def _validate_storage(storage: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    allowed = "an Optuna RDB URL: sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB (or mysql://...)"
    try:
        url = make_url(storage_url(storage))
    except (ArgumentError, ValueError):
        raise ConfigError(f"storage must be {allowed}, got {redacted(storage)!r}") from None
    check(url.drivername in STORAGE_SCHEMES, "storage", redacted(storage), allowed)
    if url.drivername == "sqlite":
        path = url.database or ""
        check(bool(path) and path != ":memory:", "storage", storage, "a SQLite file (workers share it), not memory")
        check(Path(path).resolve().parent.is_dir(), "storage", storage, "a SQLite file in an existing directory")
    else:
        check(bool(url.host) and bool(url.database), "storage", redacted(storage), allowed)


def check_data(cfg: SearchConfig) -> data.Splits:
    """The data set exists and is large enough for the trials' batches (DataError / ConfigError otherwise)."""
    splits = data.load(cfg.dataset, cfg.limit)
    vae_entry.check_data(trial_config(cfg, latent_dims(cfg)[0], cfg.beta_min), splits)
    return splits


def trial_config(cfg: SearchConfig, latent_dim: int, beta: float) -> VAEConfig:
    """The train-vae configuration of one trial: the lab's defaults plus the searched values."""
    return VAEConfig(dataset=cfg.dataset, latent_dim=latent_dim, beta=beta, arch=cfg.arch, epochs=cfg.epochs,
                     limit=cfg.limit, eval_samples=cfg.eval_samples, seed=cfg.seed, experiment=cfg.experiment,
                     nll_images=0)  # the search ranks on val_neg_elbo; the bound would only cost time


def grid_betas(cfg: SearchConfig) -> list[float]:
    """GRID_BETAS log-spaced values from beta_min to beta_max, plus 1.0 (the lab default) when in range."""
    n = GRID_BETAS if cfg.beta_max > cfg.beta_min else 1
    values = [cfg.beta_min * (cfg.beta_max / cfg.beta_min) ** (i / max(n - 1, 1)) for i in range(n)]
    if cfg.beta_min <= 1.0 <= cfg.beta_max and not any(math.isclose(v, 1.0) for v in values):
        values.append(1.0)
    return sorted(1.0 if math.isclose(v, 1.0) else v for v in values)


def settings_of(cfg: SearchConfig) -> dict[str, Any]:
    """What a resumed study must keep: the search space, the objective and the trials' training settings."""
    return {"objective": cfg.objective, "latent_dims": latent_dims(cfg), "beta_min": cfg.beta_min,
            "beta_max": cfg.beta_max, "sampler": cfg.sampler, "dataset": cfg.dataset, "arch": cfg.arch,
            "epochs": cfg.epochs,
            "limit": cfg.limit, "eval_samples": cfg.eval_samples, "seed": cfg.seed}


# ---------------------------------------------------------------- storage and study

def make_storage(cfg: SearchConfig):
    """The RDB storage with heartbeats: a trial whose worker died (no heartbeat for 3 intervals) becomes FAIL
    the next time a worker starts a trial, its child run FAILED, and a copy is queued (RetryHeartbeatStale...)."""
    import optuna

    url = storage_url(cfg.storage)
    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats are an "experimental" Optuna feature
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                             heartbeat_interval=cfg.heartbeat_seconds,
                                             grace_period=3 * cfg.heartbeat_seconds,
                                             heartbeat_stale_trial_callback=_stale_trial_callback(cfg))
    if sqlite:
        _serialize_sqlite_transactions(storage.engine)
    return storage


def _serialize_sqlite_transactions(engine) -> None:
    """SQLite has no row locks and pysqlite starts transactions late, so two local workers can both take the
    same queued trial (Optuna reads WAITING, then writes RUNNING). BEGIN IMMEDIATE makes each transaction hold
    the write lock from its start (SQLAlchemy's recipe for pysqlite); PostgreSQL locks the row itself."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, connection_record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # pooled connections made before the listeners


def _stale_trial_callback(cfg: SearchConfig):
    import optuna

    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)

    def on_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        reason = f"worker died: no heartbeat for {3 * cfg.heartbeat_seconds} s"
        run_id = trial_run_id(cfg, trial)
        if run_id:
            record_outcome(run_id, trial.number, "FAIL", reason)
        print(f"trial {trial.number} FAIL: {reason}; queued again", file=sys.stderr, flush=True)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != RUN_ID_ATTR}  # the copy gets its own
        retry(study, trial)

    return on_stale


def make_sampler(cfg: SearchConfig, worker_index: int):
    import optuna

    seed = cfg.seed + worker_index  # local workers must not propose the same points
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.sampler == "grid":
        return optuna.samplers.GridSampler({"latent_dim": latent_dims(cfg), "beta": grid_betas(cfg)}, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant_liar is "experimental"
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant liar: parallel workers spread


def make_pruner(cfg: SearchConfig):
    import optuna

    if cfg.objective != "neg_elbo":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS)


def open_study(cfg: SearchConfig, worker_index: int = 0, create: bool = False):
    """Create (``create``) or load the study. A new study gets its settings and the lab's default trial queued;
    an existing one must have the same settings. ConfigError if the storage cannot be opened."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed by the worker
    try:
        storage = make_storage(cfg)
        if create:
            directions = ["minimize", "minimize"] if cfg.objective == "pareto" else ["minimize"]
            study = optuna.create_study(study_name=cfg.study_name, storage=storage, directions=directions,
                                        sampler=make_sampler(cfg, worker_index), pruner=make_pruner(cfg),
                                        load_if_exists=True)
        else:
            study = optuna.load_study(study_name=cfg.study_name, storage=storage,
                                      sampler=make_sampler(cfg, worker_index), pruner=make_pruner(cfg))
    except KeyError:
        raise ConfigError(f"study_name {cfg.study_name!r} is not in storage {redacted(cfg.storage)}: start it with "
                          "genlab search (without --worker)") from None
    except Exception as e:  # SQLAlchemy/driver errors: wrong host, credentials, database
        message = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ConfigError(f"storage {redacted(cfg.storage)} cannot be opened ({message})") from None
    settings = study.user_attrs.get(tags.SEARCH_SETTINGS)  # a resumed study keeps its trial settings
    if settings is None and create:
        study.set_user_attr(tags.SEARCH_SETTINGS, settings_of(cfg))
        if DEFAULT_TRIAL["latent_dim"] in latent_dims(cfg) and cfg.beta_min <= DEFAULT_TRIAL["beta"] <= cfg.beta_max:
            study.enqueue_trial(DEFAULT_TRIAL, user_attrs={"lab_default": True}, skip_if_exists=True)
    elif settings is not None and settings != settings_of(cfg):
        changed = ", ".join(f"{k}={settings[k]!r}" for k in settings if settings[k] != settings_of(cfg).get(k))
        raise ConfigError(f"study_name {cfg.study_name!r} exists with other settings ({changed}): use them, or "
                          "another study_name")
    if create and study.metric_names != METRIC_NAMES[cfg.objective]:  # also names a study made before they were set
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(METRIC_NAMES[cfg.objective])
    return study


def study_counts(study) -> dict[str, int]:
    """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


# ---------------------------------------------------------------- one trial

class SurplusTrial(Exception):
    """Two workers asked for a trial at once when one was missing: the later one fails without training."""


def objective(trial, cfg: SearchConfig, parent_run_id: str, splits: data.Splits | None = None,
              ) -> float | tuple[float, float]:
    """Train one VAE (the train-vae loop, as a child run) and return the value(s) to minimise."""
    import optuna

    from genlab import tracking

    live = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                          optuna.trial.TrialState.PRUNED,
                                                          optuna.trial.TrialState.RUNNING))
    if sum(t.number < trial.number for t in live) >= cfg.n_trials:
        trial.set_user_attr("fail_reason", "surplus: the study already had n_trials trials done or running")
        raise SurplusTrial(f"trial {trial.number} is surplus")
    latent_dim = trial.suggest_categorical("latent_dim", latent_dims(cfg))
    beta = trial.suggest_float("beta", cfg.beta_min, cfg.beta_max, log=True)
    trial_tags = {tags.OPTUNA_STUDY: cfg.study_name, tags.OPTUNA_TRIAL: trial.number, tags.OPTUNA_STATE: "RUNNING"}

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1 or RUN_ID_ATTR not in trial.user_attrs:
            trial.set_user_attr(RUN_ID_ATTR, tracking.active_run_id())
        if cfg.objective == "neg_elbo":
            trial.report(metrics["val_neg_elbo"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val_neg_elbo {metrics['val_neg_elbo']:.2f} worse than the median "
                                         f"at epoch {epoch}")

    try:
        shared = {(cfg.dataset, cfg.limit): splits} if splits is not None else {}
        trial_run = vae_entry.run(trial_config(cfg, latent_dim, beta), Context(
            tags=trial_tags, parent_run_id=parent_run_id, splits=shared, on_epoch=on_epoch, log_models=False))
        values = objective_values(cfg, dict(trial_run.metrics))
    except optuna.TrialPruned as e:
        trial.set_user_attr("prune_reason", str(e))
        _end_trial_run(trial, cfg, "PRUNED", str(e))
        raise
    except (Exception, KeyboardInterrupt) as e:
        reason = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}".splitlines()[0]
        trial.set_user_attr("fail_reason", reason[:500])
        _end_trial_run(trial, cfg, "FAIL", reason)
        raise
    _end_trial_run(trial, cfg, "COMPLETE")
    return values


def objective_values(cfg: SearchConfig, final: dict[str, float]) -> float | tuple[float, float]:
    if cfg.objective == "neg_elbo":
        return final["val_neg_elbo"]
    if "fid_proxy" not in final:
        raise RuntimeError(f"objective {cfg.objective} needs fid_proxy, which train-vae did not report")
    return final["fid_proxy"] if cfg.objective == "fid" else (final["val_recon"], final["fid_proxy"])


def trial_run_id(cfg: SearchConfig, trial) -> str | None:
    """The MLflow run of a trial: noted on the trial after its first epoch, else found by its tags (set when the
    run starts, so a worker that died in its first epoch leaves a run that is found); None before it started."""
    from genlab import tracking

    return trial.user_attrs.get(RUN_ID_ATTR) or tracking.find_run(
        cfg.experiment, {tags.OPTUNA_STUDY: cfg.study_name, tags.OPTUNA_TRIAL: str(trial.number)})


def record_outcome(run_id: str, trial_number: int, state: str, reason: str = "") -> None:
    """A trial's Optuna outcome on its run: tags ``optuna.trial_number``, ``optuna.state`` (COMPLETE | PRUNED |
    FAIL) and ``optuna.reason``. A PRUNED run ends FINISHED (stopping early is its normal end); a FAIL run still
    RUNNING (its worker died) ends FAILED; KILLED and FAILED runs stay so."""
    from genlab import tracking

    outcome = {tags.OPTUNA_TRIAL: str(trial_number), tags.OPTUNA_STATE: state}
    if reason:
        outcome[tags.OPTUNA_REASON] = reason.splitlines()[0][:500]
    tracking.Run(run_id).set_tags(outcome)
    status = tracking.run_status(run_id)
    if state == "PRUNED" and status != "FINISHED":
        tracking.mark_run(run_id, "FINISHED")
    elif state == "FAIL" and status == "RUNNING":
        tracking.mark_run(run_id, "FAILED", reason)


def _end_trial_run(trial, cfg: SearchConfig, state: str, reason: str = "") -> None:
    run_id = trial_run_id(cfg, trial)
    if run_id is None:  # failed before its run started (nothing to mark)
        return
    trial.set_user_attr(RUN_ID_ATTR, run_id)
    record_outcome(run_id, trial.number, state, reason)
    print(f"trial {trial.number} {state} (latent_dim {trial.params['latent_dim']}, beta {trial.params['beta']:.3g})"
          f"{': ' + reason if reason else ''}  run {run_id}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the worker loop

def run_worker(cfg: SearchConfig, worker_index: int = 0, study=None) -> None:
    """Run trials until the study has n_trials COMPLETE + PRUNED (or the timeout). Trials running elsewhere
    count as on their way; when only those remain, wait one grace period in case their worker is dead."""
    from genlab import tracking

    tracking.init_store()
    study = study or open_study(cfg, worker_index)
    parent_run_id = study.user_attrs.get(tags.SEARCH_PARENT_RUN)
    if parent_run_id is None:
        raise ConfigError(f"study_name {cfg.study_name!r} has no MLflow parent run: start it with genlab search")
    splits = data.load(cfg.dataset, cfg.limit)  # once per worker, not once per trial
    with _stop_on_signals() as stop:
        _trial_loop(cfg, study, parent_run_id, splits, stop)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C / SIGTERM raise KeyboardInterrupt (the current trial FAIL, its run KILLED) and also set an event
    that the loop checks before each trial: an interrupt that lands where Python ignores exceptions (a __del__,
    a weakref callback) still stops the worker after its current trial."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        stop.set()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _trial_loop(cfg: SearchConfig, study, parent_run_id: str, splits: data.Splits, stop: threading.Event) -> None:
    import optuna

    grace = 3 * cfg.heartbeat_seconds
    deadline = time.monotonic() + cfg.timeout if cfg.timeout else math.inf
    waiting_since = None
    states: list[str] = []  # of this worker's trials
    while True:
        if stop.is_set():
            raise KeyboardInterrupt
        if states[-MAX_FAILURES_IN_A_ROW:] == ["FAIL"] * MAX_FAILURES_IN_A_ROW:
            raise RuntimeError(f"{MAX_FAILURES_IN_A_ROW} trials in a row failed (see their fail_reason); fix the "
                               "cause and rerun the same command to resume")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)
        counts = study_counts(study)
        done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
        if done >= cfg.n_trials or time.monotonic() > deadline:
            return
        if done + counts.get("RUNNING", 0) >= cfg.n_trials:
            waiting_since = waiting_since or time.monotonic()
            if time.monotonic() - waiting_since > grace + cfg.heartbeat_seconds:
                return
            time.sleep(min(1.0, cfg.heartbeat_seconds))  # notice at once when the last trial ends
            continue
        waiting_since = None
        try:
            study.optimize(lambda trial: objective(trial, cfg, parent_run_id, splits), n_trials=1,
                           catch=(loop.NonFiniteLoss, SurplusTrial),
                           callbacks=[lambda _, trial: states.append(trial.state.name)])
        except optuna.exceptions.UpdateFinishedTrialError:  # declared dead while alive (a very late heartbeat)
            print("a trial of this worker was declared dead while running; it was queued again", file=sys.stderr)


# ---------------------------------------------------------------- the coordinator

def run(cfg: SearchConfig, context: Context) -> Result:
    """Validate, create or resume the study and its parent run, run the workers, then log the summary. With
    ``context.worker``: only run trials, as that worker of an existing study (``genlab search --worker N``)."""
    from genlab import tracking

    validate(cfg)  # before any storage, store or run is created
    if context.worker is not None:
        worker_main(cfg, context.worker)
        return Result()
    splits = check_data(cfg)
    study = open_study(cfg, create=True)  # creates a fresh SQLite file now, before any worker starts
    params = dict(settings_of(cfg))
    params.update(study_name=cfg.study_name, storage=redacted(cfg.storage), latent_dims=cfg.latent_dims)
    parent_run_id = tracking.start_detached_run(  # children carry the study name too: the parent has the kind
        cfg.experiment, f"search {cfg.study_name}", params, {tags.OPTUNA_STORAGE: redacted(cfg.storage), **context.tags},
        find={tags.OPTUNA_STUDY: cfg.study_name, tags.KIND: tags.SEARCH})
    study.set_user_attr(tags.SEARCH_PARENT_RUN, parent_run_id)
    parent = tracking.Run(parent_run_id)
    parent.log_splits(splits)  # before the workers: they then find the data set instead of racing
    try:
        codes = [0]
        if cfg.workers == 1:
            run_worker(cfg, 0, study)
        else:
            codes = _run_worker_processes(cfg)
        summary = summarize(study, cfg, parent_run_id)
        short = summary["trials_complete"] + summary["trials_pruned"] < cfg.n_trials
        if any(codes):
            message = (f"worker exit codes {codes}: the study has {summary['trials_complete']:.0f} complete + "
                       f"{summary['trials_pruned']:.0f} pruned of {cfg.n_trials} trials")
            if short:
                raise RuntimeError(message + "; rerun the same command to resume")
            print(f"genlab: warning: {message} (the other workers completed it)", file=sys.stderr)
    except KeyboardInterrupt:
        tracking.mark_run(parent_run_id, "KILLED", "interrupted")
        raise
    except BaseException as e:
        tracking.mark_run(parent_run_id, "FAILED", f"{type(e).__name__}: {e}")
        raise
    tracking.mark_run(parent_run_id, "FINISHED")
    return Result(parent_run_id, summary, (summary_line(cfg, summary, parent_run_id),))


def summary_line(cfg: SearchConfig, summary: dict[str, float], parent_run_id: str) -> str:
    """What ``genlab search`` prints when the study is done."""
    best = (f"best {cfg.objective} {summary['best_value']:.2f}" if "best_value" in summary else
            f"{summary['pareto_trials']:.0f} Pareto trials" if "pareto_trials" in summary else "no complete trial")
    best += (f" (trial {summary['best_trial_number']:.0f}: latent_dim {summary['best_latent_dim']:.0f}, "
             f"beta {summary['best_beta']:.3g})" if "best_trial_number" in summary else "")
    return (f"search {cfg.study_name}: {summary['trials_complete']:.0f} complete, {summary['trials_pruned']:.0f} "
            f"pruned, {summary['trials_failed']:.0f} failed; {best}; parent run {parent_run_id}")


def worker_command(cfg: SearchConfig, worker_index: int) -> list[str]:
    """The command line of one local worker process (same settings, trials only)."""
    flags = [a for f in fields(SearchConfig) for a in (f"--{f.name.replace('_', '-')}", str(getattr(cfg, f.name)))]
    return [sys.executable, "-m", "genlab", "search", *flags, "--worker", str(worker_index)]


def _run_worker_processes(cfg: SearchConfig) -> list[int]:
    """Start cfg.workers processes and wait for them; on Ctrl-C/SIGTERM, stop them cleanly (SIGTERM once:
    each fails its trial and marks its run KILLED). Returns their exit codes."""
    from genlab import tracking

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    # Own sessions: a terminal's Ctrl-C reaches the coordinator only, which forwards one SIGTERM.
    procs = [subprocess.Popen(worker_command(cfg, i), env=env, start_new_session=True) for i in range(cfg.workers)]
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise


def worker_main(cfg: SearchConfig, worker_index: int) -> None:
    """``genlab search --worker N``: one worker process (local ones share the machine's cores)."""
    import torch

    validate(cfg)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.workers))
    run_worker(cfg, worker_index)


# ---------------------------------------------------------------- summary

def summarize(study, cfg: SearchConfig, parent_run_id: str) -> dict[str, float]:
    """Log to the parent run: counts, the best trial, trials.csv and the figures; register the best decoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genlab import tracking

    counts = study_counts(study)
    summary = {"n_trials": cfg.n_trials, "trials_complete": counts.get("COMPLETE", 0),
               "trials_pruned": counts.get("PRUNED", 0), "trials_failed": counts.get("FAIL", 0)}
    best = best_trial(study, cfg)
    if best is not None:
        if cfg.objective == "pareto":
            summary["pareto_trials"] = len(study.best_trials)
        else:
            summary["best_value"] = best.value
        summary.update(best_latent_dim=best.params["latent_dim"], best_beta=best.params["beta"],
                       best_trial_number=best.number)
    figures, texts = plot_study(study, cfg)
    texts["trials.csv"] = study.trials_dataframe().to_csv(index=False)
    try:
        parent = tracking.Run(parent_run_id)
        parent.log_metrics(summary, step=summary["trials_complete"] + summary["trials_pruned"])
        for path, figure in figures.items():
            parent.log_figure(figure, path)
        for path, text in texts.items():
            parent.log_text(text, path)
    finally:  # pyplot keeps every figure until closed: a long-lived process (tests, notebooks) would leak them
        for figure in figures.values():
            plt.close(figure)
    if best is not None:
        register_best(best, cfg)
    return summary


def best_trial(study, cfg: SearchConfig):
    """The best COMPLETE trial; for pareto, the front's trial with the lowest fid_proxy (best samples)."""
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        return None
    if cfg.objective == "pareto":
        return min(study.best_trials, key=lambda t: t.values[1])
    return study.best_trial


def register_best(trial, cfg: SearchConfig) -> None:
    """Register the best trial's decoder as genlab-vae@best (logged now from its last checkpoint: trials skip
    model logging)."""
    import numpy as np

    from genlab import tracking
    from genlab.models.vae import VAE

    run_id = trial_run_id(cfg, trial)
    if run_id is None or tracking.alias_run_id(MODEL_NAME, MODEL_ALIAS) == run_id:
        return
    if not tracking.has_logged_model(run_id, "decoder"):
        checkpoint = vae.load_checkpoint(last_checkpoint(run_id))
        trained = vae_entry.config_from_params(checkpoint["config"])  # ignores keys renamed since (precision -> dtype)
        model = VAE(trained.latent_dim, trained.arch)
        model.load_state_dict(checkpoint["model"])
        with tracking.start_run(cfg.experiment, "", {}, {}, resume_run_id=run_id) as run:
            run.log_model(model.decoder.eval(), "decoder", np.zeros((2, trained.latent_dim), np.float32))
    version = tracking.register_model(run_id, "decoder", MODEL_NAME, alias=MODEL_ALIAS)
    print(f"registered models:/{MODEL_NAME}@{MODEL_ALIAS} = version {version} (trial {trial.number}, run {run_id})",
          file=sys.stderr, flush=True)


def plot_study(study, cfg: SearchConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """Figures (path -> matplotlib figure; the caller closes them) and explanatory texts for the parent run:
    Optuna's own plots, plus the latent_dim x beta map that Optuna has no equivalent of."""
    import matplotlib.pyplot as plt
    import pandas as pd

    names = METRIC_NAMES[cfg.objective]
    rows = [{"number": t.number, "state": t.state.name, "latent_dim": t.params.get("latent_dim"),
             "beta": t.params.get("beta"), **{n: t.values[i] if t.values else None for i, n in enumerate(names)}}
            for t in study.get_trials(deepcopy=False) if t.params]
    df = pd.DataFrame(rows)
    figures: dict[str, Any] = {}
    texts: dict[str, str] = {}
    if df.empty:
        texts["figures.txt"] = "no trial has parameters yet: no figures"
        return figures, texts
    try:
        _optuna_figures(study, cfg, int((df.state == "COMPLETE").sum()), figures, texts)
        figures["latent_dim_beta.png"] = _search_space_figure(df, cfg)
    except BaseException:
        for figure in figures.values():
            plt.close(figure)
        raise
    return figures, texts


def _optuna_figures(study, cfg: SearchConfig, n_complete: int, figures: dict[str, Any], texts: dict[str, str],
                    ) -> None:
    """Add optuna.visualization.matplotlib's plots to ``figures`` as soon as each exists (so none is lost)."""
    import matplotlib.pyplot as plt
    import optuna
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization import matplotlib as plots

    names = METRIC_NAMES[cfg.objective]
    labels = [AXIS_LABELS[n] for n in names]
    # Optuna's plots call plt.style.use("ggplot"): rc_context keeps that style out of every later figure.
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if len(names) == 1:
            figures["history.png"] = _figure_of(plots.plot_optimization_history(study, target_name=labels[0]))
        else:  # Optuna plots one objective per figure: both go into the one history.png, side by side
            histories = []
            try:
                for i, label in enumerate(labels):
                    histories.append(_figure_of(plots.plot_optimization_history(
                        study, target=lambda t, i=i: t.values[i], target_name=label)))
                figures["history.png"] = _side_by_side(histories)
            finally:
                for figure in histories:
                    plt.close(figure)

        # fANOVA fits a random forest: on fewer trials it would only fit noise.
        if n_complete < MIN_TRIALS_FOR_IMPORTANCES:
            texts["importances.txt"] = (f"no parameter importances: {n_complete} complete trials, fANOVA needs "
                                        f"{MIN_TRIALS_FOR_IMPORTANCES}")
        else:
            # One objective: target + target_name so the label has units (metric_names would win otherwise).
            single = {"target": lambda t: t.values[0], "target_name": labels[0]} if len(names) == 1 else {}
            try:
                figures["importances.png"] = _figure_of(plots.plot_param_importances(
                    study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=cfg.seed), **single))
            except (RuntimeError, ValueError) as e:  # e.g. every complete trial has the same parameters
                texts["importances.txt"] = f"no parameter importances: {e}"
                print(f"genlab: note: {texts['importances.txt']}", file=sys.stderr)

        # Only neg_elbo trials report per-epoch values (to the pruner): this shows why a trial was stopped.
        if cfg.objective == "neg_elbo" and any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            figure = figures["intermediate_values.png"] = _figure_of(plots.plot_intermediate_values(study))
            figure.axes[0].set(xlabel="epoch", ylabel=labels[0],
                               title="per-epoch values: a line that ends early is a pruned trial")
            figure.axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))

        if cfg.objective == "pareto" and n_complete:
            figure = figures["pareto_front.png"] = _figure_of(plots.plot_pareto_front(study, target_names=labels))
            for t in study.best_trials:  # which configuration each point of the front is
                figure.axes[0].annotate(f"z{t.params['latent_dim']} b{t.params['beta']:.2g}", tuple(t.values),
                                        fontsize=7)


def _figure_of(axes) -> Any:
    """The figure of what an Optuna plot returns (one Axes, or an array of them), laid out to fit: Optuna
    leaves long tick labels (latent_dim) and legends beside the axes cut at the edge."""
    figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
    figure.tight_layout()
    return figure


def _side_by_side(parts: list) -> Any:
    """A new figure showing the given ones left to right, pixel for pixel (they stay open: the caller's)."""
    import io

    import matplotlib.pyplot as plt

    images = []
    for part in parts:
        buffer = io.BytesIO()
        part.savefig(buffer, format="png", dpi=part.dpi)
        buffer.seek(0)
        images.append(plt.imread(buffer))
    dpi, width, height = parts[0].dpi, sum(i.shape[1] for i in images), max(i.shape[0] for i in images)
    figure = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    left = 0
    for image in images:
        ax = figure.add_axes((left / width, 1 - image.shape[0] / height, image.shape[1] / width,
                              image.shape[0] / height))
        ax.imshow(image, interpolation="none")
        ax.set_axis_off()
        left += image.shape[1]
    return figure


def _search_space_figure(df, cfg: SearchConfig) -> Any:
    """latent_dim x beta, coloured by each objective; pruned and failed trials marked."""
    import matplotlib.pyplot as plt

    names = METRIC_NAMES[cfg.objective]
    complete = df[df.state == "COMPLETE"]
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for ax, target in zip(axes[0], names, strict=True):
        if len(complete):
            points = ax.scatter(complete.beta, complete.latent_dim, c=complete[target], cmap="viridis_r", s=80,
                                label="complete")
            fig.colorbar(points, ax=ax, label=AXIS_LABELS[target] + " (lower is better)")
        for state, marker, color in (("PRUNED", "x", "grey"), ("FAIL", "X", "red")):
            other = df[df.state == state]
            if len(other):
                ax.scatter(other.beta, other.latent_dim, marker=marker, color=color, label=state.lower())
        ax.set_xscale("log")
        ax.set_yscale("log", base=2)
        ax.set_yticks(latent_dims(cfg), [str(d) for d in latent_dims(cfg)])
        ax.set(xlabel="beta (KL weight)", ylabel="latent_dim", title=f"latent_dim x beta: {AXIS_LABELS[target]}")
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
