"""The feature classifier behind the sample-quality metrics: train it (one MLflow run, registered as
``genlab-classifier-<dataset>``), find it again, and hand out the `scoring.Scorer` that scores images with it.

Read top to bottom: validate -> the key -> the run around the loop (genlab.train.classifier) -> find it again ->
get_scorer (a scoring.Scorer).

One classifier per data set and config (its *key*): `get_scorer` reuses the oldest FINISHED run tagged
``genlab.kind=classifier`` with that key in the tracking store, and trains one only when there is none (saying so
on stderr, in a separate process so that it is its own run even inside a VAE/GAN run or `mlflow run`). FIDs from
different classifiers are not comparable, so every run that logs sample-quality metrics logs the classifier's run id
as param ``fid_classifier``. The real test split's features and statistics are computed once per classifier run
and cached on disk (``$GENLAB_CACHE_DIR``, default ``<project>/.cache/genlab``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab import data, scoring, tags
from genlab.checks import check, check_declared, resolve_device
from genlab.configs import ClassifierConfig
from genlab.entries import Context, Result
from genlab.models.classifier import Classifier
from genlab.runs import CHECKPOINT_FOLDER
from genlab.train.classifier import train

ARCH_VERSION = 1  # bump when models/classifier.py changes: a new key, so old classifiers are not reused


def validate(cfg: ClassifierConfig) -> None:
    """Raise ConfigError (one line) for any invalid value; called before any run is created."""
    check_declared(cfg)
    check(bool(cfg.experiment.strip()), "experiment", cfg.experiment, "a non-empty name")


def classifier_key(cfg: ClassifierConfig) -> str:
    """What makes two classifiers interchangeable: data set, training config and architecture (not the device)."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("device", "experiment")}
    fields["arch_version"] = ARCH_VERSION
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def model_name(dataset: str) -> str:
    return f"genlab-classifier-{dataset}"


# ---------------------------------------------------------------- the run around the loop

class TrackedClassifierSink:
    """A classifier run's MLflow record: each epoch's metrics (one batched call), then the test metrics."""

    def __init__(self, run: Any, epochs: int):
        self.run, self.epochs = run, epochs

    def start(self, model: Classifier, metrics: dict[str, float]) -> None:
        pass

    def epoch(self, epoch: int, metrics: dict[str, float], model: Classifier, checkpoint: Any) -> None:
        self.run.log_metrics(metrics, step=epoch)

    def end(self, model: Classifier, final: dict[str, float]) -> dict[str, float]:
        self.run.log_metrics({k: final[k] for k in ("test_loss", "test_accuracy")}, step=self.epochs)
        return {}


def run(cfg: ClassifierConfig, context: Context) -> Result:
    """Validate, load data, train inside one MLflow run, log and register the model."""
    from genlab import tracking

    validate(cfg)
    existing = find_classifier(cfg)
    splits = context.data(cfg.dataset, cfg.limit)
    check(cfg.batch_size <= len(splits.train_x), "batch_size", cfg.batch_size,
          f"<= the {len(splits.train_x)} training images")
    run_tags = {tags.KIND: tags.CLASSIFIER, tags.CLASSIFIER_KEY: classifier_key(cfg), tags.DATASET: cfg.dataset,
                tags.DEVICE: str(resolve_device(cfg.device)), **context.tags}
    note = (f"The feature classifier of the sample-quality metrics on {cfg.dataset}: fid_proxy and the others are "
            "distances in its 128-d penultimate layer. Compare them only between runs with the same fid_classifier.")
    with tracking.start_run(cfg.experiment, f"classifier {cfg.dataset} s{cfg.seed}", dataclasses.asdict(cfg),
                            run_tags, parent_run_id=context.parent_run_id, description=note) as run:
        run.log_splits(splits)
        model, final = train(cfg, splits, TrackedClassifierSink(run, cfg.epochs))
        model.cpu().eval()
        with tempfile.TemporaryDirectory() as tmp:  # plain weights, read back with torch.load(weights_only=True)
            path = Path(tmp) / "classifier.pt"
            torch.save(model.state_dict(), path)
            run.log_artifact(path, CHECKPOINT_FOLDER)
        run.log_model(model, "classifier", np.zeros((2, 1, 28, 28), np.float32))
        tracking.register_model(run.run_id, "classifier", model_name(cfg.dataset))
    if existing:
        print(f"note: classifier run {existing} has the same config and stays the one the metrics use",
              file=sys.stderr)
    return Result(run.run_id, final, (f"run {run.run_id} finished: test_accuracy {final['test_accuracy']:.4f}; "
                                      f"registered as {model_name(cfg.dataset)}",))


