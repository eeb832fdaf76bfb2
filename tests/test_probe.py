"""`genlab probe` end to end on synthetic runs, and its bad input (exit 2, one line, no probe run)."""

import json

import pytest
from mlflow.tracking import MlflowClient

from genlab.entries import Context
from genlab.models.gan import Discriminator
from genlab.models.vae import Encoder, param_count
from genlab.train import gan, vae

from .conftest import ran, run_cli, store_in

METRICS = {"encoder_probe_accuracy", "discriminator_probe_accuracy", "encoder_probe_accuracy_raw",
           "encoder_param_count", "discriminator_param_count", "d_prob_real", "d_prob_generated", "d_prob_recon",
           "encoder_kl_real", "encoder_kl_generated", "encoder_kl_recon", "encoder_trunk_probe_accuracy"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, empty_store_file):
    """A finished VAE run and a finished GAN run (latent_dim 4) in a store shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("probe-store")
    with store_in(tmp, empty_store_file):
        vae_id, _ = ran(vae.run(vae.VAEConfig(dataset="synthetic", epochs=1, limit=128, batch_size=64, latent_dim=4,
                                              eval_samples=0, nll_images=50, experiment="vae"), Context()))
        gan_id, _ = ran(gan.run(gan.GANConfig(dataset="synthetic", epochs=1, limit=128, batch_size=64, latent_dim=4,
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
    assert METRICS <= set(m)
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
