"""Train the VAE and track it: one config of plain values, one loop, one checkpoint per epoch.

Read top to bottom: config -> validate -> evaluate -> train (the loop, which reports to a loop.Sink) ->
TrackedVAESink (what a run logs) -> run (the MLflow run around it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab import config, data, images, losses, metrics, pictures, tags
from genlab.config import ConfigError, check, check_declared, resolve_device
from genlab.configs import VAEConfig
from genlab.entries import Context, EpochCallback, Result
from genlab.models.vae import VAE, Encoder, param_count, reparameterize
from genlab.pictures import N_GRID, SAMPLE_SEED
from genlab.quality import MIN_SAMPLES as MIN_EVAL_SAMPLES
from genlab.quality import Scorer
from genlab.train import loop


def validate(cfg: VAEConfig) -> None:
    """Raise ConfigError (one line) for any invalid value; called before any run is created."""
    check_declared(cfg)
    check(bool(cfg.experiment.strip()), "experiment", cfg.experiment, "a non-empty name")
    check(isinstance(cfg.eval_samples, int) and (cfg.eval_samples == 0 or cfg.eval_samples >= MIN_EVAL_SAMPLES),
          "eval_samples", cfg.eval_samples, f"0 (skip) or an integer >= {MIN_EVAL_SAMPLES}")


def learning_rate(base: float, step: int, total_steps: int) -> float:
    """Cosine decay from ``base`` at step 0 towards 0 at ``total_steps`` (Loshchilov & Hutter, no restarts)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def run_name(cfg: VAEConfig) -> str:
    """``vae z16 b1.0 s0`` (plus the arch / estimator when not the default, and ``n<limit>`` for a subset of the
    training images: P1Q3's positive control differs from its sweep by its training-set size alone)."""
    extra = "".join(f" {v}" for v, default in ((cfg.arch, "conv"), (cfg.estimator, "reparam")) if v != default)
    subset = f" n{cfg.limit}" if cfg.limit else ""
    return (f"vae{extra} z{cfg.latent_dim} b{cfg.beta:g}{'.0' if float(cfg.beta).is_integer() else ''}{subset} "
            f"s{cfg.seed}")


def describe(cfg: VAEConfig) -> str:
    """The run's description in the MLflow UI."""
    images_used = f"the first {cfg.limit:,} training images" if cfg.limit else "all training images"
    model = "autoencoder (beta 0: no KL term)" if cfg.beta == 0 else f"VAE with KL weight beta = {cfg.beta:g}"
    return (f"{cfg.arch} {model}, latent_dim {cfg.latent_dim}, {cfg.estimator} gradient estimator; {cfg.epochs} "
            f"epochs on {images_used} of {cfg.dataset} (seed {cfg.seed}). Read val_neg_elbo (nats/image) per epoch; "
            "Artifacts > images steps through the prior samples and reconstructions, pictures/ holds the final ones.")


def params_of(cfg: VAEConfig) -> dict:
    return dataclasses.asdict(cfg)


def config_from_params(params: dict[str, str]) -> VAEConfig:
    """Rebuild a config from a run's logged params (strings)."""
    return config.config_from_params(VAEConfig, params)


def check_data(cfg: VAEConfig, splits: data.Splits) -> None:
    config.check_batch_fits(cfg.batch_size, len(splits.train_x))


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
    state = TrainState(model, torch.optim.Adam(model.parameters(), lr=cfg.lr), torch.Generator().manual_seed(cfg.seed),
                       torch.Generator(device=device).manual_seed(cfg.seed + 1), torch.zeros((), device=device), [])
    start_epoch = loop.restore(resume, state.stateful(), state.rngs())
    if resume is not None:
        state.baseline = resume["baseline"].to(device)
        state.val_history = resume.get("val_history", torch.zeros(0)).tolist()  # absent: made before the gate
    return state, start_epoch


