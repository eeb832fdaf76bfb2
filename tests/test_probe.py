"""`genlab probe` end to end on synthetic runs, and its bad input (exit 2, one line, no probe run)."""

import json
import math

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from genlab import data, probe
from genlab.configs import GANConfig, ProbeConfig, VAEConfig
from genlab.entries import Context
from genlab.models.gan import Discriminator, Generator
from genlab.models.vae import VAE, Encoder, param_count
from genlab.runs import gan as gan_entry
from genlab.runs import vae as vae_entry

from .conftest import ran, run_cli, store_in

METRICS = {"encoder_probe_accuracy", "discriminator_probe_accuracy", "encoder_probe_accuracy_raw",
           "encoder_param_count", "discriminator_param_count", "d_prob_real", "d_prob_generated", "d_prob_recon",
           "encoder_kl_real", "encoder_kl_generated", "encoder_kl_recon", "encoder_trunk_probe_accuracy"}
# the lab's two sentences (issue 15): what a layer keeps of the image, how it separates real from generated images,
# dimension-matched class probes, the trunks' similarity, and the same on untrained networks (the controls)
RECON = {"encoder_recon_from_features", "discriminator_recon_from_features", "encoder_zmean_recon_from_features",
         "untrained_encoder_recon_from_features", "untrained_discriminator_recon_from_features"}
AUROC = {"encoder_realfake_auroc", "discriminator_realfake_auroc", "discriminator_output_auroc",
         "encoder_zmean_realfake_auroc", "untrained_encoder_realfake_auroc", "untrained_discriminator_realfake_auroc",
         *(f"{net}_realfake_centroid_auroc" for net in ("encoder", "discriminator", "encoder_zmean", "untrained_encoder",
                                                       "untrained_discriminator"))}
ACCURACY = {"encoder_trunk_pca_probe_accuracy", "discriminator_pca_probe_accuracy", "untrained_encoder_probe_accuracy",
            "untrained_encoder_trunk_probe_accuracy", "untrained_discriminator_probe_accuracy"}
