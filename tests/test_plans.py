"""Experiment plans (genlab.plans): the lab's plans, strict validation, and the @references parsed at load."""

import pytest

from genlab.checks import ConfigError
from genlab.configs import StudyConfig
from genlab.plans import PROFILES, Reference, dependencies, load_plans, select

from .test_study import Q1, Q2, write_plans


def cfg(plans: str, **kw) -> StudyConfig:
    return StudyConfig(plans=plans, **kw)


# ---------------------------------------------------------------- the lab's plans

def test_seed_offset_replicates_the_study_on_disjoint_seeds():
    """Every seed moves by the offset, the names and @references with it (pairs stay paired), and the search gets
    an Optuna study of its own."""
    base = {r.name: r for r in select(load_plans(StudyConfig(profile="full")), "all")}
    moved = {r.name: r for r in select(load_plans(StudyConfig(profile="full", seed_offset=5)), "all")}
    assert len(base) == len(moved)
    base_seeds = {r.params["seed"] for r in base.values() if "seed" in r.params}
    moved_seeds = {r.params["seed"] for r in moved.values() if "seed" in r.params}
    assert moved_seeds == {s + 5 for s in base_seeds} and not moved_seeds & base_seeds
    gan = moved["p2q1_gan_vae_decoder_s6"]
    assert gan.params["seed"] == 6 and gan.params["init_from"] == "@p1q2_conv_beta1_s6" and "p1q2_conv_beta1_s6" in moved
    (search_base,), (search_moved,) = ([r for r in runs.values() if r.question == "search"] for runs in (base, moved))
    assert search_base.params["study_name"] != search_moved.params["study_name"]


@pytest.mark.parametrize("profile", PROFILES)
def test_the_lab_plans_load_for_every_profile(profile):
    plans = load_plans(StudyConfig(profile=profile))
    by_q = {p.question: p for p in plans}
    assert {"p1q1", "p1q2", "p1q3", "p2q1", "p2q2", "search"} <= set(by_q)
    assert all(by_q[q].default for q in ("p1q1", "p1q2", "p1q3", "p2q1", "p2q2", "search"))
    (search,) = by_q["search"].runs  # the balance sentences read it: the MLP VAE of the sweeps, scored samples
    assert search.params["arch"] == "mlp" and search.params["eval_samples"] > 0
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
    plans = {p.question: p for p in load_plans(StudyConfig(profile="full"))}
    for r in plans["p2q1"].runs:
        if r.arm != "random":
            beta = 1 if r.arm == "vae_decoder" else 0
            assert r.params["init_from"] == f"@p1q2_conv_beta{beta}_s{r.params['seed']}"
            assert r.refs == {"init_from": Reference(f"p1q2_conv_beta{beta}_s{r.params['seed']}")}
        assert r.params.get("latent_fit", "none") == ("codes" if r.arm == "ae_decoder_matched" else "none")
    probes = plans["p2q2"].runs
    assert [(r.params["vae_run"], r.params["gan_run"]) for r in probes] == [
        (f"@p1q2_conv_beta1_s{s}", f"@p2q1_gan_vae_decoder_s{s}") for s in (0, 1, 2)]
    assert [r.params["vae_run"] for r in plans["p1q1"].runs if r.arm == "gradvar"] == [
        f"@p1q1_vae_reparam_s{s}" for s in (0, 1, 2)]


def test_only_pulls_in_what_the_selection_refers_to():
    names = [r.name for r in select(load_plans(StudyConfig()), "p2q1")]
    assert names[:2] == ["p1q2_conv_beta0_s0", "p1q2_conv_beta1_s0"] and all(n.startswith("p2q1_") for n in names[2:])
    assert len(names) == 2 + 4  # one seed per arm in quick


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
        load_plans(cfg(folder))
    assert "\n" not in str(info.value) and "q1.yaml" in str(info.value)


def test_references_names_and_selection_are_checked(tmp_path):
    dangling = Q2.replace("@q1_vae_*:min(test_neg_elbo)", "@nowhere")
    with pytest.raises(ConfigError, match="refers to @nowhere"):
        load_plans(cfg(write_plans(tmp_path / "a", q1=Q1, q2=dangling)))
    ambiguous = Q2.replace(":min(test_neg_elbo)", "")
    with pytest.raises(ConfigError, match="matches several runs"):
        load_plans(cfg(write_plans(tmp_path / "b", q1=Q1, q2=ambiguous)))
    with pytest.raises(ConfigError, match="question must be 'q3'"):
        load_plans(cfg(write_plans(tmp_path / "c", q3=Q1)))
    plans = load_plans(cfg(write_plans(tmp_path / "d", q1=Q1, q2=Q2)))
    with pytest.raises(ConfigError, match="only must be"):
        select(plans, "q1,q9")
    with pytest.raises(ConfigError, match="profile must be"):
        load_plans(cfg(str(tmp_path / "d"), profile="medium"))


