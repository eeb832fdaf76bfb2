"""Encoder vs discriminator (the lab's last question), measured on a finished VAE run and a finished GAN run.

- Linear probes: one multinomial logistic regression per frozen feature set, same preprocessing (standardised
  features) and the same optimisation budget (``max_iter`` lbfgs iterations), fitted on the labelled train split,
  scored on the test split: the encoder's ``z_mean`` (latent_dim features), the discriminator's penultimate layer
  (HIDDEN[arch] features), raw pixels (784) as the baseline, and the encoder's own penultimate layer (its trunk,
  HIDDEN[arch] features like the discriminator's: the like-for-like comparison of the two networks' layers).
  The two trunks are also cut to their first latent_dim principal components (PCA fitted on the train split's
  features) and probed again: ``encoder_trunk_pca_probe_accuracy``, ``discriminator_pca_probe_accuracy``, the same
  width as z_mean.
- Output semantics: the encoder gives 2*latent_dim numbers (a Gaussian q(z|x)), the discriminator one logit. Both
  are applied to the same three sets (real test images, generated images, VAE reconstructions of the test images):
  D's probability that an image is real, and the encoder's KL(q(z|x) || N(0, I)) per image (nats).
- The lab's two sentences, measured on frozen features. In these metric names ``encoder`` is the encoder's trunk
  (its penultimate layer, HIDDEN[arch] features like the discriminator's) and ``encoder_zmean`` its z_mean.
  ``*_recon_from_features``: how much of the image a layer keeps, read by a linear decoder (ridge regression from
  standardised features to the 784 grey values, fitted on the whole train split, scored on the whole test split
  as Bernoulli cross-entropy in nats per image, predictions clamped to [1e-4, 1 - 1e-4]; lower keeps more).
  ``*_realfake_auroc``: how linearly a layer separates real test images from the GAN generator's samples (a
  logistic regression fitted on REALFAKE_IMAGES / 2 of each, AUROC on the other REALFAKE_IMAGES / 2 of each: a
  subsample, to keep the run short); ``*_realfake_centroid_auroc``: the same split read along the difference of
  the two fitting halves' mean features (no fitted weights: the measure P2Q2's claim uses, because the logistic
  probe reaches AUROC 1 even on untrained layers); ``discriminator_output_auroc``: D's own logit on that held-out
  half.
  ``trunk_cka``: linear CKA between the two trunks on the test images.
- Controls: an untrained encoder and discriminator of the same architectures (``fresh_networks``, seeded by
  ``seed``) measured the same way, prefixed ``untrained_`` (class probes, recon_from_features, both real/fake AUROCs);
  ``trunk_cka_init``: the CKA of their two trunks, the reference for ``trunk_cka``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from genlab import data, linear_probes, losses, tags
from genlab.checks import ConfigError, check, check_declared, resolve_device
from genlab.configs import RUN_ID, ProbeConfig
from genlab.entries import Context, Result
from genlab.models.gan import Discriminator, FittedGenerator, Generator, LatentFit
from genlab.models.vae import VAE, Encoder, param_count
from genlab.runs import gan as gan_entry
from genlab.runs import last_checkpoint
from genlab.train import gan, vae


def validate(cfg: ProbeConfig) -> None:
    """Raise ConfigError (one line) for any invalid value; called before any run is created."""
    check(bool(RUN_ID.match(cfg.vae_run)), "vae_run", cfg.vae_run, "a VAE run id (32 hex digits)")
    check(bool(RUN_ID.match(cfg.gan_run)), "gan_run", cfg.gan_run, "a GAN run id (32 hex digits)")
    check_declared(cfg)
    check(bool(cfg.experiment.strip()), "experiment", cfg.experiment, "a non-empty name")


def load_networks(cfg: ProbeConfig) -> tuple[VAE, Generator, Discriminator, dict[str, float]]:
    """The trained VAE and GAN from their runs' checkpoints (weights_only), and ``converged`` (1 when both of
    their runs passed the convergence gate; absent when either run did not measure it); ConfigError for a run that
    is unknown, of the wrong kind or not FINISHED."""
    from genlab import tracking

    nets, gate = {}, []
    for param, kind in (("vae_run", tags.VAE), ("gan_run", tags.GAN)):
        run_id = getattr(cfg, param)
        try:
            run = tracking.load_trained_run(run_id, kind)
            path = last_checkpoint(run_id)
        except tracking.TrackingError as e:
            raise ConfigError(f"{param}: {e}") from None
        nets[kind] = (run.data.params, path)
        gate.append(run.data.metrics.get("converged"))
    vae_params, vae_path = nets[tags.VAE]
    model = VAE(int(vae_params["latent_dim"]), vae_params["arch"])
    model.load_state_dict(vae.load_checkpoint(vae_path)["model"])
    gan_params, gan_path = nets[tags.GAN]
    state, gan_cfg = gan.load_checkpoint(gan_path), gan_entry.config_from_params(gan_params)
    generator = Generator(gan_cfg.latent_dim, gan_cfg.arch)
    discriminator = Discriminator(gan_cfg.arch, spectral_norm=bool(gan_cfg.spectral_norm))
    # the generator its run evaluated and logged: the moving average of its weights when it kept one
    weights = state.get("generator_ema", state["generator"])
    if gan_cfg.latent_fit != "none":  # its generator sits behind a fixed Gaussian map: fold it in
        fitted = FittedGenerator(LatentFit(generator.latent_dim), generator)
        fitted.load_state_dict(weights)
        generator = fitted.folded()
    else:
        generator.load_state_dict(weights)
    discriminator.load_state_dict(state["discriminator"])
    # the probe measures trained networks: its numbers are evidence only if both trainings had converged
    inputs = {} if None in gate else {"converged": float(min(gate))}
    return model.eval(), generator.eval(), discriminator.eval(), inputs


# ---------------------------------------------------------------- measurements

@torch.no_grad()
def _apply(fn, x: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """``fn`` over the rows of ``x`` (images (N, 1, 28, 28) or features (N, F)) in batches; the result on CPU."""
    return torch.cat([fn(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


REALFAKE_IMAGES = 2000  # real test images, and as many generated ones, for the real/fake probes: half of each fits
RECON_RIDGE = 1e-2  # the linear decoder's ridge penalty (x N, on standardised features): a fixed choice, not tuned


def fresh_networks(model: VAE, discriminator: Discriminator, seed: int) -> tuple[Encoder, Discriminator]:
    """An untrained encoder and discriminator of the trained ones' architectures (the controls, and the
    initialisation reference of ``trunk_cka_init``): successive draws of torch's RNG seeded by ``seed``, encoder
    first, so the two trunks get different weights (the same weights would make their CKA 1 by construction).
    Torch's global RNG is left as it was. The study's GANs start their discriminator at random
    (``init_discriminator=none``); one started from the encoder's trunk would share its starting point with the
    encoder, and these controls would not describe it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = Encoder(model.latent_dim, model.arch)
        return encoder.eval(), Discriminator(discriminator.arch, discriminator.spectral_norm).eval()


