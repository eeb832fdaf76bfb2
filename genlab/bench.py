"""``genlab bench``: genlab's speed measured side by side with the common alternative, in one process.

The machine is shared and noisy, so every comparison runs its two sides in the same process, interleaved
(A B, then B A, ...) for ``repeats`` rounds, and reports the median of the per-round ratios.
Results go to ``bench.json`` and ``bench.md`` (a Markdown table) in ``output_dir`` and to one MLflow run tagged
``genlab.kind=bench``.

To add a measurement: write ``def measure_x(ctx: Bench) -> list[Measure]`` and append it to ``MEASUREMENTS``.
A measurement that cannot run here returns ``Measure(name, None, reason=...)``: "not measured", never a number.
``training_speed`` (about a second per architecture) is what the study's dry run (``genlab study --dry-run``) sizes its
wall-time estimate with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab import data, entries, files, losses, tags
from genlab.checks import ConfigError, check, check_declared, resolve_device
from genlab.configs import ARCHS, BenchConfig, ClassifierConfig, GANConfig, VAEConfig
from genlab.models.vae import VAE
from genlab.runs import vae as vae_entry
from genlab.train import loop, vae

# Timed epochs are sized from a warm-up estimate of this machine's training speed, so the whole bench fits its
# budget on a slow shared CPU as on a GPU: quick < 2 min, full < 10 min on 2 CPU cores.
SIZES = {
    "quick": {"repeats": 3, "pipeline_images": 20000, "train_seconds": 4.0, "bf16_seconds": 2.0, "bf16_rounds": 1,
              "threads_rounds": 2, "optimizer_seconds": 0.5, "tracking_seconds": 3.0, "eval_images": 256, "matmul_size": 1024,
              "search_trials": 4, "search_limit": 1024, "search_rounds": 1,
              "study_limit": 1000, "study_rounds": 0, "dask_rounds": 3},  # a study twice would break 2 min
    "full": {"repeats": 5, "pipeline_images": 55000, "train_seconds": 12.0, "bf16_seconds": 8.0, "bf16_rounds": 2,
             "threads_rounds": 3, "optimizer_seconds": 1.0, "tracking_seconds": 12.0, "eval_images": 500, "matmul_size": 1024,
             "search_trials": 8, "search_limit": 4096, "search_rounds": 1,
             "study_limit": 1000, "study_rounds": 1, "dask_rounds": 3},
}
MIN_BATCHES = 4  # per timed epoch, whatever the speed estimate says


def validate(cfg: BenchConfig) -> None:
    """Raise ConfigError (one line) for any invalid value; called before any data is read or run created."""
    check_declared(cfg)
    check(bool(cfg.experiment.strip()), "experiment", cfg.experiment, "a non-empty name")
    out = Path(cfg.output_dir)
    check(out.is_dir(), "output_dir", cfg.output_dir, "an existing folder")
    check(os.access(out, os.W_OK | os.X_OK), "output_dir", cfg.output_dir, "a writable folder")
    resolve_device(cfg.device)


# ---------------------------------------------------------------- results

@dataclass
class Measure:
    """One row of the table. ``value`` None = not measured, and ``reason`` says why."""

    name: str
    value: float | None
    unit: str = "x"
    goal: tuple[str, float] | None = None  # (">=" or "<=", threshold)
    detail: dict = field(default_factory=dict)  # the side-by-side numbers behind the value
    note: str = ""
    reason: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or self.goal is None:
            return None
        op, threshold = self.goal
        return self.value >= threshold if op == ">=" else self.value <= threshold

    def as_dict(self) -> dict:
        return {"value": self.value, "unit": self.unit, "goal": f"{self.goal[0]} {self.goal[1]:g}" if self.goal else None,
                "met": self.met, "detail": self.detail, "note": self.note,
                **({"status": "not measured", "reason": self.reason} if self.value is None else {})}


@dataclass
class Bench:
    """What every measurement gets: the config, the sizes of its profile, the data in memory, the device."""

    cfg: BenchConfig
    sizes: dict
    splits: data.Splits
    device: torch.device
    rates: dict[str, float] = field(default_factory=dict)  # warm-up images/s of genlab's loop per precision

    @property
    def repeats(self) -> int:
        return self.cfg.repeats or self.sizes["repeats"]

    def images_for(self, seconds: float, precision: str = "fp32", min_batches: int = MIN_BATCHES) -> int:
        """Whole batches of training images that take about ``seconds`` in genlab's loop (at least ``min_batches``,
        at most the training split). The first call per precision runs a short warm-up to estimate the speed."""
        if precision not in self.rates:
            one_batch = self.train_splits(self.cfg.batch_size, n_eval=self.cfg.batch_size)
            genlab_train(self, one_batch, precision)  # warm-up: kernel selection, allocator growth
            self.rates[precision] = genlab_train(self, one_batch, precision)["images_per_second"]
        batches = max(min_batches, round(seconds * self.rates[precision] / self.cfg.batch_size))
        return min(batches * self.cfg.batch_size, len(self.splits.train_x))

    def train_splits(self, n_images: int, n_eval: int | None = None) -> data.Splits:
        """The first ``n_images`` training images; small val/test slices (``n_eval``, default the profile's) so
        evaluation stays cheap."""
        s, n_eval = self.splits, n_eval or self.sizes["eval_images"]
        return dataclasses.replace(s, train_x=s.train_x[:n_images], train_y=s.train_y[:n_images],
                                   val_x=s.val_x[:n_eval], val_y=s.val_y[:n_eval],
                                   test_x=s.test_x[:n_eval], test_y=s.test_y[:n_eval])

    def vae_config(self, n_images: int, **kw) -> VAEConfig:
        """One epoch of genlab's VAE loop; no sample-quality scoring (timed on its own by measure_fid, and it would
        need the store's classifier and a full test split)."""
        return VAEConfig(dataset=self.cfg.dataset, epochs=1, batch_size=self.cfg.batch_size, limit=n_images,
                         seed=self.cfg.seed, device=str(self.device), experiment=self.cfg.experiment,
                         eval_samples=0, nll_images=0, **kw)


# ---------------------------------------------------------------- timing helpers

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(sides: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each side once per round, alternating the order between rounds (drift hits both sides alike).
    Each callable returns its own measurement (seconds or a rate)."""
    out: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            out[name].append(sides[name]())
    return out


def median_ratio(numerators: list[float], denominators: list[float]) -> float:
    """Median of the per-round ratios (pairs from the same round share the machine's state)."""
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the per-epoch lines of the training loop while it is being timed."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


# ---------------------------------------------------------------- data pipeline

class PerItemDataset(torch.utils.data.Dataset):
    """The common tutorial pattern: numpy images, each converted to a float tensor on access (as ToTensor does)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[i]).unsqueeze(0).float().div(255.0)
        return image, int(self.labels[i])


def reference_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
                     ) -> torch.utils.data.DataLoader:
    """DataLoader over the per-item Dataset, shuffled, in-process (num_workers=0, as on a 2-core machine)."""
    return torch.utils.data.DataLoader(PerItemDataset(images, labels), batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def measure_data_pipeline(ctx: Bench) -> list[Measure]:
    """Images/s producing the same float batches (images and labels, same batch size, shuffled): genlab's
    slicing vs a DataLoader over a per-item Dataset. Passes over the training split until ``pipeline_images``."""
    per_pass = min(ctx.sizes["pipeline_images"], len(ctx.splits.train_x))
    x, y = ctx.splits.train_x[:per_pass], ctx.splits.train_y[:per_pass]
    x_np, y_np = x.numpy(), y.numpy()
    passes = math.ceil(ctx.sizes["pipeline_images"] / per_pass)
    n = passes * per_pass

    def genlab_rate(passes: int = passes) -> float:
        t0 = time.perf_counter()
        for p in range(passes):
            for _batch in data.batches(x, ctx.cfg.batch_size, torch.Generator().manual_seed(ctx.cfg.seed + p),
                                       labels=y):
                pass
        return passes * len(x) / (time.perf_counter() - t0)

    def reference_rate(passes: int = passes) -> float:
        t0 = time.perf_counter()
        for p in range(passes):
            for _batch in reference_loader(x_np, y_np, ctx.cfg.batch_size, ctx.cfg.seed + p):
                pass
        return passes * len(x) / (time.perf_counter() - t0)

    for _ in zip(range(10), data.batches(x, ctx.cfg.batch_size), reference_loader(x_np, y_np, ctx.cfg.batch_size, 0),
                 strict=False):  # warm-up
        pass
    rates = interleaved({"genlab": genlab_rate, "reference": reference_rate}, ctx.repeats)
    return [Measure("data_pipeline_speedup", median_ratio(rates["genlab"], rates["reference"]), "x", (">=", 2.0),
                    {"images": n, "batch_size": ctx.cfg.batch_size,
                     "genlab_images_per_second": statistics.median(rates["genlab"]),
                     "reference_images_per_second": statistics.median(rates["reference"])},
                    "uint8 split, rows of a permutation gathered and divided per batch (numpy) vs DataLoader over a "
                    "per-item Dataset (num_workers=0); images and labels")]


# ---------------------------------------------------------------- training

def reference_train_seconds(ctx: Bench, splits: data.Splits) -> float:
    """One epoch written like the classic pytorch/examples VAE: DataLoader, ``.item()`` every batch.
    Same model (class, init seed), loss, optimiser, data and batch size as genlab's loop."""
    cfg = ctx.vae_config(len(splits.train_x))
    torch.manual_seed(cfg.seed)
    model = VAE(cfg.latent_dim, cfg.arch).to(ctx.device)
    optimizer = loop.adam(model.parameters(), cfg.lr)
    loader = reference_loader(splits.train_x.numpy(), splits.train_y.numpy(), cfg.batch_size, cfg.seed)
    model.train()
    train_loss = 0.0
    t0 = time.perf_counter()
    for x, _ in loader:
        x = x.to(ctx.device)
        optimizer.zero_grad()
        logits, _, z_mean, z_log_var = model(x)
        loss = losses.vae_terms(logits, x, z_mean, z_log_var, cfg.beta)["loss"].mean()
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
    _sync(ctx.device)
    return time.perf_counter() - t0


def genlab_train(ctx: Bench, splits: data.Splits, precision: str = "fp32") -> dict[str, float]:
    """genlab's own loop (vae.train, tracking disabled), one epoch; its metrics include images_per_second
    (training batches only, like the reference's timer) and test_neg_elbo."""
    with _quiet():
        _, final = vae.train(ctx.vae_config(len(splits.train_x), dtype=precision), splits, loop.NullSink())
    return final


def matmul_flops_per_second(n: int, device: torch.device, iters: int = 10) -> float:
    """FP32 matmul FLOP/s of this machine now (the denominator of fraction_of_peak)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0)


def training_flops_per_image(ctx: Bench) -> float:
    """FLOPs of one training step (forward, loss, backward) per image, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = ctx.vae_config(ctx.cfg.batch_size)
    model = VAE(cfg.latent_dim, cfg.arch).to(ctx.device)
    x = data.to_float(ctx.splits.train_x[:cfg.batch_size], ctx.device)
    with FlopCounterMode(display=False) as counter:
        logits, _, z_mean, z_log_var = model(x)
        losses.vae_terms(logits, x, z_mean, z_log_var, cfg.beta)["loss"].mean().backward()
    return counter.get_total_flops() / len(x)


def measure_training(ctx: Bench) -> list[Measure]:
    """train_speedup_vs_reference, fraction_of_peak, bf16_speedup (+ whether bf16 keeps neg-ELBO within 0.5 %)."""
    n = ctx.images_for(ctx.sizes["train_seconds"])
    splits = ctx.train_splits(n, n_eval=ctx.cfg.batch_size)  # only the training speed counts here
    reference_train_seconds(ctx, ctx.train_splits(ctx.cfg.batch_size))  # warm-up, as images_for did for genlab
    peaks: list[float] = []
    finals: list[dict] = []

    def genlab_rate() -> float:
        peaks.append(matmul_flops_per_second(ctx.sizes["matmul_size"], ctx.device))
        finals.append(genlab_train(ctx, splits))
        return finals[-1]["images_per_second"]

    rates = interleaved({"genlab": genlab_rate, "reference": lambda: n / reference_train_seconds(ctx, splits)},
                        ctx.repeats)
    genlab_ips = statistics.median(rates["genlab"])
    speedup = Measure("train_speedup_vs_reference", median_ratio(rates["genlab"], rates["reference"]), "x",
                      (">=", 1.5),
                      {"images": n, "batch_size": ctx.cfg.batch_size, "genlab_images_per_second": genlab_ips,
                       "reference_images_per_second": statistics.median(rates["reference"])},
                      "conv VAE z16, one epoch, same model/init/loss/Adam; reference = DataLoader + .item() "
                      "per batch")
    flops = training_flops_per_image(ctx)
    peak = statistics.median(peaks)
    fraction = Measure("fraction_of_peak", median_ratio([flops * r for r in rates["genlab"]], peaks), "",
                       (">=", 0.35),
                       {"training_flops_per_image": flops, "achieved_flops_per_second": flops * genlab_ips,
                        "matmul_flops_per_second": peak, "matmul_size": ctx.sizes["matmul_size"]},
                       "training FLOP/s (flop_counter: forward+backward) / FP32 matmul FLOP/s, same run")

    # bf16: same images, fp32 and bf16 side by side; also compare the resulting test neg-ELBO.
    n16 = min(ctx.images_for(ctx.sizes["bf16_seconds"], "bf16", min_batches=2), n)
    splits16 = ctx.train_splits(n16)
    results: dict[str, list[dict]] = {"fp32": [], "bf16": []}

    def run(precision: str) -> float:
        results[precision].append(genlab_train(ctx, splits16, precision))
        return results[precision][-1]["images_per_second"]

    bf16_repeats = min(ctx.repeats, ctx.sizes["bf16_rounds"])
    rates16 = interleaved({"fp32": lambda: run("fp32"), "bf16": lambda: run("bf16")}, bf16_repeats)
    fp32_elbo, bf16_elbo = results["fp32"][0]["test_neg_elbo"], results["bf16"][0]["test_neg_elbo"]
    rel_diff = abs(bf16_elbo - fp32_elbo) / abs(fp32_elbo)
    bf16 = Measure("bf16_speedup", median_ratio(rates16["bf16"], rates16["fp32"]), "x", None,
                   {"images": n16, "rounds": bf16_repeats,
                    "fp32_images_per_second": statistics.median(rates16["fp32"]),
                    "bf16_images_per_second": statistics.median(rates16["bf16"]),
                    "fp32_test_neg_elbo": fp32_elbo, "bf16_test_neg_elbo": bf16_elbo},
                   f"autocast bf16 vs fp32 images/s on {ctx.device.type}")
    elbo = Measure("bf16_neg_elbo_rel_diff", rel_diff, "", ("<=", 0.005),
                   {"fp32_test_neg_elbo": fp32_elbo, "bf16_test_neg_elbo": bf16_elbo, "images_trained": n16},
                   f"abs(bf16 - fp32) / fp32 test neg-ELBO after one epoch of {n16} images, same seed: bf16 "
                   f"{'keeps' if rel_diff <= 0.005 else 'does not keep'} it within 0.5 %")
    return [speedup, fraction, bf16, elbo]


def measure_threads(ctx: Bench) -> list[Measure]:
    """genlab's loop with one intra-op thread vs torch's default (one per core). On a machine shared with other
    jobs, threads that wait for each other at every operation can cost more than they bring."""
    default = torch.get_num_threads()
    if ctx.device.type != "cpu" or default == 1:
        return [Measure("one_thread_speedup", None, "x", reason=f"needs a CPU run with > 1 thread ({default} here)")]
    n = ctx.images_for(ctx.sizes["train_seconds"] / 2)
    splits = ctx.train_splits(n, n_eval=ctx.cfg.batch_size)

    def rate(threads: int) -> float:
        torch.set_num_threads(threads)
        try:
            return genlab_train(ctx, splits)["images_per_second"]
        finally:
            torch.set_num_threads(default)

    rates = interleaved({"one": lambda: rate(1), "default": lambda: rate(default)},
                        min(ctx.repeats, ctx.sizes["threads_rounds"]))
    return [Measure("one_thread_speedup", median_ratio(rates["one"], rates["default"]), "x", None,
                    {"images": n, "default_threads": default,
                     "one_thread_images_per_second": statistics.median(rates["one"]),
                     "default_threads_images_per_second": statistics.median(rates["default"])},
                    "genlab VAE loop, torch.set_num_threads(1) vs the default; > 1 means set OMP_NUM_THREADS=1 "
                    "on this machine (as loaded now)")]


def training_speed(seconds: float = 1.0) -> dict[str, float]:
    """Training images per second of this machine for each VAE architecture: a short timed loop of Adam steps on
    random images with the default batch size (a GAN step costs about three of these; ``plans.estimate_cost``
    counts so). The study's dry run sizes its wall-time estimate with it."""
    speed = {}
    x = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for arch in ARCHS:
        model = VAE(16, arch)
        optimizer = loop.adam(model.parameters(), 1e-3)
        images, t0, warm = 0, 0.0, 2
        while images == 0 or time.perf_counter() - t0 < seconds:
            logits, _, z_mean, z_log_var = model(x)
            loss = losses.vae_terms(logits, x, z_mean, z_log_var, 1.0)["loss"].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            warm -= 1
            if warm == 0:
                t0 = time.perf_counter()
            elif warm < 0:
                images += len(x)
        speed[arch] = images / (time.perf_counter() - t0)
    return speed


def _steps_per_second(step: Callable[[], object], seconds: float, device: torch.device) -> float:
    """Training steps per second of ``step`` over about ``seconds`` (after one warm-up step)."""
    step()
    steps, t0 = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    _sync(device)
    return steps / (time.perf_counter() - t0)


def _vae_step(ctx: Bench, arch: str, fused: bool, x: torch.Tensor) -> Callable[[], None]:
    """One VAE training step on ``x`` (the model seeded afresh), with fused or per-tensor Adam."""
    torch.manual_seed(ctx.cfg.seed)
    model = VAE(16, arch).to(ctx.device)
    optimizer = loop.adam(model.parameters(), 1e-3, fused=fused)

    def step() -> None:
        logits, _, z_mean, z_log_var = model(x)
        loss = losses.vae_terms(logits, x, z_mean, z_log_var, 1.0)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def _gan_step(ctx: Bench, fused: bool, real: torch.Tensor) -> Callable[[], object]:
    """One step of genlab's GAN loop (a D then a G update, the moving average) on ``real``."""
    from genlab.train import gan

    cfg = GANConfig(batch_size=len(real), seed=ctx.cfg.seed, device=str(ctx.device), dtype="fp32")
    state, _ = gan.initial_state(cfg, ctx.device)
    betas = (cfg.beta1, 0.999)
    state.opt_g = loop.adam(state.nets.generator.parameters(), cfg.lr_g, betas, fused=fused)
    state.opt_d = loop.adam(state.nets.discriminator.parameters(), cfg.lr_d, betas, fused=fused)
    no_autocast = torch.autocast(ctx.device.type, enabled=False)
    return lambda: gan._step(cfg, state, real, 1, 0, 1, no_autocast)


OPTIMIZER_GAN_BATCH = 64  # the batch of the study's GANs (experiments/p2q1.yaml)


def measure_optimizer(ctx: Bench) -> list[Measure]:
    """adam_fused_speedup_<model>: training steps per second with the fused Adam every loop uses (loop.adam) vs
    the per-tensor Adam that is torch's default on a CPU; same model, init and batch, side by side."""
    x = next(data.batches(ctx.splits.train_x[:ctx.cfg.batch_size], ctx.cfg.batch_size, device=ctx.device))
    makers = {"mlp_vae": lambda fused: _vae_step(ctx, "mlp", fused, x),
              "conv_vae": lambda fused: _vae_step(ctx, "conv", fused, x),
              "gan": lambda fused: _gan_step(ctx, fused, x[:OPTIMIZER_GAN_BATCH])}
    seconds, out = ctx.sizes["optimizer_seconds"], []
    for name, make in makers.items():
        rates = interleaved({side: lambda make=make, fused=fused: _steps_per_second(make(fused), seconds, ctx.device)
                             for side, fused in (("fused", True), ("loop", False))}, ctx.repeats)
        out.append(Measure(f"adam_fused_speedup_{name}", median_ratio(rates["fused"], rates["loop"]), "x", None,
                           {"fused_steps_per_second": statistics.median(rates["fused"]),
                            "loop_steps_per_second": statistics.median(rates["loop"]),
                            "batch_size": OPTIMIZER_GAN_BATCH if name == "gan" else len(x)},
                           f"{name.replace('_', ' ')} training steps/s, fused Adam vs torch's per-tensor Adam"))
    return out


# ---------------------------------------------------------------- tracking

class _TimedRun:
    """A tracking.Run that adds up the seconds spent in its calls (the direct part of the tracking cost)."""

    def __init__(self, run):
        self._run, self.seconds = run, 0.0
        self.run_id = run.run_id

    def __getattr__(self, name: str):
        method = getattr(self._run, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
        return timed


@contextlib.contextmanager
def _own_runs() -> Iterator[None]:
    """Under `mlflow run`, MLFLOW_RUN_ID names the bench run; the trial runs must not adopt it."""
    saved = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MLFLOW_RUN_ID"] = saved


def measure_tracking(ctx: Bench) -> list[Measure]:
    """One epoch with genlab's full per-epoch logging (metrics, sample and reconstruction grids, checkpoint)
    vs the same epoch with tracking disabled; each logged epoch is a run tagged genlab.kind=bench-trial.

    Both sides time the whole ``vae.train`` call and subtract the epoch's own training + validation time (its
    ``epoch_seconds`` metric): what is left differs only by what tracking added, without the training-time
    noise of a shared machine. The fraction divides it by the untracked epoch."""
    from genlab import tracking

    n = ctx.images_for(ctx.sizes["tracking_seconds"])
    splits = ctx.train_splits(n, n_eval=ctx.cfg.batch_size)  # small evaluations: less noise around the epoch
    cfg = ctx.vae_config(n)
    finals: dict[str, list[dict]] = {"tracked": [], "untracked": []}
    in_calls: list[float] = []
    trial_ids: list[str] = []

    def untracked() -> float:
        t0 = time.perf_counter()
        with _quiet():
            finals["untracked"].append(vae.train(cfg, splits, loop.NullSink())[1])
        return time.perf_counter() - t0

    def tracked() -> float:
        with _own_runs(), tracking.start_run(cfg.experiment, "bench tracking trial", vae_entry.params_of(cfg),
                                             {tags.KIND: tags.BENCH_TRIAL}) as run:
            timed = _TimedRun(run)
            t0 = time.perf_counter()
            with _quiet():
                sink = vae_entry.TrackedVAESink(timed, cfg, splits, resolve_device(cfg.device), log_models=False)
                finals["tracked"].append(vae.train(cfg, splits, sink)[1])
            seconds = time.perf_counter() - t0
        in_calls.append(timed.seconds)
        trial_ids.append(run.run_id)
        return seconds

    wall = interleaved({"tracked": tracked, "untracked": untracked}, ctx.repeats)
    epoch = {side: [f["epoch_seconds"] for f in finals[side]] for side in finals}
    added = [(on - e_on) - (off - e_off) for on, e_on, off, e_off
             in zip(wall["tracked"], epoch["tracked"], wall["untracked"], epoch["untracked"], strict=True)]
    # Tracking costs the same per epoch however long the epoch is (fixed-size grids and checkpoint), so a
    # shortened pass measures it; the fraction is taken over one real epoch of the training split.
    n_full = len(ctx.splits.train_x)
    full_epoch = n_full / statistics.median(f["images_per_second"] for f in finals["untracked"])
    return [Measure("tracking_overhead", statistics.median(added) / full_epoch, "fraction", ("<=", 0.03),
                    {"tracking_seconds_per_epoch": statistics.median(added),
                     "full_epoch_images": n_full, "full_epoch_seconds": full_epoch,
                     "timed_pass_images": n, "timed_pass_seconds": statistics.median(epoch["untracked"]),
                     "overhead_on_timed_pass": statistics.median(
                         a / e for a, e in zip(added, epoch["untracked"], strict=True)),
                     "seconds_in_tracking_calls": statistics.median(in_calls),
                     "trial_run_ids": trial_ids},
                    "seconds that tracking adds per epoch (side by side on a timed pass) / seconds of one epoch "
                    "of the training split at the measured untracked speed")]


# ---------------------------------------------------------------- sample quality, GAN, search

FID_IMAGES = 10_000


def measure_fid(ctx: Bench) -> list[Measure]:
    """Seconds for the FID-proxy of 10,000 generated images: classifier features, mean and covariance, Fréchet
    distance to the real test statistics (which genlab caches per classifier, so they are computed outside the
    timing). The store's classifier is used when it has one; otherwise an untrained one of the same architecture
    (the cost does not depend on the weights), so the bench never trains a classifier."""
    from genlab import metrics, scoring
    from genlab.models.classifier import Classifier
    from genlab.runs import classifier

    run_id = classifier.find_classifier(ClassifierConfig(dataset=ctx.cfg.dataset))
    if run_id is not None:
        model = classifier.load_classifier(run_id, ctx.device)
    else:
        torch.manual_seed(ctx.cfg.seed)
        model = Classifier().to(ctx.device)
    real_feats, _ = scoring.extract_features(model, data.to_float(ctx.splits.test_x), ctx.device)
    real_mu, real_sigma = metrics.feature_stats(real_feats, "real test images")
    torch.manual_seed(ctx.cfg.seed)
    with torch.no_grad():  # "generated" images: an untrained decoder's outputs (generation is not timed)
        decoder = VAE(16).decoder.to(ctx.device).eval()
        fakes = torch.cat([torch.sigmoid(decoder(torch.randn(1000, 16, device=ctx.device))).cpu()
                           for _ in range(FID_IMAGES // 1000)])
    values: list[float] = []

    def fid_seconds() -> float:
        t0 = time.perf_counter()
        feats, _ = scoring.extract_features(model, fakes, ctx.device)
        mu, sigma = metrics.feature_stats(feats)
        values.append(metrics.frechet_distance(mu, sigma, real_mu, real_sigma))
        _sync(ctx.device)
        return time.perf_counter() - t0

    fid_seconds()  # warm-up
    seconds = interleaved({"fid": fid_seconds}, ctx.repeats)["fid"]
    return [Measure("fid_seconds_10k", statistics.median(seconds), "s", ("<=", 3.0),
                    {"images": FID_IMAGES, "classifier": run_id or "untrained (no classifier in this store)",
                     "min_seconds": min(seconds), "max_seconds": max(seconds)},
                    "classifier features + mean/covariance + Fréchet distance (float64) of 10,000 images, median "
                    "of the repeats")]


def gan_train_rate(ctx: Bench, n_images: int) -> float:
    """Images/s of one untracked epoch of genlab's GAN loop (random init, no sample-quality evaluation)."""
    from genlab.train import gan

    cfg = GANConfig(dataset=ctx.cfg.dataset, epochs=1, batch_size=ctx.cfg.batch_size, limit=n_images,
                    eval_samples=0, seed=ctx.cfg.seed, device=str(ctx.device), experiment=ctx.cfg.experiment,
                    dtype="fp32")  # as the VAE side (genlab_train)
    with _quiet():
        return gan.train(cfg, ctx.train_splits(n_images), loop.NullSink())[1]["images_per_second"]


def measure_gan(ctx: Bench) -> list[Measure]:
    """gan_images_per_second, beside the VAE loop's rate on the same images (a GAN step is a D and a G update)."""
    n = ctx.images_for(ctx.sizes["train_seconds"] / 2)
    splits = ctx.train_splits(n, n_eval=ctx.cfg.batch_size)
    gan_train_rate(ctx, ctx.cfg.batch_size)  # warm-up
    rates = interleaved({"gan": lambda: gan_train_rate(ctx, n),
                         "vae": lambda: genlab_train(ctx, splits)["images_per_second"]}, ctx.repeats)
    return [Measure("gan_images_per_second", statistics.median(rates["gan"]), "images/s", None,
                    {"images": n, "batch_size": ctx.cfg.batch_size,
                     "vae_images_per_second": statistics.median(rates["vae"]),
                     "gan_to_vae_ratio": median_ratio(rates["gan"], rates["vae"])},
                    "DCGAN (generator = the VAE decoder, discriminator = encoder trunk + logit), one untracked epoch")]


def search_trials_per_minute(ctx: Bench, workers: int, folder: Path, index: int) -> tuple[float, str]:
    """Run a small fresh study (its own Optuna SQLite file, runs in the bench experiment); trials per minute of
    wall time, start-up and worker processes included. Returns (rate, parent run id)."""
    from genlab import search

    sizes = ctx.sizes
    cfg = search.SearchConfig(study_name=f"bench-{workers}w-{index}", storage=f"sqlite:///{folder / f'{index}.db'}",
                              n_trials=sizes["search_trials"], latent_dims="8,16", sampler="random", epochs=1,
                              limit=sizes["search_limit"], eval_samples=0, dataset=ctx.cfg.dataset, seed=ctx.cfg.seed,
                              workers=workers, experiment=ctx.cfg.experiment)
    t0 = time.perf_counter()
    with _own_runs(), _quiet(), contextlib.redirect_stdout(io.StringIO()):
        parent_run_id = search.run(cfg, entries.Context()).run_id
    return cfg.n_trials / ((time.perf_counter() - t0) / 60), parent_run_id


def measure_search(ctx: Bench) -> list[Measure]:
    """search_trials_per_minute with 1 and 2 local workers, side by side, each on a fresh study."""
    if ctx.device.type != "cpu":
        return [Measure(f"search_trials_per_minute_{w}w", None, "trials/min", reason="local workers share one GPU: "
                        "measured on CPU only") for w in (1, 2)]
    parents: list[str] = []
    with tempfile.TemporaryDirectory(prefix="genlab-bench-search-") as folder:
        def rate(workers: int) -> float:
            value, parent = search_trials_per_minute(ctx, workers, Path(folder), len(parents))
            parents.append(parent)
            return value

        rates = interleaved({"1w": lambda: rate(1), "2w": lambda: rate(2)}, min(ctx.repeats, ctx.sizes["search_rounds"]))
    detail = {"trials_per_study": ctx.sizes["search_trials"], "trial": f"1 epoch on {ctx.sizes['search_limit']} "
              "images, no sample-quality metrics", "two_to_one_worker_ratio": median_ratio(rates["2w"], rates["1w"]),
              "parent_run_ids": parents}
    note = "a fresh study per round: parent run, child runs, Optuna SQLite storage, worker processes for 2w"
    return [Measure(f"search_trials_per_minute_{w}", statistics.median(rates[w]), "trials/min", None,
                    detail if w == "2w" else {"trials_per_study": ctx.sizes["search_trials"]}, note)
            for w in ("1w", "2w")]


# ---------------------------------------------------------------- the study on local Dask workers

STUDY_PLANS = ("p1q2", "p1q3")  # the lab's VAE runs that refer to no other run: all can run side by side
STUDY_NAME = "bench"


def _not_on_workers(ctx: Bench) -> str:
    """Why the study's local workers cannot be measured here ("" = they can)."""
    if ctx.device.type != "cpu":
        return "local workers share one GPU: measured on CPU only"
    try:
        import distributed  # noqa: F401
    except ImportError as e:
        return f"dask/distributed is not importable ({e})"
    return ""


def write_study_plans(ctx: Bench, folder: Path) -> Path:
    """The lab's plans of STUDY_PLANS with their runs as they are and the defaults made small: the bench's data
    set, ``study_limit`` images, 1 epoch, the bench's batch size, CPU, no sample-quality scoring (the bench never
    trains the feature classifier) and no IW bound. Returns the plans folder."""
    import yaml

    from genlab.plans import DEFAULT_PLANS

    plans = folder / "plans"
    plans.mkdir()
    for question in STUDY_PLANS:
        plan = yaml.safe_load((DEFAULT_PLANS / f"{question}.yaml").read_text())
        small = {"limit": ctx.sizes["study_limit"], "epochs": 1, "eval_samples": 0, "nll_images": 0,
                 "batch_size": ctx.cfg.batch_size}
        plan["defaults"] = {**(plan.get("defaults") or {}), **small, "dataset": ctx.cfg.dataset, "device": "cpu"}
        # P1Q3's positive control is the sweep's model on fewer images: made small, it would repeat the sweep's runs
        plan["runs"] = [item for item in plan["runs"] if "control" not in str(item.get("arm", ""))]
        for item in plan["runs"]:  # a run's own value of a small parameter wins over the defaults: make it small
            item["params"] = {**(item.get("params") or {}), **{k: v for k, v in small.items()
                                                               if k in (item.get("params") or {})}}
        (plans / f"{question}.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return plans


@contextlib.contextmanager
def _fresh_store(folder: Path) -> Iterator[str]:
    """MLflow pointed at a new SQLite store ``folder/mlflow.db``, created before use, and ``folder`` as the working
    directory (the store's artifacts go under it); the environment, MLflow's URI and the directory restored after."""
    from genlab import tracking

    saved_env, saved_uri, saved_cwd = os.environ.get("MLFLOW_TRACKING_URI"), tracking.current_store(), os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = uri = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        os.chdir(folder)
        tracking.init_store()
        yield uri
    finally:
        os.chdir(saved_cwd)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env
        tracking.point_at(saved_uri)


def study_seconds(ctx: Bench, plans: Path, workers: int, folder: Path) -> tuple[float, object]:
    """Wall seconds of ``genlab study`` (run_study, from the plans to the closed backend) with ``workers`` into a
    fresh store in ``folder``, so nothing is reused; returns (seconds, the study's Outcome)."""
    from genlab import scheduler, study
    from genlab.configs import StudyConfig

    folder.mkdir()
    cfg = StudyConfig(profile="quick", only=",".join(STUDY_PLANS), study=STUDY_NAME, plans=str(plans),
                      workers=workers)
    scheduler._SPLITS.clear()  # the in-process side loads its data set each time, as a new `genlab study` does
    with _fresh_store(folder), _own_runs():
        t0 = time.perf_counter()
        with _quiet(), contextlib.redirect_stdout(io.StringIO()):
            outcome = study.run_study(cfg)
        seconds = time.perf_counter() - t0
    scheduler._SPLITS.clear()
    return seconds, outcome


def measure_study(ctx: Bench) -> list[Measure]:
    """study_speedup_2_workers: wall time of a small study with --workers 1 (in-process, torch's default threads)
    over the same study with --workers 2 (a local Dask cluster of 2 single-threaded processes), side by side,
    each side in its own fresh store."""
    name = "study_speedup_2_workers"
    reason = _not_on_workers(ctx) or ("" if ctx.sizes["study_rounds"] else
                                      "runs a study twice: measured by the full profile (genlab bench)")
    if reason:
        return [Measure(name, None, "x", (">=", 1.3), reason=reason)]
    seconds: dict[str, list[float]] = {"1w": [], "2w": []}
    trained: dict[str, list[int]] = {"1w": [], "2w": []}
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="genlab-bench-study-") as tmp:
        plans = write_study_plans(ctx, Path(tmp))

        def side(workers: int) -> float:
            key = f"{workers}w"
            wall, outcome = study_seconds(ctx, plans, workers, Path(tmp) / f"{key}-{len(seconds[key])}")
            seconds[key].append(wall)
            trained[key].append(outcome.trained)
            failed.extend(outcome.failed)
            return wall

        interleaved({"1w": lambda: side(1), "2w": lambda: side(2)}, min(ctx.repeats, ctx.sizes["study_rounds"]))
    if failed:
        return [Measure(name, None, "x", (">=", 1.3), reason=f"{len(failed)} study runs failed, e.g. {failed[0]}")]
    return [Measure(name, median_ratio(seconds["1w"], seconds["2w"]), "x", (">=", 1.3),
                    {"one_worker_seconds": statistics.median(seconds["1w"]),
                     "two_workers_seconds": statistics.median(seconds["2w"]),
                     "one_worker_runs_trained": statistics.median(trained["1w"]),
                     "two_workers_runs_trained": statistics.median(trained["2w"]),
                     "rounds": len(seconds["1w"]), "images_per_run": ctx.sizes["study_limit"],
                     "one_worker_seconds_per_round": seconds["1w"], "two_workers_seconds_per_round": seconds["2w"],
                     "one_worker_runs_trained_per_round": trained["1w"],
                     "two_workers_runs_trained_per_round": trained["2w"]},
                    f"genlab study of the plans {' + '.join(STUDY_PLANS)} (1 epoch, no sample-quality metrics), "
                    "a fresh store per side: --workers 1 wall time / --workers 2 wall time (the 1-worker side runs in "
                    "this already warm process; each worker process imports and warms up on its first run)")]


def measure_dask_startup(ctx: Bench) -> list[Measure]:
    """dask_startup_seconds: what `genlab study --workers 2` spends on its engine: start a LocalCluster of 2
    single-threaded worker processes, connect a Client and run one trivial task (start), then close it (close)."""
    name = "dask_startup_seconds"
    t0 = time.perf_counter()
    reason = _not_on_workers(ctx)  # imports distributed: the first cluster of a process pays that too
    import_seconds = time.perf_counter() - t0
    if reason:
        return [Measure(name, None, "s", reason=reason)]
    from genlab import scheduler

    starts: list[float] = []
    closes: list[float] = []

    def start_and_close() -> float:
        t0 = time.perf_counter()
        backend = scheduler.DaskBackend(2)
        try:
            backend.client.submit(abs, -1, pure=False).result()
            started = time.perf_counter()
        finally:
            backend.close()
        closed = time.perf_counter()
        starts.append(started - t0)
        closes.append(closed - started)
        return closed - t0

    with _quiet():
        total = interleaved({"dask": start_and_close}, min(ctx.repeats, ctx.sizes["dask_rounds"]))["dask"]
    return [Measure(name, statistics.median(total), "s", None,
                    {"start_seconds": statistics.median(starts), "close_seconds": statistics.median(closes),
                     "workers": 2, "rounds": len(total), "import_seconds": import_seconds,
                     "start_seconds_per_round": starts, "close_seconds_per_round": closes},
                    "LocalCluster of 2 single-threaded worker processes as `genlab study --workers 2` starts it, a "
                    "Client and one trivial task (start), then closing both (close); median of the rounds")]


# The run shapes of a full study whose time is split (genlab.timing): name -> (genlab.kind, arch or None for any)
RUN_SHAPES = {"mlp_vae": ("vae", "mlp"), "conv_vae": ("vae", "conv"), "gan": ("gan", None)}


def _runs_of_shape(runs: Any, kind: str, arch: str | None) -> Any:
    """The runs of one kind (and arch) that timed their training steps, without the columns of other kinds' phases."""
    for column, value in ((f"tags.{tags.KIND}", kind), ("params.arch", arch), ("metrics.seconds_train", None)):
        if column not in runs:
            return runs.iloc[0:0]
        if value is not None:
            runs = runs[runs[column] == value]
    return runs[runs["metrics.seconds_train"].notna()].dropna(axis=1, how="all")


def measure_fixed_costs(ctx: Bench) -> list[Measure]:
    """fixed_cost_share_<shape>: of the wall time of the full-profile training runs in this store (every
    ``genlab study --profile full``'s), the median share not spent in optimisation steps, with each phase's
    median share (genlab.timing: data loading, run start, validation, evaluation, per-epoch logging, the end-of-run
    evaluations and models). Read from the runs' own ``seconds_*`` metrics (FINISHED runs of the latest such run's code
    version; a resumed run's cover its last process), so it is the cost of real runs of the study, not of a shortened
    copy; "not measured" until such runs exist."""
    from genlab import timing, tracking

    runs = tracking.search_runs(filter_string=f"{tags.where(tags.PROFILE, 'full')} and metrics.seconds_total > 0 "
                                              "and attributes.status = 'FINISHED'")
    version = f"tags.{tags.CODE_VERSION}"
    if len(runs) and version in runs:  # the code version of the latest such run: timings of one code, not a mix
        runs = runs[runs[version] == runs.sort_values("start_time")[version].iloc[-1]]
    out = []
    for shape, (kind, arch) in RUN_SHAPES.items():
        name = f"fixed_cost_share_{shape}"
        mine = _runs_of_shape(runs, kind, arch)
        if not len(mine):
            out.append(Measure(name, None, "", reason="no full-profile run of this shape with seconds_total in this "
                               "store: run `genlab study --profile full` first"))
            continue
        total = mine["metrics.seconds_total"].astype(float)
        shares = {p: float(((mine[f"metrics.seconds_{p}"].astype(float).fillna(0)) / total).median())
                  for p in (*timing.PHASES, "other") if f"metrics.seconds_{p}" in mine}
        out.append(Measure(name, 1.0 - shares["train"], "", None,
                           {"runs": len(mine), "median_seconds_total": float(total.median()),
                            **{f"share_{p}": round(v, 4) for p, v in shares.items()}},
                           f"full-profile {shape.replace('_', ' ')} runs: median share of their wall time outside "
                           "the optimisation steps (per phase in detail)"))
    return out


MEASUREMENTS: list[Callable[[Bench], list[Measure]]] = [
    measure_data_pipeline, measure_training, measure_threads, measure_optimizer, measure_tracking, measure_fid, measure_gan,
    measure_search, measure_dask_startup, measure_study, measure_fixed_costs,
]


# ---------------------------------------------------------------- report

def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    if unit == "fraction":
        return f"{value:+.1%}"
    if unit == "":
        return f"{value:.3f}"
    return f"{value:,.2f}{'' if unit == 'x' else ' '}{unit}"


def markdown(measures: list[Measure], info: dict) -> str:
    rows = ["| measure | value | goal | met | side by side | how |", "|---|---|---|---|---|---|"]
    for m in measures:
        goal = f"{m.goal[0]} {m.goal[1]:g}" if m.goal else ""
        met = {True: "yes", False: "**no**", None: ""}[m.met]
        side = ", ".join(f"{k} {_short(v)}" for k, v in m.detail.items() if not isinstance(v, list))
        how = (m.note if m.value is not None else m.reason).replace("|", "\\|")
        rows.append(f"| {m.name} | {_fmt(m.value, m.unit)} | {goal} | {met} | {side} | {how} |")
    machine_line = ", ".join(f"{k} {v}" for k, v in info.items())
    return "\n".join(rows) + f"\n\nMachine: {machine_line}.\n"


def _short(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _write_atomic(path: Path, text: str) -> None:
    with files.atomic_write(path, "w") as f:
        f.write(text)


def run(cfg: BenchConfig, context: entries.Context) -> entries.Result:
    """Run every measurement of MEASUREMENTS, write bench.json and bench.md, log them to a run tagged
    genlab.kind=bench."""
    from genlab import tracking

    validate(cfg)
    tracking.init_store()  # a bad store URL fails now, not after minutes of measuring
    device = resolve_device(cfg.device)
    splits = context.data(cfg.dataset)
    sizes = SIZES[cfg.profile]
    if cfg.batch_size > len(splits.train_x):
        raise ConfigError(f"batch_size must be <= the {len(splits.train_x)} training images, got {cfg.batch_size}")
    ctx = Bench(cfg, sizes, splits, device)
    info = machine()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    t_start = time.perf_counter()
    measures: list[Measure] = []
    for measure in MEASUREMENTS:
        t0 = time.perf_counter()
        new = measure(ctx)
        for m in new:
            print(f"{m.name}: {_fmt(m.value, m.unit)}" + (f" ({m.reason})" if m.value is None else ""), flush=True)
        measures += new
        print(f"  ({measure.__name__} took {time.perf_counter() - t0:.0f} s)", flush=True)
    info["load_average_1min"] = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    report = {"config": dataclasses.asdict(cfg), "sizes": sizes, "repeats": ctx.repeats, "machine": info,
              "dataset_source": splits.source, "total_seconds": time.perf_counter() - t_start,
              "results": {m.name: m.as_dict() for m in measures}}
    out = Path(cfg.output_dir)
    json_path, md_path = out / "bench.json", out / "bench.md"
    report["files"] = [str(json_path), str(md_path)]
    _write_atomic(json_path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    _write_atomic(md_path, markdown(measures, info))
    with tracking.start_run(cfg.experiment, f"bench {cfg.profile}", dataclasses.asdict(cfg),
                            {tags.KIND: tags.BENCH, tags.PROFILE: cfg.profile,
                             tags.MACHINE: f"{info['cpu']} x{info['cpu_cores']}"
                                               + (f", {info['gpu']}" if "gpu" in info else ""), **context.tags},
                            parent_run_id=context.parent_run_id) as run:
        values = {m.name: m.value for m in measures if m.value is not None}
        values["total_seconds"] = report["total_seconds"]
        run.log_metrics(values, step=0)
        run.log_artifact(json_path)
        run.log_artifact(md_path)
    return entries.Result(run.run_id, values, (f"bench run {run.run_id} ({report['total_seconds']:.0f} s): wrote "
                                               f"{' and '.join(report['files'])}",))
