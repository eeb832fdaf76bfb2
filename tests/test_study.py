"""`genlab study`: the dry run, a bad plan on the command line, and a tiny study that reuses its runs (the plans
themselves: tests/test_plans.py)."""

import json
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from genlab import cli, study
from genlab.configs import StudyConfig
from genlab.plans import load_plans, select

Q1 = """
question: q1
defaults: {dataset: synthetic, limit: 200, epochs: 1, batch_size: 64, latent_dim: 2, beta: 1.0, eval_samples: 0,
           nll_images: 50}
seeds: {quick: [0, 1], full: [0, 1, 2]}
runs:
  - name: q1_vae_s{seed}
    entry: train_vae
    arm: beta={beta}
"""
Q2 = """
question: q2
defaults: {dataset: synthetic, limit: 200}
runs:
  - name: q2_gradvar
    entry: gradvar
    arm: best
    params: {vae_run: "@q1_vae_*:min(test_neg_elbo)", latent_dim: 2, beta: 1.0, n_samples: 6, batch_size: 8}
"""


def write_plans(folder, **plans) -> str:
    folder.mkdir(exist_ok=True)
    for name, text in plans.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return str(folder)


# ---------------------------------------------------------------- the dry run

def test_dry_run_lists_every_run_with_its_reference_and_a_wall_time_estimate(capsys):
    assert cli.main(["study", "--profile", "paper", "--only", "p2q1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "about" in out and "images/s" in out and "one at a time" in out
    for s in (0, 1, 2):
        assert f"init_from=@p1q2_conv_beta1_s{s}" in out and f"init_from=@p1q2_conv_beta0_s{s}" in out


def test_estimate_scales_with_the_measured_speed():
    runs = select(load_plans(StudyConfig(profile="full")), "p2q1")
    slow = study.wall_time_estimate(runs, {"conv": 100.0, "mlp": 1000.0})
    fast = study.wall_time_estimate(runs, {"conv": 200.0, "mlp": 2000.0})
    overhead = len(runs) * study.RUN_OVERHEAD_S
    assert fast - overhead == pytest.approx((slow - overhead) / 2)


# ---------------------------------------------------------------- a bad plan on the command line

def test_cli_bad_plan_is_exit_2_and_creates_nothing(tmp_path, monkeypatch, capsys):
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path)
    folder = write_plans(tmp_path / "plans", q1=Q1.replace("latent_dim: 2,", "latent_dim: 0,"))
    code = cli.main(["study", "--plans", folder])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "latent_dim must be an integer >= 1" in err
    assert not db.exists()  # checked before the tracking store is even opened


# ---------------------------------------------------------------- a tiny study, twice

def test_a_study_on_shifted_seeds_trains_and_tags_other_runs(store, tmp_path, capsys):
    folder = write_plans(tmp_path / "plans", q1=Q1)
    assert cli.main(["study", "--plans", folder, "--study", "tiny-moved", "--seed-offset", "3"]) == 0
    runs = MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()])
    assert {r.data.tags["genlab.ref"]: r.data.params["seed"] for r in runs} == {"q1_vae_s3": "3", "q1_vae_s4": "4"}
    assert {r.data.tags["genlab.seed_offset"] for r in runs} == {"3"}


def test_tiny_study_runs_tags_and_reuses_every_run(store, tmp_path, capsys, monkeypatch):
    folder = write_plans(tmp_path / "plans", q1=Q1, q2=Q2)
    assert cli.main(["study", "--plans", folder, "--study", "tiny"]) == 0
    out, err = capsys.readouterr()
    assert "3 runs trained, 0 reused" in out and "[study quick 3/3]" in err and "ETA" in err
    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    by_ref = {r.data.tags["genlab.ref"]: r for r in runs}
    assert set(by_ref) == {"q1_vae_s0", "q1_vae_s1", "q2_gradvar"}
    for r in runs:
        assert r.data.tags["genlab.study"] == "tiny" and r.data.tags["genlab.profile"] == "quick"
        assert r.data.tags["genlab.seed_offset"] == "0"
    assert by_ref["q1_vae_s1"].data.tags["genlab.arm"] == "beta=1" and by_ref["q1_vae_s1"].data.params["beta"] == "1.0"
    assert by_ref["q1_vae_s1"].data.tags["genlab.question"] == "q1"
    assert client.get_experiment(by_ref["q2_gradvar"].info.experiment_id).name == "tiny-q2"
    # the reference picked the VAE with the lowest test_neg_elbo
    best = min(("q1_vae_s0", "q1_vae_s1"), key=lambda n: by_ref[n].data.metrics["test_neg_elbo"])
    assert by_ref["q2_gradvar"].data.params["vae_run"] == by_ref[best].info.run_id
    assert by_ref["q2_gradvar"].data.metrics["encoder_grad_norm_no_trick"] == 0.0
    # P1Q2 extras of a 2-d latent VAE run
    vae_id = by_ref["q1_vae_s1"].info.run_id
    assert {"kl_per_dim.json", "latent_scatter.png"} <= {f.path for f in client.list_artifacts(vae_id)}
    assert len(json.loads(open(client.download_artifacts(vae_id, "kl_per_dim.json", str(tmp_path))).read())) == 2
    assert 0 <= by_ref["q1_vae_s1"].data.metrics["latent_probe_accuracy"] <= 1

    # Second invocation (as `mlflow run . -e study` starts it: inside a run of its own), and one that selects only
    # q2 (pulling in q1's runs): nothing new is trained.
    umbrella = client.create_run(client.get_experiment_by_name("Default").experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", umbrella)
    assert cli.main(["study", "--plans", folder, "--study", "tiny"]) == 0
    assert "0 runs trained, 3 reused" in capsys.readouterr().out
    tags = client.get_run(umbrella).data.tags
    assert tags["genlab.kind"] == "study" and tags["genlab.summary"].startswith("0 trained, 3 reused, 0 failed")
    assert cli.main(["study", "--plans", folder, "--study", "tiny", "--only", "q2"]) == 0
    assert "0 runs trained, 3 reused" in capsys.readouterr().out
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 3 + 1  # + umbrella
    # another profile is another set of runs (not run here: the dry run says what it would train)
    assert cli.main(["study", "--plans", folder, "--study", "tiny", "--profile", "full", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("would train") == 4
