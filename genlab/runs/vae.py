"""The ``train_vae`` entry point: one VAE trained (genlab.train.vae) inside one MLflow run, and what it records.

Read top to bottom: validate -> name and description -> TrackedVAESink (per epoch: metrics, image series,
checkpoint; at the end: the latent space, pictures, sample quality, models) -> run (the MLflow run around the loop).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from genlab import checks, data, linear_probes, losses, metrics, pictures, tags, timing
from genlab.checks import ConfigError, check, check_declared, resolve_device, resolve_dtype
from genlab.configs import VAEConfig
from genlab.entries import Context, EpochCallback, Result
from genlab.models.vae import VAE, encode_means, param_count
from genlab.pictures import SAMPLE_SEED
from genlab.runs import CHECKPOINT_FOLDER, resume_from
from genlab.scoring import MIN_SAMPLES as MIN_EVAL_SAMPLES
from genlab.scoring import Scorer
from genlab.train import loop
from genlab.train.vae import load_checkpoint, posterior_metrics, prior_samples, train


def validate(cfg: VAEConfig) -> None:
    """Raise ConfigError (one line) for any invalid value; called before any run is created."""
    check_declared(cfg)
    check(bool(cfg.experiment.strip()), "experiment", cfg.experiment, "a non-empty name")
    check(isinstance(cfg.eval_samples, int) and (cfg.eval_samples == 0 or cfg.eval_samples >= MIN_EVAL_SAMPLES),
          "eval_samples", cfg.eval_samples, f"0 (skip) or an integer >= {MIN_EVAL_SAMPLES}")


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
    """The config as logged, with ``compute_dtype``: what ``dtype`` (``auto`` by default) resolved to here."""
    return {**dataclasses.asdict(cfg), "compute_dtype": resolve_dtype(cfg.dtype, resolve_device(cfg.device))}


def config_from_params(params: dict[str, str]) -> VAEConfig:
    """Rebuild a config from a run's logged params (strings), with the dtype it trained in."""
    return checks.config_from_params(VAEConfig, {**params, **checks.trained_dtype(params)})


def check_data(cfg: VAEConfig, splits: data.Splits) -> None:
    checks.check_batch_fits(cfg.batch_size, len(splits.train_x))
    if cfg.val_images > len(splits.val_x):
        raise ConfigError(f"val_images must be <= the {len(splits.val_x)} validation images, got {cfg.val_images}")


# ---------------------------------------------------------------- the tracked sink

# The image series' epochs: at most this many per run, evenly spaced, ending at the last. In an MLP run on 300 images
# (P1Q3's control) the two PNGs of every epoch, ~80 ms, were a sixth of its time (training 0.16 s, validation
# 0.21 s an epoch); 16 steps still show how the pictures change in the UI's image view.
IMAGE_SERIES_STEPS = 16


