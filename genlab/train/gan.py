"""The DCGAN loop (generator = the VAE decoder class): one config, one loop, one checkpoint state per epoch. It
trains and reports to a loop.Sink; what a run records, and where ``init_from``'s weights come from, is
genlab.runs.gan.

The lab's question "can a VAE decoder serve as a GAN generator?" is answered by an InitSource: the generator
starts from a trained VAE decoder, and the step-0 evaluation, before any GAN update, shows its head start over a
random one. ``init_discriminator=encoder`` also starts the discriminator from the same VAE's encoder trunk.
``latent_fit=codes`` puts a fixed Gaussian map, fitted to the codes that same run's encoder gives the training
images, between the noise and the decoder (P2Q1's control: is it the latent distribution or the decoder that makes
a VAE decoder a good start?).

Read top to bottom: the init source -> evaluation -> checkpoints -> train (the loop) -> one epoch -> one step.
"""

from __future__ import annotations

import copy
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from genlab import convergence, data, losses, metrics, pictures, timing
from genlab.checks import resolve_device, resolve_dtype
from genlab.configs import GANConfig
from genlab.models.gan import Discriminator, FittedGenerator, Generator, LatentFit, generate
from genlab.models.vae import Encoder, encode_means
from genlab.pictures import SAMPLE_SEED
from genlab.train import loop

EVAL_SEED = 4321  # the fixed noise behind every evaluation (independent of the run seed, like SAMPLE_SEED)
DIVERSITY_SAMPLES = 500  # images behind sample_diversity (500*499/2 pairs)


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


GATE_METRIC = "fid_proxy"  # the GAN's validation objective (lower is better) for the convergence gate
GATE_KEYS = ("fid_tail_fall", "fid_tail_fall_lower", "fid_tail_fall_upper", "converged")


def evaluate(generator: Generator, cfg: GANConfig, scorer: Any | None, complete: bool = True) -> dict[str, float]:
    """The evaluation hook (step 0, every ``eval_every`` epochs, the end): the scorer's metrics on ``eval_samples``
    images from fixed noise, plus ``eval_seconds``. KID and precision/recall/density/coverage only when
    ``complete`` (step 0 and the end): the report reads the fid_proxy curve alone, and at 5,000 samples those two
    are more than half of an evaluation. Empty without a scorer or with ``eval_samples=0``."""
    if scorer is None or cfg.eval_samples == 0:
        return {}
    t0 = time.perf_counter()
    fakes = generate_fixed(generator, cfg.eval_samples, EVAL_SEED)
    result = dict(scorer.score(fakes, kid=complete, prdc=complete))
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
                       loop.adam(generator.parameters(), cfg.lr_g, betas),
                       loop.adam(discriminator.parameters(), cfg.lr_d, betas),
                       torch.Generator().manual_seed(cfg.seed), torch.Generator(device=device).manual_seed(cfg.seed + 1),
                       [])
    start_epoch = loop.restore(resume, state.stateful(), state.rngs())
    if resume is not None:
        state.val_history = resume.get("val_history", torch.zeros(0)).tolist()
    return state, start_epoch


def train(cfg: GANConfig, splits: data.Splits, sink: loop.Sink = loop.NullSink(), resume: dict | None = None,
          init: InitSource | None = None, scorer: Any | None = None) -> tuple[Networks, dict[str, float]]:
    """Train, reporting each epoch to ``sink`` (genlab.runs.gan.TrackedGANSink: an MLflow run; the default:
    nowhere), from the checkpoint ``resume`` if given, else from ``init``'s weights (with ``latent_fit=codes``,
    behind the Gaussian fitted to its encoder's codes, whose summary joins the step-0 metrics). ``scorer`` adds
    sample quality every ``eval_every`` epochs and at the end. Returns both networks and the last epoch's metrics,
    with the plateau test of its fid_proxy curve (``fid_tail_fall``, its upper bound, ``converged``) when it was evaluated."""
    device = resolve_device(cfg.device)
    latent_fit, fitted = None, {}
    if cfg.latent_fit == "codes" and resume is None:  # a resumed run's map comes back with its checkpoint
        latent_fit, fitted = fit_latent(cfg, init, splits, device)
    state, start_epoch = initial_state(cfg, device, init, resume, latent_fit)
    if start_epoch == 1:
        with timing.phase("evaluation"):
            initial = {**fitted, **evaluate(state.nets.sampler(), cfg, scorer)}
        state.val_history = [initial[GATE_METRIC]] if GATE_METRIC in initial else []
        with timing.phase("epoch_logging"):
            sink.start(state.nets, initial)
    last: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.epochs + 1):
        last = train_epoch(cfg, splits, state, epoch, device, scorer)
        if GATE_METRIC in last:
            state.val_history.append(last[GATE_METRIC])
        with timing.phase("epoch_logging"):
            sink.epoch(epoch, last, state.nets, functools.partial(state.checkpoint, epoch, cfg))
    # the plateau test reads the evaluations after step 0: step 0 measures the initialisation, not the training
    final = {**last, **(convergence.plateau(state.val_history[1:]) if state.val_history else {})}
    final.update(sink.end(state.nets, final))
    return state.nets, final


