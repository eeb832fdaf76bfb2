"""The ``gradvar`` entry point (P1Q1): the gradient estimators' variances (genlab.train.gradvar) measured at
fixed VAE parameters (a finished VAE run's, a short training here, or the initialisation), as one MLflow run.

Read top to bottom: validate -> load_source -> run.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from genlab import data, tags
from genlab.checks import ConfigError, check, check_declared, check_int, resolve_device
from genlab.configs import GradVarConfig, VAEConfig
from genlab.entries import Context, Result
from genlab.models.vae import VAE
from genlab.runs import last_checkpoint
from genlab.train.gradvar import RATIOS, measure


def validate(cfg: GradVarConfig) -> None:
    """Raise ConfigError (one line) for any invalid value; called before any run is created."""
    check_declared(cfg)
    check(bool(cfg.vae_run.strip()), "vae_run", cfg.vae_run, "'none' or a VAE run id")
    check(cfg.vae_run == "none" or cfg.epochs == 0, "epochs", cfg.epochs, "0 when vae_run is given")
    check_int("n_samples", cfg.n_samples, 2 * cfg.n_batches)  # at least 2 draws per block of each batch
    check(bool(cfg.experiment.strip()), "experiment", cfg.experiment, "a non-empty name")


def run_name(cfg: GradVarConfig) -> str:
    source = f"run={cfg.vae_run[:8]}" if cfg.vae_run != "none" else f"e{cfg.epochs}" if cfg.epochs else "init"
    return f"gradvar z{cfg.latent_dim} {source} s{cfg.seed}"


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
    return vae.load_checkpoint(last_checkpoint(cfg.vae_run))["model"], gate


def run(cfg: GradVarConfig, context: Context) -> Result:
    """Validate, get the parameters (a VAE run, a short training here, or the initialisation), measure, log."""
    from genlab import tracking
    from genlab.runs import vae as vae_entry
    from genlab.train import vae

    validate(cfg)
    state, gate = load_source(cfg)
    splits = context.data(cfg.dataset, cfg.limit)
    if cfg.batch_size * cfg.n_batches > len(splits.val_x):
        raise ConfigError(f"batch_size x n_batches must be <= the {len(splits.val_x)} validation images, got "
                          f"{cfg.batch_size} x {cfg.n_batches}")
    device = resolve_device(cfg.device)
    all_tags = {tags.KIND: tags.GRADVAR, tags.DEVICE: str(device), **context.tags}
    source = (f"the parameters of VAE run {cfg.vae_run}" if cfg.vae_run != "none" else
              f"the parameters of a VAE trained here for {cfg.epochs} epochs" if cfg.epochs else "initialisation")
    note = (f"Variance of the encoder gradient of the reconstruction term, reparameterised vs score-function estimator "
            f"(three baselines; and at matched decoder passes), over {cfg.n_samples} noise draws on {cfg.n_batches} "
            f"batches of {cfg.batch_size} validation images at {source}.")
    with tracking.start_run(cfg.experiment, run_name(cfg), dataclasses.asdict(cfg), all_tags,
                            parent_run_id=context.parent_run_id, description=note) as run:
        if state is not None:
            model = VAE(cfg.latent_dim, cfg.arch).to(device)
            model.load_state_dict(state)
        elif cfg.epochs > 0:
            vae_cfg = VAEConfig(dataset=cfg.dataset, latent_dim=cfg.latent_dim, beta=cfg.beta, arch=cfg.arch,
                                epochs=cfg.epochs, limit=cfg.limit, seed=cfg.seed, device=cfg.device, nll_images=0)
            vae_entry.check_data(vae_cfg, splits)
            model, _ = vae.train(vae_cfg, splits)
        else:
            torch.manual_seed(cfg.seed)
            model = VAE(cfg.latent_dim, cfg.arch).to(device)
        batches = [data.to_float(splits.val_x[i * cfg.batch_size:(i + 1) * cfg.batch_size], device)
                   for i in range(cfg.n_batches)]
        metrics, per_tensor = measure(model, batches, cfg.n_samples, cfg.seed)
        metrics.update(gate)
        run.log_metrics(metrics, step=0)
        run.log_dict(per_tensor, "grad_variance_per_tensor.json")
        summary = ", ".join(f"{name} {metrics[f'grad_variance_ratio_{name}']:.3g} "
                            f"[{metrics[f'grad_variance_ratio_{name}_ci_low']:.3g}; "
                            f"{metrics[f'grad_variance_ratio_{name}_ci_high']:.3g}]" for name in RATIOS)
        print(f"grad_variance_ratio (score / reparam): {summary}; encoder_grad_norm_no_trick "
              f"{metrics['encoder_grad_norm_no_trick']}", file=sys.stderr, flush=True)
    return Result(run.run_id, metrics, (f"run {run.run_id} finished: grad_variance_ratio (score / reparam) {summary}",))
