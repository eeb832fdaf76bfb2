"""genlab bench: the report it writes and logs, and the side-by-side helpers. (Speed itself is never a test.)"""

import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from genlab import bench, data
from genlab.entries import Context


def test_bench_writes_json_markdown_and_a_bench_run(store, tmp_path, monkeypatch):
    cfg = bench.BenchConfig(profile="quick", dataset="synthetic", batch_size=64, repeats=1, output_dir=str(tmp_path))
    monkeypatch.setitem(bench.SIZES["quick"], "study_limit", 128)  # the study's runs: 2 batches each
    monkeypatch.setitem(bench.SIZES["quick"], "study_rounds", 1)  # the full profile's measure, on a tiny study
    monkeypatch.setattr(bench, "STUDY_PLANS", ("p1q3",))  # 4 runs (the bench's 8: see the test of its plans)

    def absent(ctx):
        return [bench.Measure("absent_piece", None, "s", reason="not available here")]

    monkeypatch.setattr(bench, "MEASUREMENTS", [bench.measure_data_pipeline, bench.measure_fid, bench.measure_gan,
                                                absent, bench.measure_dask_startup, bench.measure_study])
    result = bench.run(cfg, Context(splits={("synthetic", 0): data.load("synthetic")}))
    run_id = result.run_id
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["results"].keys() >= {"data_pipeline_speedup", "fid_seconds_10k", "absent_piece"}
    assert result.lines == (f"bench run {run_id} ({saved['total_seconds']:.0f} s): wrote {tmp_path / 'bench.json'} "
                            f"and {tmp_path / 'bench.md'}",)
    pipeline = saved["results"]["data_pipeline_speedup"]
    assert pipeline["value"] > 0 and pipeline["goal"] == ">= 2" and pipeline["detail"]["genlab_images_per_second"] > 0
    fid = saved["results"]["fid_seconds_10k"]
    assert fid["value"] > 0 and fid["goal"] == "<= 3" and fid["detail"]["images"] == 10_000
    assert fid["detail"]["classifier"].startswith("untrained")  # the bench never trains one
    gan = saved["results"]["gan_images_per_second"]
    assert gan["value"] > 0 and gan["detail"]["vae_images_per_second"] > 0
    speedup = saved["results"]["study_speedup_2_workers"]
    assert speedup["goal"] == ">= 1.3" and speedup["value"] > 0, speedup
    side = speedup["detail"]
    assert side["one_worker_seconds"] > 0 and side["two_workers_seconds"] > 0 and side["rounds"] == 1
    assert speedup["value"] == pytest.approx(side["one_worker_seconds"] / side["two_workers_seconds"])
    planned = 4  # p1q3 quick: z 2 and 128, VAE and autoencoder (not the positive control's)
    assert side["one_worker_runs_trained"] == side["two_workers_runs_trained"] == planned
    assert side["one_worker_runs_trained_per_round"] == side["two_workers_runs_trained_per_round"] == [planned]
    startup = saved["results"]["dask_startup_seconds"]
    assert startup["value"] > 0 and startup["unit"] == "s"
    assert startup["detail"]["start_seconds"] > 0 and startup["detail"]["close_seconds"] > 0
    assert startup["value"] == pytest.approx(startup["detail"]["start_seconds"] + startup["detail"]["close_seconds"])
    # each study side had its own store: nothing of it in the bench's store, whose URI and folder are back
    assert os.environ["MLFLOW_TRACKING_URI"] == store and Path.cwd() == tmp_path
    assert MlflowClient().get_experiment_by_name(f"{bench.STUDY_NAME}-p1q3") is None
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


