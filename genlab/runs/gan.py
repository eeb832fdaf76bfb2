"""The ``train_gan`` entry point: one DCGAN trained (genlab.train.gan) inside one MLflow run, and what it records.

``init_from`` names the VAE run (or registered model) whose decoder starts the generator; it is found and checked
here, before the run starts, and handed to the loop as an InitSource.

Read top to bottom: validate -> name and description -> resolve_init -> TrackedGANSink (step 0, per epoch, the
end) -> run (the MLflow run around the loop).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from genlab import checks, data, metrics, pictures, tags, timing
from genlab.checks import ConfigError, check, check_declared, resolve_device, resolve_dtype
from genlab.configs import MODEL_URI, RUN_ID, GANConfig
from genlab.entries import Context, EpochCallback, Result
from genlab.models.gan import FittedGenerator, Generator
from genlab.models.vae import Encoder, param_count
from genlab.pictures import N_GRID, SAMPLE_SEED
from genlab.runs import CHECKPOINT_FOLDER, resume_from
from genlab.scoring import MIN_SAMPLES as MIN_EVAL_SAMPLES
from genlab.train import loop
from genlab.train.gan import DIVERSITY_SAMPLES, GATE_KEYS, InitSource, Networks, build_models, diversity, load_checkpoint, train


def validate(cfg: GANConfig) -> None:
    """Raise ConfigError (one line) for any invalid value; called before any run is created."""
    check_declared(cfg)
    check(cfg.init_from == "none" or bool(RUN_ID.match(cfg.init_from) or MODEL_URI.match(cfg.init_from)),
          "init_from", cfg.init_from, "none, a VAE run id (32 hex digits), models:/NAME/VERSION or models:/NAME@ALIAS")
    check(cfg.init_discriminator == "none" or cfg.init_from != "none", "init_discriminator", cfg.init_discriminator,
          "none when init_from is none (the encoder comes from the init_from VAE)")
    check(cfg.latent_fit == "none" or cfg.init_from != "none", "latent_fit", cfg.latent_fit,
          "none when init_from is none (the codes come from the init_from run's encoder)")
    check(isinstance(cfg.eval_samples, int) and (cfg.eval_samples == 0 or cfg.eval_samples >= MIN_EVAL_SAMPLES),
          "eval_samples", cfg.eval_samples, f"0 (skip) or an integer >= {MIN_EVAL_SAMPLES}")
    check(bool(cfg.experiment.strip()), "experiment", cfg.experiment, "a non-empty name")


def init_label(cfg: GANConfig, init: InitSource | None) -> str:
    """Where the generator starts: ``random``, ``vae-decoder``, or ``ae-decoder`` (a beta = 0 autoencoder's)."""
    if cfg.init_from == "none":
        return "random"
    return "ae-decoder" if init is not None and init.beta == 0 else "vae-decoder"


def run_name(cfg: GANConfig, init: InitSource | None = None) -> str:
    """``gan z16 init=vae-decoder s0`` (plus the arch / loss when not the default, ``+encoder`` for the
    discriminator, ``latent_fit=codes`` for the fitted noise): the initialisations of P2Q1 get different names."""
    extra = "".join(f" {v}" for v, default in ((cfg.arch, "conv"), (cfg.loss, "hinge")) if v != default)
    init = init_label(cfg, init)
    if cfg.init_discriminator == "encoder":
        init += "+encoder"
    fit = f" latent_fit={cfg.latent_fit}" if cfg.latent_fit != "none" else ""
    return f"gan{extra} z{cfg.latent_dim} init={init}{fit} s{cfg.seed}"


def describe(cfg: GANConfig, init: InitSource | None) -> str:
    """The run's description in the MLflow UI."""
    start = {"random": "a random initialisation", "vae-decoder": f"the decoder of VAE run {cfg.init_from}",
             "ae-decoder": f"the decoder of autoencoder run {cfg.init_from} (beta 0)"}[init_label(cfg, init)]
    if cfg.latent_fit == "codes":
        start += (", its noise passing through a fixed Gaussian fitted to that run's codes of the training images "
                  "(z_mean)")
    images_used = f"the first {cfg.limit:,} training images" if cfg.limit else "all training images"
    recipe = ", spectral norm" if cfg.spectral_norm else ""
    sampled = (f"the moving average of the generator's weights (decay {cfg.ema_decay:g})" if cfg.ema_decay
               else "the generator's last weights")
    return (f"{cfg.arch} DCGAN ({cfg.loss} loss{recipe}, lr_g {cfg.lr_g:g}, lr_d {cfg.lr_d:g}), latent_dim "
            f"{cfg.latent_dim}, generator starting from {start}; {cfg.epochs} epochs on {images_used} of {cfg.dataset} "
            f"(seed {cfg.seed}). Evaluated and sampled: {sampled}. fid_proxy is logged from step 0 (before any "
            "update); Artifacts > images steps through the fixed-noise samples.")


def params_of(cfg: GANConfig) -> dict:
    """The config as logged, with ``compute_dtype``: what ``dtype`` (``auto`` by default) resolved to here."""
    return {**dataclasses.asdict(cfg), "compute_dtype": resolve_dtype(cfg.dtype, resolve_device(cfg.device))}


# what a run logged before these params existed trained with (its checkpoint's discriminator has plain weights)
LEGACY_PARAMS = {"spectral_norm": "0", "ema_decay": "0", "loss": "ns", "lr_d": "0.0002"}


def config_from_params(params: dict[str, str]) -> GANConfig:
    """Rebuild a config from a run's logged params (strings); a run older than the spectral norm and the moving
    average gets the recipe it trained with (LEGACY_PARAMS), not today's defaults; the dtype it trained in."""
    legacy = LEGACY_PARAMS if "spectral_norm" not in params else {}
    return checks.config_from_params(GANConfig, {**legacy, **params, **checks.trained_dtype(params)})


def check_data(cfg: GANConfig, splits: data.Splits) -> None:
    checks.check_batch_fits(cfg.batch_size, len(splits.train_x))
    # fewer codes than dimensions leave the fitted covariance singular: a Gaussian of nothing in particular
    check(cfg.latent_fit == "none" or len(splits.train_x) > cfg.latent_dim, "limit", cfg.limit,
          f"0 or larger than latent_dim={cfg.latent_dim} with latent_fit=codes (a full covariance is fitted to the "
          "codes of the training images)")


def resolve_init(cfg: GANConfig) -> InitSource | None:
    """Find and check the ``init_from`` VAE before any run starts: ConfigError (one line) for an unknown run or
    model, a run that is not a finished VAE, or a latent_dim / arch that differs from this GAN's."""
    if cfg.init_from == "none":
        return None
    from genlab import tracking

    try:
        if cfg.init_from.startswith("models:/"):
            run_id, model_uri = tracking.resolve_model_run(cfg.init_from), cfg.init_from
        else:
            run_id, model_uri = cfg.init_from, None
        source = tracking.load_trained_run(run_id, tags.VAE)
    except tracking.TrackingError as e:
        raise ConfigError(f"init_from: {e}") from None
    for name in ("latent_dim", "arch"):
        theirs, ours = source.data.params.get(name), str(getattr(cfg, name))
        if theirs != ours:
            raise ConfigError(f"init_from: VAE run '{run_id}' has {name}={theirs} but this GAN has {name}={ours}")
    try:
        decoder = (tracking.load_state_dict(model_uri) if model_uri
                   else tracking.logged_model_state_dict(run_id, "decoder"))
        trunk, encoder = None, None
        if cfg.init_discriminator == "encoder" or cfg.latent_fit == "codes":
            encoder = tracking.logged_model_state_dict(run_id, "encoder")
        if cfg.init_discriminator == "encoder":
            trunk = {k.removeprefix("trunk."): v for k, v in encoder.items() if k.startswith("trunk.")}
    except tracking.TrackingError as e:
        raise ConfigError(f"init_from: {e}") from None
    init = InitSource(run_id, decoder, trunk, beta=float(source.data.params.get("beta", 1.0)),
                      encoder=encoder if cfg.latent_fit == "codes" else None)
    try:
        build_models(cfg, init)
        if init.encoder is not None:
            Encoder(cfg.latent_dim, cfg.arch).load_state_dict(init.encoder)
    except RuntimeError:  # load_state_dict: missing keys or shapes that differ
        raise ConfigError(f"init_from: '{cfg.init_from}' is not a {cfg.arch} decoder/encoder with latent_dim "
                          f"{cfg.latent_dim}") from None
    return init


# ---------------------------------------------------------------- the tracked sink

def find_scorer(dataset: str, device: torch.device) -> Any:
    """The sample-quality scorer (FID-proxy and friends). Called before the GAN run starts: getting it may train
    and register the classifier (its own run)."""
    from genlab.runs.classifier import get_scorer

    return get_scorer(dataset, device)


class TrackedGANSink:
    """A GAN run's MLflow record, written to ``run`` (a tracking.Run): at step 0, before any update, sample
    diversity (and the real images'), parameter counts, sample quality and the ``samples`` grid (so an
    initialisation's head start shows) and, with ``latent_fit=codes``, the fitted Gaussian's summary; per epoch the
    metrics (one batched call), the ``samples`` series and ``checkpoint/last.pt``; at the end the generator model
    (a plain Decoder: a fitted map is folded into its first layer). ``on_epoch(epoch, metrics)`` runs after each
    epoch's logging and may raise to stop."""

    def __init__(self, run: Any, cfg: GANConfig, splits: data.Splits, scorer: Any | None = None,
                 on_epoch: EpochCallback | None = None):
        self.run, self.cfg, self.splits, self.scorer, self.on_epoch = run, cfg, splits, scorer, on_epoch

    def start(self, nets: Networks, initial: dict[str, float]) -> None:
        real = data.to_float(self.splits.test_x[:DIVERSITY_SAMPLES]).numpy()
        self.run.log_metrics({"sample_diversity": diversity(nets.sampler()),
                              "real_sample_diversity": metrics.sample_diversity(real),
                              "generator_param_count": param_count(nets.generator),
                              "discriminator_param_count": param_count(nets.discriminator),
                              **initial}, step=0)
        _log_samples(self.run, nets.sampler(), 0, file="samples_step0.png")

    def epoch(self, epoch: int, metrics: dict[str, float], nets: Networks, checkpoint: loop.CheckpointFn) -> None:
        self.run.log_metrics(metrics, step=epoch)
        _log_samples(self.run, nets.sampler(), epoch, file="samples.png" if epoch == self.cfg.epochs else "")
        with loop.checkpoint_file(checkpoint()) as path:
            self.run.log_artifact(path, CHECKPOINT_FOLDER)
        if self.on_epoch is not None:
            self.on_epoch(epoch, metrics)

    def end(self, nets: Networks, final: dict[str, float]) -> dict[str, float]:
        gate = {k: final[k] for k in GATE_KEYS if k in final}
        if gate:
            self.run.log_metrics(gate, step=self.cfg.epochs)
        with timing.phase("models"):
            sampler = nets.sampler().cpu().eval()
            generator = sampler.folded() if isinstance(sampler, FittedGenerator) else sampler
            self.run.log_model(generator, "generator", np.zeros((2, self.cfg.latent_dim), np.float32))
        self.run.log_metrics(timing.metrics(), step=self.cfg.epochs)  # the last thing logged: its total covers the rest
        return {}


def _log_samples(run: Any, generator: Generator, epoch: int, file: str = "") -> None:
    """The fixed-noise grid (SAMPLE_SEED, N_GRID images): same z for every epoch, run and init strategy; the
    step-0 and final grids also as files (``pictures/``), for the report."""
    grid = pictures.sample_grid(generator, generator.latent_dim, N_GRID, seed=SAMPLE_SEED)
    run.log_image_step(grid, "samples", epoch)
    if file:
        run.log_image(grid, f"pictures/{file}")


# ---------------------------------------------------------------- the run around the loop

def run(cfg: GANConfig, context: Context) -> Result:
    """Validate, resolve ``init_from``, load data, then train inside one MLflow run. Errors before the run
    starts create nothing. A resumed run takes its config from that run's logged params, not from ``cfg``."""
    from genlab import tracking

    timing.reset()
    resumed, resume = resume_from(context.resume_run_id, tags.GAN, config_from_params, load_checkpoint)
    cfg = resumed or cfg
    validate(cfg)
    init = resolve_init(cfg) if resume is None else None  # a resumed run takes its weights from the checkpoint
    with timing.phase("data"):
        splits = context.data(cfg.dataset, cfg.limit)
    check_data(cfg, splits)
    device = resolve_device(cfg.device)
    scorer = find_scorer(cfg.dataset, device) if cfg.eval_samples else None
    params = {**params_of(cfg)}
    if resume is None:
        params["init_from_run"] = init.run_id if init else "none"
    if scorer is not None:
        params["fid_classifier"] = scorer.run_id
    all_tags = {tags.KIND: tags.GAN, tags.DEVICE: str(device), **context.tags}
    if resume is None:  # a resumed run keeps the initialisation it started from (its weights come from the checkpoint)
        all_tags[tags.INIT] = init_label(cfg, init)
    started = time.perf_counter()
    with tracking.start_run(cfg.experiment, run_name(cfg, init), params, all_tags, resume_run_id=context.resume_run_id,
                            parent_run_id=context.parent_run_id, description=describe(cfg, init),
                            system_metrics=bool(cfg.system_metrics)) as run:
        if resume is None:
            run.log_splits(splits, ("train", "test"))
        timing.add("start", time.perf_counter() - started)
        sink = TrackedGANSink(run, cfg, splits, scorer, context.on_epoch)
        _, final = train(cfg, splits, sink, resume=resume, init=init, scorer=scorer)
    if "d_loss" not in final:  # resumed from a checkpoint of its last epoch: nothing was left to train
        return Result(run.run_id, final, (f"run {run.run_id} finished: its checkpoint was already at the last epoch",))
    quality = f", fid_proxy {final['fid_proxy']:.2f}" if "fid_proxy" in final else ""
    return Result(run.run_id, final, (f"run {run.run_id} finished: d_loss {final['d_loss']:.3f}, g_loss "
                                      f"{final['g_loss']:.3f}, d_real {final['d_real']:.3f}, d_fake "
                                      f"{final['d_fake']:.3f}{quality}",))
