"""genlab bench: the report it writes and logs, and the side-by-side helpers. (Speed itself is never a test.)"""

import json

from mlflow.tracking import MlflowClient

from genlab import bench, data


def test_bench_writes_json_markdown_and_a_bench_run(store, tmp_path):
    cfg = bench.BenchConfig(profile="quick", dataset="synthetic", batch_size=64, repeats=1, output_dir=str(tmp_path))

    def absent(ctx):
        return [bench.Measure("absent_piece", None, "s", reason="not available here")]

    measurements = [bench.measure_data_pipeline, bench.measure_fid, bench.measure_gan, absent]
    run_id, report = bench.main(cfg, measurements, splits=data.load("synthetic"))
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["results"].keys() == report["results"].keys() >= {"data_pipeline_speedup", "fid_seconds_10k"}
    pipeline = saved["results"]["data_pipeline_speedup"]
    assert pipeline["value"] > 0 and pipeline["goal"] == ">= 2" and pipeline["detail"]["genlab_images_per_second"] > 0
    fid = saved["results"]["fid_seconds_10k"]
    assert fid["value"] > 0 and fid["goal"] == "<= 3" and fid["detail"]["images"] == 10_000
    assert fid["detail"]["classifier"].startswith("untrained")  # the bench never trains one
    gan = saved["results"]["gan_images_per_second"]
    assert gan["value"] > 0 and gan["detail"]["vae_images_per_second"] > 0
    absent = saved["results"]["absent_piece"]
    assert absent["value"] is None and absent["status"] == "not measured" and absent["reason"]
    table = (tmp_path / "bench.md").read_text()
    assert "| data_pipeline_speedup |" in table and "not measured" in table and "Machine:" in table
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["genlab.kind"] == "bench"
    assert run.data.tags["genlab.profile"] == "quick" and "absent_piece" not in run.data.metrics
    assert run.data.metrics["fid_seconds_10k"] == fid["value"]
    assert run.data.metrics["data_pipeline_speedup"] == pipeline["value"]
    assert {f.path for f in MlflowClient().list_artifacts(run_id)} == {"bench.json", "bench.md"}


def test_search_rate_runs_a_fresh_study_in_the_bench_experiment(store, tmp_path):
    import torch

    cfg = bench.BenchConfig(profile="quick", dataset="synthetic", batch_size=64, output_dir=str(tmp_path))
    sizes = {**bench.SIZES["quick"], "search_trials": 2, "search_limit": 256}
    ctx = bench.Context(cfg, sizes, data.load("synthetic"), torch.device("cpu"))
    # timed epochs never score samples: with a classifier in the store that needs a full test split
    assert ctx.vae_config(64).eval_samples == 0
    rate, parent = bench.search_trials_per_minute(ctx, 1, tmp_path, 0)
    assert rate > 0
    client = MlflowClient()
    children = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert client.get_run(parent).info.status == "FINISHED"


def test_sides_alternate_and_the_ratio_is_the_median_of_pairs():
    calls = []
    bench.interleaved({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 1.0}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert bench.median_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 2.0]) == 3.0


def test_goals_and_not_measured():
    assert bench.Measure("x", 1.9, goal=(">=", 2.0)).met is False
    assert bench.Measure("y", 0.02, "fraction", goal=("<=", 0.03)).met is True
    missing = bench.Measure("z", None, reason="module absent")
    assert missing.met is None and missing.as_dict()["status"] == "not measured"


def test_mlproject_bench_entry_matches_the_config():
    import dataclasses
    from pathlib import Path

    import yaml

    entry = yaml.safe_load((Path(__file__).resolve().parents[1] / "MLproject").read_text())["entry_points"]["bench"]
    fields = {f.name for f in dataclasses.fields(bench.BenchConfig)}
    assert set(entry["parameters"]) == fields
    for name in fields:
        assert f"--{name.replace('_', '-')} {{{name}}}" in entry["command"]
