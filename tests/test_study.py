"""`genlab study`: plan loading and strict validation, the lab's plans, and a tiny study that reuses its runs."""

import json
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from genlab import cli, study
from genlab.config import ConfigError

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


def cfg(plans: str, **kw) -> study.StudyConfig:
    return study.StudyConfig(plans=plans, **kw)


# ---------------------------------------------------------------- the lab's plans

@pytest.mark.parametrize("profile", study.PROFILES)
def test_the_lab_plans_load_for_every_profile(profile):
    plans = study.load_plans(study.StudyConfig(profile=profile))
    by_q = {p.question: p for p in plans}
    assert {"p1q1", "p1q2", "p1q3", "p2q1", "p2q2", "search"} <= set(by_q)
    assert not by_q["search"].default and all(by_q[q].default for q in ("p1q1", "p1q2", "p1q3", "p2q1", "p2q2"))
    arms = {q: {r.arm for r in p.runs} for q, p in by_q.items()}
    assert {"reparam", "score", "detach", "gradvar", "gradvar_init"} == arms["p1q1"]
    assert {"vae_decoder", "random", "ae_decoder", "ae_decoder_matched"} == arms["p2q1"]
    assert any(r.params["latent_dim"] == 2 for r in by_q["p1q2"].runs)  # the latent scatter
    lab = [r for q in ("p1q1", "p1q2", "p1q3", "p2q1", "p2q2") for r in by_q[q].runs]
    if profile == "quick":  # one seed, small subsets, few epochs: a pipeline check
        assert {r.params["seed"] for r in lab} == {0}
        assert all(0 < r.params["limit"] <= 5000 and r.params.get("epochs", 0) <= 3 for r in lab)
        return
    # full and paper: every condition (arm and swept value) has >= 3 seeds
    conditions: dict[tuple, set] = {}
    for r in lab:
        key = (r.question, r.arm, r.params.get("latent_dim"), r.params.get("beta"))
        conditions.setdefault(key, set()).add(r.params["seed"])
    assert all(len(seeds) >= 3 for seeds in conditions.values()), conditions
    if profile == "paper":
        assert all(r.params["limit"] == 0 for r in lab if r.entry.name == "train_gan")  # all training images


def test_gans_and_probes_start_from_the_networks_of_their_own_seed():
    """Paired replication: GAN seed s from the seed-s VAE / autoencoder, the probe of seed s on the seed-s pair."""
    plans = {p.question: p for p in study.load_plans(study.StudyConfig(profile="full"))}
    for r in plans["p2q1"].runs:
        if r.arm != "random":
            beta = 1 if r.arm == "vae_decoder" else 0
            assert r.params["init_from"] == f"@p1q2_conv_beta{beta}_s{r.params['seed']}"
        assert r.params.get("latent_fit", "none") == ("codes" if r.arm == "ae_decoder_matched" else "none")
    probes = plans["p2q2"].runs
    assert [(r.params["vae_run"], r.params["gan_run"]) for r in probes] == [
        (f"@p1q2_conv_beta1_s{s}", f"@p2q1_gan_vae_decoder_s{s}") for s in (0, 1, 2)]
    assert [r.params["vae_run"] for r in plans["p1q1"].runs if r.arm == "gradvar"] == [
        f"@p1q1_vae_reparam_s{s}" for s in (0, 1, 2)]


def test_only_pulls_in_what_the_selection_refers_to():
    names = [r.name for r in study.select(study.load_plans(study.StudyConfig()), "p2q1")]
    assert names[:2] == ["p1q2_conv_beta0_s0", "p1q2_conv_beta1_s0"] and all(n.startswith("p2q1_") for n in names[2:])
    assert len(names) == 2 + 4  # one seed per arm in quick


def test_dry_run_lists_every_run_with_its_reference_and_a_wall_time_estimate(capsys):
    assert cli.main(["study", "--profile", "paper", "--only", "p2q1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "about" in out and "images/s" in out and "one at a time" in out
    for s in (0, 1, 2):
        assert f"init_from=@p1q2_conv_beta1_s{s}" in out and f"init_from=@p1q2_conv_beta0_s{s}" in out


def test_estimate_scales_with_the_measured_speed():
    runs = study.select(study.load_plans(study.StudyConfig(profile="full")), "p2q1")
    slow = study.wall_time_estimate(runs, {"conv": 100.0, "mlp": 1000.0})
    fast = study.wall_time_estimate(runs, {"conv": 200.0, "mlp": 2000.0})
    overhead = len(runs) * study.RUN_OVERHEAD_S
    assert fast - overhead == pytest.approx((slow - overhead) / 2)


# ---------------------------------------------------------------- strict validation

BAD_PLANS = [
    ("entry: train_vea", "entry must be one of"),
    ("params: {latnt_dim: 4}", "unknown parameter 'latnt_dim'"),
    ("params: {latent_dim: 2.5}", "latent_dim must be an integer"),
    ("params: {epochs: {full: 1}}", "gives no value for profile quick"),
    ("params: {epochs: {quick: 1, huge: 2}}", "unknown profile 'huge'"),
    ("params: {beta: [1, 2]}", "beta must be a single float"),
    ("params: {dataset: cifar}", "dataset must be one of"),
    ("arm: z={latent}", "uses {latent}"),
    ("colour: red", "unknown key 'colour'"),
]


@pytest.mark.parametrize("change,message", BAD_PLANS, ids=[c for c, _ in BAD_PLANS])
def test_bad_plans_are_rejected_in_one_line(tmp_path, change, message):
    item = {"entry": "train_vae", "arm": "a", "params": "{latent_dim: 4}"}
    key = change.split(":")[0]
    item[key] = change.split(": ", 1)[1]
    text = "question: q1\ndefaults: {dataset: synthetic}\nruns:\n  - " + "\n    ".join(
        f"{k}: {v}" for k, v in item.items()) + "\n"
    folder = write_plans(tmp_path / "plans", q1=text)
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("[", r"\[")) as info:
        study.load_plans(cfg(folder))
    assert "\n" not in str(info.value) and "q1.yaml" in str(info.value)


def test_references_names_and_selection_are_checked(tmp_path):
    dangling = Q2.replace("@q1_vae_*:min(test_neg_elbo)", "@nowhere")
    with pytest.raises(ConfigError, match="refers to @nowhere"):
        study.load_plans(cfg(write_plans(tmp_path / "a", q1=Q1, q2=dangling)))
    ambiguous = Q2.replace(":min(test_neg_elbo)", "")
    with pytest.raises(ConfigError, match="matches several runs"):
        study.load_plans(cfg(write_plans(tmp_path / "b", q1=Q1, q2=ambiguous)))
    with pytest.raises(ConfigError, match="question must be 'q3'"):
        study.load_plans(cfg(write_plans(tmp_path / "c", q3=Q1)))
    plans = study.load_plans(cfg(write_plans(tmp_path / "d", q1=Q1, q2=Q2)))
    with pytest.raises(ConfigError, match="only must be"):
        study.select(plans, "q1,q9")
    with pytest.raises(ConfigError, match="profile must be"):
        study.load_plans(cfg(str(tmp_path / "d"), profile="medium"))


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
