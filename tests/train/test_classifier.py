"""The feature classifier: its run and registry entry, finding it again (never silently retrained), the cached
real statistics, the Scorer, and the sample-quality metrics a VAE run logs."""

import math

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from genlab import cli, data
from genlab.configs import ClassifierConfig, VAEConfig
from genlab.entries import Context
from genlab.models.classifier import FEATURE_DIM, Classifier
from genlab.runs import classifier as classifier_entry
from genlab.runs import vae as vae_entry

from ..conftest import ran

SCORE_KEYS = {"fid_proxy", "kid_proxy", "kid_proxy_std", "precision", "recall", "density", "coverage",
              "class_coverage", "is_proxy"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store and cache in which get_scorer('synthetic') has trained its classifier (in a child process)."""
    tmp = tmp_path_factory.mktemp("classifier")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.setenv("GENLAB_CACHE_DIR", str(tmp / "cache"))
        assert classifier_entry.find_classifier(ClassifierConfig(dataset="synthetic")) is None
        # as inside `mlflow run`: the classifier must still get a run of its own
        mp.setenv("MLFLOW_RUN_ID", "0123456789abcdef0123456789abcdef")
        scorer = classifier_entry.get_scorer("synthetic")
        mp.delenv("MLFLOW_RUN_ID")
        yield tmp, scorer


def test_classifier_gives_128_d_features_and_10_logits():
    model = Classifier().eval()
    x = torch.rand(5, 1, 28, 28)
    assert model.features(x).shape == (5, FEATURE_DIM) and model(x).shape == (5, 10)
    feats, logits = model.features_and_logits(x)
    assert torch.equal(feats, model.features(x)) and torch.allclose(logits, model(x))


def test_get_scorer_trains_one_registered_classifier_then_reuses_it(trained):
    tmp, scorer = trained
    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (run,) = runs  # exactly one run: the classifier
    assert run.info.run_id == scorer.run_id and run.info.status == "FINISHED"
    assert run.data.tags["genlab.kind"] == "classifier" and run.info.run_name == "classifier synthetic s0"
    assert run.data.metrics["test_accuracy"] > 0.9  # ten very distinct shapes
    assert {"train_loss", "val_accuracy", "epoch_seconds"} <= set(run.data.metrics)
    (version,) = client.search_model_versions("name='genlab-classifier-synthetic'")
    assert version.run_id == scorer.run_id
    cached = list((tmp / "cache").glob(f"real-stats-{scorer.run_id}-*.npz"))
    assert len(cached) == 1
    # a second scorer (another VAE run, say) finds the same classifier and the cached statistics
    again = classifier_entry.get_scorer("synthetic")
    assert again.run_id == scorer.run_id
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 1
    np.testing.assert_array_equal(again.real.features, scorer.real.features)
    assert {f.path for f in client.list_artifacts(scorer.run_id, "checkpoint")} == {"checkpoint/classifier.pt"}


def test_scores_of_real_test_images_are_near_perfect(trained):
    _, scorer = trained
    test = data.to_float(data.load("synthetic").test_x)
    scores = scorer.score(test, prefix="recon_")
    assert set(scores) == {f"recon_{k}" for k in SCORE_KEYS}
    assert all(math.isfinite(v) for v in scores.values())
    assert scores["recon_fid_proxy"] < 1e-6 * np.trace(scorer.real.sigma)  # the very same images
    noisy = (test + 0.2 * torch.rand_like(test)).clamp(0, 1)
    assert scorer.fid_proxy(noisy) == pytest.approx(scorer.score(noisy)["fid_proxy"])  # fid alone, the same number
    assert scores["recon_precision"] == 1.0 and scores["recon_recall"] == 1.0 and scores["recon_coverage"] == 1.0
    assert scores["recon_class_coverage"] == 1.0 and scores["recon_is_proxy"] > 8


def test_scorer_rejects_bad_images_with_one_line(trained):
    _, scorer = trained
    good = torch.rand(200, 1, 28, 28)
    for images, message in ((good[:100], "at least 129 images"), (good.clone().fill_(float("nan")), "NaN"),
                            (good * 2 - 1, r"in \[0, 1\]"), (good.reshape(200, 784)[:, None, :, None], "28")):
        with pytest.raises(ValueError, match=message) as info:
            scorer.score(images)
        assert "\n" not in str(info.value)


def test_vae_run_logs_sample_quality_and_the_classifier(trained):
    _, scorer = trained
    # 8 epochs on the whole synthetic set (recon_fid_proxy 108 vs fid_proxy 325): after one epoch on 300 images the
    # wide decoder was still so close to its initialisation that both were ~1,800 and in either order
    cfg = VAEConfig(dataset="synthetic", epochs=8, limit=0, batch_size=64, latent_dim=4, experiment="eval",
                    eval_samples=300, nll_images=50)
    run_id, final = ran(vae_entry.run(cfg, Context()))
    run = MlflowClient().get_run(run_id)
    assert run.data.params["fid_classifier"] == scorer.run_id and run.data.params["eval_samples"] == "300"
    expected = SCORE_KEYS | {f"recon_{k}" for k in SCORE_KEYS} | {"eval_seconds", "aggregate_fid_proxy",
                                                                   "interp_smoothness"}
    assert expected <= set(run.data.metrics) and expected <= set(final)
    # a barely trained VAE is far from the data; its reconstructions are closer than its prior samples
    assert final["fid_proxy"] > 0 and final["recon_fid_proxy"] < final["fid_proxy"]
    # codes drawn from the posteriors of test images decode closer to the data than prior draws do
    assert 0 < final["aggregate_fid_proxy"] < final["fid_proxy"]
    assert 1 <= final["interp_smoothness"] < vae_entry.INTERP_STEPS - 1  # 1: even steps; 15: one jump


BAD_TRAIN_CLASSIFIER = [(["--epochs", "0"], "epochs"), (["--lr", "-1"], "lr"), (["--dataset", "cifar10"], "dataset"),
                        (["--batch-size", "0"], "batch_size"), (["--limit", "-5"], "limit"),
                        (["--dataset", "synthetic", "--batch-size", "100000"], "batch_size")]


def test_train_classifier_bad_input_is_one_line_and_creates_no_run(store, capsys):
    for args, name in BAD_TRAIN_CLASSIFIER:
        assert cli.main(["train-classifier", *args]) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and name in err and "Traceback" not in err, args
    client = MlflowClient()
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_smoke_on_real_fashion_mnist(store, fashion_mnist_dir):
    cfg = ClassifierConfig(epochs=1, limit=2000, experiment="smoke")
    run_id, final = ran(classifier_entry.run(cfg, Context()))
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"
    assert final["test_accuracy"] > 0.5  # chance is 0.1; one short epoch on 2,000 images
