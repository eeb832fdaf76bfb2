"""P1Q1 measurement: estimator variances, the no-trick gradient, loading a VAE run, bad input."""

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from genlab import cli, tracking
from genlab.checks import ConfigError
from genlab.configs import GradVarConfig, VAEConfig
from genlab.entries import Context
from genlab.runs import gradvar as gradvar_entry
from genlab.runs import vae as vae_entry
from genlab.train import gradvar, vae

from ..conftest import ran, store_in


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory, empty_store_file):
    """One tracking store for this module's tests; each test uses its own experiment names."""
    with store_in(tmp_path_factory.mktemp("gradvar-store"), empty_store_file):
        yield


def tiny(**kw) -> GradVarConfig:
    base = dict(dataset="synthetic", latent_dim=4, n_samples=12, batch_size=16, experiment="test-gradvar")
    return GradVarConfig(**{**base, **kw})


def test_running_moments_match_torch_var():
    torch.manual_seed(0)
    x = 100.0 + torch.randn(37, 50)  # mean far above the spread, and a last partial chunk
    moments = gradvar.RunningMoments(50, chunk=16)
    for row in x:
        moments.add(row)
    assert torch.allclose(moments.variance(), x.double().var(0), rtol=1e-4)
    assert torch.allclose(moments.mean, x.double().mean(0), rtol=1e-6)


def test_blocks_spread_the_draws_over_batches():
    assert gradvar.blocks(12, 3) == [[4], [4], [4]]
    assert [sum(b) for b in gradvar.blocks(200, 3)] == [67, 67, 66]
    assert all(k >= 2 for batch in gradvar.blocks(200, 3) for k in batch)
    assert all(len(batch) == 6 for batch in gradvar.blocks(200, 3))


def test_pooled_ratio_and_its_bootstrap_interval():
    rng = np.random.default_rng(0)
    den = rng.gamma(5.0, 1.0, size=20)
    num = 8.0 * den * rng.gamma(20.0, 1 / 20, size=20)  # about 8 times the variance, block to block noise
    ratio, low, high = gradvar.pooled_ratio(num, den, np.full(20, 9.0), seed=0)
    assert low < ratio < high and low < 8.0 < high and high - low < 4
    same, low, high = gradvar.pooled_ratio(den, den, np.full(20, 9.0), seed=0)
    assert same == pytest.approx(1.0) and low == pytest.approx(1.0) and high == pytest.approx(1.0)


def test_score_estimator_is_noisier_and_no_trick_sends_no_gradient(shared_store):
    run_id, m = ran(gradvar_entry.run(tiny(), Context()))
    for name, (num, den) in gradvar.RATIOS.items():
        ratio = m[f"grad_variance_ratio_{name}"]
        assert ratio == pytest.approx(m[f"grad_variance_{num}"] / m[f"grad_variance_{den}"], rel=1e-6)
        assert m[f"grad_variance_ratio_{name}_ci_low"] <= ratio <= m[f"grad_variance_ratio_{name}_ci_high"]
    assert m["grad_variance_ratio_per_image"] > 1
    # averaging 17 reparameterised draws divides their variance by about 17
    assert m["grad_variance_reparam"] / m["grad_variance_reparam_matched"] == pytest.approx(17, rel=0.6)
    assert m["encoder_grad_norm_no_trick"] == 0.0 and m["encoder_grad_norm_reparam"] > 0
    # each baseline reduces the variance of the score-function estimator further
    assert m["grad_variance_score_no_baseline"] > m["grad_variance_score_running_mean"] > m["grad_variance_score_per_image"]
    assert m["grad_variance_blocks"] == 3
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["genlab.kind"] == "gradvar"
    assert run.data.metrics["encoder_grad_norm_no_trick"] == 0.0 and run.data.params["n_samples"] == "12"
    assert run.data.params["n_batches"] == "3"
    assert "grad_variance_per_tensor.json" in {f.path for f in MlflowClient().list_artifacts(run_id)}


def test_parameters_come_from_a_vae_run(shared_store):
    source_id, _ = ran(vae_entry.run(VAEConfig(dataset="synthetic", latent_dim=4, epochs=1, limit=200, batch_size=64,
                                               eval_samples=0, nll_images=50, experiment="src"), Context()))
    state, gate = gradvar_entry.load_source(tiny(vae_run=source_id))
    # the measurement carries the source run's convergence gate (the verdict rests on a converged VAE)
    assert gate == {"converged": MlflowClient().get_run(source_id).data.metrics["converged"]}
    model = vae.VAE(4)
    model.load_state_dict(state)
    logged = vae.load_checkpoint(tracking.download_artifact(source_id, "checkpoint/last.pt"))["model"]
    assert all(torch.equal(model.state_dict()[k], logged[k]) for k in logged)
    with pytest.raises(ConfigError, match="latent_dim must match"):
        gradvar_entry.run(tiny(vae_run=source_id, latent_dim=8, experiment="mismatch"), Context())
    with pytest.raises(ConfigError, match="epochs must be 0"):
        gradvar_entry.run(tiny(vae_run=source_id, epochs=1, experiment="mismatch"), Context())
    assert not MlflowClient().get_experiment_by_name("mismatch")


BAD_INPUT = [(["--n-samples", "1"], "n_samples"), (["--n-batches", "0"], "n_batches"),
             (["--n-samples", "5", "--n-batches", "3"], "n_samples"), (["--batch-size", "5000"], "n_batches"),
             (["--batch-size", "0"], "batch_size"),
             (["--vae-run", "0123abcd"], "not found"), (["--dataset", "cifar"], "dataset"),
             (["--epochs", "-1"], "epochs")]


def test_bad_input_is_one_line_exit_2(shared_store, capsys):
    for args, name in BAD_INPUT:  # one store for all cases: creating one costs seconds
        code = cli.main(["gradvar", "--dataset", "synthetic", *args])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and name in err, (args, err)
    assert not MlflowClient().get_experiment_by_name("genlab-gradvar")
