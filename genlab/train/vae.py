"""The VAE loop: one config of plain values, one loop, one checkpoint state per epoch. It trains and reports to a
loop.Sink; what a run records is genlab.runs.vae.

Read top to bottom: evaluate -> checkpoints -> train (the loop) -> train_epoch -> the objective of one batch.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab import convergence, data, losses, metrics, pictures, timing
from genlab.checks import resolve_device, resolve_dtype
from genlab.configs import VAEConfig
from genlab.models.vae import VAE, reparameterize
from genlab.pictures import N_GRID, SAMPLE_SEED
from genlab.train import loop


def learning_rate(base: float, step: int, total_steps: int) -> float:
    """Cosine decay from ``base`` at step 0 towards 0 at ``total_steps`` (Loshchilov & Hutter, no restarts)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor, device: torch.device, seed: int, batch_size: int = 500,
             ) -> dict[str, float]:
    """Mean ``recon``, ``kl``, ``neg_elbo`` (nats/image, one posterior sample each, fixed noise) and
    ``active_units`` on uint8 images ``x``."""
    model.eval()
    noise = torch.Generator(device=device).manual_seed(seed)
    sums = torch.zeros(3, dtype=torch.float64)
    z_means = []
    for xb in data.batches(x, batch_size, device=device):
        logits, _, z_mean, z_log_var = model(xb, noise)
        terms = losses.vae_terms(logits, xb, z_mean, z_log_var, beta=1.0)
        sums += torch.stack([terms["recon"].sum(), terms["kl"].sum(), terms["neg_elbo"].sum()]).double().cpu()
        z_means.append(z_mean.float().cpu())
    model.train()
    recon, kl, neg_elbo = (sums / len(x)).tolist()
    return {"recon": recon, "kl": kl, "neg_elbo": neg_elbo,
            "active_units": metrics.active_units(torch.cat(z_means).numpy())}


# The codes behind aggregate_posterior_mmd: between two samples of N(0, I) the estimate's spread is ~1e-4 at 2,000
# codes (P1Q2's minimum effect is 0.01), and its three 2,000 x 2,000 kernel matrices take well under a second.
MMD_IMAGES = 2000


def posterior_metrics(z_mean: torch.Tensor, z_log_var: torch.Tensor, seed: int) -> dict[str, float]:
    """The shape of the latent space from the posteriors of a set of images (the test split), ``z_mean`` and
    ``z_log_var`` (N, latent_dim): ``kl_active_units`` (latent dimensions whose mean KL per image exceeds
    metrics.KL_ACTIVE_THRESHOLD nats) and ``aggregate_posterior_mmd`` (metrics.mmd2_unbiased between one posterior
    draw z ~ q(z|x) for each of the first MMD_IMAGES images and as many prior draws z ~ N(0, I)).

    Draws, not z_mean: together they sample the aggregate posterior q(z), the codes the decoder was trained on,
    which the prior's draws must resemble for prior samples to decode well. z_mean alone leaves out each
    posterior's spread, so a large-beta VAE whose q(z) matches the prior would look far from it."""
    z_mean, z_log_var = z_mean.float().cpu(), z_log_var.float().cpu()
    kl = losses.kl_per_dim(z_mean, z_log_var).mean(0)
    noise = torch.Generator().manual_seed(seed + 3)  # evaluate uses seed, the nll_iw bound seed + 2
    n = min(len(z_mean), MMD_IMAGES)
    z = z_mean[:n] + (0.5 * z_log_var[:n]).exp() * torch.randn(z_mean[:n].shape, generator=noise)
    prior = torch.randn(z.shape, generator=noise)
    return {"kl_active_units": metrics.kl_active_units(kl.numpy()),
            "aggregate_posterior_mmd": metrics.mmd2_unbiased(z.numpy(), prior.numpy())}


