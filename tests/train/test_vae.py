"""The VAE loop and its MLflow run: metrics, artifacts, resume, failure states, real-data smoke."""

import contextlib
import math

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from genlab import data
from genlab.checks import resolve_device
from genlab.configs import VAEConfig
from genlab.entries import Context
from genlab.models.vae import encode_means
from genlab.runs import vae as vae_entry
from genlab.train import loop, vae

from ..conftest import assert_timed, image_steps, ran

EPOCH_METRICS = {"train_recon", "train_kl", "train_neg_elbo", "val_recon", "val_kl", "val_neg_elbo",
                 "active_units", "epoch_seconds", "images_per_second"}


def tiny(**kw) -> VAEConfig:
    base = dict(dataset="synthetic", epochs=2, limit=300, batch_size=64, latent_dim=4, experiment="test-vae",
                eval_samples=0, nll_images=50)  # sample-quality metrics: tests/train/test_classifier.py
    return VAEConfig(**{**base, **kw})


def test_run_logs_metrics_artifacts_and_models(store):
    run_id, final = ran(vae_entry.run(tiny(), Context()))
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "vae z4 b1.0 n300 s0"
    assert run.data.tags["genlab.kind"] == "vae"
    protocol = {"test_nll_iw", "train_nll_iw", "test_nll_iw_se", "train_nll_iw_se", "val_rel_improvement_tail",
                "converged", "test_active_units", "kl_active_units", "aggregate_posterior_mmd"}
    assert EPOCH_METRICS | {"test_neg_elbo", "test_recon", "test_kl"} | protocol <= set(run.data.metrics)
    assert run.data.metrics["converged"] in (0.0, 1.0)
    assert final["kl_active_units"] in range(5) and run.data.metrics["kl_active_units"] == final["kl_active_units"]
    assert math.isfinite(final["aggregate_posterior_mmd"]) and -0.05 < final["aggregate_posterior_mmd"] <= 2
    # eval_samples = 0: no classifier, so neither do the metrics that need it exist
    assert not {"interp_smoothness", "aggregate_fid_proxy", "fid_proxy"} & set(run.data.metrics)
    # the bound with nll_k draws is at least as tight as one draw, on average over the images
    assert final["test_nll_iw"] <= final["test_neg_elbo"] + 3 * final["test_nll_iw_se"]
    history = client.get_metric_history(run_id, "val_neg_elbo")
    assert [m.step for m in history] == [1, 2]
    assert run.data.params["latent_dim"] == "4" and run.data.params["beta"] == "1.0"
    assert run.data.params["dtype"] == "auto" and run.data.params["compute_dtype"] in ("fp32", "bf16")
    assert_timed(run.data.metrics, {"data", "start", "train", "validation", "epoch_logging", "test_eval", "iw_bound",
                                    "latent_space", "pictures", "models"})
    assert math.isclose(final["test_neg_elbo"], final["test_recon"] + final["test_kl"], rel_tol=1e-6)
    assert image_steps(client, run_id, "samples") == image_steps(client, run_id, "reconstructions") == [1, 2]
    paths = {f.path for d in ("pictures", "checkpoint") for f in client.list_artifacts(run_id, d)}
    assert {"pictures/samples.png", "pictures/reconstructions.png", "pictures/interpolation.png",
            "checkpoint/last.pt"} <= paths
    tags = run.data.tags
    assert tags["genlab.device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert tags["mlflow.source.git.commit"] in tags["genlab.code_version"]
    assert tags["mlflow.note.content"].startswith("conv VAE with KL weight beta = 1, latent_dim 4")
    experiment = client.get_experiment(run.info.experiment_id).tags
    assert experiment["mlflow.experimentKind"] == "custom_model_development" and experiment["mlflow.note.content"]
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"synthetic-train", "synthetic-val",
                                                                   "synthetic-test"}


