"""Train the DCGAN (generator = the VAE decoder class) and track it: one config, one loop, one checkpoint per epoch.

The lab's question "can a VAE decoder serve as a GAN generator?" is answered by ``init_from``: the generator
starts from a trained VAE decoder (a run id or a registered model), and the step-0 evaluation, logged before any
GAN update, shows its head start over a random one. ``init_discriminator=encoder`` also starts the discriminator
from the same VAE's encoder trunk. ``latent_fit=codes`` puts a fixed Gaussian map, fitted to the codes that same
run's encoder gives the training images, between the noise and the decoder (P2Q1's control: is it the latent
distribution or the decoder that makes a VAE decoder a good start?).

Read top to bottom: config -> validate -> init source -> evaluation -> train (the loop, which reports to a
loop.Sink) -> TrackedGANSink (what a run logs) -> run (the MLflow run around it).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from genlab import config, data, losses, metrics, pictures, tags
from genlab.config import ConfigError, check, check_declared, resolve_device
from genlab.configs import MODEL_URI, RUN_ID, GANConfig
from genlab.entries import Context, EpochCallback, Result
from genlab.models.gan import Discriminator, FittedGenerator, Generator, LatentFit, generate
from genlab.models.vae import Encoder, param_count
from genlab.pictures import N_GRID, SAMPLE_SEED
from genlab.train import loop
from genlab.train.vae import MIN_EVAL_SAMPLES, encode_means

EVAL_SEED = 4321  # the fixed noise behind every evaluation (independent of the run seed, like SAMPLE_SEED)
DIVERSITY_SAMPLES = 500  # images behind sample_diversity (500*499/2 pairs)


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
    return dataclasses.asdict(cfg)


# what a run logged before these params existed trained with (its checkpoint's discriminator has plain weights)
LEGACY_PARAMS = {"spectral_norm": "0", "ema_decay": "0", "loss": "ns", "lr_d": "0.0002"}


def config_from_params(params: dict[str, str]) -> GANConfig:
    """Rebuild a config from a run's logged params (strings); a run older than the spectral norm and the moving
    average gets the recipe it trained with (LEGACY_PARAMS), not today's defaults."""
    legacy = LEGACY_PARAMS if "spectral_norm" not in params else {}
    return config.config_from_params(GANConfig, {**legacy, **params})


def check_data(cfg: GANConfig, splits: data.Splits) -> None:
    config.check_batch_fits(cfg.batch_size, len(splits.train_x))
    # fewer codes than dimensions leave the fitted covariance singular: a Gaussian of nothing in particular
    check(cfg.latent_fit == "none" or len(splits.train_x) > cfg.latent_dim, "limit", cfg.limit,
          f"0 or larger than latent_dim={cfg.latent_dim} with latent_fit=codes (a full covariance is fitted to the "
          "codes of the training images)")


# ---------------------------------------------------------------- where the initial weights come from

@dataclass
class InitSource:
    """Weights taken from a finished VAE run: its decoder, and optionally its encoder's trunk (the discriminator's
    start) or its whole encoder (whose codes ``latent_fit=codes`` fits)."""

    run_id: str
    decoder: dict[str, torch.Tensor]
    trunk: dict[str, torch.Tensor] | None = None
    beta: float = 1.0  # the source VAE's KL weight (0: an autoencoder, whose latent is not made normal)
    encoder: dict[str, torch.Tensor] | None = None


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


def build_models(cfg: GANConfig, init: InitSource | None, latent_fit: LatentFit | None = None,
                 ) -> tuple[Generator | FittedGenerator, Discriminator]:
    """A fresh generator and discriminator (seeded by the caller), with the init source's weights loaded exactly;
    with ``latent_fit=codes`` the generator sits behind ``latent_fit`` (the identity until a fit or a checkpoint
    fills it)."""
    generator, discriminator = Generator(cfg.latent_dim, cfg.arch), Discriminator(cfg.arch)
    if init is not None:
        generator.load_state_dict(init.decoder)
        if init.trunk is not None:
            discriminator.trunk.load_state_dict(init.trunk)
    if cfg.spectral_norm:  # after the encoder's plain weights are in: each is then divided by its sigma_max
        discriminator.use_spectral_norm()
    if cfg.latent_fit == "codes":
        return FittedGenerator(latent_fit or LatentFit(cfg.latent_dim), generator), discriminator
    return generator, discriminator