@torch.no_grad()
def prior_samples(model: VAE, n: int = N_GRID, seed: int = SAMPLE_SEED) -> torch.Tensor:
    """Decoder means for fixed prior draws z ~ N(0, I): (n, 1, 28, 28) in [0, 1]."""
    return pictures.decode(model.decoder, pictures.prior_z(n, model.latent_dim, seed))


# ---------------------------------------------------------------- checkpoints

CHECKPOINT_KEYS = {"model", "optimizer", "epoch", "shuffle_rng", "noise_rng", "baseline", "config"}  # + val_history


def load_checkpoint(path: str | Path) -> dict:
    """Read a VAE checkpoint safely (weights_only); ConfigError if unreadable or not a VAE checkpoint."""
    return loop.load_checkpoint(path, CHECKPOINT_KEYS, "VAE")


# ---------------------------------------------------------------- the loop

@dataclass
class TrainState:
    """What the optimisation carries from step to step; a checkpoint keeps all of it."""

    model: VAE
    optimizer: torch.optim.Optimizer
    shuffle_rng: torch.Generator
    noise_rng: torch.Generator
    baseline: torch.Tensor  # running mean of recon (nats/image), for the score-function estimator
    val_history: list[float]  # the validation objective before training, then after each epoch: the convergence gate

    def stateful(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.optimizer}

    def rngs(self) -> dict[str, torch.Generator]:
        return {"shuffle_rng": self.shuffle_rng, "noise_rng": self.noise_rng}

    def checkpoint(self, epoch: int, cfg: VAEConfig) -> dict[str, Any]:
        """The state to resume from after ``epoch`` (the CHECKPOINT_KEYS)."""
        return loop.checkpoint_state(epoch, cfg, self.stateful(), self.rngs(), baseline=self.baseline.detach().cpu(),
                                     val_history=torch.tensor(self.val_history, dtype=torch.float64))


def initial_state(cfg: VAEConfig, device: torch.device, resume: dict | None = None) -> tuple[TrainState, int]:
    """A seeded model, its optimiser and RNGs, loaded from the checkpoint ``resume`` if given; and the first epoch
    to train."""
    torch.manual_seed(cfg.seed)
    model = VAE(cfg.latent_dim, cfg.arch).to(device)
    if cfg.arch == "conv" and device.type == "cpu":
        # oneDNN convolutions are faster on CPU in channels-last layout (docs/results.md, Benchmark)
        model = model.to(memory_format=torch.channels_last)
    state = TrainState(model, loop.adam(model.parameters(), cfg.lr), torch.Generator().manual_seed(cfg.seed),
                       torch.Generator(device=device).manual_seed(cfg.seed + 1), torch.zeros((), device=device), [])
    start_epoch = loop.restore(resume, state.stateful(), state.rngs())
    if resume is not None:
        state.baseline = resume["baseline"].to(device)
        state.val_history = resume.get("val_history", torch.zeros(0)).tolist()  # absent: made before the gate
    return state, start_epoch


def train(cfg: VAEConfig, splits: data.Splits, sink: loop.Sink = loop.NullSink(), resume: dict | None = None,
          ) -> tuple[VAE, dict[str, float]]:
    """Train, reporting each epoch to ``sink`` (genlab.runs.vae.TrackedVAESink: an MLflow run; the default:
    nowhere), from the checkpoint ``resume`` if given. Returns the model and the final metrics: the last epoch's,
    ``test_*`` and ``train_eval_*`` (nats/image), and what the sink adds."""
    device = resolve_device(cfg.device)
    state, start_epoch = initial_state(cfg, device, resume)
    if start_epoch == 1:
        with timing.phase("epoch_logging"):
            sink.start(state.model, {})
        with timing.phase("validation"):
            initial = evaluate(state.model, validation_images(cfg, splits), device, cfg.seed)
        state.val_history = [validation_objective(cfg, initial["recon"], initial["kl"])]
    last: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.epochs + 1):
        last = train_epoch(cfg, splits, state, epoch, device)
        state.val_history.append(validation_objective(cfg, last["val_recon"], last["val_kl"]))
        with timing.phase("epoch_logging"):
            sink.epoch(epoch, last, state.model, functools.partial(state.checkpoint, epoch, cfg))
    final = {**last, **(convergence.convergence(state.val_history) if len(state.val_history) >= 2 else {})}
    with timing.phase("test_eval"):
        test = evaluate(state.model, splits.test_x, device, cfg.seed)
        train_eval = evaluate(state.model, splits.train_x[:len(splits.val_x)], device, cfg.seed)
    final.update({f"test_{k}": v for k, v in test.items()})
    final.update({f"train_eval_{k}": v for k, v in train_eval.items() if k != "active_units"})
    with timing.phase("iw_bound"):
        final.update(nll_iw(state.model, splits, cfg, device))
    final.update(sink.end(state.model, final))
    return state.model, final


