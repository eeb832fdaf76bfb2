"""Everything that talks to MLflow: the tracking store, runs and nested runs, batched metrics, images, models,
the registry, and reading runs back. A leaf module: it imports nothing else from genlab.

Run lifecycle: ``start_run`` is a context manager that ends the run FINISHED, KILLED (Ctrl-C / SIGTERM) or
FAILED (any other error, with the reason as tag ``genlab.failure``) so no run is ever left RUNNING by an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # downloads: keep stderr one line

import mlflow  # noqa: E402
from mlflow.entities import RunStatus  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

# Creating a store, and starting or stopping system metrics, log at INFO: keep stderr to genlab's own lines.
for _name in ("mlflow.store.db.utils", "alembic.runtime.migration", "mlflow.system_metrics.system_metrics_monitor"):
    logging.getLogger(_name).setLevel(logging.WARNING)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PIP_REQUIREMENTS = ["torch==2.13.0", "numpy==2.4.6"]  # explicit: inferring them costs seconds per model


# Tags that MLflow's UI reads. An experiment without a kind opens in the GenAI view (traces, tokens).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the description shown on an experiment's and a run's page
GIT_COMMIT_TAG = "mlflow.source.git.commit"
DEVICE_TAG = "genlab.device"  # the device a run computed on (cpu, cuda), as resolved from device=auto
SYSTEM_METRICS_INTERVAL_S = 5.0  # MLflow's default of 10 s leaves a short study run without a single sample

# What each genlab experiment holds, by the kind of run it receives first (a study describes its own).
EXPERIMENT_DESCRIPTIONS = {
    "vae": "VAE training runs (`genlab train-vae`, `mlflow run . -e train_vae`). Compare runs on `val_neg_elbo` "
           "(nats/image) and `fid_proxy`; each run's Artifacts > images steps through its prior samples and "
           "reconstructions epoch by epoch.",
    "gan": "DCGAN training runs (`genlab train-gan`); the generator is the VAE decoder's architecture and can start "
           "from a trained decoder (`init_from`). `fid_proxy` is logged from step 0, before any GAN update.",
    "probe": "VAE encoder vs GAN discriminator (`genlab probe`): linear probes and output statistics.",
    "gradvar": "Gradient variance of the reparameterised and score-function estimators (`genlab gradvar`).",
    "classifier": "The feature classifier behind the sample-quality metrics (fid_proxy, precision, ...).",
    "calibration": "Sample-quality metrics of reference image sets: what a fid_proxy value means.",
    "search": "Optuna searches over latent_dim x beta: a parent run per study, one nested train_vae run per trial.",
    "bench": "genlab bench: genlab's speed side by side with the common alternatives.",
    "report": "The study's report (French and English) built from the tracked runs, with its verdicts.",
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
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    client.set_experiment_tag(experiment_id, NOTE_TAG, description)
    return experiment_id


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
    return {"genlab.code_version": version,
            **({GIT_COMMIT_TAG: version.removesuffix("-dirty")} if version != "unknown" else {})}


# ---------------------------------------------------------------- runs

class Run:
    """The active run of this process, as the training loops see it: log once per epoch, images, models."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """One batched call. Refuses non-finite values: a NaN metric is never logged silently."""
        bad = [k for k, v in metrics.items() if not math.isfinite(float(v))]
        if bad:
            raise ValueError(f"non-finite metric(s) {', '.join(bad)} at step {step}")
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, synchronous=True)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params not yet on the run (a resumed run, or one that `mlflow run` created, has some already)."""
        existing = mlflow.get_run(self.run_id).data.params
        new = {k: str(v) for k, v in params.items() if k not in existing}
        if new:
            mlflow.log_params(new, synchronous=True)

    def set_tags(self, tags: dict[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_image(self, image: Any, artifact_file: str) -> None:
        """A uint8 (H, W) or (H, W, 3) array as a PNG artifact."""
        mlflow.log_image(image, artifact_file=artifact_file)

    def log_image_step(self, image: Any, key: str, step: int) -> None:
        """One image of a series (stored under ``images/``): the UI steps through it and compares it across runs."""
        mlflow.log_image(image, key=key, step=step, synchronous=True)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        mlflow.log_figure(figure, artifact_file)

    def log_dict(self, data: dict | list, artifact_file: str) -> None:
        mlflow.log_dict(data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        mlflow.log_text(text, artifact_file)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifact(str(local_path), artifact_path)

    def log_dataset(self, name: str, source: str, digest: str, context: str, n_images: int) -> None:
        """Record what the run saw, for the UI's Datasets column (no data is copied)."""
        log_dataset_to_run(self.run_id, name, source, digest, context, n_images)

    def log_model(self, module: Any, name: str, input_example: Any) -> str:
        """Log a torch module (a decoder, generator or encoder returning one tensor) as an MLflow model."""
        info = mlflow.pytorch.log_model(module, name=name, input_example=input_example,
                                        pip_requirements=PIP_REQUIREMENTS)
        return info.model_uri


@contextlib.contextmanager
def start_run(experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, Any],
              resume_run_id: str | None = None, parent_run_id: str | None = None, description: str = "",
              system_metrics: bool = False) -> Iterator[Run]:
    """Start (or resume, or adopt the one `mlflow run` made) a run; end it FINISHED, KILLED or FAILED.

    ``description`` is the run's note in the UI (a ``mlflow.note.content`` in ``tags`` wins: the study's);
    ``system_metrics`` samples CPU, memory (and GPU) usage every few seconds while the run lasts."""
    init_store()
    if system_metrics and not os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
    adopted = resume_run_id or os.environ.get("MLFLOW_RUN_ID")  # resumed, or launched by `mlflow run`: ours
    if adopted:
        active = mlflow.start_run(run_id=adopted, log_system_metrics=system_metrics)
        if not resume_run_id:
            mlflow.set_tag("mlflow.runName", run_name)
    else:
        experiment_id = _experiment_id(experiment, tags.get("genlab.kind"))
        # Tags at creation: a search finds a trial's run by its tags even if the worker dies at once.
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, parent_run_id=parent_run_id,
                                  tags={k: str(v) for k, v in tags.items()}, log_system_metrics=system_metrics)
    run = Run(active.info.run_id)
    try:
        _describe_new_experiment(active.info.experiment_id, tags.get("genlab.kind"))
        note = {NOTE_TAG: description} if description and not resume_run_id else {}
        run.set_tags({**source_tags(), **note, **tags})
        run.log_params(params)
        yield run
    except KeyboardInterrupt:
        _end(run, "KILLED", "interrupted")
        raise
    except BaseException as e:
        _end(run, "FAILED", f"{type(e).__name__}: {e}")
        raise
    else:
        mlflow.end_run("FINISHED")


def _end(run: Run, status: str, reason: str) -> None:
    try:
        mlflow.set_tag("genlab.failure", reason.splitlines()[0][:500] if reason else status)
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
    tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    if kind in EXPERIMENT_DESCRIPTIONS:
        tags[NOTE_TAG] = EXPERIMENT_DESCRIPTIONS[kind]
    try:
        return client.create_experiment(name, tags=tags)
    except MlflowException:  # another process created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


def _describe_new_experiment(experiment_id: str, kind: str | None) -> None:
    """Give an experiment made elsewhere (`mlflow run --experiment-name`, an older genlab) its kind and, if it has
    none, a description; a description already there (the study's, the user's) stays."""
    client = MlflowClient()
    tags = client.get_experiment(experiment_id).tags
    if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if not tags.get(NOTE_TAG) and kind in EXPERIMENT_DESCRIPTIONS:
        client.set_experiment_tag(experiment_id, NOTE_TAG, EXPERIMENT_DESCRIPTIONS[kind])


def mark_run(run_id: str, status: str, reason: str = "") -> None:
    """End a run that this process does not hold (a crashed worker's trial, say)."""
    client = MlflowClient()
    if reason:
        client.set_tag(run_id, "genlab.failure", reason[:500])
    client.set_terminated(run_id, status)


# ---------------------------------------------------------------- reading runs back

def get_run(run_id: str) -> mlflow.entities.Run:
    """The run, or TrackingError naming it."""
    init_store()
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        raise TrackingError(f"run '{run_id}' not found in {tracking_uri()}") from None


def run_status(run_id: str) -> str:
    return get_run(run_id).info.status


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


RUN_STATUSES = [RunStatus.to_string(s) for s in RunStatus.all_status()]


# ---------------------------------------------------------------- Optuna searches (instead of optuna's MLflowCallback)

def start_search_run(experiment: str, study_name: str, run_name: str, params: dict[str, Any],
                     tags: dict[str, Any]) -> str:
    """The parent run of an Optuna study: the latest one tagged ``optuna.study_name`` and ``genlab.kind=search``,
    else a new one; or the run that `mlflow run` made when launched by it. Set RUNNING and returned by id: it is
    *not* made this process's active run, so trials run here can be its children. End it with ``mark_run``."""
    init_store()
    client = MlflowClient()
    # Launched by `mlflow run`: that run is the parent. Pop the variable so trial runs do not adopt it too.
    run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    if not run_id:
        experiment_id = _experiment_id(experiment, "search")
        found = client.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                                   filter_string=f"tags.`optuna.study_name` = '{study_name}' and "
                                                 "tags.`genlab.kind` = 'search'")  # children carry the name too
        run_id = found[0].info.run_id if found else client.create_run(
            experiment_id, run_name=run_name, tags={"optuna.study_name": study_name, "genlab.kind": "search"}).info.run_id
    client.update_run(run_id, status="RUNNING")
    with contextlib.suppress(MlflowException):
        client.delete_tag(run_id, "genlab.failure")  # left by an earlier, interrupted invocation
    all_tags = {"mlflow.runName": run_name, **source_tags(), "optuna.study_name": study_name, **tags,
                "genlab.kind": "search"}
    run = client.get_run(run_id)
    _describe_new_experiment(run.info.experiment_id, "search")
    existing = run.data.params
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items() if k not in existing],
                     tags=[mlflow.entities.RunTag(k, str(v)) for k, v in all_tags.items()], synchronous=True)
    return run_id


