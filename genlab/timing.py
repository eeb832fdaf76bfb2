"""Where a run's wall time goes: named phases, summed in seconds, logged at the end of each training run as the
metrics ``seconds_<phase>``, beside ``seconds_total`` (since the run's entry point started) and ``seconds_other``
(what no phase covers). ``genlab bench`` turns a study's runs into the share of each phase.

One recorder per process: a run's entry point calls ``reset()`` first, and a process trains one run at a time (the
study's Dask workers have one thread each; a search runs its trials one after another).

The phases, each timed where it happens: ``data`` (loading the images), ``start`` (creating the MLflow run and
logging its inputs), ``train`` (the optimisation steps), ``validation`` (the per-epoch validation pass of a VAE),
``evaluation`` (a GAN's sample quality and diversity at step 0 and after each epoch), ``epoch_logging`` (each
epoch's metrics, image series and checkpoint), ``test_eval`` and ``iw_bound`` (a VAE's test and train evaluations
and its importance-weighted bound), ``latent_space``, ``pictures``, ``sample_quality`` (a VAE's scored prior samples,
reconstructions and interpolations), ``models`` (the logged MLflow models).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

PHASES = ("data", "start", "train", "validation", "evaluation", "epoch_logging", "test_eval", "iw_bound",
          "latent_space", "pictures", "sample_quality", "models")

_seconds: dict[str, float] = defaultdict(float)
_started = time.perf_counter()
_open: list[str] = []  # the phase being timed: phases never nest, so no second is counted twice


def reset() -> None:
    """Start a new run's account: every phase at 0, the total counted from now."""
    global _started
    _seconds.clear()
    _open.clear()
    _started = time.perf_counter()


def add(name: str, seconds: float) -> None:
    """Count ``seconds`` (timed by the caller) towards phase ``name``."""
    if name not in PHASES:
        raise ValueError(f"unknown timing phase {name!r}: one of {', '.join(PHASES)}")
    if _open and _open[0] != name:
        raise RuntimeError(f"timing phase {name!r} inside phase {_open[0]!r}: phases must not overlap")
    _seconds[name] += seconds


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as phase ``name`` (also when it raises); RuntimeError inside another phase."""
    if _open:
        raise RuntimeError(f"timing phase {name!r} inside phase {_open[0]!r}: phases must not overlap")
    _open.append(name)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _open.clear()
        add(name, time.perf_counter() - t0)


def metrics() -> dict[str, float]:
    """``seconds_<phase>`` of every phase timed since ``reset``, ``seconds_total`` and ``seconds_other`` (the total
    less the phases: negative only if two phases overlapped, which the tests rule out)."""
    total = time.perf_counter() - _started
    out = {f"seconds_{name}": _seconds[name] for name in PHASES if name in _seconds}
    return {**out, "seconds_total": total, "seconds_other": total - sum(_seconds.values())}
