"""genlab bench: the report it writes and logs, and the side-by-side helpers. (Speed itself is never a test.)"""

import json

from mlflow.tracking import MlflowClient

from genlab import bench, data


def test_bench_writes_json_markdown_and_a_bench_run(store, tmp_path):
    cfg = bench.BenchConfig(profile="quick", dataset="synthetic", batch_size=64, repeats=1, output_dir=str(tmp_path))
    measurements = [bench.measure_data_pipeline, bench.measure_fid, bench.measure_gan, bench.measure_search]
    run_id, report = bench.main(cfg, measurements, splits=data.load("synthetic"))
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["results"].keys() == report["results"].keys() >= {"data_pipeline_speedup", "fid_seconds_10k"}
    pipeline = saved["results"]["data_pipeline_speedup"]
    assert pipeline["value"] > 0 and pipeline["goal"] == ">= 2" and pipeline["detail"]["genlab_images_per_second"] > 0
    fid = saved["results"]["fid_seconds_10k"]
    assert fid["value"] is None and fid["status"] == "not measured" and fid["reason"]
    table = (tmp_path / "bench.md").read_text()
    assert "| data_pipeline_speedup |" in table and "not measured" in table and "Machine:" in table
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["genlab.kind"] == "bench"
    assert run.data.tags["genlab.profile"] == "quick" and "fid_seconds_10k" not in run.data.metrics
    assert run.data.metrics["data_pipeline_speedup"] == pipeline["value"]
    assert {f.path for f in MlflowClient().list_artifacts(run_id)} == {"bench.json", "bench.md"}


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
