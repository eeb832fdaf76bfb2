"""P1Q1 measured: how noisy is each gradient estimator of the reconstruction term, at fixed VAE parameters?

For a fixed batch of validation images and fixed encoder/decoder parameters, draw ``n_samples`` noise samples and,
for each, the encoder gradient of the batch-mean reconstruction term (nats/image) under
- the reparameterisation estimator: z = mean + sigma * eps, gradient through the decoder into the encoder;
- the score-function (REINFORCE) estimator: z drawn without the trick, gradient (recon - b(x)) * grad log q(z|x),
  with a per-image baseline b(x) = mean recon over independent draws made beforehand (so it adds no bias);
  the same samples without the baseline as a reference.
Both estimate the same gradient; their total variance (trace of the covariance over all encoder parameters, in
(nats/image)^2 per parameter unit squared) is the answer. Without the trick, the reconstruction term sends no
gradient at all to the encoder: ``encoder_grad_norm_no_trick`` is that norm, measured.

Read top to bottom: config -> validate -> measure -> main (the MLflow run around it).
"""

from __future__ import annotations

import dataclasses
import math
import sys

import torch

from genlab import data, losses, tags
from genlab.config import ConfigError, check, check_choice, check_int, check_positive, resolve_device
from genlab.configs import GradVarConfig
from genlab.entries import Context, Result
from genlab.models.vae import ARCHS, VAE, reparameterize, sample_without_trick

BASELINE_DRAWS = 16  # noise draws per image behind the score-function baseline b(x)


def validate(cfg: GradVarConfig) -> None:
    """Raise ConfigError (one line) for any invalid value; called before any run is created."""
    check_choice("dataset", cfg.dataset, data.DATASETS)
    check_int("latent_dim", cfg.latent_dim, 1)
    check_positive("beta", cfg.beta, allow_zero=True)
    check_choice("arch", cfg.arch, ARCHS)
    check(bool(cfg.vae_run.strip()), "vae_run", cfg.vae_run, "'none' or a VAE run id")
    check_int("epochs", cfg.epochs, 0)
    check(cfg.vae_run == "none" or cfg.epochs == 0, "epochs", cfg.epochs, "0 when vae_run is given")
    check_int("limit", cfg.limit, 0)
    check_int("n_samples", cfg.n_samples, 2)
    check_int("batch_size", cfg.batch_size, 1)
    check_int("seed", cfg.seed, 0)
    check_choice("device", cfg.device, ("auto", "cpu", "cuda"))
    check(bool(cfg.experiment.strip()), "experiment", cfg.experiment, "a non-empty name")


def run_name(cfg: GradVarConfig) -> str:
    source = f"run={cfg.vae_run[:8]}" if cfg.vae_run != "none" else f"e{cfg.epochs}"
    return f"gradvar z{cfg.latent_dim} {source} s{cfg.seed}"


# ---------------------------------------------------------------- measurement

class RunningMoments:
    """Mean and sum of squared deviations of flat vectors, merged chunk by chunk into float64 (Chan et al.'s
    parallel form of Welford: stable when the mean is much larger than the spread, no n x P matrix in memory)."""

    def __init__(self, size: int, chunk: int = 16):
        self.n, self.chunk, self.pending = 0, chunk, []
        self.mean = torch.zeros(size, dtype=torch.float64)
        self.m2 = torch.zeros(size, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        self.pending.append(x.detach().cpu())
        if len(self.pending) == self.chunk:
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        block = torch.stack(self.pending)  # float32: deviations within a block of 16 lose no significant digits
        self.pending = []
        k = len(block)
        block_mean = block.mean(0)
        block_m2 = block.sub_(block_mean).pow_(2).sum(0).double()
        block_mean = block_mean.double()
        delta = block_mean - self.mean
        total = self.n + k
        self.m2 += block_m2 + delta.pow(2) * (self.n * k / total)
        self.mean += delta * (k / total)
        self.n = total

    def variance(self) -> torch.Tensor:
        """Unbiased per-coordinate variance."""
        self._merge()
        return self.m2 / (self.n - 1)


def _flat(grads: tuple[torch.Tensor | None, ...], params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params, strict=True)])