def _realfake_picks(n_real: int, n_generated: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which real test images and which generated ones the real/fake probes use, REALFAKE_IMAGES of each at most
    (as many of both), in an order seeded by ``seed``: the first half of each fits, the second half scores."""
    n = min(REALFAKE_IMAGES, n_real, n_generated)
    rng = np.random.default_rng(seed)
    return rng.permutation(n_real)[:n], rng.permutation(n_generated)[:n]


def _numpy(sets: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: t.numpy() for name, t in sets.items()}


def _trained_features(model: VAE, discriminator: Discriminator, images: dict[str, torch.Tensor],
                      picks: tuple[np.ndarray, np.ndarray], device: torch.device,
                      ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The trained networks' features (each layer runs once per image), D's probability per set and the
    encoder's KL per image per set, on real test images, generated images and VAE reconstructions."""
    enc = {name: _apply(model.encoder.trunk, x, device) for name, x in images.items()}
    heads = {name: _apply(model.encoder.head, h, device) for name, h in enc.items()}
    z_mean = {name: h.chunk(2, dim=1)[0] for name, h in heads.items()}
    recon = _apply(lambda z: torch.sigmoid(model.decoder(z)), z_mean["test"], device)
    enc["recon"] = _apply(model.encoder.trunk, recon, device)
    heads["recon"] = _apply(model.encoder.head, enc["recon"], device)
    disc = {name: _apply(discriminator.trunk, x, device) for name, x in {**images, "recon": recon}.items()}
    outputs = {"real": "test", "generated": "generated", "recon": "recon"}  # the output semantics' three sets
    d_prob = {name: torch.sigmoid(_apply(discriminator.head, disc[s], device).squeeze(1)).numpy()
              for name, s in outputs.items()}
    kl = {name: losses.kl_per_dim(*heads[s].chunk(2, dim=1)).sum(1).numpy() for name, s in outputs.items()}
    real, generated = picks
    features = {}
    for rep, sets in (("encoder", z_mean), ("encoder_trunk", enc), ("discriminator", disc)):
        f = _numpy(sets)
        features[rep] = {"train": f["train"], "test": f["test"], "real": f["test"][real],
                         "generated": f["generated"][generated]}
    return features, d_prob, kl


def _untrained_features(encoder: Encoder, discriminator: Discriminator, images: dict[str, torch.Tensor],
                        picks: tuple[np.ndarray, np.ndarray], device: torch.device) -> dict[str, dict[str, np.ndarray]]:
    """The fresh networks' features: train and test split, and only the generated images the real/fake probes use."""
    real, generated = picks
    sets = {"train": images["train"], "test": images["test"], "generated": images["generated"][generated]}
    features = {}
    for rep, trunk in (("untrained_encoder_trunk", encoder.trunk), ("untrained_discriminator", discriminator.trunk)):
        features[rep] = _numpy({name: _apply(trunk, x, device) for name, x in sets.items()})
    z_mean = {name: _apply(lambda h: encoder.head(h).chunk(2, dim=1)[0], torch.from_numpy(h), device).numpy()
              for name, h in features["untrained_encoder_trunk"].items()}
    features["untrained_encoder"] = z_mean
    for f in features.values():
        f["real"] = f["test"][real]
    return features


def _realfake_auroc(f: dict[str, np.ndarray], cfg: ProbeConfig) -> float:
    """A logistic regression fitted on the first half of the real and generated features, AUROC on the second."""
    half = len(f["real"]) // 2

    def part(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        real, generated = f["real"][rows], f["generated"][rows]
        return np.concatenate([real, generated]), np.r_[np.ones(len(real)), np.zeros(len(generated))]

    return linear_probes.linear_probe_auroc(*part(slice(None, half)), *part(slice(half, None)), max_iter=cfg.max_iter,
                                      seed=cfg.seed)


def _realfake_centroid_auroc(f: dict[str, np.ndarray]) -> float:
    """The same real/fake split read along one direction fitted by nothing but two means: each held-out image's
    features projected on (mean of the real first half - mean of the generated first half), AUROC on the second
    half. A logistic probe on hundreds of dimensions separates real from generated images even on untrained
    networks (AUROC 1.000 on the study's earlier GANs), so it cannot show what training adds; one mean
    difference has far less room to exploit chance directions."""
    half = len(f["real"]) // 2
    direction = f["real"][:half].mean(0) - f["generated"][:half].mean(0)
    scores = np.concatenate([f["real"][half:], f["generated"][half:]]).astype(np.float64) @ direction
    return linear_probes.auroc(scores, np.r_[np.ones(len(f["real"]) - half), np.zeros(len(f["generated"]) - half)])


CLASS_PROBES = {  # representation -> its class-probe metric
    "encoder": "encoder_probe_accuracy", "encoder_trunk": "encoder_trunk_probe_accuracy",
    "discriminator": "discriminator_probe_accuracy", "raw": "encoder_probe_accuracy_raw",
    "untrained_encoder": "untrained_encoder_probe_accuracy",
    "untrained_encoder_trunk": "untrained_encoder_trunk_probe_accuracy",
    "untrained_discriminator": "untrained_discriminator_probe_accuracy"}
# representation -> the prefix of its recon_from_features and realfake_auroc: the encoder's plain name is its trunk
# (the same width as the discriminator's layer, the like-for-like comparison), z_mean is encoder_zmean
READOUTS = {"encoder_trunk": "encoder", "discriminator": "discriminator", "encoder": "encoder_zmean",
            "untrained_encoder_trunk": "untrained_encoder", "untrained_discriminator": "untrained_discriminator"}


def _scores(cfg: ProbeConfig, features: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray],
            pixels: dict[str, np.ndarray], latent_dim: int) -> dict[str, float]:
    """Class probes (full width, and the trunks cut to latent_dim principal components), the linear decoder's
    reconstruction, the real/fake probes and the trunks' CKA, trained and untrained."""
    def probe(train: np.ndarray, test: np.ndarray) -> float:
        # float32 features as they come, and a fixed budget on purpose: an unconverged probe is part of the result
        return linear_probes.linear_probe_accuracy(train, labels["train"], test, labels["test"], max_iter=cfg.max_iter,
                                             seed=cfg.seed, cast_float64=False, quiet_unconverged=True)

    result = {name: probe(features[rep]["train"], features[rep]["test"]) for rep, name in CLASS_PROBES.items()}
    for rep, name in (("encoder_trunk", "encoder_trunk_pca_probe_accuracy"),
                      ("discriminator", "discriminator_pca_probe_accuracy")):
        result[name] = probe(*linear_probes.pca_project(features[rep]["train"], features[rep]["test"], latent_dim))
    for rep, name in READOUTS.items():
        f = features[rep]
        result[f"{name}_recon_from_features"] = linear_probes.linear_recon_nats(f["train"], pixels["train"], f["test"],
                                                                          pixels["test"], RECON_RIDGE)
        result[f"{name}_realfake_auroc"] = _realfake_auroc(f, cfg)
        result[f"{name}_realfake_centroid_auroc"] = _realfake_centroid_auroc(f)
    result["trunk_cka"] = linear_probes.linear_cka(features["encoder_trunk"]["test"], features["discriminator"]["test"])
    result["trunk_cka_init"] = linear_probes.linear_cka(features["untrained_encoder_trunk"]["test"],
                                                  features["untrained_discriminator"]["test"])
    return result


def measure(cfg: ProbeConfig, model: VAE, generator: Generator, discriminator: Discriminator, splits: data.Splits,
            device: torch.device) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """All the numbers: (metrics, D's probability per set, encoder KL per image per set)."""
    untrained = fresh_networks(model, discriminator, cfg.seed)
    for net in (model, generator, discriminator, *untrained):
        net.to(device)
    images = {"train": data.to_float(splits.train_x), "test": data.to_float(splits.test_x)}
    images["generated"] = gan.generate_fixed(generator, len(images["test"]), gan.EVAL_SEED)
    picks = _realfake_picks(len(images["test"]), len(images["generated"]), cfg.seed)
    features, d_prob, kl = _trained_features(model, discriminator, images, picks, device)
    features.update(_untrained_features(*untrained, images, picks, device))
    pixels = {split: images[split].flatten(1).numpy() for split in ("train", "test")}
    features["raw"] = pixels
    result = _scores(cfg, features, {"train": splits.train_y.numpy(), "test": splits.test_y.numpy()}, pixels,
                     model.latent_dim)
    # D's own logit on the held-out half of the real/fake probes' images: what its training optimised
    d, half = features["discriminator"], len(picks[0]) // 2
    held_out = torch.from_numpy(np.concatenate([d["real"][half:], d["generated"][half:]]))
    logits = _apply(discriminator.head, held_out, device).squeeze(1).numpy()
    result["discriminator_output_auroc"] = linear_probes.auroc(
        logits, np.r_[np.ones(len(d["real"]) - half), np.zeros(len(d["generated"]) - half)])
    result["realfake_images_per_half"] = half  # real images fitting the real/fake probes, as many generated
    result.update({"encoder_param_count": param_count(model.encoder),
                   "discriminator_param_count": param_count(discriminator),
                   "encoder_output_dim": 2 * model.latent_dim, "discriminator_output_dim": 1,
                   "encoder_feature_dim": features["encoder"]["train"].shape[1],
                   "encoder_trunk_feature_dim": features["encoder_trunk"]["train"].shape[1],
                   "discriminator_feature_dim": features["discriminator"]["train"].shape[1]})
    result.update({f"d_prob_{name}": float(p.mean()) for name, p in d_prob.items()})
    result.update({f"encoder_kl_{name}": float(k.mean()) for name, k in kl.items()})
    return result, d_prob, kl


def histogram_figure(d_prob: dict[str, np.ndarray], kl: dict[str, np.ndarray]):
    """Two panels over the same three sets: D(x) = P(real), and the encoder's KL per image (nats)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"real": "real test images", "generated": "GAN samples", "recon": "VAE reconstructions"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, p in d_prob.items():
        left.hist(p, bins=np.linspace(0, 1, 41), alpha=0.5, label=labels[name])
    left.set(xlabel="discriminator D(x) = P(real)", ylabel="images", title="Discriminator: one logit")
    top = max(float(np.percentile(k, 99.5)) for k in kl.values())
    for name, k in kl.items():
        right.hist(np.clip(k, 0, top), bins=np.linspace(0, top, 41), alpha=0.5, label=labels[name])
    right.set(xlabel="KL(q(z|x) || N(0, I)) per image (nats)", ylabel="images",
              title="Encoder: 2 x latent_dim Gaussian parameters")
    left.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the run

def run(cfg: ProbeConfig, context: Context) -> Result:
    """Validate and load both networks, then measure inside one run tagged ``genlab.kind=probe``."""
    from genlab import tracking

    validate(cfg)
    model, generator, discriminator, inputs = load_networks(cfg)
    splits = context.data(cfg.dataset, cfg.limit)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    name = f"probe vae={cfg.vae_run[:8]} gan={cfg.gan_run[:8]}"
    all_tags = {tags.KIND: tags.PROBE, tags.DEVICE: str(device), **context.tags}
    note = (f"VAE encoder of run {cfg.vae_run} against GAN discriminator of run {cfg.gan_run}: linear probes on their "
            "features (class accuracy, image reconstruction, real vs generated), beside untrained networks of the "
            "same architectures; the discriminator's P(real) on real, generated and reconstructed images.")
    with tracking.start_run(cfg.experiment, name, dataclasses.asdict(cfg), all_tags, parent_run_id=context.parent_run_id,
                            description=note) as run:
        t0 = time.perf_counter()
        result, d_prob, kl = measure(cfg, model, generator, discriminator, splits, device)
        result.update(probe_seconds=time.perf_counter() - t0, **inputs)
        run.log_metrics(result)
        run.log_figure(histogram_figure(d_prob, kl), "probe_histograms.png")
        tracking.log_json(run, {"config": dataclasses.asdict(cfg), "metrics": result,
                                "train_images": len(splits.train_x), "test_images": len(splits.test_x),
                                "encoder_output": "z_mean and z_log_var of q(z|x), 2*latent_dim numbers",
                                "discriminator_output": "one logit: log-odds that the image is real",
                                "kl_unit": "nats per image",
                                "layers": {"encoder_probe_accuracy, encoder_zmean_*": "z_mean",
                                           "encoder_trunk_*, encoder_recon_from_features, encoder_realfake_auroc":
                                               "the encoder's penultimate layer (trunk)",
                                           "discriminator_*": "the discriminator's penultimate layer",
                                           "untrained_*": "fresh networks of the same architectures, seeded by seed"},
                                "recon_from_features": "ridge decoder fitted on the train split, Bernoulli "
                                                       "cross-entropy on the test split, nats per image"},
                               "probe_summary.json")
    return Result(run.run_id, result, (f"run {run.run_id} finished: linear probe accuracy encoder "
                                       f"{result['encoder_probe_accuracy']:.3f}, discriminator "
                                       f"{result['discriminator_probe_accuracy']:.3f}, raw pixels "
                                       f"{result['encoder_probe_accuracy_raw']:.3f}; reconstruction from the "
                                       f"penultimate layers (nats/image) encoder "
                                       f"{result['encoder_recon_from_features']:.1f}, discriminator "
                                       f"{result['discriminator_recon_from_features']:.1f}; real vs generated AUROC "
                                       f"encoder {result['encoder_realfake_auroc']:.3f}, discriminator "
                                       f"{result['discriminator_realfake_auroc']:.3f}",))