def find_classifier(cfg: ClassifierConfig) -> str | None:
    """The run id of the oldest FINISHED classifier run with this config's key in the store, or None."""
    from genlab import tracking

    runs = tracking.search_runs(filter_string=f"{tags.where(tags.KIND, tags.CLASSIFIER)} and "
                                              f"{tags.where(tags.CLASSIFIER_KEY, classifier_key(cfg))} and "
                                              "attributes.status = 'FINISHED'")
    if len(runs) == 0:
        return None
    return str(runs.sort_values("start_time").iloc[0]["run_id"])


def load_classifier(run_id: str, device: torch.device | str = "cpu") -> Classifier:
    from genlab import tracking

    path = tracking.download_artifact(run_id, f"{CHECKPOINT_FOLDER}/classifier.pt")
    model = Classifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval()


# ---------------------------------------------------------------- finding the scorer

@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """An exclusive file lock, so parallel runs (Optuna workers) train one classifier, not one each."""
    with open(scoring.cache_dir() / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_in_subprocess(cfg: ClassifierConfig) -> str:
    """Train with `genlab train-classifier` in a child process: its own MLflow run, whatever run is active here."""
    from genlab import tracking

    print(f"genlab: no feature classifier for {cfg.dataset} (key {classifier_key(cfg)}) in {tracking.tracking_uri()};"
          f" training one now, once (genlab train-classifier --dataset {cfg.dataset})", file=sys.stderr, flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
                                                             "MLFLOW_EXPERIMENT_NAME")}
    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(data.PROJECT_ROOT), env.get("PYTHONPATH")]))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in dataclasses.asdict(cfg).items()]
    try:
        sys.stderr.fileno()
        streams: dict = {"stdout": sys.stderr}
    except (AttributeError, OSError, ValueError):  # stderr held in memory (pytest capture, notebooks): relay it
        streams = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    result = subprocess.run([sys.executable, "-m", "genlab", "train-classifier", *flags], env=env, check=False,
                            **streams)
    if result.stdout:
        sys.stderr.write(result.stdout)
    run_id = find_classifier(cfg)
    if result.returncode != 0 or run_id is None:
        raise RuntimeError(f"training the feature classifier for {cfg.dataset} failed (exit {result.returncode}); "
                           f"run 'genlab train-classifier --dataset {cfg.dataset}' to see why")
    return run_id


def ensure_classifier(cfg: ClassifierConfig) -> str:
    """The run id of the store's classifier for this config, trained now (once, in a child process) if absent."""
    run_id = find_classifier(cfg)
    if run_id is None:
        with _lock(f"classifier-{classifier_key(cfg)}"):  # two processes that both miss it train it once
            run_id = find_classifier(cfg) or _train_in_subprocess(cfg)
    return run_id


def get_scorer(dataset: str, device: torch.device | str = "cpu", cfg: ClassifierConfig | None = None,
               splits: data.Splits | None = None) -> scoring.Scorer:
    """The scorer for ``dataset``: reuses the store's classifier for (dataset, config), training one only if none
    exists. ``cfg`` defaults to ClassifierConfig(dataset); ``splits`` to data.load(dataset)."""
    cfg = cfg or ClassifierConfig(dataset=dataset)
    check(cfg.dataset == dataset, "dataset", dataset, f"the classifier config's data set {cfg.dataset}")
    validate(cfg)
    run_id = ensure_classifier(cfg)
    device = torch.device(device)
    model = load_classifier(run_id, device)
    splits = splits if splits is not None else data.load(dataset)
    return scoring.Scorer(run_id, model, device, scoring.real_stats(run_id, model, splits, device), seed=cfg.seed)
