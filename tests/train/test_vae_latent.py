"""P1Q2 extras of a VAE run: linear probe of z_mean, KL per latent dimension, 2-d latent scatter."""

import numpy as np
import pytest
import torch

from genlab import data, linear_probes, metrics
from genlab.configs import VAEConfig
from genlab.runs import vae as vae_entry
from genlab.train import vae


class Recorder:
    """Stands in for tracking.Run: keeps what would be logged."""

    def __init__(self):
        self.metrics, self.dicts, self.figures = {}, {}, {}

    def log_metrics(self, values, step=None):
        self.metrics.update(values)

    def log_dict(self, value, artifact_file):
        self.dicts[artifact_file] = value

    def log_figure(self, figure, artifact_file):
        self.figures[artifact_file] = figure


def test_linear_probe_reads_separable_labels_and_not_noise():
    rng = np.random.default_rng(0)
    labels = np.arange(600) % 3
    features = rng.normal(size=(600, 4)) + 5.0 * np.eye(4)[labels]
    assert linear_probes.linear_probe_accuracy(features[:400], labels[:400], features[400:], labels[400:]) == 1.0
    noise = rng.normal(size=(600, 4))
    assert linear_probes.linear_probe_accuracy(noise[:400], labels[:400], noise[400:], labels[400:]) < 0.5


def test_latent_space_extras_for_a_2d_latent():
    splits = data.load("synthetic", limit=300)
    cfg = VAEConfig(dataset="synthetic", latent_dim=2, epochs=1, limit=300, batch_size=64, nll_images=50)
    model, final = vae.train(cfg, splits)
    run = Recorder()
    out = vae_entry.log_latent_space(run, model, splits, torch.device("cpu"), step=1)
    assert out == run.metrics and 0.1 < out["latent_probe_accuracy"] <= 1.0  # 10 classes: above chance
    kl = run.dicts["kl_per_dim.json"]
    assert len(kl) == 2 and all(v >= 0 for v in kl)
    # KL is analytic in (z_mean, z_log_var): the per-dimension means add up to the run's test_kl
    assert sum(kl) == pytest.approx(final["test_kl"], rel=1e-4)
    # the active units are those dimensions of kl_per_dim.json above the threshold
    assert out["kl_active_units"] == sum(v > metrics.KL_ACTIVE_THRESHOLD for v in kl)
    assert np.isfinite(out["aggregate_posterior_mmd"])
    figure = run.figures["latent_scatter.png"]
    assert len(figure.axes[0].collections) == 10  # one colour per class


def test_no_scatter_beyond_two_dimensions():
    splits = data.load("synthetic", limit=200)
    model = vae.VAE(latent_dim=3)
    run = Recorder()
    vae_entry.log_latent_space(run, model, splits, torch.device("cpu"), step=1)
    assert not run.figures and len(run.dicts["kl_per_dim.json"]) == 3
