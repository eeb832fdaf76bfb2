"""genlab.tracking: the one check of a run that another run consumes, and a Run that logs by its own id."""

import math

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from genlab import tags, tracking


def _run(kind: str | None, status: str) -> str:
    """A run of ``kind`` (None: no genlab kind tag) ended with ``status`` (RUNNING: left running)."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name("consumed")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("consumed")
    run_id = client.create_run(experiment_id, tags={tags.KIND: kind} if kind else {}).info.run_id
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


@pytest.mark.parametrize("kind,status,wanted,message", [
    (None, "", tags.VAE, "run '0123456789abcdef0123456789abcdef' not found"),
    (tags.GAN, "FINISHED", tags.VAE, "is a gan run, not a vae run"),
    (None, "FINISHED", tags.VAE, "is a non-genlab run, not a vae run"),
    (tags.PROBE, "FINISHED", (tags.VAE, tags.GAN), "is a probe run, not a vae or gan run"),
    (tags.VAE, "RUNNING", tags.VAE, "is RUNNING, not FINISHED"),
    (tags.VAE, "FAILED", tags.VAE, "is FAILED, not FINISHED"),
])
def test_load_trained_run_refuses_in_one_line(store, kind, status, wanted, message):
    run_id = _run(kind, status) if status else "0123456789abcdef0123456789abcdef"
    with pytest.raises(tracking.TrackingError) as refused:
        tracking.load_trained_run(run_id, wanted)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert str(refused.value).startswith(f"run '{run_id}' ")


def test_load_trained_run_accepts_a_finished_run_and_resume_an_unfinished_one(store):
    finished, crashed = _run(tags.GAN, "FINISHED"), _run(tags.VAE, "FAILED")
    assert tracking.load_trained_run(finished, (tags.VAE, tags.GAN)).info.run_id == finished
    assert tracking.load_trained_run(crashed, tags.VAE, require_finished=False).info.status == "FAILED"
    with pytest.raises(tracking.TrackingError, match="is a vae run, not a gan run"):
        tracking.load_trained_run(crashed, tags.GAN, require_finished=False)  # the kind is checked all the same


def test_run_logs_to_its_own_run_while_another_is_active(store):
    other = _run(tags.VAE, "RUNNING")
    with mlflow.start_run(experiment_id=MlflowClient().get_run(other).info.experiment_id) as active:
        run = tracking.Run(other)
        run.log_metrics({"loss": 1.5}, step=3)
        run.log_params({"lr": 0.1})
        run.log_params({"lr": 0.2})  # already on the run: kept, not an error
        run.set_tags({tags.NOTE: "logged by id"})
        run.log_text("hello", "notes/hello.txt")
        run.log_image_step(np.zeros((4, 4), np.uint8), "samples", 3)
        run.log_dataset("synthetic", "/data/synthetic", "d1g357", "train", 300)
        with pytest.raises(RuntimeError, match="not the active run"):
            run.log_model(None, "decoder", None)  # MLflow would file it under the active run's experiment
    client = MlflowClient()
    logged, bystander = client.get_run(other), client.get_run(active.info.run_id)
    assert [(m.step, m.value) for m in client.get_metric_history(other, "loss")] == [(3, 1.5)]
    assert logged.data.params == {"lr": "0.1"} and logged.data.tags[tags.NOTE] == "logged by id"
    paths = {f.path for f in client.list_artifacts(other, "notes")} | {f.path for f in client.list_artifacts(other, "images")}
    assert "notes/hello.txt" in paths and any(p.startswith("images/samples+step+3+") for p in paths), paths
    assert len(logged.inputs.dataset_inputs) == 1
    assert not bystander.data.metrics and not bystander.data.params and not client.list_artifacts(active.info.run_id)
    assert not bystander.inputs.dataset_inputs


def test_run_refuses_non_finite_metrics_and_logs_none_of_the_batch(store):
    run_id = _run(tags.VAE, "RUNNING")
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="non-finite metric.*loss at step 2"):
            tracking.Run(run_id).log_metrics({"ok": 1.0, "loss": bad}, step=2)
    assert MlflowClient().get_run(run_id).data.metrics == {}


def test_dataset_input_is_what_mlflow_logs_for_a_local_data_set(store):
    """The UI's Datasets column: the same entity and input tags as MLflow's own ``mlflow.log_input``."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    ours, reference = _run(tags.VAE, "RUNNING"), _run(tags.VAE, "RUNNING")
    tracking.Run(ours).log_dataset("fashion-mnist", "/data/fm", "abc123", "val", 5000)
    with mlflow.start_run(run_id=reference):
        mlflow.log_input(MetaDataset(LocalArtifactDatasetSource("/data/fm"), name="fashion-mnist-val", digest="abc123"),
                         context="val", tags={"images": "5000"})

    def described(run_id: str) -> tuple:
        (given,) = MlflowClient().get_run(run_id).inputs.dataset_inputs
        ds = given.dataset
        return (ds.name, ds.digest, ds.source_type, ds.source, ds.schema, ds.profile,
                sorted((t.key, t.value) for t in given.tags))

    assert described(ours) == described(reference)
    assert described(ours)[:4] == ("fashion-mnist-val", "abc123", "local", '{"uri": "/data/fm"}')
    assert ("mlflow.data.context", "val") in described(ours)[6] and ("images", "5000") in described(ours)[6]