def test_resume_after_a_crash_matches_an_uninterrupted_run(store):
    # cosine schedule: the learning rate after resume must come from the step, as in the uninterrupted run
    _, reference = ran(vae_entry.run(tiny(epochs=3, experiment="ref", lr_schedule="cosine"), Context()))

    def crash(epoch, metrics):
        if epoch == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        vae_entry.run(tiny(epochs=3, experiment="crash", lr_schedule="cosine"), Context(on_epoch=crash))
    client = MlflowClient()
    crashed = client.search_runs([client.get_experiment_by_name("crash").experiment_id])[0]
    assert crashed.info.status == "FAILED" and "simulated crash" in crashed.data.tags["genlab.failure"]
    run_id, resumed = ran(vae_entry.run(VAEConfig(), Context(resume_run_id=crashed.info.run_id)))
    assert run_id == crashed.info.run_id and client.get_run(run_id).info.status == "FINISHED"
    # Tolerance: bit-identical on CPU with a fixed thread count; 1e-5 relative leaves room for BLAS order.
    for key in ("test_neg_elbo", "val_neg_elbo", "train_neg_elbo", "val_rel_improvement_tail", "test_nll_iw"):
        assert math.isclose(resumed[key], reference[key], rel_tol=1e-5), key
    assert [m.step for m in client.get_metric_history(run_id, "val_neg_elbo")] == [1, 2, 3]
    lrs = [m.value for m in client.get_metric_history(run_id, "lr_effective")]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.1 * 1e-3


def test_cosine_learning_rate():
    assert vae.learning_rate(1e-3, 0, 100) == 1e-3
    assert math.isclose(vae.learning_rate(1e-3, 50, 100), 5e-4)
    assert vae.learning_rate(1e-3, 99, 100) < 1e-6


def test_nan_loss_fails_the_run_with_a_reason(store):
    with pytest.raises(loop.NonFiniteLoss, match="epoch 1"):
        vae_entry.run(tiny(lr=1e12, epochs=1), Context())
    run = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("test-vae").experiment_id])[0]
    assert run.info.status == "FAILED" and "NonFiniteLoss" in run.data.tags["genlab.failure"]


# One epoch of the score-function estimator on tiny(): val_neg_elbo 553.0 nats at initialisation, 380.5 after
# (a fall of 172.5; reparam 157.6, detach 175.3); at lr = 1e-9 it stays at 553.0 (a fall below 0.01 nat).
SCORE_LEARNS_NATS = 100.0


@pytest.mark.parametrize("lr, learns", [(1e-3, True), (1e-9, False)], ids=["default-lr", "control-lr-1e-9"])
def test_score_estimator_trains(store, lr, learns):
    """The validation neg-ELBO falls by SCORE_LEARNS_NATS in one epoch; the control, a learning rate too small
    to move the weights, shows the test sees a run that does not learn."""
    cfg = tiny(estimator="score", epochs=1, lr=lr)
    context, device = Context(), resolve_device(cfg.device)
    splits = context.data(cfg.dataset, cfg.limit)
    # the model vae_entry.run starts from (seeded by cfg.seed), on its validation split with the noise train() uses
    initial = vae.evaluate(vae.initial_state(cfg, device)[0].model, splits.val_x, device, cfg.seed)["neg_elbo"]
    _, final = ran(vae_entry.run(cfg, context))
    assert math.isfinite(final["test_neg_elbo"]) and math.isfinite(final["val_neg_elbo"])
    assert (initial - final["val_neg_elbo"] > SCORE_LEARNS_NATS) == learns, (initial, final["val_neg_elbo"])