def measure(model: VAE, x: torch.Tensor, n_samples: int, seed: int) -> tuple[dict[str, float], dict]:
    """The gradient statistics of the reconstruction term on images ``x`` (B, 1, 28, 28) in [0, 1].

    Returns (metrics, per-tensor variances {name: {"reparam": v, "score": v}}).
    """
    params = [p for p in model.encoder.parameters()]
    names = [n for n, _ in model.encoder.named_parameters()]
    size = sum(p.numel() for p in params)
    noise = torch.Generator(device=x.device).manual_seed(seed)
    model.eval()
    z_mean, z_log_var = model.encoder.encode(x)  # one encoder graph, reused by every draw (retain_graph)

    # The reconstruction term with z drawn without the trick: its encoder gradient is exactly absent.
    z = sample_without_trick(z_mean, z_log_var, noise)
    recon = losses.recon_nats(model.decoder(z), x).mean()
    no_trick = torch.autograd.grad(recon, params, retain_graph=True, allow_unused=True)
    no_trick_norm = float(_flat(no_trick, params).norm())

    with torch.no_grad():  # b(x): independent draws, fixed before the measurement, so the estimator stays unbiased
        baseline = torch.stack([losses.recon_nats(model.decoder(sample_without_trick(z_mean, z_log_var, noise)), x)
                                for _ in range(BASELINE_DRAWS)]).mean(0)

    moments = {k: RunningMoments(size) for k in ("reparam", "score", "score_no_baseline")}
    norm_sum = 0.0
    for _ in range(n_samples):
        z = reparameterize(z_mean, z_log_var, noise)
        recon = losses.recon_nats(model.decoder(z), x).mean()
        g = _flat(torch.autograd.grad(recon, params, retain_graph=True, allow_unused=True), params)
        moments["reparam"].add(g)
        norm_sum += float(g.norm())

        z = sample_without_trick(z_mean, z_log_var, noise)
        with torch.no_grad():
            recon_i = losses.recon_nats(model.decoder(z), x)
        log_q = losses.gaussian_log_prob(z, z_mean, z_log_var)
        # score_function_surrogate's encoder gradient is (recon - b) * grad log q; its recon term has no encoder path
        surrogate = losses.score_function_surrogate(recon_i, log_q, baseline).mean()
        moments["score"].add(_flat(torch.autograd.grad(surrogate, params, retain_graph=True), params))
        surrogate = losses.score_function_surrogate(recon_i, log_q, 0.0).mean()
        moments["score_no_baseline"].add(_flat(torch.autograd.grad(surrogate, params, retain_graph=True), params))

    variance = {k: m.variance() for k, m in moments.items()}
    total = {k: float(v.sum()) for k, v in variance.items()}
    mean_r, mean_s = moments["reparam"].mean, moments["score"].mean  # merged by variance() above
    cosine = float(torch.dot(mean_r, mean_s) / (mean_r.norm() * mean_s.norm()).clamp_min(1e-300))
    metrics = {
        "grad_variance_reparam": total["reparam"],
        "grad_variance_score": total["score"],
        "grad_variance_score_no_baseline": total["score_no_baseline"],
        "grad_variance_ratio": total["score"] / total["reparam"] if total["reparam"] > 0 else math.inf,
        "grad_mean_norm_reparam": float(mean_r.norm()),
        "grad_mean_norm_score": float(mean_s.norm()),
        "grad_mean_cosine": cosine,
        "encoder_grad_norm_reparam": norm_sum / n_samples,
        "encoder_grad_norm_no_trick": no_trick_norm,
        "baseline_recon": float(baseline.mean()),
        "encoder_param_count": size,
    }
    per_tensor, offset = {}, 0
    for name, p in zip(names, params, strict=True):
        part = slice(offset, offset + p.numel())
        per_tensor[name] = {k: float(v[part].sum()) for k, v in variance.items()}
        offset += p.numel()
    return metrics, per_tensor


# ---------------------------------------------------------------- the run around the measurement