CKA = {"trunk_cka", "trunk_cka_init"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, empty_store_file):
    """A finished VAE run and a finished GAN run (latent_dim 4) in a store shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("probe-store")
    with store_in(tmp, empty_store_file):
        vae_id, _ = ran(vae_entry.run(VAEConfig(dataset="synthetic", epochs=1, limit=128, batch_size=64, latent_dim=4,
                                                eval_samples=0, nll_images=50, experiment="vae"), Context()))
        gan_id, _ = ran(gan_entry.run(GANConfig(dataset="synthetic", epochs=1, limit=128, batch_size=64, latent_dim=4,
                                                eval_samples=0, experiment="gan"), Context()))
        yield vae_id, gan_id, tmp


def test_probe_end_to_end(runs, capsys):
    vae_id, gan_id, tmp = runs
    code = run_cli(["probe", "--vae-run", vae_id, "--gan-run", gan_id, "--dataset", "synthetic", "--limit", "300",
                    "--max-iter", "50", "--experiment", "probe"])
    assert code == 0, capsys.readouterr().err
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("probe").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["genlab.kind"] == "probe"
    assert {k: run.data.params[k] for k in ("vae_run", "gan_run", "dataset", "limit", "seed")} == {
        "vae_run": vae_id, "gan_run": gan_id, "dataset": "synthetic", "limit": "300", "seed": "0"}
    m = run.data.metrics
    assert METRICS | RECON | AUROC | ACCURACY | CKA <= set(m)
    assert all(math.isfinite(m[k]) for k in RECON | AUROC | ACCURACY | CKA)
    for key in AUROC | ACCURACY | CKA:
        assert 0 <= m[key] <= 1, key
    assert min(m[k] for k in RECON) > 0  # nats per image
    assert m["encoder_param_count"] == param_count(Encoder(4)) and m["discriminator_param_count"] == param_count(
        Discriminator())
    assert m["encoder_output_dim"] == 8 and m["discriminator_output_dim"] == 1
    # z_mean has latent_dim features; the encoder's penultimate layer has as many as the discriminator's
    assert m["encoder_feature_dim"] == 4 and m["encoder_trunk_feature_dim"] == m["discriminator_feature_dim"] == 256
    for key in ("encoder_probe_accuracy", "encoder_trunk_probe_accuracy", "discriminator_probe_accuracy",
                "d_prob_real", "d_prob_generated"):
        assert 0 <= m[key] <= 1, key
    assert m["encoder_probe_accuracy_raw"] > 0.5  # 10 visually distinct synthetic classes: pixels separate them
    assert min(m["encoder_kl_real"], m["encoder_kl_generated"], m["encoder_kl_recon"]) >= 0
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"probe_histograms.png", "probe_summary.json"} <= artifacts
    summary = json.load(open(client.download_artifacts(run.info.run_id, "probe_summary.json", str(tmp))))
    assert summary["metrics"]["encoder_probe_accuracy"] == m["encoder_probe_accuracy"]
    assert summary["train_images"] == 300 and summary["test_images"] == 500
    # the convergence gate of its inputs: the GAN ran without fid_proxy (eval_samples 0), so it is not measured
    assert "converged" in client.get_run(vae_id).data.metrics and "converged" not in m


@pytest.mark.parametrize("case", ["swapped", "unknown", "malformed", "bad dataset"])
def test_probe_bad_input_is_exit_2_and_no_run(runs, capsys, case):
    vae_id, gan_id, _ = runs
    args, expected = {
        "swapped": (["--vae-run", gan_id, "--gan-run", vae_id], f"vae_run: run '{gan_id}' is a gan run, not a vae run"),
        "unknown": (["--vae-run", vae_id, "--gan-run", "f" * 32], "gan_run: run 'fff"),
        "malformed": (["--vae-run", "latest", "--gan-run", gan_id], "vae_run must be a VAE run id"),
        "bad dataset": (["--vae-run", vae_id, "--gan-run", gan_id, "--dataset", "cifar10"], "dataset"),
    }[case]
    code = run_cli(["probe", *args, "--experiment", "no-probe"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert MlflowClient().get_experiment_by_name("no-probe") is None


def test_fresh_networks_are_seeded_distinct_and_leave_the_global_rng_alone():
    model, disc = VAE(4), Discriminator()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    enc0, disc0 = probe.fresh_networks(model, disc, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    again, _ = probe.fresh_networks(model, disc, seed=7)
    other, _ = probe.fresh_networks(model, disc, seed=8)
    weight = enc0.trunk[0].weight
    assert torch.equal(weight, again.trunk[0].weight) and not torch.equal(weight, other.trunk[0].weight)
    # the same architecture, drawn one after the other: not the same weights (their CKA would be 1 by construction)
    assert weight.shape == disc0.trunk[0].weight.shape and not torch.equal(weight, disc0.trunk[0].weight)
    assert enc0.latent_dim == 4 and not enc0.training and not disc0.training


def test_untrained_controls_measure_exactly_what_the_trained_numbers_measure():
    """Networks that are the fresh ones (seed 0) give their untrained controls' numbers: the controls go through
    the same readouts, on the same images."""
    cfg = ProbeConfig(vae_run="0" * 32, gan_run="1" * 32, dataset="synthetic", limit=300, max_iter=30)
    model, generator, disc = VAE(4).eval(), Generator(4).eval(), Discriminator().eval()
    enc0, disc0 = probe.fresh_networks(model, disc, cfg.seed)
    model.encoder.load_state_dict(enc0.state_dict())
    disc.load_state_dict(disc0.state_dict())
    m, d_prob, kl = probe.measure(cfg, model, generator, disc, data.load("synthetic", 300), torch.device("cpu"))
    for name in ("recon_from_features", "realfake_auroc", "realfake_centroid_auroc"):
        for net in ("encoder", "discriminator"):
            assert m[f"untrained_{net}_{name}"] == pytest.approx(m[f"{net}_{name}"]), (net, name)
    assert m["untrained_encoder_probe_accuracy"] == pytest.approx(m["encoder_probe_accuracy"])
    assert m["untrained_encoder_trunk_probe_accuracy"] == pytest.approx(m["encoder_trunk_probe_accuracy"])
    assert m["untrained_discriminator_probe_accuracy"] == pytest.approx(m["discriminator_probe_accuracy"])
    assert m["trunk_cka"] == pytest.approx(m["trunk_cka_init"]) and 0 < m["trunk_cka"] < 1
    assert set(d_prob) == set(kl) == {"real", "generated", "recon"} and len(d_prob["real"]) == 500
    assert m["d_prob_real"] == pytest.approx(float(np.mean(d_prob["real"])))


def test_centroid_auroc_reads_one_mean_difference_and_misses_what_only_a_fitted_probe_sees():
    rng = np.random.default_rng(0)
    real, generated = rng.normal(0, 1, (400, 50)), rng.normal(0, 1, (400, 50))
    shifted = {"real": real + np.r_[0.5, np.zeros(49)], "generated": generated}
    assert probe._realfake_centroid_auroc(shifted) > 0.6  # a shift of the means shows along their difference
    assert abs(probe._realfake_centroid_auroc({"real": real, "generated": generated}) - 0.5) < 0.1
    # the same means, a different spread: no mean difference to read, however separable the sets are
    wide = {"real": real * 3.0, "generated": generated}
    assert abs(probe._realfake_centroid_auroc(wide) - 0.5) < 0.1