@pytest.mark.parametrize("estimator, through_recon", [("reparam", True), ("detach", False), ("score", True)])
def test_which_estimators_send_the_reconstruction_gradient_to_the_encoder(estimator, through_recon):
    """detach is plain backpropagation through a sample drawn without the trick: the encoder's gradient is the KL
    term's alone; reparam (through the sample) and score (through log q) add the reconstruction's."""
    torch.manual_seed(0)
    model = vae.VAE(4, "mlp")
    state = vae.TrainState(model, torch.optim.Adam(model.parameters()), torch.Generator().manual_seed(0),
                           torch.Generator().manual_seed(0), torch.tensor(500.0), [])
    xb = data.to_float(data.load("synthetic", limit=200).train_x[:16])
    terms, objective = vae._objective(tiny(estimator=estimator, arch="mlp"), state, xb, 1.0, contextlib.nullcontext())
    encoder = list(model.encoder.parameters())
    grads = torch.autograd.grad(objective, encoder, retain_graph=True)
    kl_only = torch.autograd.grad(terms["kl"].mean(), encoder)
    same = all(torch.allclose(g, k, atol=1e-6) for g, k in zip(grads, kl_only, strict=True))
    assert same != through_recon


def test_posterior_metrics_measure_the_codes_against_the_prior():
    z_mean, z_log_var = torch.zeros(500, 4), torch.zeros(500, 4)
    # q(z|x) = N(0, I) for every image: the z_mean are one point, but the draws are the prior itself
    prior = vae.posterior_metrics(z_mean, z_log_var, seed=0)
    assert prior["kl_active_units"] == 0 and abs(prior["aggregate_posterior_mmd"]) < 0.01
    z_mean[:, 0] = 3.0  # every code moved by 3 in one dimension: 4.5 nats there, and a cloud off the prior
    moved = vae.posterior_metrics(z_mean, z_log_var, seed=0)
    assert moved["kl_active_units"] == 1 and moved["aggregate_posterior_mmd"] > 0.1
    # near-point posteriors whose means spread like N(0, I): the aggregate is the prior again
    spread = torch.randn(500, 4, generator=torch.Generator().manual_seed(1))
    assert abs(vae.posterior_metrics(spread, torch.full((500, 4), -20.0), seed=0)["aggregate_posterior_mmd"]) < 0.01


class PixelScorer:
    """A stand-in for quality.Scorer whose features are the pixels themselves."""

    def features(self, images: torch.Tensor):
        return images.reshape(len(images), -1).numpy(), None


class ShadeDecoder(torch.nn.Module):
    """Grey images whose shade is linear in z[0]: evenly spaced codes decode to evenly spaced images."""

    def __init__(self):
        super().__init__()
        # large enough that float32 rounding stays far below one step (decoders have parameters: pictures.decode)
        self.slope = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.logit(0.5 + self.slope * z[:, :1]).expand(-1, 784).reshape(-1, 1, 28, 28)


def test_interpolation_measures_of_a_linear_decoder():
    x = data.load("synthetic", limit=200).test_x
    torch.manual_seed(0)
    model = vae.VAE(4, "mlp")
    model.decoder = ShadeDecoder()
    out = vae_entry.interpolation_measures(model, x, PixelScorer(), torch.device("cpu"))
    assert out["interp_smoothness"] == pytest.approx(1.0, abs=1e-4)
    # every image changes by dz0 per grey value along its line: a squared step of 784 dz0^2 at every point
    chosen = np.random.default_rng(vae_entry.INTERP_SEED).choice(len(x), size=2 * vae_entry.INTERP_PAIRS, replace=False)
    z = encode_means(model.encoder, x[torch.from_numpy(chosen)], torch.device("cpu"))[0].numpy()
    per_line = 784 * (z[vae_entry.INTERP_PAIRS:, 0] - z[:vae_entry.INTERP_PAIRS, 0]).astype(np.float64) ** 2
    d = np.repeat(per_line, vae_entry.PPL_POINTS)
    low, high = np.percentile(d, [1, 99])
    expected = d[(d >= low) & (d <= high)].mean()
    # within 10 %: the points of a line tie up to float32 rounding, so the 1st-99th percentile trim keeps an
    # arbitrary share of the extreme lines' copies (metrics.path_length itself is tested exactly)
    assert out["interp_path_length_pixels"] == pytest.approx(expected, rel=0.1)
    assert out["interp_path_length"] == pytest.approx(out["interp_path_length_pixels"], rel=1e-6)  # pixel features
    # a decoder 1.5 times as steep: 2.25 times the path length, the same evenness
    with torch.no_grad():
        model.decoder.slope.mul_(1.5)
    steeper = vae_entry.interpolation_measures(model, x, PixelScorer(), torch.device("cpu"))
    assert steeper["interp_path_length_pixels"] == pytest.approx(2.25 * out["interp_path_length_pixels"], rel=0.1)
    assert steeper["interp_smoothness"] == pytest.approx(1.0, abs=1e-4)
    # the report quotes these settings without importing torch: they must be the ones the runs use
    from genlab import metrics
    from reports.questions import p1q2

    assert p1q2.MEASURED_WITH == {"kl_active_threshold": metrics.KL_ACTIVE_THRESHOLD, "mmd_images": vae.MMD_IMAGES,
                                  "interp_pairs": vae_entry.INTERP_PAIRS, "interp_steps": vae_entry.INTERP_STEPS,
                                  "ppl_points": vae_entry.PPL_POINTS, "ppl_epsilon": vae_entry.PPL_EPSILON}