def train(cfg: VAEConfig, splits: data.Splits, sink: loop.Sink = loop.NullSink(), resume: dict | None = None,
          ) -> tuple[VAE, dict[str, float]]:
    """Train, reporting each epoch to ``sink`` (TrackedVAESink: an MLflow run; the default: nowhere), from the
    checkpoint ``resume`` if given. Returns the model and the final metrics: the last epoch's, ``test_*`` and
    ``train_eval_*`` (nats/image), and what the sink adds."""
    device = resolve_device(cfg.device)
    state, start_epoch = initial_state(cfg, device, resume)
    if start_epoch == 1:
        sink.start(state.model, {})
        initial = evaluate(state.model, splits.val_x, device, cfg.seed)
        state.val_history = [validation_objective(cfg, initial["recon"], initial["kl"])]
    last: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.epochs + 1):
        last = train_epoch(cfg, splits, state, epoch, device)
        state.val_history.append(validation_objective(cfg, last["val_recon"], last["val_kl"]))
        sink.epoch(epoch, last, state.model, functools.partial(state.checkpoint, epoch, cfg))
    final = {**last, **(metrics.convergence(state.val_history) if len(state.val_history) >= 2 else {})}
    test = evaluate(state.model, splits.test_x, device, cfg.seed)
    train_eval = evaluate(state.model, splits.train_x[:len(splits.val_x)], device, cfg.seed)
    final.update({f"test_{k}": v for k, v in test.items()})
    final.update({f"train_eval_{k}": v for k, v in train_eval.items() if k != "active_units"})
    final.update(nll_iw(state.model, splits, cfg, device))
    final.update(sink.end(state.model, final))
    return state.model, final


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
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bf16")
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
    if bar is not None:
        bar.close()
    train_recon, train_kl, train_neg_elbo = (sums / len(splits.train_x)).tolist()
    val = evaluate(state.model, splits.val_x, device, cfg.seed)
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


# ---------------------------------------------------------------- the tracked sink

class TrackedVAESink:
    """A VAE run's MLflow record, written to ``run`` (a tracking.Run): ``param_count`` at step 0; per epoch the
    metrics (one batched call), the ``samples`` and ``reconstructions`` image series and ``checkpoint/last.pt``;
    at the end the latent space (P1Q2), ``pictures/``, the test metrics, sample quality (``eval_samples`` > 0) and
    the decoder/encoder models (``log_models``). ``on_epoch(epoch, metrics)`` runs after each epoch's logging
    and may raise to stop (Optuna pruning)."""

    def __init__(self, run: Any, cfg: VAEConfig, splits: data.Splits, device: torch.device, log_models: bool = True,
                 on_epoch: EpochCallback | None = None):
        self.run, self.cfg, self.splits, self.device = run, cfg, splits, device
        self.log_models, self.on_epoch = log_models, on_epoch
        self.fixed_val = data.to_float(splits.val_x[:32])  # the images behind the reconstructions series
        self.epoch_keys: set[str] = set()

    def start(self, model: VAE, metrics: dict[str, float]) -> None:
        self.run.log_metrics({"param_count": param_count(model)}, step=0)

    def epoch(self, epoch: int, metrics: dict[str, float], model: VAE, checkpoint: loop.CheckpointFn) -> None:
        self.run.log_metrics(metrics, step=epoch)
        self.epoch_keys.update(metrics)
        _log_epoch_artifacts(self.run, model, self.fixed_val, epoch, self.device, self.cfg.seed)
        with loop.checkpoint_file(checkpoint()) as path:
            self.run.log_artifact(path, "checkpoint")
        if self.on_epoch is not None:
            self.on_epoch(epoch, metrics)

    def end(self, model: VAE, final: dict[str, float]) -> dict[str, float]:
        cfg, run = self.cfg, self.run
        added = log_latent_space(run, model, self.splits, self.device, step=cfg.epochs, seed=cfg.seed)
        log_pictures(run, model, self.splits, self.device)
        # what the last epoch did not log: the convergence gate, the test and train evaluations, nll_iw
        run.log_metrics({k: v for k, v in final.items() if k not in self.epoch_keys}, step=cfg.epochs)
        if cfg.eval_samples > 0:
            added.update(_log_sample_quality(run, model, self.splits, cfg, self.device))
        if self.log_models:
            model.cpu().eval()
            run.log_model(model.decoder, "decoder", np.zeros((2, cfg.latent_dim), np.float32))
            run.log_model(model.encoder, "encoder", np.zeros((2, 1, 28, 28), np.float32))
        return added