def log_dataset_to_run(run_id: str, name: str, source: str, digest: str, context: str, n_images: int) -> None:
    """Record a data set as an input of ``run_id`` (active here or not), for the UI's Datasets column. A search's
    parent run logs its data set before the workers start, so their trial runs find it in the experiment."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.tracking.fluent import _create_dataset_input

    dataset = MetaDataset(LocalArtifactDatasetSource(source), name=f"{name}-{context}", digest=digest)
    inputs = [_create_dataset_input(dataset, context, {"images": str(n_images)})]
    try:
        MlflowClient().log_inputs(run_id, datasets=inputs)
    except MlflowException:
        # MLflow inserts a data set if absent, in two steps: two runs starting at once in one experiment can
        # both miss it and the second insert fails on the unique key. The row exists now: once more finds it.
        MlflowClient().log_inputs(run_id, datasets=inputs)


def find_trial_run(experiment: str, study_name: str, trial_number: int) -> str | None:
    """The child run of one trial, by its tags (set when the run starts), or None."""
    experiment_obj = MlflowClient().get_experiment_by_name(experiment)
    if experiment_obj is None:
        return None
    found = MlflowClient().search_runs(
        [experiment_obj.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
        filter_string=f"tags.`optuna.study_name` = '{study_name}' and tags.`optuna.trial_number` = '{trial_number}'")
    return found[0].info.run_id if found else None


def tag_trial_run(run_id: str, trial_number: int, state: str, reason: str = "") -> None:
    """Record a trial's Optuna outcome on its child run: tags ``optuna.trial_number``, ``optuna.state``
    (COMPLETE | PRUNED | FAIL) and ``optuna.reason``; a PRUNED run ends FINISHED (stopping early is its normal
    end), a FAIL run that is still RUNNING (its worker died) ends FAILED. KILLED and FAILED runs stay so."""
    client = MlflowClient()
    tags = {"optuna.trial_number": str(trial_number), "optuna.state": state}
    if reason:
        tags["optuna.reason"] = reason.splitlines()[0][:500]
    client.log_batch(run_id, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()], synchronous=True)
    status = client.get_run(run_id).info.status
    if state == "PRUNED" and status != "FINISHED":
        with contextlib.suppress(MlflowException):
            client.delete_tag(run_id, "genlab.failure")  # start_run saw the pruning exception as an error
        client.set_terminated(run_id, "FINISHED")
    elif state == "FAIL" and status == "RUNNING":
        mark_run(run_id, "FAILED", reason)


def active_run_id() -> str | None:
    """The id of this process's active run (the run a training loop is logging to), or None."""
    active = mlflow.active_run()
    return active.info.run_id if active else None


def log_to_run(run_id: str, metrics: dict[str, float] | None = None, figures: dict[str, Any] | None = None,
               texts: dict[str, str] | None = None, step: int = 0, files: list[Path] | None = None) -> None:
    """Log metrics (one batched call), matplotlib figures, text files and local files (at the artifact root) to a
    run that is not active here."""
    client = MlflowClient()
    if metrics:
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), step)
                                          for k, v in metrics.items()], synchronous=True)
    for path, figure in (figures or {}).items():
        client.log_figure(run_id, figure, path)
    for path, text in (texts or {}).items():
        client.log_text(run_id, text, path)
    for path in files or []:
        client.log_artifact(run_id, str(path))


def alias_run_id(model_name: str, alias: str) -> str | None:
    """The run behind ``models:/NAME@ALIAS``, or None if the name or alias does not exist."""
    try:
        return MlflowClient().get_model_version_by_alias(model_name, alias).run_id
    except MlflowException:
        return None


def has_logged_model(run_id: str, name: str) -> bool:
    return _logged_model_uri(run_id, name).startswith("models:/")


def set_run_tags(run_id: str, tags: dict[str, Any]) -> None:
    """Tag a run this process does not hold (e.g. one an entry point created without taking tags)."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))