def test_evaluate_is_deterministic():
    splits = data.load("synthetic", limit=200)
    model, _ = vae.train(tiny(epochs=1), splits)
    device = next(model.parameters()).device
    assert vae.evaluate(model, splits.val_x, device, 0) == vae.evaluate(model, splits.val_x, device, 0)


@pytest.mark.parametrize("epochs, logged", [(2, [1, 2]), (16, list(range(1, 17))), (17, list(range(1, 18, 2))),
                                            (80, list(range(5, 81, 5))), (30, list(range(2, 31, 2)))])
def test_image_series_has_at_most_16_steps_ending_at_the_last_epoch(epochs, logged):
    steps = [e for e in range(1, epochs + 1) if vae_entry.image_series_epoch(e, epochs)]
    assert steps == logged and len(steps) <= vae_entry.IMAGE_SERIES_STEPS


def test_val_images_validates_on_the_first_images_of_the_slice():
    """Every epoch's val_* (and so the gate) is the evaluation of the first val_images validation images."""
    splits = data.load("synthetic", limit=200)

    class Curves(loop.NullSink):
        def __init__(self):
            self.seen = []

        def epoch(self, epoch, metrics, model, checkpoint):
            device = next(model.parameters()).device
            self.seen.append((metrics["val_neg_elbo"], vae.evaluate(model, splits.val_x[:100], device, 0)["neg_elbo"],
                              vae.evaluate(model, splits.val_x, device, 0)["neg_elbo"]))

    sink = Curves()
    vae.train(tiny(epochs=2, val_images=100), splits, sink)
    assert len(sink.seen) == 2
    for logged, first_100, whole in sink.seen:
        assert logged == pytest.approx(first_100, rel=1e-12) and logged != pytest.approx(whole, rel=1e-6)


def test_smoke_on_real_fashion_mnist(store, fashion_mnist_dir):
    run_id, final = ran(vae_entry.run(VAEConfig(dataset="fashion-mnist", epochs=1, limit=2000, experiment="smoke",
                                                eval_samples=0), Context()))
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    # untrained: 784*ln2 = 543 nats; one short epoch must already be far below
    assert final["test_neg_elbo"] < 450


def test_a_resumed_run_keeps_the_dtype_it_trained_in():
    """auto resolves where a run starts: rebuilt from its params, the run trains on in that dtype, not in what
    auto would resolve to on the machine that resumes it; a run logged before dtype existed trained in fp32."""
    from genlab.runs import gan as gan_entry

    assert vae_entry.config_from_params({"dtype": "auto", "compute_dtype": "bf16"}).dtype == "bf16"
    assert vae_entry.config_from_params({"dtype": "fp32"}).dtype == "fp32"
    assert gan_entry.config_from_params({"spectral_norm": "1"}).dtype == "fp32"
    assert gan_entry.config_from_params({"dtype": "auto", "compute_dtype": "fp32"}).dtype == "fp32"
