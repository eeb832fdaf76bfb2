"""The loop of the feature classifier behind the sample-quality metrics (genlab.scoring). It trains and reports
to a loop.Sink; the run that records it, registers it and hands out the `scoring.Scorer` is genlab.runs.classifier.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from genlab import data, scoring
from genlab.checks import resolve_device
from genlab.configs import ClassifierConfig
from genlab.models.classifier import Classifier
from genlab.train import loop

# ---------------------------------------------------------------- the loop

@torch.no_grad()
def evaluate(model: Classifier, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, float]:
    """Mean cross-entropy (nats/image) and accuracy on uint8 images ``x``."""
    model.eval()
    loss, correct = 0.0, 0
    for xb, yb in data.batches(x, scoring.FEATURE_BATCH, device=device, labels=y):
        logits = model(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train()
    return {"loss": loss / len(x), "accuracy": correct / len(x)}


def train(cfg: ClassifierConfig, splits: data.Splits, sink: loop.Sink = loop.NullSink(),
          ) -> tuple[Classifier, dict[str, float]]:
    """Train with one-cycle Adam, reporting each epoch to ``sink`` (genlab.runs.classifier's: an MLflow run; the
    default: nowhere). Returns the model and the final metrics (the last epoch's, ``test_loss``, ``test_accuracy``).
    No checkpoint: a classifier trains in about a minute and is reused, not resumed."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = Classifier().to(device)
    optimizer = loop.adam(model.parameters(), cfg.lr)
    steps_per_epoch = -(-len(splits.train_x) // cfg.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    shuffle_rng = torch.Generator().manual_seed(cfg.seed)
    last: dict[str, float] = {}
    sink.start(model, {})
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        loss_sum, correct = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)
        for xb, yb in data.batches(splits.train_x, cfg.batch_size, shuffle_rng, device, labels=splits.train_y):
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if not torch.isfinite(loss):
                raise RuntimeError(f"classifier loss became {loss.item()} at epoch {epoch} (lr={cfg.lr} too large?)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach().double().cpu() * len(yb)
            correct += (logits.argmax(1) == yb).sum().cpu()
        train_seconds = time.perf_counter() - t0
        val = evaluate(model, splits.val_x, splits.val_y, device)
        last = {"train_loss": loss_sum.item() / len(splits.train_x),
                "train_accuracy": correct.item() / len(splits.train_x),
                "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                "epoch_seconds": time.perf_counter() - t0, "images_per_second": len(splits.train_x) / train_seconds}
        print(f"classifier epoch {epoch}/{cfg.epochs}  train_loss {last['train_loss']:.4f}  val_accuracy "
              f"{val['accuracy']:.4f}  {last['images_per_second']:.0f} img/s", file=sys.stderr, flush=True)
        sink.epoch(epoch, last, model, dict)
    test = evaluate(model, splits.test_x, splits.test_y, device)
    final = {**last, "test_loss": test["loss"], "test_accuracy": test["accuracy"]}
    final.update(sink.end(model, final))
    return model, final


