"""Calibration: the metrics rank reference image sets as a person would (on the synthetic set)."""

import json

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from genlab import calibrate, cli, data
from genlab.configs import ClassifierConfig
from genlab.entries import Context
from genlab.runs import classifier as classifier_entry


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One calibration run on the synthetic set, with a synthetic classifier trained in this store."""
    tmp = tmp_path_factory.mktemp("calibrate")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.setenv("GENLAB_CACHE_DIR", str(tmp / "cache"))
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        classifier_run = classifier_entry.run(ClassifierConfig(dataset="synthetic"), Context()).run_id
        run_id = calibrate.run(calibrate.CalibrationConfig(dataset="synthetic"), Context()).run_id
        rows = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/calibration.json"))
        yield classifier_run, run_id, {row["case"]: row for row in rows}


def test_calibration_run_logs_the_table(calibrated):
    classifier_run, run_id, rows = calibrated
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["genlab.kind"] == "calibration"
    assert run.data.params["fid_classifier"] == classifier_run
    assert set(rows) == set(calibrate.CASES)
    assert {f"{case}_{m}" for case in calibrate.CASES for m in calibrate.METRICS} <= set(run.data.metrics)
    assert {f.path for f in client.list_artifacts(run_id)} >= {"calibration.csv", "calibration.json"}
    logged = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/calibration.json"))
    assert [row["case"] for row in logged] == list(calibrate.CASES)
    train_y = data.load("synthetic").train_y
    assert rows["train_vs_test"]["n"] == len(train_y) and rows["single_class"]["n"] == int((train_y == 0).sum())


def test_metrics_rank_the_reference_sets_as_a_person_would(calibrated):
    _, _, rows = calibrated
    for metric in ("fid_proxy", "kid_proxy"):
        value = {case: row[metric] for case, row in rows.items()}
        assert value["train_vs_test"] < value["noise_005"] < value["noise_010"], metric
        assert value["train_vs_test"] < value["single_class"], metric
        assert value["uniform_noise"] == max(value.values()), metric
    single = rows["single_class"]
    assert single["precision"] > 0.8 and single["recall"] < 0.3 and single["class_coverage"] == 0.1
    assert rows["train_vs_test"]["recall"] > 0.8 and rows["train_vs_test"]["class_coverage"] == 1.0
    assert rows["uniform_noise"]["precision"] < 0.05


def test_gaussian_blur_keeps_mass_and_spreads_a_point():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 14, 14] = 1.0
    blurred = calibrate.gaussian_blur(image)
    assert blurred.sum().item() == pytest.approx(1.0, rel=1e-5)
    assert blurred[0, 0, 14, 14] < 0.2 and blurred[0, 0, 14, 15] == pytest.approx(blurred[0, 0, 15, 14].item())


BAD_CALIBRATE = [(["--samples", "10"], "samples"), (["--single-class", "10"], "single_class"),
                 (["--dataset", "cifar10"], "dataset"), (["--device", "tpu"], "device")]


def test_calibrate_bad_input_is_one_line_and_creates_no_run(store, capsys):
    for args, name in BAD_CALIBRATE:
        assert cli.main(["calibrate", *args]) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and name in err and "Traceback" not in err, args
    client = MlflowClient()
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_the_declared_minimum_of_samples_is_the_fid_minimum():
    import dataclasses

    from genlab import configs, scoring

    samples = {f.name: f for f in dataclasses.fields(configs.CalibrationConfig)}["samples"]
    assert samples.metadata["at_least"] == scoring.MIN_SAMPLES
