"""What the training loops share: the sink they report to, progress bars, checkpoints and resume, and the
error a non-finite loss raises.

A loop only trains. It calls its sink at three points: ``start`` (before the first update of a fresh run),
``epoch`` (after each epoch, with that epoch's metrics) and ``end`` (after the last). A tracked sink (one per
loop, in genlab.runs) writes them to a tracking.Run; `NullSink` drops them (benchmarks, tests, callers that only
want the model).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from genlab.checks import ConfigError

CheckpointFn = Callable[[], dict[str, Any]]  # builds the resume state on demand: a sink that keeps none pays nothing


def adam(params: Any, lr: float, betas: tuple[float, float] = (0.9, 0.999), fused: bool = True,
         ) -> torch.optim.Adam:
    """Every loop's optimiser. ``fused``: PyTorch's one-kernel Adam (the same update as the per-tensor loop, which is
    torch's default on a CPU), one pass over each parameter and its moments instead of a chain of elementwise ops:
    on this 2-core CPU an MLP VAE step about 1.2x as fast, a conv VAE or GAN step 1.03-1.07x (``genlab bench``:
    adam_fused_speedup_*)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused)


class NonFiniteLoss(RuntimeError):
    """A loss or an epoch metric became NaN or infinite (the run fails with this one-line reason)."""


class Sink(Protocol):
    """Where a training loop reports. ``model`` is the loop's trained object (a VAE, or a GAN's two networks)."""

    def start(self, model: Any, metrics: dict[str, float]) -> None:
        """Before the first update of a fresh run (not called on resume), with the loop's own step-0
        measurements (a GAN's sample quality; may be empty)."""

    def epoch(self, epoch: int, metrics: dict[str, float], model: Any, checkpoint: CheckpointFn) -> None:
        """After each epoch (1-based). ``checkpoint()`` returns the state to resume from after this epoch; its
        tensors are the live ones, so save (or copy) it before returning. May raise to stop training."""

    def end(self, model: Any, final: dict[str, float]) -> dict[str, float]:
        """After the last epoch, given the final metrics; returns metrics to add to them."""


class NullSink:
    """Reports nowhere: the loop's numbers are the same, nothing is logged or saved."""

    def start(self, model: Any, metrics: dict[str, float]) -> None:
        pass

    def epoch(self, epoch: int, metrics: dict[str, float], model: Any, checkpoint: CheckpointFn) -> None:
        pass

    def end(self, model: Any, final: dict[str, float]) -> dict[str, float]:
        return {}


def progress(total: int, desc: str) -> Any | None:
    """A tqdm bar over ``total`` batches when stderr is a terminal; None otherwise (logs get one line per epoch)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False)


# ---------------------------------------------------------------- checkpoints and resume

CHECKPOINT_FILE = "last.pt"  # logged under the run's checkpoint/ artifact folder


def checkpoint_state(epoch: int, cfg: Any, stateful: dict[str, Any], rngs: dict[str, torch.Generator],
                     **extra: Any) -> dict[str, Any]:
    """Everything a loop needs to continue after ``epoch``: ``state_dict()`` of each module/optimizer in
    ``stateful``, the state of each generator in ``rngs``, ``extra`` values as they are, and the config."""
    return {**{name: obj.state_dict() for name, obj in stateful.items()},
            **{name: rng.get_state() for name, rng in rngs.items()},
            **extra, "epoch": epoch, "config": dataclasses.asdict(cfg)}


@contextlib.contextmanager
def checkpoint_file(state: dict[str, Any]) -> Iterator[Path]:
    """``state`` saved to a temporary ``last.pt`` (deleted on exit): the file a sink logs."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHECKPOINT_FILE
        torch.save(state, path)
        yield path


def load_checkpoint(path: Any, keys: set[str], kind: str) -> dict[str, Any]:
    """Read a training checkpoint safely (weights_only) and check it has ``keys``; ConfigError (one line) naming
    the file otherwise. ``kind`` names it in the message ("VAE", "GAN")."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file
        raise ConfigError(f"checkpoint {path} is unreadable ({type(e).__name__})") from None
    if not isinstance(state, dict) or not keys <= set(state):
        raise ConfigError(f"checkpoint {path} is not a genlab {kind} checkpoint")
    return state


def restore(resume: dict[str, Any] | None, stateful: dict[str, Any], rngs: dict[str, torch.Generator]) -> int:
    """Load a checkpoint's states into the modules/optimizers and generators named by its keys; returns the first
    epoch still to train (1 without a checkpoint)."""
    if resume is None:
        return 1
    for name, obj in stateful.items():
        obj.load_state_dict(resume[name])
    for name, rng in rngs.items():
        rng.set_state(resume[name])
    return int(resume["epoch"]) + 1


def check_finite(loss: torch.Tensor, what: str, epoch: int, step: int, hint: str) -> None:
    """NonFiniteLoss naming the loss, the epoch, the step and a likely cause (``hint``) unless ``loss`` is finite."""
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"{what} became {loss.item()} at epoch {epoch}, step {step} ({hint})")