def validation_images(cfg: VAEConfig, splits: data.Splits) -> torch.Tensor:
    """The images of the per-epoch validation: the first ``val_images`` of the validation slice (0: all). The same
    images and posterior noise every epoch, so epoch-to-epoch changes are measured on a fixed set: the gate reads
    them almost as well on 1,000 images as on 5,000 (docs/results.md, "Validation images per epoch")."""
    return splits.val_x[:cfg.val_images] if cfg.val_images else splits.val_x


def validation_objective(cfg: VAEConfig, recon: float, kl: float) -> float:
    """What the run minimises, on the validation split (nats/image): recon + beta * KL, the neg-ELBO at beta = 1.
    The convergence gate follows it: an autoencoder's (beta = 0) neg-ELBO rises as its unconstrained KL grows
    while its reconstruction may still be improving."""
    return recon + cfg.beta * kl


def nll_iw(model: VAE, splits: data.Splits, cfg: VAEConfig, device: torch.device) -> dict[str, float]:
    """``test_nll_iw`` and ``train_nll_iw`` (nats/image): the importance-weighted bound with ``nll_k`` posterior
    draws per image on the first ``nll_images`` images of each split, and their standard errors over the images
    (``*_nll_iw_se``), and ``nll_seconds`` (its cost). Nothing when ``nll_images`` is 0."""
    if cfg.nll_images == 0:
        return {}
    t0 = time.perf_counter()
    out: dict[str, float] = {}
    for split, x in (("test", splits.test_x), ("train", splits.train_x)):
        per_image = _iw_nll_per_image(model, x[:cfg.nll_images], cfg.nll_k, cfg.seed, device)
        spread = float(per_image.std()) if len(per_image) > 1 else 0.0
        out[f"{split}_nll_iw"] = float(per_image.mean())
        out[f"{split}_nll_iw_se"] = spread / math.sqrt(len(per_image))
    out["nll_seconds"] = time.perf_counter() - t0
    return out


