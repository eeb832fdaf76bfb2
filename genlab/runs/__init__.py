"""The entry points that train: each module wraps its loop (genlab.train) in one MLflow run and records it.

A module here holds what a run adds to its loop: ``validate`` (before anything is created), the run's name and
description, its tracked sink (what the run logs each epoch and at the end: metrics, image series, checkpoints,
pictures, latent-space measurements, models) and ``run(config, context)``. The loops know nothing of MLflow;
these modules reach it only through genlab.tracking.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from genlab.checks import ConfigError
from genlab.train import loop

CHECKPOINT_FOLDER = "checkpoint"  # the artifact folder where every tracked sink logs the loop's resume state


def last_checkpoint(run_id: str) -> Path:
    """The local copy of run ``run_id``'s last checkpoint (the file its loop's ``checkpoint()`` made last)."""
    from genlab import tracking

    return tracking.download_artifact(run_id, f"{CHECKPOINT_FOLDER}/{loop.CHECKPOINT_FILE}")


def resume_from(run_id: str | None, kind: str, config_from_params: Callable[[dict[str, str]], Any],
                load_checkpoint: Callable[[Any], dict]) -> tuple[Any | None, dict | None]:
    """The config (rebuilt from its logged params) and the last checkpoint of run ``run_id``, a run of ``kind``
    to continue; (None, None) without one. ConfigError (one line) for a run that is not of that kind, has no
    checkpoint, or finished all its epochs."""
    if not run_id:
        return None, None
    from genlab import tracking

    previous = tracking.load_trained_run(run_id, kind, require_finished=False)
    cfg = config_from_params(previous.data.params)
    state = load_checkpoint(last_checkpoint(run_id))
    if int(state["epoch"]) >= cfg.epochs and previous.info.status == "FINISHED":
        raise ConfigError(f"run '{run_id}' already finished all {cfg.epochs} epochs")
    return cfg, state