@torch.no_grad()
def fit_latent(cfg: GANConfig, init: InitSource | None, splits: data.Splits, device: torch.device,
               batch_size: int = 500) -> tuple[LatentFit, dict[str, float]]:
    """The Gaussian of the codes ``init``'s encoder gives the training images, with its summary metrics
    (``latent_fit_mean_norm``, ``latent_fit_logdet``, ``latent_fit_seconds``). The codes are z_mean, not draws
    z_mean + sigma·eps: a beta = 0 autoencoder has no KL term holding sigma up, reconstruction alone drives it
    towards 0, so its decoder learned from codes at about z_mean and its sigma describes no distribution it saw."""
    if init is None or init.encoder is None:
        raise ValueError("latent_fit=codes needs the init_from run's encoder (resolve_init loads it)")
    t0 = time.perf_counter()
    encoder = Encoder(cfg.latent_dim, cfg.arch)
    encoder.load_state_dict(init.encoder)
    codes, _ = encode_means(encoder.to(device), splits.train_x, device, batch_size)
    fit = LatentFit.of_codes(codes)
    return fit, {**fit.summary(), "latent_fit_seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------- evaluation

def fixed_noise(n: int, latent_dim: int, seed: int = SAMPLE_SEED) -> torch.Tensor:
    """Noise z ~ N(0, I) that depends only on ``seed``: the VAE's ``prior_samples`` draws the same for SAMPLE_SEED,
    so a decoder-initialised generator's step-0 grid equals the VAE's last samples grid."""
    return pictures.prior_z(n, latent_dim, seed)


@torch.no_grad()
def generate_fixed(generator: Generator, n: int, seed: int, batch_size: int = 500) -> torch.Tensor:
    """``n`` images (n, 1, 28, 28) in [0, 1], on CPU, from fixed noise (computed where the generator is)."""
    return pictures.decode(generator, fixed_noise(n, generator.latent_dim, seed), batch_size)


def find_scorer(dataset: str, device: torch.device) -> Any:
    """The sample-quality scorer (FID-proxy and friends). Called before the GAN run starts: getting it may train
    and register the classifier (its own run)."""
    from genlab.train.classifier import get_scorer

    return get_scorer(dataset, device)


GATE_METRIC = "fid_proxy"  # the GAN's validation objective (lower is better) for the convergence gate
GATE_KEYS = ("fid_tail_fall", "fid_tail_fall_lower", "fid_tail_fall_upper", "converged")


def evaluate(generator: Generator, cfg: GANConfig, scorer: Any | None) -> dict[str, float]:
    """The evaluation hook (step 0, every ``eval_every`` epochs, the end): the scorer's metrics on ``eval_samples``
    images from fixed noise, plus ``eval_seconds``. Empty without a scorer or with ``eval_samples=0``."""
    if scorer is None or cfg.eval_samples == 0:
        return {}
    t0 = time.perf_counter()
    fakes = generate_fixed(generator, cfg.eval_samples, EVAL_SEED)
    result = dict(scorer.score(fakes))
    result["eval_seconds"] = time.perf_counter() - t0
    return result


def diversity(generator: Generator) -> float:
    """``sample_diversity`` of DIVERSITY_SAMPLES images from fixed noise (mean pairwise L2 distance, pixels)."""
    return metrics.sample_diversity(generate_fixed(generator, DIVERSITY_SAMPLES, EVAL_SEED).numpy())


# ---------------------------------------------------------------- checkpoints

CHECKPOINT_KEYS = {"generator", "discriminator", "opt_g", "opt_d", "epoch", "shuffle_rng", "noise_rng",
                   "config"}  # + val_history since the convergence gate


def load_checkpoint(path: str | Path) -> dict:
    """Read a GAN checkpoint safely (weights_only); ConfigError if unreadable or not a GAN checkpoint."""
    return loop.load_checkpoint(path, CHECKPOINT_KEYS, "GAN")


# ---------------------------------------------------------------- the loop

class Networks(NamedTuple):
    """What the GAN loop trains (its ``model`` for a loop.Sink), and the exponential moving average of the
    generator's weights (``average``; None with ``ema_decay=0``)."""

    generator: Generator | FittedGenerator
    discriminator: Discriminator
    average: Generator | FittedGenerator | None = None

    def sampler(self) -> Generator | FittedGenerator:
        """The generator that evaluations, sample grids, the logged model and the probe use: the average when
        there is one (Yazici et al. 2019: the average of the iterates is a better generator than the last one)."""
        return self.average if self.average is not None else self.generator


@dataclass
class TrainState:
    """What the optimisation carries from step to step; a checkpoint keeps all of it."""

    nets: Networks
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    shuffle_rng: torch.Generator
    noise_rng: torch.Generator
    val_history: list[float]  # fid_proxy at step 0, then at each evaluation: the convergence gate

    def stateful(self) -> dict[str, Any]:
        average = {} if self.nets.average is None else {"generator_ema": self.nets.average}
        return {"generator": self.nets.generator, "discriminator": self.nets.discriminator,
                "opt_g": self.opt_g, "opt_d": self.opt_d, **average}

    def rngs(self) -> dict[str, torch.Generator]:
        return {"shuffle_rng": self.shuffle_rng, "noise_rng": self.noise_rng}

    def checkpoint(self, epoch: int, cfg: GANConfig) -> dict[str, Any]:
        """The state to resume from after ``epoch`` (the CHECKPOINT_KEYS)."""
        return loop.checkpoint_state(epoch, cfg, self.stateful(), self.rngs(),
                                     val_history=torch.tensor(self.val_history, dtype=torch.float64))


def initial_state(cfg: GANConfig, device: torch.device, init: InitSource | None = None, resume: dict | None = None,
                  latent_fit: LatentFit | None = None) -> tuple[TrainState, int]:
    """Seeded networks (from ``init``'s weights if given, behind ``latent_fit`` with ``latent_fit=codes``), their
    optimisers and RNGs, loaded from the checkpoint ``resume`` if given (the generator's state holds the fitted
    map too); and the first epoch to train."""
    torch.manual_seed(cfg.seed)
    generator, discriminator = build_models(cfg, init, latent_fit)
    generator.to(device)
    discriminator.to(device)
    average = copy.deepcopy(generator).requires_grad_(False) if cfg.ema_decay > 0 else None
    betas = (cfg.beta1, 0.999)
    state = TrainState(Networks(generator, discriminator, average),
                       torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=betas),
                       torch.optim.Adam(discriminator.parameters(), lr=cfg.lr_d, betas=betas),
                       torch.Generator().manual_seed(cfg.seed), torch.Generator(device=device).manual_seed(cfg.seed + 1),
                       [])
    start_epoch = loop.restore(resume, state.stateful(), state.rngs())
    if resume is not None:
        state.val_history = resume.get("val_history", torch.zeros(0)).tolist()
    return state, start_epoch