def test_the_study_measure_runs_the_labs_plans_small(tmp_path):
    import torch

    from genlab.configs import StudyConfig
    from genlab.plans import load_plans, select

    cfg = bench.BenchConfig(profile="quick", dataset="synthetic", batch_size=64, output_dir=str(tmp_path))
    ctx = bench.Bench(cfg, bench.SIZES["quick"], data.load("synthetic"), torch.device("cpu"))
    folder = bench.write_study_plans(ctx, tmp_path)
    only = ",".join(bench.STUDY_PLANS)
    ours = select(load_plans(StudyConfig(plans=str(folder))), only)
    labs = select(load_plans(StudyConfig()), only)
    labs = [r for r in labs if "control" not in r.arm]  # the positive control is the sweep's model on fewer images
    assert [r.name for r in ours] == [r.name for r in labs] and len(ours) == 10  # P1Q2 6 (with its conv check), P1Q3 4
    assert not any(r.refs for r in ours)  # independent runs: all can go side by side
    for mine, lab in zip(ours, labs, strict=True):
        assert mine.entry.name == lab.entry.name == "train_vae"
        small = {"dataset": "synthetic", "limit": bench.SIZES["quick"]["study_limit"], "epochs": 1, "batch_size": 64,
                 "device": "cpu", "eval_samples": 0, "nll_images": 0}
        assert mine.params == {**lab.params, **small}


def test_study_and_dask_startup_are_not_measured_on_a_gpu_or_without_dask(tmp_path, monkeypatch):
    import sys

    import torch

    cfg = bench.BenchConfig(profile="quick", dataset="synthetic", batch_size=64, output_dir=str(tmp_path))
    splits = data.load("synthetic")
    for device, monkeyed, said in ((torch.device("cuda"), False, "GPU"), (torch.device("cpu"), True, "dask")):
        if monkeyed:
            monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
        ctx = bench.Bench(cfg, bench.SIZES["quick"], splits, device)
        measures = bench.measure_study(ctx) + bench.measure_dask_startup(ctx)
        assert [m.name for m in measures] == ["study_speedup_2_workers", "dask_startup_seconds"]
        for m in measures:
            assert m.value is None and said in m.reason and m.as_dict()["status"] == "not measured"


def test_search_rate_runs_a_fresh_study_in_the_bench_experiment(store, tmp_path):
    import torch

    cfg = bench.BenchConfig(profile="quick", dataset="synthetic", batch_size=64, output_dir=str(tmp_path))
    sizes = {**bench.SIZES["quick"], "search_trials": 2, "search_limit": 256}
    ctx = bench.Bench(cfg, sizes, data.load("synthetic"), torch.device("cpu"))
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


def test_fixed_cost_shares_come_from_the_full_profile_runs_timings(store, tmp_path):
    import mlflow

    cfg = bench.BenchConfig(profile="quick", dataset="synthetic", batch_size=64, repeats=1, output_dir=str(tmp_path))
    ctx = bench.Bench(cfg, bench.SIZES["quick"], data.load("synthetic"), bench.resolve_device("cpu"))
    assert all(m.value is None and "genlab study --profile full" in m.reason for m in bench.measure_fixed_costs(ctx))
    planted = [("vae", "conv", "full", {"train": 60, "validation": 30, "models": 10}),
               ("vae", "conv", "full", {"train": 80, "validation": 10, "models": 10}),
               ("vae", "mlp", "quick", {"train": 1, "validation": 99}),  # not the full profile: left out
               ("gan", "conv", "full", {"train": 50, "evaluation": 40})]
    for kind, arch, profile, phases in planted:
        with mlflow.start_run(tags={"genlab.kind": kind, "genlab.profile": profile}):
            mlflow.log_param("arch", arch)
            mlflow.log_metrics({**{f"seconds_{k}": v for k, v in phases.items()}, "seconds_total": 100.0,
                                "seconds_other": 100.0 - sum(phases.values())})
    measured = {m.name: m for m in bench.measure_fixed_costs(ctx)}
    conv, gan = measured["fixed_cost_share_conv_vae"], measured["fixed_cost_share_gan"]
    assert conv.value == pytest.approx(0.3) and conv.detail["runs"] == 2  # 1 - median(0.6, 0.8)
    assert conv.detail["share_validation"] == pytest.approx(0.2) and conv.detail["share_models"] == pytest.approx(0.1)
    assert gan.value == pytest.approx(0.5) and gan.detail["share_other"] == pytest.approx(0.1)
    assert measured["fixed_cost_share_mlp_vae"].value is None
