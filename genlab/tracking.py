"""Everything that talks to MLflow: the tracking store, runs and nested runs, batched metrics, images, models,
the registry, and reading runs back. A leaf module: of genlab it imports only the tag names.

Run lifecycle: ``start_run`` is a context manager that ends the run FINISHED, KILLED (Ctrl-C / SIGTERM) or
FAILED (any other error, with the reason as tag ``genlab.failure``) so no run is ever left RUNNING by an error.
A run tagged ``genlab.claim`` (each run a study makes) is a *claim* on its study key, shared by every process on the
store: it carries a heartbeat while it lasts, and a new one yields (``Claimed``) to a FINISHED run or an older live
claim of the same key (see "claims" below), so two studies on one store train each run once.
``Run`` logs by run id, so it writes to its own run whether or not that run is this process's active one.
``load_trained_run`` is the one check of a run that another run consumes (resume, init_from, probe, sample, ...).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ``tags`` is a parameter of several functions here: the module goes by another name.
from genlab import tags as tagnames
from genlab.configs import PROJECT_ROOT

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # downloads: keep stderr one line

import mlflow  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_RUN_NAME  # noqa: E402

# Creating a store, and starting or stopping system metrics, log at INFO: keep stderr to genlab's own lines.
for _name in ("mlflow.store.db.utils", "alembic.runtime.migration", "mlflow.system_metrics.system_metrics_monitor"):
    logging.getLogger(_name).setLevel(logging.WARNING)

PIP_REQUIREMENTS = ["torch==2.13.0", "numpy==2.4.6"]  # explicit: inferring them costs seconds per model


# The value of tag tagnames.EXPERIMENT_KIND: what MLflow files the experiment under (training, not GenAI). MLflow
# 3.17's UI picks its mode from the address instead: genlab/ui.py.
MODEL_TRAINING_EXPERIMENT = "custom_model_development"
SYSTEM_METRICS_INTERVAL_S = 5.0  # MLflow's default of 10 s leaves a short study run without a single sample

# What each genlab experiment holds, by the kind of run it receives first (a study describes its own).
EXPERIMENT_DESCRIPTIONS = {
    tagnames.VAE: "VAE training runs (`genlab train-vae`, `mlflow run . -e train_vae`). Compare runs on `val_neg_elbo` "
           "(nats/image) and `fid_proxy`; each run's Artifacts > images steps through its prior samples and "
           "reconstructions epoch by epoch.",
    tagnames.GAN: "DCGAN training runs (`genlab train-gan`); the generator is the VAE decoder's architecture and can start "
           "from a trained decoder (`init_from`). `fid_proxy` is logged from step 0, before any GAN update.",
    tagnames.PROBE: "VAE encoder vs GAN discriminator (`genlab probe`): linear probes and output statistics.",
    tagnames.GRADVAR: "Gradient variance of the reparameterised and score-function estimators (`genlab gradvar`).",
    tagnames.CLASSIFIER: "The feature classifier behind the sample-quality metrics (fid_proxy, precision, ...).",
    tagnames.CALIBRATION: "Sample-quality metrics of reference image sets: what a fid_proxy value means.",
    tagnames.SEARCH: "Optuna searches over latent_dim x beta: a parent run per study, one nested train_vae run per trial.",
    tagnames.BENCH: "genlab bench: genlab's speed side by side with the common alternatives.",
    tagnames.REPORT: "The study's report (French and English) built from the tracked runs, with its verdicts.",
}


class TrackingError(Exception):
    """A run, model or artifact that the user named cannot be used (message is one line)."""


# ---------------------------------------------------------------- store

def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project root>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def init_store() -> str:
    """Point MLflow at the store and create it now (two processes creating one SQLite file at once crash)."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        MlflowClient().search_experiments(max_results=1)
    except MlflowException as e:  # an unknown scheme or malformed URL is bad input (exit 2), before any run
        raise TrackingError(f"cannot use tracking store '{uri}' (MLFLOW_TRACKING_URI): "
                            f"{str(e).strip().splitlines()[0][:160]}") from None
    return uri


def current_store() -> str:
    """The store this process's MLflow calls go to now."""
    return mlflow.get_tracking_uri()


def point_at(uri: str) -> None:
    """Send this process's MLflow calls to ``uri`` (an existing store; ``init_store`` creates one)."""
    mlflow.set_tracking_uri(uri)