def image_series_epoch(epoch: int, epochs: int, steps: int = IMAGE_SERIES_STEPS) -> bool:
    """Whether epoch ``epoch`` (1-based) of ``epochs`` logs the image series: every ceil(epochs / steps)-th
    epoch, counted back from the last (which always does)."""
    every = -(-epochs // steps)
    return (epochs - epoch) % every == 0

class TrackedVAESink:
    """A VAE run's MLflow record, written to ``run`` (a tracking.Run): ``param_count`` at step 0; per epoch the
    metrics (one batched call) and ``checkpoint/last.pt``, at IMAGE_SERIES_STEPS epochs or fewer (the last one
    included) the ``samples`` and ``reconstructions`` image series;
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
        if image_series_epoch(epoch, self.cfg.epochs):
            _log_epoch_artifacts(self.run, model, self.fixed_val, epoch, self.device, self.cfg.seed)
        with loop.checkpoint_file(checkpoint()) as path:
            self.run.log_artifact(path, CHECKPOINT_FOLDER)
        if self.on_epoch is not None:
            self.on_epoch(epoch, metrics)

    def end(self, model: VAE, final: dict[str, float]) -> dict[str, float]:
        cfg, run = self.cfg, self.run
        with timing.phase("latent_space"):
            added = log_latent_space(run, model, self.splits, self.device, step=cfg.epochs, seed=cfg.seed)
        with timing.phase("pictures"):
            log_pictures(run, model, self.splits, self.device)
        # what the last epoch did not log: the convergence gate, the test and train evaluations, nll_iw
        run.log_metrics({k: v for k, v in final.items() if k not in self.epoch_keys}, step=cfg.epochs)
        if cfg.eval_samples > 0:
            with timing.phase("sample_quality"):
                added.update(_log_sample_quality(run, model, self.splits, cfg, self.device))
        if self.log_models:
            with timing.phase("models"):
                model.cpu().eval()
                run.log_model(model.decoder, "decoder", np.zeros((2, cfg.latent_dim), np.float32))
                run.log_model(model.encoder, "encoder", np.zeros((2, 1, 28, 28), np.float32))
        run.log_metrics(timing.metrics(), step=cfg.epochs)  # the last thing logged: its total covers the rest
        return added


def _log_sample_quality(run, model: VAE, splits: data.Splits, cfg: VAEConfig, device: torch.device,
                        ) -> dict[str, float]:
    """Score ``eval_samples`` prior samples (``fid_proxy``, ...) and as many test reconstructions
    (``recon_fid_proxy``, ...) with the data set's feature classifier, plus ``aggregate_fid_proxy`` (the same
    test images decoded from one posterior draw each: samples of the aggregate posterior, so fid_proxy -
    aggregate_fid_proxy is what the prior's draws lose by landing where no image's code lies) and the
    interpolation measures; log them, ``eval_seconds`` and the param ``fid_classifier``. ``eval_seconds`` leaves
    out a one-time classifier training."""
    from genlab.runs.classifier import get_scorer

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



def log_latent_space(run, model: VAE, splits: data.Splits, device: torch.device, step: int, seed: int = 0,
                     ) -> dict[str, float]:
    """P1Q2's view of the latent space, logged to ``run``: ``latent_probe_accuracy`` (logistic regression on
    ``z_mean``, fitted on training images, scored on the test split), the test split's posterior_metrics
    (``kl_active_units``, ``aggregate_posterior_mmd``; ``seed``: the posterior and prior draws), ``kl_per_dim.json``
    (mean KL per latent dimension on the test split, nats) and, for a 2-d latent, ``latent_scatter.png`` (test
    ``z_mean`` by class)."""
    train_mean, _ = encode_means(model.encoder, splits.train_x[:PROBE_TRAIN_IMAGES], device)
    test_mean, test_log_var = encode_means(model.encoder, splits.test_x, device)
    accuracy = linear_probes.linear_probe_accuracy(train_mean.numpy(), splits.train_y[:PROBE_TRAIN_IMAGES].numpy(),
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
    run.log_image_step(pictures.grid(prior_samples(model)), "samples", epoch)
    run.log_image_step(pictures.side_by_side(fixed_val, recon), "reconstructions", epoch)


N_PICTURE_IMAGES = 16  # test images reconstructed in pictures/reconstructions.png


def log_pictures(run, model: VAE, splits: data.Splits, device: torch.device) -> None:
    """The trained model's pictures, the same draws and test images for every run of a data set:
    ``pictures/samples.png`` (prior samples), ``pictures/reconstructions.png`` (rows of test images, then their
    reconstructions from ``z_mean``), ``pictures/interpolation.png`` (straight lines between the ``z_mean`` of
    test images of different classes) and, for a 2-d latent, ``pictures/manifold.png``."""
    x = data.to_float(splits.test_x[:N_PICTURE_IMAGES])
    z_x = encode_means(model.encoder, splits.test_x[:N_PICTURE_IMAGES], device)[0]
    run.log_image(pictures.side_by_side(x, pictures.decode(model.decoder, z_x)), "pictures/reconstructions.png")
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

    timing.reset()
    resumed, resume = resume_from(context.resume_run_id, tags.VAE, config_from_params, load_checkpoint)
    cfg = resumed or cfg
    validate(cfg)
    with timing.phase("data"):
        splits = context.data(cfg.dataset, cfg.limit)
    check_data(cfg, splits)
    all_tags = {tags.KIND: tags.VAE, tags.DEVICE: str(resolve_device(cfg.device)), **context.tags}
    started = time.perf_counter()
    with tracking.start_run(cfg.experiment, run_name(cfg), params_of(cfg), all_tags, resume_run_id=context.resume_run_id,
                            parent_run_id=context.parent_run_id, description=describe(cfg),
                            system_metrics=bool(cfg.system_metrics)) as run:
        if resume is None:
            run.log_splits(splits)
        timing.add("start", time.perf_counter() - started)
        sink = TrackedVAESink(run, cfg, splits, resolve_device(cfg.device), context.log_models, context.on_epoch)
        _, final = train(cfg, splits, sink, resume=resume)
    return Result(run.run_id, final, (f"run {run.run_id} finished: test_neg_elbo {final['test_neg_elbo']:.2f} "
                                      f"nats/image (recon {final['test_recon']:.2f}, kl {final['test_kl']:.2f})",))
