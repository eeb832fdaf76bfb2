"""Encoder vs discriminator (the lab's last question), measured on a finished VAE run and a finished GAN run.

- Linear probes: one multinomial logistic regression per frozen feature set, same preprocessing (standardised
  features) and the same optimisation budget (``max_iter`` lbfgs iterations), fitted on the labelled train split,
  scored on the test split: the encoder's ``z_mean`` (latent_dim features), the discriminator's penultimate layer
  (HIDDEN[arch] features), raw pixels (784) as the baseline, and the encoder's own penultimate layer (its trunk,
  HIDDEN[arch] features like the discriminator's: the like-for-like comparison of the two networks' layers).
- Output semantics: the encoder gives 2*latent_dim numbers (a Gaussian q(z|x)), the discriminator one logit. Both
  are applied to the same three sets (real test images, generated images, VAE reconstructions of the test images):
  D's probability that an image is real, and the encoder's KL(q(z|x) || N(0, I)) per image (nats).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from genlab import data, losses, metrics, tags
from genlab.config import ConfigError, check, check_choice, check_int, resolve_device
from genlab.configs import RUN_ID, ProbeConfig
from genlab.entries import Context, Result
from genlab.models.gan import Discriminator, Generator
from genlab.models.vae import VAE, param_count
from genlab.train import gan, vae


def validate(cfg: ProbeConfig) -> None:
    """Raise ConfigError (one line) for any invalid value; called before any run is created."""
    check(bool(RUN_ID.match(cfg.vae_run)), "vae_run", cfg.vae_run, "a VAE run id (32 hex digits)")
    check(bool(RUN_ID.match(cfg.gan_run)), "gan_run", cfg.gan_run, "a GAN run id (32 hex digits)")
    check_choice("dataset", cfg.dataset, data.DATASETS)
    check_int("limit", cfg.limit, 0)
    check_int("seed", cfg.seed, 0)
    check_int("max_iter", cfg.max_iter, 1)
    check_choice("device", cfg.device, ("auto", "cpu", "cuda"))
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
            path = tracking.download_artifact(run_id, "checkpoint/last.pt")
        except tracking.TrackingError as e:
            raise ConfigError(f"{param}: {e}") from None
        nets[kind] = (run.data.params, path)
        gate.append(run.data.metrics.get("converged"))
    vae_params, vae_path = nets[tags.VAE]
    model = VAE(int(vae_params["latent_dim"]), vae_params["arch"])
    model.load_state_dict(vae.load_checkpoint(vae_path)["model"])
    gan_params, gan_path = nets[tags.GAN]
    state = gan.load_checkpoint(gan_path)
    generator, discriminator = Generator(int(gan_params["latent_dim"]), gan_params["arch"]), Discriminator(gan_params["arch"])
    generator.load_state_dict(state["generator"])
    discriminator.load_state_dict(state["discriminator"])
    # the probe measures trained networks: its numbers are evidence only if both trainings had converged
    inputs = {} if None in gate else {"converged": float(min(gate))}
    return model.eval(), generator.eval(), discriminator.eval(), inputs


# ---------------------------------------------------------------- measurements

@torch.no_grad()
def _apply(fn, x: torch.Tensor, device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """``fn`` over the rows of ``x`` (images (N, 1, 28, 28) or features (N, F)) in batches; the result on CPU."""
    return torch.cat([fn(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def measure(cfg: ProbeConfig, model: VAE, generator: Generator, discriminator: Discriminator, splits: data.Splits,
            device: torch.device) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """All the numbers: (metrics, D's probability per set, encoder KL per image per set)."""
    for net in (model, generator, discriminator):
        net.to(device)
    train_x, test_x = data.to_float(splits.train_x), data.to_float(splits.test_x)
    train_y, test_y = splits.train_y.numpy(), splits.test_y.numpy()

    def z_mean(x):
        return model.encoder.encode(x)[0]

    def z_mean_from_trunk(hidden):  # the encoder's head on its penultimate layer: the trunk runs once per image
        return model.encoder.head(hidden).chunk(2, dim=1)[0]

    trunk = {split: _apply(model.encoder.trunk, x, device) for split, x in (("train", train_x), ("test", test_x))}
    features = {
        "encoder": (_apply(z_mean_from_trunk, trunk["train"], device), _apply(z_mean_from_trunk, trunk["test"], device)),
        "encoder_trunk": (trunk["train"], trunk["test"]),
        "discriminator": (_apply(discriminator.features, train_x, device),
                          _apply(discriminator.features, test_x, device)),
        "raw": (train_x.flatten(1), test_x.flatten(1)),
    }
    # float32 features as they come, and a fixed budget on purpose: an unconverged probe is part of the result
    accuracy = {name: metrics.linear_probe_accuracy(tr.numpy(), train_y, te.numpy(), test_y, max_iter=cfg.max_iter,
                                                    seed=cfg.seed, cast_float64=False, quiet_unconverged=True)
                for name, (tr, te) in features.items()}

    sets = {"real": test_x,
            "generated": gan.generate_fixed(generator, len(test_x), gan.EVAL_SEED),
            "recon": _apply(lambda x: torch.sigmoid(model.decoder(z_mean(x))), test_x, device)}
    d_prob = {name: _apply(lambda x: torch.sigmoid(discriminator(x)), x, device).numpy() for name, x in sets.items()}
    kl = {name: _apply(lambda x: losses.kl_per_dim(*model.encoder.encode(x)).sum(1), x, device).numpy()
          for name, x in sets.items()}

    result = {"encoder_probe_accuracy": accuracy["encoder"],
              "discriminator_probe_accuracy": accuracy["discriminator"],
              "encoder_probe_accuracy_raw": accuracy["raw"],
              "encoder_trunk_probe_accuracy": accuracy["encoder_trunk"],
              "encoder_param_count": param_count(model.encoder),
              "discriminator_param_count": param_count(discriminator),
              "encoder_output_dim": 2 * model.latent_dim, "discriminator_output_dim": 1,
              "encoder_feature_dim": features["encoder"][0].shape[1],
              "encoder_trunk_feature_dim": features["encoder_trunk"][0].shape[1],
              "discriminator_feature_dim": features["discriminator"][0].shape[1]}
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
            "features (class accuracy), the discriminator's P(real) on real, generated and reconstructed images.")
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
                                "kl_unit": "nats per image"}, "probe_summary.json")
    return Result(run.run_id, result, (f"run {run.run_id} finished: linear probe accuracy encoder "
                                       f"{result['encoder_probe_accuracy']:.3f}, discriminator "
                                       f"{result['discriminator_probe_accuracy']:.3f}, raw pixels "
                                       f"{result['encoder_probe_accuracy_raw']:.3f}",))