def _log_sample_quality(run, model: VAE, splits: data.Splits, cfg: VAEConfig, device: torch.device,
                        ) -> dict[str, float]:
    """Score ``eval_samples`` prior samples (``fid_proxy``, ...) and as many test reconstructions
    (``recon_fid_proxy``, ...) with the data set's feature classifier, plus ``aggregate_fid_proxy`` (the same
    test images decoded from one posterior draw each: samples of the aggregate posterior, so fid_proxy -
    aggregate_fid_proxy is what the prior's draws lose by landing where no image's code lies) and the
    interpolation measures; log them, ``eval_seconds`` and the param ``fid_classifier``. ``eval_seconds`` leaves
    out a one-time classifier training."""
    from genlab.train.classifier import get_scorer

    scorer = get_scorer(cfg.dataset, device, splits=splits)
    t0 = time.perf_counter()
    run.log_params({"fid_classifier": scorer.run_id})
    model.eval()
    z = torch.randn(cfg.eval_samples, cfg.latent_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED + cfg.seed))
    noise = torch.Generator().manual_seed(SAMPLE_SEED + cfg.seed + 1)
    samples, recons, aggregate = [], [], []
    with torch.no_grad():
        for start in range(0, len(z), 1000):
            samples.append(torch.sigmoid(model.decoder(z[start:start + 1000].to(device))).float().cpu())
        for xb in data.batches(splits.test_x[:cfg.eval_samples], 1000, device=device):
            z_mean, z_log_var = model.encoder.encode(xb)
            recons.append(torch.sigmoid(model.decoder(z_mean)).float().cpu())  # posterior mean
            eps = torch.randn(z_mean.shape, generator=noise).to(device)
            aggregate.append(torch.sigmoid(model.decoder(z_mean + (0.5 * z_log_var).exp() * eps)).float().cpu())
    model.train()
    quality = {**scorer.score(torch.cat(samples)), **scorer.score(torch.cat(recons), prefix="recon_"),
               "aggregate_fid_proxy": scorer.fid_proxy(torch.cat(aggregate)),
               **interpolation_measures(model, splits.test_x, scorer, device)}
    quality["eval_seconds"] = time.perf_counter() - t0
    run.log_metrics(quality, step=cfg.epochs)
    return quality


# The interpolation measures: lines between the z_mean of random pairs of test images, the same pairs for every run
# of a data set (a fixed seed: runs then differ only by their model). interp_smoothness, ours, on INTERP_STEPS evenly
# spaced points of each line; the perceptual path length (Karras et al. 2019), established, on PPL_POINTS random
# points t of each line and their neighbours t + PPL_EPSILON (their epsilon: small enough to read the derivative,
# large enough for float32). A thousand decoded images cost a fraction of a second.
INTERP_PAIRS, INTERP_STEPS, INTERP_SEED = 32, 16, SAMPLE_SEED + 7
PPL_POINTS, PPL_EPSILON = 16, 1e-4