def describe_experiment(name: str, description: str) -> str:
    """Create the experiment if needed and set its kind and description (shown in the UI). Returns its id."""
    experiment_id = _experiment_id(name)
    client = MlflowClient()
    client.set_experiment_tag(experiment_id, tagnames.EXPERIMENT_KIND, MODEL_TRAINING_EXPERIMENT)
    client.set_experiment_tag(experiment_id, tagnames.NOTE, description)
    return experiment_id


def set_experiment_tag(experiment_id: str, key: str, value: str) -> None:
    """One tag of an existing experiment (a view the UI opens: genlab/ui.py)."""
    MlflowClient().set_experiment_tag(experiment_id, key, value)


def list_experiments() -> list[tuple[str, str, dict[str, str]]]:
    """(id, name, tags) of each active experiment of the store."""
    return [(e.experiment_id, e.name, dict(e.tags)) for e in MlflowClient().search_experiments()]


def code_version() -> str:
    """The git commit of the project (with ``-dirty`` for local changes), or ``unknown``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def source_tags() -> dict[str, str]:
    """``genlab.code_version`` (the commit, ``-dirty`` with local changes) and MLflow's own git-commit tag."""
    version = code_version()
    return {tagnames.CODE_VERSION: version,
            **({tagnames.GIT_COMMIT: version.removesuffix("-dirty")} if version != "unknown" else {})}


# ---------------------------------------------------------------- runs

class Run:
    """One run, by id, as the training loops and entry points see it: metrics once per epoch, params, tags, images,
    figures, files, data sets, models. Every call names the run, so it does not matter which run (if any) is this
    process's active one: a study's parent run, a search's parent run and the run being trained all log alike."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self._client = MlflowClient()  # bound to the store of now: the run lives there

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """One batched, synchronous call. Refuses non-finite values: a NaN metric is never logged silently."""
        bad = [k for k, v in metrics.items() if not math.isfinite(float(v))]
        if bad:
            raise ValueError(f"non-finite metric(s) {', '.join(bad)} at step {step}")
        timestamp_ms = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[Metric(k, float(v), timestamp_ms, step or 0)
                                                     for k, v in metrics.items()], synchronous=True)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params not yet on the run (a resumed run, or one that `mlflow run` created, has some already)."""
        existing = self._client.get_run(self.run_id).data.params
        new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        if new:
            self._client.log_batch(self.run_id, params=new, synchronous=True)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if tags:
            self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

    def log_image(self, image: Any, artifact_file: str) -> None:
        """A uint8 (H, W) or (H, W, 3) array as a PNG artifact."""
        self._client.log_image(self.run_id, image, artifact_file=artifact_file)

    def log_image_step(self, image: Any, key: str, step: int) -> None:
        """One image of a series (stored under ``images/``): the UI steps through it and compares it across runs."""
        self._client.log_image(self.run_id, image, key=key, step=step, synchronous=True)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self._client.log_figure(self.run_id, figure, artifact_file)

    def log_dict(self, data: dict | list, artifact_file: str) -> None:
        self._client.log_dict(self.run_id, data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_dataset(self, name: str, source: str, digest: str, context: str, n_images: int) -> None:
        """Record what the run saw, for the UI's Datasets column (no data is copied): data set ``NAME-CONTEXT``
        from local ``source``, with the input tags MLflow's UI shows (its context) and the number of images."""
        dataset = Dataset(name=f"{name}-{context}", digest=digest, source_type="local",
                          source=json.dumps({"uri": source}))
        inputs = [DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context),
                                              InputTag("images", str(n_images))])]
        try:
            self._client.log_inputs(self.run_id, datasets=inputs)
        except MlflowException:
            # MLflow inserts a data set if absent, in two steps: two runs starting at once in one experiment can
            # both miss it and the second insert fails on the unique key. The row exists now: once more finds it.
            self._client.log_inputs(self.run_id, datasets=inputs)

    def log_splits(self, splits: Any, names: tuple[str, ...] = ("train", "val", "test")) -> None:
        """``log_dataset`` for each named split of a data.Splits (``train_x``, ``val_x``, ``test_x``)."""
        for split in names:
            self.log_dataset(splits.name, splits.source, splits.digest(split), split,
                             len(getattr(splits, f"{split}_x")))

    def log_model(self, module: Any, name: str, input_example: Any) -> str:
        """Log a torch module (a decoder, generator or encoder returning one tensor) as an MLflow model.

        The one call that needs this run to be the active one: MLflow 3.17's ``log_model`` takes a ``run_id``, but
        puts the logged model in the *active* run's experiment (else the default experiment), so by id alone a
        model of a run that is not active would land in another experiment than its run."""
        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise RuntimeError(f"log_model: run '{self.run_id}' is not the active run (start_run makes it so)")
        info = mlflow.pytorch.log_model(module, name=name, input_example=input_example,
                                        pip_requirements=PIP_REQUIREMENTS)
        return info.model_uri


