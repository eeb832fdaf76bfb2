"""The convergence gate on fewer validation images: train one VAE as the study would, and after every epoch
evaluate it on the first N images of the validation slice beside all of them (the same images, the same posterior
noise: an image's terms do not depend on how many follow it), then apply the gate to each curve.

    python docs/scripts/val_subset.py ARCH BETA SEED LIMIT EPOCHS [N ...]

Prints, per N, the gate's tail improvement (%, threshold 1 %) and how far the tail's epoch-to-epoch changes of
the objective are from the full slice's. Behind docs/results.md, "Validation images per epoch".
"""

from __future__ import annotations

import sys

from genlab import convergence, data
from genlab.configs import VAEConfig
from genlab.train import loop
from genlab.train import vae as train_vae


class SubsetCurves(loop.NullSink):
    """After each epoch: the validation objective on the first n images, for each n."""

    def __init__(self, cfg: VAEConfig, splits: data.Splits, sizes: list[int]):
        self.cfg, self.splits, self.sizes = cfg, splits, sizes
        self.curves: dict[int, list[float]] = {n: [] for n in sizes}

    def record(self, model) -> None:
        device = next(model.parameters()).device
        for n in self.sizes:
            val = train_vae.evaluate(model, self.splits.val_x[:n], device, self.cfg.seed)
            self.curves[n].append(train_vae.validation_objective(self.cfg, val["recon"], val["kl"]))

    def start(self, model, metrics) -> None:
        self.record(model)

    def epoch(self, epoch, metrics, model, checkpoint) -> None:
        self.record(model)


def main(arch: str, beta: str, seed: str, limit: str, epochs: str, *sizes: str) -> None:
    cfg = VAEConfig(arch=arch, beta=float(beta), seed=int(seed), limit=int(limit), epochs=int(epochs),
                    eval_samples=0, nll_images=0)
    splits = data.load(cfg.dataset, cfg.limit)
    ns = [int(n) for n in sizes or ("1000", "2000")] + [len(splits.val_x)]
    sink = SubsetCurves(cfg, splits, ns)
    train_vae.train(cfg, splits, sink)
    full = sink.curves[len(splits.val_x)]
    for n in ns:
        curve = sink.curves[n]
        # the tail's epoch-to-epoch changes (what the gate reads), against the full slice's, relative to the objective
        tail = max(1, round(convergence.TAIL_FRACTION * (len(curve) - 1)))
        off = max(abs((curve[i] - curve[i - 1]) - (full[i] - full[i - 1])) / abs(full[i])
                  for i in range(len(curve) - tail, len(curve)))
        print(f"{arch} beta={beta} seed={seed} N={n}: tail improvement "
              f"{100 * convergence.rel_improvement_tail(curve):.2f} %  objective at the end {curve[-1]:.2f}  "
              f"tail epoch changes off the full slice's by <= {100 * off:.3f} % of the objective", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