def interpolation_measures(model: VAE, x: torch.Tensor, scorer: Scorer, device: torch.device) -> dict[str, float]:
    """Along INTERP_PAIRS straight lines between the codes (z_mean) of pairs of distinct uint8 images ``x`` (the
    test split), each point decoded (the decoder's mean): ``interp_smoothness`` (metrics.interp_smoothness of
    INTERP_STEPS evenly spaced points, ends included, embedded by the scorer's feature classifier: 1 when the
    images change evenly, larger when most of the change happens in a few steps), ``interp_path_length`` and
    ``interp_path_length_pixels`` (metrics.path_length in the classifier's features and in grey values, t measured
    along each line from 0 to 1)."""
    pairs = min(INTERP_PAIRS, len(x) // 2)
    if pairs == 0:
        raise ValueError(f"the interpolation measures need at least 2 images, got {len(x)}")
    chosen = np.random.default_rng(INTERP_SEED).choice(len(x), size=2 * pairs, replace=False)
    z = encode_means(model.encoder, x[torch.from_numpy(chosen)], device)[0]
    z_from, z_to = z[:pairs], z[pairs:]
    images = pictures.decode(model.decoder, pictures.lines(z_from, z_to, INTERP_STEPS))
    features, _ = scorer.features(images)
    t = torch.from_numpy(np.random.default_rng(INTERP_SEED + 1).uniform(0, 1 - PPL_EPSILON, (pairs, PPL_POINTS, 1)))
    t = t.to(z.dtype)
    at = [(z_from.unsqueeze(1) + s * (z_to - z_from).unsqueeze(1)).reshape(-1, z.shape[1]) for s in (t, t + PPL_EPSILON)]
    ends = [pictures.decode(model.decoder, a) for a in at]
    embedded = [scorer.features(e)[0] for e in ends]
    return {"interp_smoothness": metrics.interp_smoothness(features.reshape(pairs, INTERP_STEPS, -1)),
            "interp_path_length": metrics.path_length(*embedded, PPL_EPSILON),
            "interp_path_length_pixels": metrics.path_length(*(e.reshape(len(e), -1).numpy() for e in ends),
                                                             PPL_EPSILON)}


PROBE_TRAIN_IMAGES = 5000  # the linear probe of z_mean is fitted on at most this many training images


@torch.no_grad()
def encode_means(encoder: Encoder, x: torch.Tensor, device: torch.device, batch_size: int = 500,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``z_mean`` and ``z_log_var`` (N, latent_dim) on the CPU for uint8 images ``x``, the encoder in eval mode
    (its own mode restored after)."""
    was_training = encoder.training
    encoder.eval()
    parts = [encoder.encode(xb) for xb in data.batches(x, batch_size, device=device)]
    encoder.train(was_training)
    return torch.cat([m for m, _ in parts]).float().cpu(), torch.cat([v for _, v in parts]).float().cpu()


def log_latent_space(run, model: VAE, splits: data.Splits, device: torch.device, step: int, seed: int = 0,
                     ) -> dict[str, float]:
    """P1Q2's view of the latent space, logged to ``run``: ``latent_probe_accuracy`` (logistic regression on
    ``z_mean``, fitted on training images, scored on the test split), the test split's posterior_metrics
    (``kl_active_units``, ``aggregate_posterior_mmd``; ``seed``: the posterior and prior draws), ``kl_per_dim.json``
    (mean KL per latent dimension on the test split, nats) and, for a 2-d latent, ``latent_scatter.png`` (test
    ``z_mean`` by class)."""
    train_mean, _ = encode_means(model.encoder, splits.train_x[:PROBE_TRAIN_IMAGES], device)
    test_mean, test_log_var = encode_means(model.encoder, splits.test_x, device)
    accuracy = metrics.linear_probe_accuracy(train_mean.numpy(), splits.train_y[:PROBE_TRAIN_IMAGES].numpy(),
                                             test_mean.numpy(), splits.test_y.numpy())
    added = {"latent_probe_accuracy": accuracy, **posterior_metrics(test_mean, test_log_var, seed)}
    run.log_metrics(added, step=step)
    run.log_dict(losses.kl_per_dim(test_mean, test_log_var).mean(0).tolist(), "kl_per_dim.json")
    if model.latent_dim == 2:
        run.log_figure(latent_scatter(test_mean.numpy(), splits.test_y.numpy(),
                                      data.CLASS_NAMES.get(splits.name)), "latent_scatter.png")
    return added


def latent_scatter(z_mean: np.ndarray, labels: np.ndarray, class_names: list[str] | None = None):
    """A matplotlib Figure of 2-d ``z_mean`` points coloured by class (no pyplot: no global state, no display)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5.5), dpi=100)
    ax = figure.subplots()
    for label in np.unique(labels):
        points = z_mean[labels == label]
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6, color=f"C{label % 10}", label=name, linewidths=0)
    ax.set_xlabel("z_mean[0]")
    ax.set_ylabel("z_mean[1]")
    ax.set_title("Test images in the latent space (z_mean)")
    ax.legend(markerscale=4, fontsize=7, loc="best")
    figure.tight_layout()
    return figure