def train(cfg: GANConfig, splits: data.Splits, sink: loop.Sink = loop.NullSink(), resume: dict | None = None,
          init: InitSource | None = None, scorer: Any | None = None) -> tuple[Networks, dict[str, float]]:
    """Train, reporting each epoch to ``sink`` (TrackedGANSink: an MLflow run; the default: nowhere), from the
    checkpoint ``resume`` if given, else from ``init``'s weights (with ``latent_fit=codes``, behind the Gaussian
    fitted to its encoder's codes, whose summary joins the step-0 metrics). ``scorer`` adds sample quality every
    ``eval_every`` epochs and at the end. Returns both networks and the last epoch's metrics, with the
    plateau test of its fid_proxy curve (``fid_tail_fall``, its upper bound, ``converged``) when it was evaluated."""
    device = resolve_device(cfg.device)
    latent_fit, fitted = None, {}
    if cfg.latent_fit == "codes" and resume is None:  # a resumed run's map comes back with its checkpoint
        latent_fit, fitted = fit_latent(cfg, init, splits, device)
    state, start_epoch = initial_state(cfg, device, init, resume, latent_fit)
    if start_epoch == 1:
        initial = {**fitted, **evaluate(state.nets.sampler(), cfg, scorer)}
        state.val_history = [initial[GATE_METRIC]] if GATE_METRIC in initial else []
        sink.start(state.nets, initial)
    last: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.epochs + 1):
        last = train_epoch(cfg, splits, state, epoch, device, scorer)
        if GATE_METRIC in last:
            state.val_history.append(last[GATE_METRIC])
        sink.epoch(epoch, last, state.nets, functools.partial(state.checkpoint, epoch, cfg))
    # the plateau test reads the evaluations after step 0: step 0 measures the initialisation, not the training
    final = {**last, **(metrics.plateau(state.val_history[1:]) if state.val_history else {})}
    final.update(sink.end(state.nets, final))
    return state.nets, final