def train_epoch(cfg: GANConfig, splits: data.Splits, state: TrainState, epoch: int, device: torch.device,
                scorer: Any | None) -> dict[str, float]:
    """One pass over the training images (a D then a G update per batch): the epoch's metrics."""
    t0 = time.perf_counter()
    steps_per_epoch = -(-len(splits.train_x) // cfg.batch_size)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # d_loss, g_loss, d_real, d_fake (x batch size)
    bar = loop.progress(steps_per_epoch, f"epoch {epoch}/{cfg.epochs}")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_dtype(cfg.dtype, device) == "bf16")
    for step, real in enumerate(data.batches(splits.train_x, cfg.batch_size, state.shuffle_rng, device)):
        d_loss, g_loss, real_logits, fake_logits = _step(cfg, state, real, epoch, step, steps_per_epoch, autocast)
        with torch.no_grad():
            sums += len(real) * torch.stack([d_loss, g_loss, torch.sigmoid(real_logits).mean(),
                                             torch.sigmoid(fake_logits).mean()]).double()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(d_loss=f"{d_loss.item():.3f}", g_loss=f"{g_loss.item():.3f}", refresh=False)
    train_seconds = time.perf_counter() - t0
    timing.add("train", train_seconds)
    if bar is not None:
        bar.close()
    d_loss_mean, g_loss_mean, d_real, d_fake = (sums / len(splits.train_x)).tolist()
    with timing.phase("evaluation"):
        last = {"d_loss": d_loss_mean, "g_loss": g_loss_mean, "d_real": d_real, "d_fake": d_fake,
                "sample_diversity": diversity(state.nets.sampler()),
                "images_per_second": len(splits.train_x) / train_seconds}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            last.update(evaluate(state.nets.sampler(), cfg, scorer, complete=epoch == cfg.epochs))
    last["epoch_seconds"] = time.perf_counter() - t0
    if bar is None:
        quality = f"  fid_proxy {last['fid_proxy']:.2f}" if "fid_proxy" in last else ""
        print(f"epoch {epoch}/{cfg.epochs}  d_loss {d_loss_mean:.3f}  g_loss {g_loss_mean:.3f}  d_real {d_real:.3f}"
              f"  d_fake {d_fake:.3f}  diversity {last['sample_diversity']:.2f}{quality}  "
              f"{last['images_per_second']:.0f} img/s", file=sys.stderr, flush=True)
    return last


def _step(cfg: GANConfig, state: TrainState, real: torch.Tensor, epoch: int, step: int, steps_per_epoch: int,
          autocast: torch.autocast) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One discriminator update, then one generator update against the updated discriminator, on a batch of real
    images, then the generator's moving average: (d_loss, g_loss, real_logits, fake_logits)."""
    generator, discriminator, average = state.nets
    z = torch.randn(len(real), cfg.latent_dim, generator=state.noise_rng, device=real.device)
    with autocast:  # the networks' matrix products; logits, losses and the average stay fp32
        fake = generate(generator, z)
        # the fakes are detached, so only D moves
        real_logits, fake_logits = discriminator(real).float(), discriminator(fake.detach()).float()
    d_loss = losses.discriminator_loss(real_logits, fake_logits, cfg.loss)
    loop.check_finite(d_loss, "discriminator loss", epoch, step,
                      FIRST_HINT if (epoch, step) == (1, 0) else G_HINT.format(lr_g=cfg.lr_g))
    state.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    state.opt_d.step()
    with autocast:
        fake_logits_after = discriminator(fake).float()
    g_loss = losses.generator_loss(fake_logits_after, cfg.loss)
    loop.check_finite(g_loss, "generator loss", epoch, step, D_HINT.format(lr_d=cfg.lr_d))
    state.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    state.opt_g.step()
    if average is not None:
        update_average(average, generator, cfg.ema_decay, updates=(epoch - 1) * steps_per_epoch + step + 1)
    return d_loss, g_loss, real_logits, fake_logits


# Each network's loss passes through both networks, so a loss turns non-finite first through the network that
# made the last update: the generator's loss after a discriminator update blew up, the discriminator's loss after
# a generator update (measured: lr_d = 1e30 fails the generator loss at step 0, lr_g = 1e30 the discriminator's at
# step 1; the weights themselves stay finite, the activations overflow).
D_HINT = "after the discriminator's update: lr_d={lr_d} may be too large"
G_HINT = "after the generator's update: lr_g={lr_g} may be too large"
FIRST_HINT = "before any update: check the data and the initialisation"


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


