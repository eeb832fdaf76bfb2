"""What genlab lets libraries print: its own lines on stderr, and errors, unless ``GENLAB_DEBUG`` is set.
Called by the CLI and by each worker process of a study (they do not run the CLI's main)."""

from __future__ import annotations

import logging
import os
import warnings


def debug() -> bool:
    return bool(os.environ.get("GENLAB_DEBUG"))


def quiet_libraries() -> None:
    if debug():
        return
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "alembic", "distributed"):  # distributed: the nanny's shutdown chatter
        logging.getLogger(name).setLevel(logging.ERROR)