def _log_epoch_artifacts(run, model: VAE, fixed_val: torch.Tensor, epoch: int, device: torch.device,
                         seed: int) -> None:
    with torch.no_grad():
        model.eval()
        z_mean, _ = model.encoder.encode(fixed_val.to(device))
        recon = torch.sigmoid(model.decoder(z_mean)).cpu()
        model.train()
    run.log_image_step(images.grid(prior_samples(model)), "samples", epoch)
    run.log_image_step(images.side_by_side(fixed_val, recon), "reconstructions", epoch)


N_PICTURE_IMAGES = 16  # test images reconstructed in pictures/reconstructions.png


def log_pictures(run, model: VAE, splits: data.Splits, device: torch.device) -> None:
    """The trained model's pictures, the same draws and test images for every run of a data set:
    ``pictures/samples.png`` (prior samples), ``pictures/reconstructions.png`` (rows of test images, then their
    reconstructions from ``z_mean``), ``pictures/interpolation.png`` (straight lines between the ``z_mean`` of
    test images of different classes) and, for a 2-d latent, ``pictures/manifold.png``."""
    x = data.to_float(splits.test_x[:N_PICTURE_IMAGES])
    z_x = encode_means(model.encoder, splits.test_x[:N_PICTURE_IMAGES], device)[0]
    run.log_image(images.side_by_side(x, pictures.decode(model.decoder, z_x)), "pictures/reconstructions.png")
    run.log_image(pictures.sample_grid(model.decoder, model.latent_dim), "pictures/samples.png")
    first, second = pictures.pair_indices(splits.test_y.numpy())
    z_test = encode_means(model.encoder, splits.test_x[first + second], device)[0]
    run.log_image(pictures.interpolation_grid(model.decoder, z_test[:len(first)], z_test[len(first):]),
                  "pictures/interpolation.png")
    if model.latent_dim == 2:
        run.log_image(pictures.manifold_grid(model.decoder), "pictures/manifold.png")


# ---------------------------------------------------------------- the run around the loop

def run(cfg: VAEConfig, context: Context) -> Result:
    """Validate, load data, then train inside one MLflow run. Errors before the run starts create nothing.
    A resumed run (``context.resume_run_id``) takes its config from that run's logged params, not from ``cfg``."""
    from genlab import tracking

    resume, resume_run_id = None, context.resume_run_id
    if resume_run_id:
        previous = tracking.load_trained_run(resume_run_id, tags.VAE, require_finished=False)
        cfg = config_from_params(previous.data.params)
        path = tracking.download_artifact(resume_run_id, "checkpoint/last.pt")
        resume = load_checkpoint(path)
        if int(resume["epoch"]) >= cfg.epochs and previous.info.status == "FINISHED":
            raise ConfigError(f"run '{resume_run_id}' already finished all {cfg.epochs} epochs")
    validate(cfg)
    splits = context.data(cfg.dataset, cfg.limit)
    check_data(cfg, splits)
    all_tags = {tags.KIND: tags.VAE, tags.DEVICE: str(resolve_device(cfg.device)), **context.tags}
    with tracking.start_run(cfg.experiment, run_name(cfg), params_of(cfg), all_tags, resume_run_id=resume_run_id,
                            parent_run_id=context.parent_run_id, description=describe(cfg),
                            system_metrics=bool(cfg.system_metrics)) as run:
        if resume is None:
            for split in ("train", "val", "test"):
                run.log_dataset(splits.name, splits.source, splits.digest(split), split,
                                len(getattr(splits, f"{split}_x")))
        sink = TrackedVAESink(run, cfg, splits, resolve_device(cfg.device), context.log_models, context.on_epoch)
        _, final = train(cfg, splits, sink, resume=resume)
    return Result(run.run_id, final, (f"run {run.run_id} finished: test_neg_elbo {final['test_neg_elbo']:.2f} "
                                      f"nats/image (recon {final['test_recon']:.2f}, kl {final['test_kl']:.2f})",))