# ---------------------------------------------------------------- references

@pytest.mark.parametrize("text,reference", [
    ("@p1q2_conv_beta1_s0", Reference("p1q2_conv_beta1_s0")),
    ("@q1_vae_*:min(test_neg_elbo)", Reference("q1_vae_*", "min", "test_neg_elbo")),
    ("@p2q1_gan_?_s0:max(fid_proxy)", Reference("p2q1_gan_?_s0", "max", "fid_proxy")),
])
def test_each_form_of_reference_is_parsed_and_quoted_as_written(text, reference):
    assert Reference.parse(text, "q.yaml: runs[1]") == reference
    assert str(reference) == text  # error messages and the dry run's listing quote the plan's text


@pytest.mark.parametrize("text", ["@", "@q1 vae", "@q1:median(loss)", "@q1:min()", "@q1:min(a-b)", "@q1:min"])
def test_a_malformed_reference_is_rejected_with_its_text(text):
    with pytest.raises(ConfigError) as info:
        Reference.parse(text, "q.yaml: runs[1]")
    assert str(info.value) == f"q.yaml: runs[1]: reference must be @name or @pattern*:min(metric), got {text!r}"


def test_a_malformed_reference_in_a_plan_names_the_file_and_item(tmp_path):
    bad = Q2.replace(":min(test_neg_elbo)", ":mean(test_neg_elbo)")
    with pytest.raises(ConfigError, match=r"^q2.yaml: runs\[1\]: reference must be @name or @pattern\*:min\(metric\)"):
        load_plans(cfg(write_plans(tmp_path / "plans", q1=Q1, q2=bad)))


def test_matches_picks_the_names_of_the_pattern_in_order():
    names = ["q1_vae_s0", "q2_gradvar", "q1_vae_s1", "q1_vae_s10"]
    assert Reference("q1_vae_*").matches(names) == ["q1_vae_s0", "q1_vae_s1", "q1_vae_s10"]
    assert Reference("q1_vae_s?", "min", "loss").matches(names) == ["q1_vae_s0", "q1_vae_s1"]
    assert Reference("q1_vae_s1").matches(names) == ["q1_vae_s1"]  # a plain name is the whole name, not a prefix
    assert Reference("q3_*").matches(names) == []


def test_a_plans_references_are_parsed_once_and_give_the_graph(tmp_path):
    runs = select(load_plans(cfg(write_plans(tmp_path / "plans", q1=Q1, q2=Q2))), "q2")
    by_name = {r.name: r for r in runs}
    assert set(by_name) == {"q1_vae_s0", "q1_vae_s1", "q2_gradvar"}  # q2 pulls in what it refers to
    assert by_name["q2_gradvar"].refs == {"vae_run": Reference("q1_vae_*", "min", "test_neg_elbo")}
    assert by_name["q2_gradvar"].params["vae_run"] == "@q1_vae_*:min(test_neg_elbo)"  # the text, for listings
    assert dependencies(runs) == {"q1_vae_s0": set(), "q1_vae_s1": set(), "q2_gradvar": {"q1_vae_s0", "q1_vae_s1"}}


def test_the_runs_with_the_costliest_chain_behind_them_start_first():
    """critical_path_costs: a run's cost plus the costliest chain waiting for it. In the full plans the search (one
    long run, last in plan order) and the conv VAE -> GAN -> probe chains come before the short MLP sweeps."""
    from genlab.plans import ARCH_PASS_COST, critical_path_costs

    runs = select(load_plans(StudyConfig(profile="full")), "all")
    chain = critical_path_costs(runs)
    by = {r.name: r for r in runs}
    conv = ARCH_PASS_COST["conv"]
    assert chain["p2q2_probe_s0"] == by["p2q2_probe_s0"].cost * conv  # nothing waits for a probe
    assert chain["p2q1_gan_vae_decoder_s0"] == by["p2q1_gan_vae_decoder_s0"].cost * conv + chain["p2q2_probe_s0"]
    assert chain["p1q2_conv_beta1_s0"] == by["p1q2_conv_beta1_s0"].cost * conv + chain["p2q1_gan_vae_decoder_s0"]
    assert chain["p1q2_beta1_s0"] == by["p1q2_beta1_s0"].cost  # an MLP VAE that nothing refers to
    first = sorted(runs, key=lambda r: (-chain[r.name], runs.index(r)))
    assert first[0].name == "search_neg_elbo" and runs[-1].name == "search_neg_elbo"
    assert {r.name for r in first[1:7]} == {f"p1q2_conv_beta{b}_s{s}" for b in (0, 1) for s in range(3)}