@torch.no_grad()
def _iw_nll_per_image(model: VAE, x: torch.Tensor, k: int, seed: int, device: torch.device,
                      passes_per_batch: int = 8192) -> torch.Tensor:
    """The bound of losses.iw_nll_nats for each of the uint8 images ``x`` (float64, on the CPU)."""
    model.eval()
    noise = torch.Generator(device=device).manual_seed(seed + 2)
    parts = []
    for xb in data.batches(x, max(1, passes_per_batch // k), device=device):
        z_mean, z_log_var = (t.float() for t in model.encoder.encode(xb))
        eps = torch.randn((k, *z_mean.shape), generator=noise, device=device)
        z = z_mean + (0.5 * z_log_var).exp() * eps
        logits = model.decoder(z.flatten(0, 1))
        log_p_x = -losses.recon_nats(logits, xb.repeat(k, *([1] * (xb.dim() - 1)))).view(k, len(xb))
        parts.append(losses.iw_nll_nats(log_p_x, z, z_mean, z_log_var).double().cpu())
    model.train()
    return torch.cat(parts)


def train_epoch(cfg: VAEConfig, splits: data.Splits, state: TrainState, epoch: int, device: torch.device,
                ) -> dict[str, float]:
    """One pass over the training images, then the validation split: the epoch's metrics (nats/image, seconds)."""
    t0 = time.perf_counter()
    steps_per_epoch = -(-len(splits.train_x) // cfg.batch_size)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_dtype(cfg.dtype, device) == "bf16")
    sums = torch.zeros(3, dtype=torch.float64)
    bar = loop.progress(steps_per_epoch, f"epoch {epoch}/{cfg.epochs}")
    beta = cfg.beta
    for step, xb in enumerate(data.batches(splits.train_x, cfg.batch_size, state.shuffle_rng, device)):
        global_step = (epoch - 1) * steps_per_epoch + step
        beta = cfg.beta * (min(1.0, global_step / (cfg.kl_warmup_epochs * steps_per_epoch))
                           if cfg.kl_warmup_epochs else 1.0)
        if cfg.lr_schedule == "cosine":  # a function of the step, not a scheduler's state: resume stays exact
            lr = learning_rate(cfg.lr, global_step, cfg.epochs * steps_per_epoch)
            for group in state.optimizer.param_groups:
                group["lr"] = lr
        terms, loss = _objective(cfg, state, xb, beta, autocast)
        loop.check_finite(loss, "VAE loss", epoch, step, f"lr={cfg.lr} may be too large")
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        sums += torch.stack([terms["recon"].sum(), terms["kl"].sum(), terms["neg_elbo"].sum()]).detach().double()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.1f}", refresh=False)
    train_seconds = time.perf_counter() - t0
    timing.add("train", train_seconds)
    if bar is not None:
        bar.close()
    train_recon, train_kl, train_neg_elbo = (sums / len(splits.train_x)).tolist()
    with timing.phase("validation"):
        val = evaluate(state.model, validation_images(cfg, splits), device, cfg.seed)
    last = {"train_recon": train_recon, "train_kl": train_kl, "train_neg_elbo": train_neg_elbo,
            "val_recon": val["recon"], "val_kl": val["kl"], "val_neg_elbo": val["neg_elbo"],
            "active_units": val["active_units"], "beta_effective": beta,
            "lr_effective": state.optimizer.param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - t0,
            "images_per_second": len(splits.train_x) / train_seconds}
    if not all(np.isfinite(v) for v in last.values()):
        raise loop.NonFiniteLoss(f"VAE validation metrics became non-finite at epoch {epoch}")
    if bar is None:
        print(f"epoch {epoch}/{cfg.epochs}  train_neg_elbo {train_neg_elbo:.2f}  val_neg_elbo "
              f"{val['neg_elbo']:.2f}  kl {val['kl']:.2f}  active {val['active_units']}  "
              f"{last['images_per_second']:.0f} img/s", file=sys.stderr, flush=True)
    return last


def _objective(cfg: VAEConfig, state: TrainState, xb: torch.Tensor, beta: float, autocast: torch.autocast,
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One batch's per-image terms (losses.vae_terms) and the scalar to minimise; the score-function estimator
    also moves its baseline."""
    with autocast:
        z_mean, z_log_var = state.model.encoder.encode(xb)
        z = reparameterize(z_mean, z_log_var, state.noise_rng)
        if cfg.estimator != "reparam":  # z drawn without the trick: no path from the sample back to mean and sigma
            z = z.detach()
        logits = state.model.decoder(z)
    terms = losses.vae_terms(logits, xb, z_mean, z_log_var, beta)
    if cfg.estimator in ("reparam", "detach"):  # detach: plain backprop, the encoder sees only the KL gradient
        return terms, terms["loss"].mean()
    log_q = losses.gaussian_log_prob(z, z_mean.float(), z_log_var.float())
    objective = losses.score_function_surrogate(terms["recon"], log_q, state.baseline) + beta * terms["kl"]
    state.baseline = 0.9 * state.baseline + 0.1 * terms["recon"].detach().mean()
    return terms, objective.mean()