@contextlib.contextmanager
def start_run(experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, Any],
              resume_run_id: str | None = None, parent_run_id: str | None = None, description: str = "",
              system_metrics: bool = False) -> Iterator[Run]:
    """Start (or resume, or adopt the one `mlflow run` made) a run; end it FINISHED, KILLED or FAILED.

    ``description`` is the run's note in the UI (a ``mlflow.note.content`` in ``tags`` wins: the study's);
    ``system_metrics`` samples CPU, memory (and GPU) usage every few seconds while the run lasts. With a
    ``genlab.claim`` tag the new run is a claim: it heartbeats until it ends, and raises ``Claimed`` (the run
    ended KILLED and deleted, before anything is logged) when a FINISHED run or an older live claim holds the key."""
    init_store()
    if system_metrics and not os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
    adopted = resume_run_id or os.environ.get("MLFLOW_RUN_ID")  # resumed, or launched by `mlflow run`: ours
    claim = "" if adopted else str(tags.get(tagnames.CLAIM) or "")
    if adopted:
        active = mlflow.start_run(run_id=adopted, log_system_metrics=system_metrics)
    else:
        experiment_id = _experiment_id(experiment, tags.get(tagnames.KIND))
        beat = {tagnames.HEARTBEAT: _now()} if claim else {}  # live from its creation on
        # Tags at creation: a search finds a trial's run by its tags even if the worker dies at once.
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, parent_run_id=parent_run_id,
                                  tags={**{k: str(v) for k, v in tags.items()}, **beat},
                                  log_system_metrics=system_metrics)
    run = Run(active.info.run_id)
    # a resumed study run is its key's claim again: it beats too
    heartbeat = Heartbeat(run.run_id) if claim or (adopted and _claim_of(adopted)) else None
    try:
        if claim:
            holder = _holder(claim, [active.info.experiment_id])
            if holder is not None and holder.run_id != run.run_id:
                raise Claimed(holder.run_id)
        _describe_new_experiment(active.info.experiment_id, tags.get(tagnames.KIND))
        note = {tagnames.NOTE: description} if description and not resume_run_id else {}
        named = {MLFLOW_RUN_NAME: run_name} if adopted and not resume_run_id else {}  # `mlflow run` gave it a random name
        run.set_tags({**named, **source_tags(), **note, **tags})
        run.log_params(params)
        yield run
    except Claimed as e:
        _yield_claim(run, heartbeat, e.holder)
        raise
    except KeyboardInterrupt:
        _end(run, "KILLED", "interrupted")
        raise
    except BaseException as e:
        _end(run, "FAILED", f"{type(e).__name__}: {e}")
        raise
    else:
        mlflow.end_run("FINISHED")
    finally:
        if heartbeat is not None:
            heartbeat.stop()


def _end(run: Run, status: str, reason: str) -> None:
    try:
        run.set_tags({tagnames.FAILURE: reason.splitlines()[0][:500] if reason else status})
    finally:
        mlflow.end_run(status)