def load_source(cfg: GradVarConfig) -> tuple[dict | None, dict[str, float]]:
    """The state dict of ``cfg.vae_run``'s final checkpoint (None for vae_run none) and that run's ``converged``
    (empty when it did not measure it): measured on a trained VAE, the variances are evidence only if it converged.
    ConfigError on a mismatch."""
    if cfg.vae_run == "none":
        return None, {}
    from genlab import tracking
    from genlab.train import vae

    try:
        source = tracking.load_trained_run(cfg.vae_run, tags.VAE)
    except tracking.TrackingError as e:
        raise ConfigError(f"vae_run: {e}") from None
    for name in ("dataset", "latent_dim", "arch", "beta"):
        ours, theirs = str(getattr(cfg, name)), source.data.params.get(name)
        if name == "beta" and theirs is not None:
            ours, theirs = str(float(ours)), str(float(theirs))
        if theirs is not None and ours != theirs:
            raise ConfigError(f"{name} must match vae_run '{cfg.vae_run}' ({theirs}), got {ours}")
    gate = {k: source.data.metrics[k] for k in ("converged",) if k in source.data.metrics}
    return vae.load_checkpoint(tracking.download_artifact(cfg.vae_run, "checkpoint/last.pt"))["model"], gate


def run(cfg: GradVarConfig, context: Context) -> Result:
    """Validate, get the parameters (a VAE run, a short training here, or the initialisation), measure, log."""
    from genlab import tracking
    from genlab.train import vae

    validate(cfg)
    state, gate = load_source(cfg)
    splits = context.data(cfg.dataset, cfg.limit)
    if cfg.batch_size > len(splits.val_x):
        raise ConfigError(f"batch_size must be <= the {len(splits.val_x)} validation images, got {cfg.batch_size}")
    device = resolve_device(cfg.device)
    all_tags = {tags.KIND: tags.GRADVAR, tags.DEVICE: str(device), **context.tags}
    source = (f"the parameters of VAE run {cfg.vae_run}" if cfg.vae_run != "none" else
              f"the parameters of a VAE trained here for {cfg.epochs} epochs" if cfg.epochs else "initialisation")
    note = (f"Variance of the encoder gradient of the reconstruction term, reparameterised vs score-function estimator, "
            f"over {cfg.n_samples} noise draws at {source}.")
    with tracking.start_run(cfg.experiment, run_name(cfg), dataclasses.asdict(cfg), all_tags,
                            parent_run_id=context.parent_run_id, description=note) as run:
        if state is not None:
            model = VAE(cfg.latent_dim, cfg.arch).to(device)
            model.load_state_dict(state)
        elif cfg.epochs > 0:
            vae_cfg = vae.VAEConfig(dataset=cfg.dataset, latent_dim=cfg.latent_dim, beta=cfg.beta, arch=cfg.arch,
                                    epochs=cfg.epochs, limit=cfg.limit, seed=cfg.seed, device=cfg.device, nll_images=0)
            vae.check_data(vae_cfg, splits)
            model, _ = vae.train(vae_cfg, splits)
        else:
            torch.manual_seed(cfg.seed)
            model = VAE(cfg.latent_dim, cfg.arch).to(device)
        x = data.to_float(splits.val_x[:cfg.batch_size], device)
        metrics, per_tensor = measure(model, x, cfg.n_samples, cfg.seed)
        metrics.update(gate)
        run.log_metrics(metrics, step=0)
        run.log_dict(per_tensor, "grad_variance_per_tensor.json")
        print(f"grad_variance_ratio {metrics['grad_variance_ratio']:.3g} (score {metrics['grad_variance_score']:.3g}"
              f" / reparam {metrics['grad_variance_reparam']:.3g}); encoder_grad_norm_no_trick "
              f"{metrics['encoder_grad_norm_no_trick']}", file=sys.stderr, flush=True)
    return Result(run.run_id, metrics, (f"run {run.run_id} finished: grad_variance_ratio "
                                        f"{metrics['grad_variance_ratio']:.3g} (score / reparam), "
                                        f"encoder_grad_norm_no_trick {metrics['encoder_grad_norm_no_trick']}",))
