"""P1Q1 measurement: estimator variances, the no-trick gradient, loading a VAE run, bad input."""

import pytest
import torch
from mlflow.tracking import MlflowClient

from genlab import cli, tracking
from genlab.config import ConfigError
from genlab.entries import Context
from genlab.train import gradvar, vae

from ..conftest import ran, store_in


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory, empty_store_file):
    """One tracking store for this module's tests; each test uses its own experiment names."""
    with store_in(tmp_path_factory.mktemp("gradvar-store"), empty_store_file):
        yield


def tiny(**kw) -> gradvar.GradVarConfig:
    base = dict(dataset="synthetic", latent_dim=4, n_samples=12, batch_size=16, experiment="test-gradvar")
    return gradvar.GradVarConfig(**{**base, **kw})


def test_running_moments_match_torch_var():
    torch.manual_seed(0)
    x = 100.0 + torch.randn(37, 50)  # mean far above the spread, and a last partial chunk
    moments = gradvar.RunningMoments(50, chunk=16)
    for row in x:
        moments.add(row)
    assert torch.allclose(moments.variance(), x.double().var(0), rtol=1e-4)
    assert torch.allclose(moments.mean, x.double().mean(0), rtol=1e-6)


def test_score_estimator_is_noisier_and_no_trick_sends_no_gradient(shared_store):
    run_id, m = ran(gradvar.run(tiny(), Context()))
    assert m["grad_variance_ratio"] > 1
    assert m["grad_variance_ratio"] == pytest.approx(m["grad_variance_score"] / m["grad_variance_reparam"])
    assert m["encoder_grad_norm_no_trick"] == 0.0 and m["encoder_grad_norm_reparam"] > 0
    # the baseline reduces the variance of the score-function estimator
    assert m["grad_variance_score_no_baseline"] > m["grad_variance_score"]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["genlab.kind"] == "gradvar"
    assert run.data.metrics["encoder_grad_norm_no_trick"] == 0.0 and run.data.params["n_samples"] == "12"
    assert "grad_variance_per_tensor.json" in {f.path for f in MlflowClient().list_artifacts(run_id)}


def test_parameters_come_from_a_vae_run(shared_store):
    source_id, _ = ran(vae.run(vae.VAEConfig(dataset="synthetic", latent_dim=4, epochs=1, limit=200, batch_size=64,
                                             eval_samples=0, nll_images=50, experiment="src"), Context()))
    state, gate = gradvar.load_source(tiny(vae_run=source_id))
    # the measurement carries the source run's convergence gate (the verdict rests on a converged VAE)
    assert gate == {"converged": MlflowClient().get_run(source_id).data.metrics["converged"]}
    model = vae.VAE(4)
    model.load_state_dict(state)
    logged = vae.load_checkpoint(tracking.download_artifact(source_id, "checkpoint/last.pt"))["model"]
    assert all(torch.equal(model.state_dict()[k], logged[k]) for k in logged)
    with pytest.raises(ConfigError, match="latent_dim must match"):
        gradvar.run(tiny(vae_run=source_id, latent_dim=8, experiment="mismatch"), Context())
    with pytest.raises(ConfigError, match="epochs must be 0"):
        gradvar.run(tiny(vae_run=source_id, epochs=1, experiment="mismatch"), Context())
    assert not MlflowClient().get_experiment_by_name("mismatch")


BAD_INPUT = [(["--n-samples", "1"], "n_samples"), (["--batch-size", "0"], "batch_size"),
             (["--vae-run", "0123abcd"], "not found"), (["--dataset", "cifar"], "dataset"),
             (["--epochs", "-1"], "epochs")]


def test_bad_input_is_one_line_exit_2(shared_store, capsys):
    for args, name in BAD_INPUT:  # one store for all cases: creating one costs seconds
        code = cli.main(["gradvar", "--dataset", "synthetic", *args])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and name in err, (args, err)
    assert not MlflowClient().get_experiment_by_name("genlab-gradvar")