def _experiment_id(name: str, kind: str | None = None) -> str:
    """The id of experiment ``name``, created (as a model-training experiment, described by ``kind``) if absent."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    tags = {tagnames.EXPERIMENT_KIND: MODEL_TRAINING_EXPERIMENT}
    if kind in EXPERIMENT_DESCRIPTIONS:
        tags[tagnames.NOTE] = EXPERIMENT_DESCRIPTIONS[kind]
    try:
        return client.create_experiment(name, tags=tags)
    except MlflowException:  # another process created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


def _describe_new_experiment(experiment_id: str, kind: str | None) -> None:
    """Give an experiment made elsewhere (`mlflow run --experiment-name`, an older genlab) its kind and, if it has
    none, a description; a description already there (the study's, the user's) stays."""
    client = MlflowClient()
    tags = client.get_experiment(experiment_id).tags
    if tags.get(tagnames.EXPERIMENT_KIND) != MODEL_TRAINING_EXPERIMENT:
        client.set_experiment_tag(experiment_id, tagnames.EXPERIMENT_KIND, MODEL_TRAINING_EXPERIMENT)
    if not tags.get(tagnames.NOTE) and kind in EXPERIMENT_DESCRIPTIONS:
        client.set_experiment_tag(experiment_id, tagnames.NOTE, EXPERIMENT_DESCRIPTIONS[kind])


def mark_run(run_id: str, status: str, reason: str = "") -> None:
    """End a run that this process does not hold (a crashed worker's trial, say). ``reason`` becomes its
    ``genlab.failure``; a run ended FINISHED keeps none (start_run tags one when an exception ends its block, even
    an expected one such as Optuna's pruning)."""
    client = MlflowClient()
    if reason:
        client.set_tag(run_id, tagnames.FAILURE, reason[:500])
    elif status == "FINISHED":
        with contextlib.suppress(MlflowException):
            client.delete_tag(run_id, tagnames.FAILURE)
    client.set_terminated(run_id, status)


# ---------------------------------------------------------------- claims: each study run trains once per store

def _seconds(variable: str, default: float) -> float:
    """A positive number of seconds from environment variable ``variable``, else ``default``."""
    text = os.environ.get(variable, "")
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if value > 0:
        return value
    print(f"genlab: warning: {variable}={text!r} is not a positive number of seconds; using {default:g}",
          file=sys.stderr)
    return default


# A claimed run refreshes its heartbeat tag this often; a RUNNING claim whose heartbeat is older than STALE_SECONDS
# has lost its process (killed, its machine gone) and is taken over. Every machine sharing a store must use the same
# values, and their clocks must agree to well within STALE_SECONDS (NTP does).
HEARTBEAT_SECONDS = _seconds("GENLAB_HEARTBEAT_SECONDS", 10.0)
STALE_SECONDS = _seconds("GENLAB_STALE_SECONDS", 6 * HEARTBEAT_SECONDS)


class Claimed(Exception):
    """``start_run`` made no run: the study key it claims is held by run ``holder`` (a FINISHED run of the key, or
    an older live claim). The caller waits for that run (``holder_of``) instead of training the same run again."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder

    def __str__(self) -> str:
        return f"run {self.holder} holds this study run's claim"


@dataclass(frozen=True)
class Claim:
    """One run carrying a claim key: its status, start (ms, as MLflow stores it) and last heartbeat (epoch s)."""

    run_id: str
    status: str
    start_time: int
    heartbeat: float

    def stale(self, now: float, stale_seconds: float) -> bool:
        return self.status == "RUNNING" and now - self.heartbeat > stale_seconds


def claim_holder(claims: Collection[Claim], now: float, stale_seconds: float | None = None,
                 ) -> tuple[Claim | None, list[Claim]]:
    """Who holds a key, decided alike by every process that reads the same claims (MLflow has no compare-and-swap:
    each claimer writes its claim, then reads them all): the newest FINISHED run, else the oldest live RUNNING claim
    (earliest start, then smallest run id), else None. Second: the stale claims, RUNNING with a stopped heartbeat."""
    stale_seconds = STALE_SECONDS if stale_seconds is None else stale_seconds
    stale = [c for c in claims if c.stale(now, stale_seconds)]
    finished = [c for c in claims if c.status == "FINISHED"]
    if finished:
        return max(finished, key=lambda c: (c.start_time, c.run_id)), stale
    live = [c for c in claims if c.status == "RUNNING" and not c.stale(now, stale_seconds)]
    return (min(live, key=lambda c: (c.start_time, c.run_id)) if live else None), stale


def holder_of(key: str, experiment: str | None = None) -> Claim | None:
    """The run holding study key ``key`` now (``claim_holder``; among the runs of ``experiment`` if named), after
    marking each stale claim FAILED with the reason. None: nobody holds it, the caller may train it."""
    init_store()
    client = MlflowClient()
    if experiment is None:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        found = client.get_experiment_by_name(experiment)
        ids = [found.experiment_id] if found is not None else []
    return _holder(key, ids) if ids else None


def _holder(key: str, experiment_ids: list[str]) -> Claim | None:
    client = MlflowClient()
    runs = client.search_runs(experiment_ids, filter_string=tagnames.where(tagnames.CLAIM, key), max_results=1000)
    claims = [Claim(r.info.run_id, r.info.status, r.info.start_time, _heartbeat_of(r.data.tags))
              for r in runs if tagnames.HEARTBEAT in r.data.tags]  # a claim without one is no start_run's
    now = time.time()
    holder, stale = claim_holder(claims, now)
    for claim in stale:
        if client.get_run(claim.run_id).info.status == "RUNNING":  # not ended meanwhile
            mark_run(claim.run_id, "FAILED", f"heartbeat stopped: none for {now - claim.heartbeat:.0f} s (over "
                     f"{STALE_SECONDS:g} s), its process is gone; another invocation takes the run over")
    return holder


def _heartbeat_of(run_tags: dict[str, str]) -> float:
    try:
        return float(run_tags.get(tagnames.HEARTBEAT, 0))
    except ValueError:
        return 0.0


def _claim_of(run_id: str) -> str:
    return MlflowClient().get_run(run_id).data.tags.get(tagnames.CLAIM, "")


def _now() -> str:
    return f"{time.time():.1f}"


def _yield_claim(run: Run, heartbeat: Heartbeat | None, holder: str) -> None:
    """End a claim that lost to ``holder`` KILLED and delete it: it trained nothing, and no reader should see it."""
    if heartbeat is not None:
        heartbeat.stop()
    _end(run, "KILLED", f"yielded: run {holder} holds this study run's claim")
    MlflowClient().delete_run(run.run_id)


class Heartbeat:
    """Sets tag ``genlab.heartbeat`` of a claimed run to the time (epoch seconds) now and every HEARTBEAT_SECONDS,
    from a daemon thread, until ``stop()`` (start_run stops it when the run ends, however it ends)."""

    def __init__(self, run_id: str, interval: float | None = None) -> None:
        self.run_id, self.interval = run_id, interval or HEARTBEAT_SECONDS
        self._client = MlflowClient()  # bound to the store of now: the run lives there
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"genlab-heartbeat-{run_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a busy store misses one beat; STALE_SECONDS leaves room for several
                self._client.set_tag(self.run_id, tagnames.HEARTBEAT, _now())
            if self._stopped.wait(self.interval):
                return

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


# ---------------------------------------------------------------- reading runs back

def get_run(run_id: str) -> mlflow.entities.Run:
    """The run, or TrackingError naming it."""
    init_store()
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        raise TrackingError(f"run '{run_id}' not found in {tracking_uri()}") from None


def load_trained_run(run_id: str, kind: str | Collection[str], require_finished: bool = True) -> mlflow.entities.Run:
    """The run ``run_id``, checked before another run consumes it (its checkpoint, its logged model, its params):
    TrackingError, in one line, if it does not exist, is not of ``kind`` (a run kind of genlab.tags, or several),
    or, with ``require_finished``, is not FINISHED: only a finished run has its final checkpoint and models. A
    resume passes ``require_finished=False``: continuing a crashed or killed run is its point."""
    run = get_run(run_id)
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    actual = run.data.tags.get(tagnames.KIND)
    if actual not in kinds:
        raise TrackingError(f"run '{run_id}' is a {actual or 'non-genlab'} run, not a {' or '.join(kinds)} run")
    if require_finished and run.info.status != "FINISHED":
        raise TrackingError(f"run '{run_id}' is {run.info.status}, not FINISHED")
    return run


def download_artifact(run_id: str, path: str, dst: str | Path | None = None) -> Path:
    """Fetch one artifact of a run to a local path, or TrackingError."""
    try:
        dst = str(dst) if dst else tempfile.mkdtemp(prefix="genlab-")
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst))
    except (MlflowException, OSError) as e:
        raise TrackingError(f"run '{run_id}' has no artifact '{path}' ({str(e).splitlines()[0][:200]})") from None


def read_artifact(artifact_uri: str, path: str) -> bytes:
    """The bytes of one artifact under a run's artifact root (the ``artifact_uri`` column of ``search_runs``;
    cheaper than by run id, which costs two run look-ups per file), or TrackingError. Leaves no file behind."""
    try:
        with tempfile.TemporaryDirectory(prefix="genlab-") as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/{path}", dst_path=tmp)
            return Path(local).read_bytes()
    except (MlflowException, OSError) as e:
        raise TrackingError(f"no artifact '{path}' under {artifact_uri} ({str(e).splitlines()[0][:200]})") from None


def load_state_dict(model_uri: str) -> dict:
    """The state dict of a logged PyTorch model (``runs:/…``, ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``)."""
    init_store()
    try:
        model = mlflow.pytorch.load_model(model_uri)
    except (MlflowException, OSError) as e:
        raise TrackingError(f"cannot load model '{model_uri}' ({str(e).splitlines()[0][:200]})") from None
    return dict(model.state_dict())


def logged_model_state_dict(run_id: str, name: str) -> dict:
    """The state dict of the model a run logged under ``name`` (``decoder``, ``encoder``, ``generator``)."""
    return load_state_dict(_logged_model_uri(run_id, name))


def resolve_model_run(model_uri: str) -> str:
    """The run id that produced a registered model version (``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``)."""
    init_store()
    client = MlflowClient()
    spec = model_uri.removeprefix("models:/")
    try:
        if "@" in spec:
            name, alias = spec.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = spec.rsplit("/", 1)
            version = client.get_model_version(name, number)
    except (MlflowException, ValueError):
        raise TrackingError(f"registered model '{model_uri}' not found in {tracking_uri()}") from None
    return version.run_id


def register_model(run_id: str, artifact_name: str, model_name: str, alias: str | None = None) -> str:
    """Register a run's logged model; optionally point an alias at the new version. Returns the version."""
    client = MlflowClient()
    with contextlib.suppress(MlflowException):
        client.create_registered_model(model_name)
    model_uri = _logged_model_uri(run_id, artifact_name)
    version = client.create_model_version(model_name, model_uri, run_id=run_id)
    if alias:
        client.set_registered_model_alias(model_name, alias, version.version)
    return version.version


def register_best(run_ids: list[str], artifact_name: str, model_name: str, metric: str, alias: str = "best",
                  ) -> str | None:
    """Point ``models:/NAME@ALIAS`` at the run with the lowest ``metric`` among ``run_ids`` and the run the alias
    names now (when its metric was measured with the same ``fid_classifier``: only such values compare). Registers
    a new version only when the alias moves. Returns the run the alias names, or None (no run has the metric)."""
    client = MlflowClient()
    runs = [client.get_run(rid) for rid in dict.fromkeys(run_ids)]
    scored = [(r.data.metrics[metric], r.info.run_id, r.data.params.get("fid_classifier")) for r in runs
              if metric in r.data.metrics and r.info.status == "FINISHED" and has_logged_model(r.info.run_id, artifact_name)]
    if not scored:
        return None
    value, best, classifier = min(scored)
    current = alias_run_id(model_name, alias)
    if current is not None and current != best:
        holder = client.get_run(current).data
        if holder.params.get("fid_classifier") == classifier and holder.metrics.get(metric, math.inf) <= value:
            return current
    if current != best:
        register_model(best, artifact_name, model_name, alias=alias)
    return best


def _logged_model_uri(run_id: str, name: str) -> str:
    """``models:/<model_id>`` of the model logged under ``name`` by a run (MLflow 3 logged models)."""
    run = get_run(run_id)
    for output in (run.outputs.model_outputs if run.outputs else []) or []:
        model = mlflow.get_logged_model(output.model_id)
        if model.name == name:
            return f"models:/{model.model_id}"
    return f"runs:/{run_id}/{name}"


def search_runs(experiment_names: list[str] | None = None, filter_string: str = "") -> Any:
    """Runs as a pandas DataFrame (all experiments when none are named)."""
    init_store()
    if experiment_names:
        names = [n for n in experiment_names if mlflow.get_experiment_by_name(n) is not None]
        if not names:
            import pandas as pd
            return pd.DataFrame()
        return mlflow.search_runs(experiment_names=names, filter_string=filter_string)
    return mlflow.search_runs(search_all_experiments=True, filter_string=filter_string)


def open_existing_store() -> str:
    """Point MLflow at the store only if it already exists and answers (readers must not create an empty one).

    Returns the tracking URI; raises TrackingError (one line) for a missing file/folder or an unreachable server.
    """
    uri = tracking_uri()
    if uri.startswith("sqlite:"):
        path = uri.removeprefix("sqlite:///").split("?", 1)[0]
        if not path or not Path(path).is_file():
            raise TrackingError(f"tracking store {uri} does not exist (run `genlab study` first, or set MLFLOW_TRACKING_URI)")
    elif uri.startswith(("http://", "https://")):
        import urllib.request
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
                pass
        except OSError as e:
            raise TrackingError(f"tracking server {uri} is unreachable ({str(e).splitlines()[0][:200]})") from None
    elif "://" not in uri or uri.startswith("file:"):
        path = uri.removeprefix("file://")
        if not Path(path).is_dir():
            raise TrackingError(f"tracking store {uri} does not exist (run `genlab study` first, or set MLFLOW_TRACKING_URI)")
    try:
        init_store()
    except Exception as e:  # drivers raise many types; the reader only needs to know it cannot read
        raise TrackingError(f"tracking store {uri} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return uri


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """Every logged (step, value) of one metric of a run, by step (the last value logged wins on a repeated step)."""
    by_step: dict[int, tuple[int, float]] = {}
    for m in MlflowClient().get_metric_history(run_id, key):
        if m.step not in by_step or m.timestamp >= by_step[m.step][0]:
            by_step[m.step] = (m.timestamp, m.value)
    return [(step, value) for step, (_, value) in sorted(by_step.items())]


def log_json(run: Run, data: Any, artifact_file: str) -> None:
    run.log_text(json.dumps(data, indent=2, sort_keys=True), artifact_file)


# ---------------------------------------------------------------- runs held by no process (a search's parent)

def start_detached_run(experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, Any],
                       find: dict[str, str]) -> str:
    """A parent for runs that other processes make (an Optuna search's trials): the latest run of ``experiment``
    tagged ``find``, else a new one; or the run that `mlflow run` made when launched by it. Set RUNNING, tagged,
    and returned by id: it is *not* made this process's active run, so runs made here can be its children. End
    it with ``mark_run``."""
    init_store()
    client = MlflowClient()
    # Launched by `mlflow run`: that run is the parent. Pop the variable so child runs do not adopt it too.
    run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    if not run_id:
        experiment_id = _experiment_id(experiment, find.get(tagnames.KIND))
        run_id = find_run(experiment, find) or client.create_run(experiment_id, run_name=run_name,
                                                                 tags=find).info.run_id
    client.update_run(run_id, status="RUNNING")
    with contextlib.suppress(MlflowException):
        client.delete_tag(run_id, tagnames.FAILURE)  # left by an earlier, interrupted invocation
    _describe_new_experiment(client.get_run(run_id).info.experiment_id, find.get(tagnames.KIND))
    run = Run(run_id)
    run.set_tags({MLFLOW_RUN_NAME: run_name, **source_tags(), **tags, **find})
    run.log_params(params)
    return run_id


def find_run(experiment: str, tags: dict[str, str]) -> str | None:
    """The id of the latest run of ``experiment`` with all these tags, or None."""
    experiment_obj = MlflowClient().get_experiment_by_name(experiment)
    if experiment_obj is None:
        return None
    found = MlflowClient().search_runs([experiment_obj.experiment_id], max_results=1,
                                       order_by=["attributes.start_time DESC"],
                                       filter_string=" and ".join(tagnames.where(k, v) for k, v in tags.items()))
    return found[0].info.run_id if found else None


def run_status(run_id: str) -> str:
    """RUNNING, FINISHED, FAILED or KILLED."""
    return MlflowClient().get_run(run_id).info.status


def active_run_id() -> str | None:
    """The id of this process's active run (the run a training loop is logging to), or None."""
    active = mlflow.active_run()
    return active.info.run_id if active else None


def alias_run_id(model_name: str, alias: str) -> str | None:
    """The run behind ``models:/NAME@ALIAS``, or None if the name or alias does not exist."""
    try:
        return MlflowClient().get_model_version_by_alias(model_name, alias).run_id
    except MlflowException:
        return None


def has_logged_model(run_id: str, name: str) -> bool:
    return _logged_model_uri(run_id, name).startswith("models:/")