def train_epoch(cfg: GANConfig, splits: data.Splits, state: TrainState, epoch: int, device: torch.device,
                scorer: Any | None) -> dict[str, float]:
    """One pass over the training images (a D then a G update per batch): the epoch's metrics."""
    t0 = time.perf_counter()
    steps_per_epoch = -(-len(splits.train_x) // cfg.batch_size)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # d_loss, g_loss, d_real, d_fake (x batch size)
    bar = loop.progress(steps_per_epoch, f"epoch {epoch}/{cfg.epochs}")
    for step, real in enumerate(data.batches(splits.train_x, cfg.batch_size, state.shuffle_rng, device)):
        d_loss, g_loss, real_logits, fake_logits = _step(cfg, state, real, epoch, step, steps_per_epoch)
        with torch.no_grad():
            sums += len(real) * torch.stack([d_loss, g_loss, torch.sigmoid(real_logits).mean(),
                                             torch.sigmoid(fake_logits).mean()]).double()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(d_loss=f"{d_loss.item():.3f}", g_loss=f"{g_loss.item():.3f}", refresh=False)
    train_seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    d_loss_mean, g_loss_mean, d_real, d_fake = (sums / len(splits.train_x)).tolist()
    last = {"d_loss": d_loss_mean, "g_loss": g_loss_mean, "d_real": d_real, "d_fake": d_fake,
            "sample_diversity": diversity(state.nets.sampler()),
            "images_per_second": len(splits.train_x) / train_seconds}
    if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
        last.update(evaluate(state.nets.sampler(), cfg, scorer))
    last["epoch_seconds"] = time.perf_counter() - t0
    if bar is None:
        quality = f"  fid_proxy {last['fid_proxy']:.2f}" if "fid_proxy" in last else ""
        print(f"epoch {epoch}/{cfg.epochs}  d_loss {d_loss_mean:.3f}  g_loss {g_loss_mean:.3f}  d_real {d_real:.3f}"
              f"  d_fake {d_fake:.3f}  diversity {last['sample_diversity']:.2f}{quality}  "
              f"{last['images_per_second']:.0f} img/s", file=sys.stderr, flush=True)
    return last


def _step(cfg: GANConfig, state: TrainState, real: torch.Tensor, epoch: int, step: int, steps_per_epoch: int,
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One discriminator update, then one generator update against the updated discriminator, on a batch of real
    images, then the generator's moving average: (d_loss, g_loss, real_logits, fake_logits)."""
    generator, discriminator, average = state.nets
    z = torch.randn(len(real), cfg.latent_dim, generator=state.noise_rng, device=real.device)
    fake = generate(generator, z)
    # the fakes are detached, so only D moves
    real_logits, fake_logits = discriminator(real), discriminator(fake.detach())
    d_loss = losses.discriminator_loss(real_logits, fake_logits, cfg.loss)
    loop.check_finite(d_loss, "discriminator loss", epoch, step, f"lr_d={cfg.lr_d} may be too large")
    state.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    state.opt_d.step()
    g_loss = losses.generator_loss(discriminator(fake), cfg.loss)
    loop.check_finite(g_loss, "generator loss", epoch, step, f"lr_g={cfg.lr_g} may be too large")
    state.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    state.opt_g.step()
    if average is not None:
        update_average(average, generator, cfg.ema_decay, updates=(epoch - 1) * steps_per_epoch + step + 1)
    return d_loss, g_loss, real_logits, fake_logits


EMA_WARMUP = 10  # the average's decay ramps as (1 + t) / (10 + t): early weights, still random, fade out fast


@torch.no_grad()
def update_average(average: torch.nn.Module, generator: torch.nn.Module, decay: float, updates: int) -> None:
    """Move each weight of ``average`` towards ``generator``'s: w_avg <- d w_avg + (1 - d) w, with the decay
    d = min(decay, (1 + t) / (EMA_WARMUP + t)) after ``updates`` = t generator updates (buffers are copied: the
    fitted latent map never moves)."""
    d = min(decay, (1 + updates) / (EMA_WARMUP + updates))
    for mine, theirs in zip(average.parameters(), generator.parameters(), strict=True):
        mine.lerp_(theirs, 1 - d)
    for mine, theirs in zip(average.buffers(), generator.buffers(), strict=True):
        mine.copy_(theirs)


# ---------------------------------------------------------------- the tracked sink

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
            self.run.log_artifact(path, "checkpoint")
        if self.on_epoch is not None:
            self.on_epoch(epoch, metrics)

    def end(self, nets: Networks, final: dict[str, float]) -> dict[str, float]:
        gate = {k: final[k] for k in GATE_KEYS if k in final}
        if gate:
            self.run.log_metrics(gate, step=self.cfg.epochs)
        sampler = nets.sampler().cpu().eval()
        generator = sampler.folded() if isinstance(sampler, FittedGenerator) else sampler
        self.run.log_model(generator, "generator", np.zeros((2, self.cfg.latent_dim), np.float32))
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

    resume, resume_run_id = None, context.resume_run_id
    if resume_run_id:
        previous = tracking.load_trained_run(resume_run_id, tags.GAN, require_finished=False)
        cfg = config_from_params(previous.data.params)
        resume = load_checkpoint(tracking.download_artifact(resume_run_id, "checkpoint/last.pt"))
        if int(resume["epoch"]) >= cfg.epochs and previous.info.status == "FINISHED":
            raise ConfigError(f"run '{resume_run_id}' already finished all {cfg.epochs} epochs")
    validate(cfg)
    init = resolve_init(cfg) if resume is None else None  # a resumed run takes its weights from the checkpoint
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
    with tracking.start_run(cfg.experiment, run_name(cfg, init), params, all_tags, resume_run_id=resume_run_id,
                            parent_run_id=context.parent_run_id, description=describe(cfg, init),
                            system_metrics=bool(cfg.system_metrics)) as run:
        if resume is None:
            for split in ("train", "test"):
                run.log_dataset(splits.name, splits.source, splits.digest(split), split,
                                len(getattr(splits, f"{split}_x")))
        sink = TrackedGANSink(run, cfg, splits, scorer, context.on_epoch)
        _, final = train(cfg, splits, sink, resume=resume, init=init, scorer=scorer)
    if "d_loss" not in final:  # resumed from a checkpoint of its last epoch: nothing was left to train
        return Result(run.run_id, final, (f"run {run.run_id} finished: its checkpoint was already at the last epoch",))
    quality = f", fid_proxy {final['fid_proxy']:.2f}" if "fid_proxy" in final else ""
    return Result(run.run_id, final, (f"run {run.run_id} finished: d_loss {final['d_loss']:.3f}, g_loss "
                                      f"{final['g_loss']:.3f}, d_real {final['d_real']:.3f}, d_fake "
                                      f"{final['d_fake']:.3f}{quality}",))
