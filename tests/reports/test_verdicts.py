"""The verdict rules as pure functions on run frames (no store): edge cases the end-to-end test does not reach;
the registry of questions and the templates agree."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from reports import questions
from reports import verdicts as V
from reports.questions import p1q1, p1q2, p1q3, p2q1, p2q2

NO_HISTORY = pd.DataFrame(columns=["run_id", "key", "step", "value"])
NO_KL = pd.DataFrame(columns=["run_id", "dim", "kl"])


def frame(rows: list[dict]) -> pd.DataFrame:
    """A search_runs-like frame: run_id, status, start_time, tags.genlab.*, params.*, metrics.*."""
    out = []
    for i, r in enumerate(rows):
        row = {"run_id": f"run{i:02d}", "experiment_id": "1", "status": r.pop("status", "FINISHED"),
               "start_time": pd.Timestamp(1_000_000 + i, unit="s"), "artifact_uri": f"/tmp/none/{i}"}
        for key, value in r.items():
            prefix = "tags.genlab." if key in ("question", "kind", "arm", "profile") else \
                "params." if key in ("beta", "latent_dim", "seed", "estimator") else "metrics."
            row[prefix + key] = str(value) if prefix != "metrics." else value
        out.append(row)
    return pd.DataFrame(out)


def welch(a: list[float], b: list[float], min_effect: float) -> V.Comparison:
    return V.compare(V.stat(a), V.stat(b), a, b, min_effect)


def test_t_interval_and_welch_difference_with_its_power():
    s = V.stat([9.8, 10.0, 10.2])
    assert s.n == 3 and s.mean == pytest.approx(10.0) and s.half == pytest.approx(0.4968, abs=1e-4)
    assert math.isnan(V.stat([3.0]).half)
    c = welch([2.0, 2.1, 1.9], [1.0, 1.1, 0.9], 0.5)
    assert c.outcome == "greater" and c.low > 0 and not c.paired and c.n == 3 and c.p_value < 0.05
    assert c.mde < 0.5 and c.detectable
    # inside the noise, with a spread that could not have shown 0.5: underpowered, never "no difference"
    noisy = welch([2.0, 5.0, -1.0], [1.0, 1.1, 0.9], 0.5)
    assert noisy.outcome == "underpowered" and noisy.low < 0 < noisy.high and noisy.mde > 0.5
    # the same small difference with a spread that could have shown 0.5: no effect larger than 0.5
    calm = welch([1.1, 1.2, 1.0], [1.0, 1.1, 0.9], 0.5)
    assert calm.outcome == "none" and calm.mde < 0.5 and not calm.significant
    # a clear effect larger than the minimum effect still counts with a wide-ish spread
    assert welch([12.0, 14.0, 10.0], [1.0, 1.1, 0.9], 0.5).outcome == "greater"
    one_seed = welch([2.0], [1.0], 0.5)  # no interval: no verdict on the threshold alone
    assert one_seed.outcome == "underpowered" and not one_seed.has_ci and one_seed.too_few_seeds
    # two seeds that agree perfectly still fall short of the MIN_SEEDS the protocol asks for
    two = welch([2.0, 2.0], [1.0, 1.0], 0.5)
    assert two.significant and two.outcome == "underpowered" and V.MIN_SEEDS == 3


def seeded(values: list[float], seeds: list[int], metric: str = "m", arm: str = "x") -> pd.DataFrame:
    runs = frame([{"kind": "gan", "arm": arm, "seed": s, metric: v} for s, v in zip(seeds, values, strict=True)])
    return runs.assign(run_id=[f"{arm}{s}" for s in seeds])


def test_compare_runs_pairs_on_shared_seeds_else_welch():
    base = [0.0, 10.0, 20.0]  # seed-to-seed spread that both arms share
    a = seeded([x + 1.0 for x in base], [0, 1, 2], arm="a")
    b = seeded([base[0], base[1] + 0.1, base[2] - 0.1], [0, 1, 2], arm="b")
    paired = V.compare_runs(a, b, "m", 0.5)
    assert paired.paired and paired.n == 3 and paired.outcome == "greater" and paired.diff == pytest.approx(1.0)
    # the same values on seeds that do not match: Welch, which the shared spread swamps
    unpaired = V.compare_runs(a, seeded(list(b["metrics.m"]), [3, 4, 5]), "m", 0.5)
    assert not unpaired.paired and unpaired.outcome == "underpowered" and unpaired.mde > 0.5
    # seeds matched by value, not by row order
    shuffled = V.compare_runs(a, b.iloc[::-1], "m", 0.5)
    assert shuffled.paired and shuffled.diff == pytest.approx(1.0) and shuffled.outcome == "greater"
    # an arm that ran a seed twice is not paired
    assert not V.compare_runs(a, seeded([0.0, 0.0, 10.0], [0, 0, 1]), "m", 0.5).paired
    # two measures of the same runs are paired run by run
    both = frame([{"kind": "probe", "seed": s, "enc": 0.8 + e, "disc": 0.7 + e} for s, e in enumerate((0, .1, -.1))])
    same = V.compare_runs(both, both, "enc", 0.02, "disc")
    assert same.paired and same.outcome == "greater" and same.diff == pytest.approx(0.1)


def gradvar(matched: float, seeds: int = 3, converged: float = 1.0, ci_low: float | None = None,
            spread: float = 0.02) -> pd.DataFrame:
    """gradvar runs on each seed's trained VAE: every ratio at ``matched`` (x10 for the other baselines), each
    run's bootstrap interval from ``ci_low`` (default: 0.8 x the ratio); ``converged``: the gate of the VAE each
    measurement was taken on (gradvar logs it from its source run)."""
    rows = []
    for s in range(seeds):
        r = matched * (1 + spread * (s - 1))
        row = {"kind": "gradvar", "arm": "gradvar", "seed": s, "encoder_grad_norm_no_trick": 0.0,
               "converged": converged}
        for name in p1q1.RATIOS:
            value = r if name == "matched" else 10 * r
            row.update({f"grad_variance_ratio_{name}": value,
                        f"grad_variance_ratio_{name}_ci_low": 0.8 * value if ci_low is None else ci_low,
                        f"grad_variance_ratio_{name}_ci_high": 1.2 * value})
        rows.append(row)
    return frame(rows)


ESTIMATOR_ARMS = {  # arm -> test recon, test KL, test neg-ELBO, final val neg-ELBO (nats/image)
    "reparam": (250.0, 25.0, 275.0, 276.0), "score": (290.0, 12.0, 302.0, 303.0), "detach": (330.0, 0.02, 330.0, 331.0)}


def estimator_vaes(arms: dict | None = None, noise: tuple = (-0.5, 0.0, 0.5), converged: float = 1.0,
                   detach_noise: tuple | None = None) -> pd.DataFrame:
    """``noise``: each seed's offset, shared by the arms (what pairing removes); ``detach_noise``: the detach
    arm's own."""
    rows = []
    for a, (recon, kl, elbo, val) in (arms or ESTIMATOR_ARMS).items():
        for s, e in enumerate(detach_noise if a == "detach" and detach_noise else noise):
            rows.append({"kind": "vae", "arm": a, "seed": s, "estimator": a, "test_recon": recon + e, "test_kl": kl,
                         "test_neg_elbo": elbo + e, "val_neg_elbo": val + e, "test_active_units": 0 if kl < 0.5 else 8,
                         "converged": converged})
    runs = frame(rows)
    return runs.assign(run_id=[f"vae{i}" for i in range(len(runs))])


def p1q1_runs(**changes) -> pd.DataFrame:
    return pd.concat([estimator_vaes(changes.get("arms")), changes.get("grad", gradvar(3.0))], ignore_index=True)


def test_p1q1_detach_collapsing_while_the_trick_learns_confirms_the_lab_and_each_claim_flips():
    v = p1q1.rule(p1q1_runs(), NO_HISTORY)
    assert v.status == "confirmed" and v.numbers["claims"] == {
        "no_backprop": "confirmed", "unbiased_without_trick": "confirmed", "slower": "confirmed",
        "lower_variance": "confirmed"}
    assert v.numbers["no_backprop"].paired and v.numbers["no_backprop"].holm
    # detach learns as well as the trick: the lab's claim does not hold
    learns = {**ESTIMATOR_ARMS, "detach": (251.0, 24.0, 275.0, 276.0)}
    assert p1q1.rule(p1q1_runs(arms=learns), NO_HISTORY).status == "no_significant_difference"
    better = {**ESTIMATOR_ARMS, "detach": (240.0, 24.0, 264.0, 265.0)}
    assert p1q1.rule(p1q1_runs(arms=better), NO_HISTORY).status == "not_confirmed"
    # worse reconstruction but an encoder that still carries information: not the collapse the lab predicts
    informed = {**ESTIMATOR_ARMS, "detach": (330.0, 3.0, 333.0, 334.0)}
    assert p1q1.rule(p1q1_runs(arms=informed), NO_HISTORY).status == "not_confirmed"
    # the control: if the trick's encoder collapsed too, the measurement could not have seen an encoder learn
    both = {**ESTIMATOR_ARMS, "reparam": (320.0, 0.1, 320.0, 321.0)}
    assert p1q1.rule(p1q1_runs(arms=both), NO_HISTORY).status == "inconclusive_control"
    # the score function neither learns nor is slower / the trick's gradient not less noisy at matched compute
    stuck = {**ESTIMATOR_ARMS, "score": (330.0, 0.1, 330.0, 331.0)}
    claims = p1q1.rule(p1q1_runs(arms=stuck), NO_HISTORY).numbers["claims"]
    assert claims["unbiased_without_trick"] != "confirmed" and claims["slower"] == "confirmed"
    fast = {**ESTIMATOR_ARMS, "score": (252.0, 24.0, 276.0, 276.0)}
    assert p1q1.rule(p1q1_runs(arms=fast), NO_HISTORY).numbers["claims"]["slower"] == "no_significant_difference"
    assert p1q1.rule(p1q1_runs(grad=gradvar(0.3)), NO_HISTORY).numbers["claims"]["lower_variance"] == "not_confirmed"
    straddles = p1q1.rule(p1q1_runs(grad=gradvar(3.0, ci_low=0.9)), NO_HISTORY)
    assert straddles.numbers["claims"]["lower_variance"] == "no_significant_difference"
    assert p1q1.rule(p1q1_runs(grad=gradvar(3.0, seeds=2)), NO_HISTORY).numbers["claims"]["lower_variance"] == \
        "inconclusive_underpowered"


def test_p1q1_with_noisy_or_few_seeds_is_underpowered_and_without_runs_missing():
    noisy = pd.concat([estimator_vaes(detach_noise=(-150.0, 60.0, 90.0)), gradvar(3.0)], ignore_index=True)
    assert p1q1.rule(noisy, NO_HISTORY).status == "inconclusive_underpowered"
    two = p1q1_runs()
    two = two[numeric_seed(two) < 2]
    assert p1q1.rule(two, NO_HISTORY).status == "inconclusive_underpowered"
    missing = p1q1.rule(frame([]), NO_HISTORY)
    assert missing.status == "missing" and {"what": "arm", "arm": "detach"} in missing.missing


def numeric_seed(runs: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(runs["params.seed"])


# P1Q2 per beta (0, 1, 4), where every sentence of the lab holds: interpolations even and short at beta 1 and uneven
# and long at 0 (both measures),
# codes far from the prior at 0 (MMD, prior fid_proxy 80 against 20 from the codes), the detail lost at 4, neg-ELBO and
# fid_proxy lowest at 1, active units 6 -> 2 from 1 to 4 (the variance count, test_active_units, stays at 8).
LAB_P1Q2 = {"test_kl": (40, 15, 5), "test_recon": (200, 210, 240), "test_neg_elbo": (240, 225, 245),
            "kl_active_units": (8, 6, 2), "interp_smoothness": (2.0, 1.3, 1.25), "interp_path_length": (60, 40, 35),
            "aggregate_posterior_mmd": (0.5, 0.02, 0.01), "fid_proxy": (80, 30, 45), "aggregate_fid_proxy": (20, 26, 44)}


def beta_sweep(betas=(0.0, 1.0, 4.0), spread: dict[str, tuple[float, tuple]] | None = None,
               **changes: tuple) -> pd.DataFrame:
    """Three seeds per beta with the LAB_P1Q2 numbers, ``changes`` replacing a metric's values per beta (None drops
    the metric); ``spread``: metric -> (beta, offsets of seeds 0, 1, 2 there)."""
    values = {m: v for m, v in {**LAB_P1Q2, **changes}.items() if v is not None}
    spread = spread or {}

    def value(m: str, i: int, b: float, s: int) -> float:
        at, offsets = spread.get(m, (None, (0, 0, 0)))
        return values[m][i] + (offsets[s] if b == at else 0.0)

    return frame([{"kind": "vae", "beta": b, "latent_dim": 8, "seed": s, "active_units": 8, "test_active_units": 8,
                   "converged": 1.0, **{m: value(m, i, b, s) for m in values}}
                  for i, b in enumerate(betas) for s in range(3)])


def test_p1q2_confirms_the_lab_when_each_of_its_sentences_is_measured_true():
    ok = p1q2.rule(beta_sweep(), NO_KL)
    assert ok.status == "confirmed" and ok.numbers["claims"] == dict.fromkeys(p1q2.CLAIMS, "confirmed")
    tests = ok.numbers["tests"]
    assert tests["holes"]["mmd"].diff == pytest.approx(0.48) and tests["holes"]["fid_gap"].diff == pytest.approx(56)
    assert tests["units"]["units"].diff == pytest.approx(4.0)  # kl_active_units, not the variance count (8 -> 8)
    assert ok.numbers["best"] == {"test_neg_elbo": 1.0, "fid_proxy": 1.0}
    every = [c for parts in tests.values() for c in parts.values()]
    assert len(every) == 10 and all(c.paired and c.holm for c in every)
    assert ok.numbers["rho_kl"] == pytest.approx(-1.0)  # shown, not tested


@pytest.mark.parametrize("sentence, changes", [
    # the autoencoder interpolates more evenly, by both measures
    ("continuous", {"interp_smoothness": (1.1, 1.5, 1.2), "interp_path_length": (30, 40, 35)}),
    ("holes", {"aggregate_posterior_mmd": (0.01, 0.3, 0.01)}),  # the autoencoder's codes fill the prior better
    ("holes", {"aggregate_fid_proxy": (79, 25, 44)}),  # prior draws lose no more at beta 0 than at 1
    ("detail", {"test_recon": (200, 240, 210)}),  # the largest beta reconstructs better than beta 1
    ("balance", {"test_neg_elbo": (240, 250, 245)}),  # the neg-ELBO is lowest at an end
    ("balance", {"fid_proxy": (80, 50, 45)}),  # the prior samples are best at the largest beta
    ("units", {"kl_active_units": (8, 2, 6)}),  # more units in use at the largest beta
])
def test_p1q2_each_sentence_flips_alone(sentence, changes):
    v = p1q2.rule(beta_sweep(**changes), NO_KL)
    assert v.status == "not_confirmed" and v.numbers["claims"][sentence] == "not_confirmed"
    assert {s for s, c in v.numbers["claims"].items() if c != "confirmed"} == {sentence}


@pytest.mark.parametrize("changes", [
    {"interp_smoothness": (1.1, 1.5, 1.2)},  # ours says the autoencoder interpolates more evenly, PPL the opposite
    {"interp_path_length": (30, 40, 35)},  # PPL says its paths are shorter, ours the opposite
])
def test_p1q2_continuity_depends_on_the_measure_when_the_two_disagree(changes):
    v = p1q2.rule(beta_sweep(**changes), NO_KL)
    assert v.numbers["claims"]["continuous"] == "inconclusive_measure" and v.status == "inconclusive_measure"
    assert set(v.numbers["measure_claims"]["continuous"].values()) == {"confirmed", "not_confirmed"}
    # a contradicted sentence elsewhere still refutes the lab
    assert p1q2.rule(beta_sweep(**changes, kl_active_units=(8, 2, 6)), NO_KL).status == "not_confirmed"
    # one measure that could not have seen its effect leaves the sentence underpowered, not "depends"
    wide = p1q2.rule(beta_sweep(spread={"interp_path_length": (1.0, (-40.0, 0.0, 40.0))}), NO_KL)
    assert wide.numbers["measure_claims"]["continuous"] == {"smoothness": "confirmed",
                                                           "path_length": "inconclusive_underpowered"}
    assert wide.numbers["claims"]["continuous"] == "inconclusive_underpowered"


def test_p1q2_flat_underpowered_and_missing_sentences():
    # equal units everywhere with calm seeds: an effect of 0.5 would have been seen, none is there
    flat = p1q2.rule(beta_sweep(kl_active_units=(6, 6, 6)), NO_KL)
    assert flat.numbers["claims"]["units"] == "no_significant_difference" and flat.status == "no_significant_difference"
    # the same lab-like means, but the beta = 1 seeds spread too widely to show a difference of 0.1
    wide = p1q2.rule(beta_sweep(spread={"interp_smoothness": (1.0, (-1.0, 0.0, 1.0))}), NO_KL)
    smooth = wide.numbers["tests"]["continuous"]["smoothness"]
    assert wide.status == "inconclusive_underpowered" and wide.numbers["claims"]["continuous"] == "inconclusive_underpowered"
    assert smooth.outcome == "underpowered" and smooth.paired and smooth.mde > p1q2.SMOOTHNESS_MIN_EFFECT
    # runs made before interp_smoothness was logged: that sentence is missing, the others are still measured
    old = p1q2.rule(beta_sweep(interp_smoothness=None), NO_KL)
    assert old.status == "missing" and old.numbers["claims"]["continuous"] == "missing"
    assert old.numbers["claims"]["holes"] == "confirmed" and "continuous" not in old.numbers["tests"]
    assert {"what": "metric", "metric": "interp_smoothness", "run_ids": ids_of(beta_sweep())} in old.missing
    # a contradicted sentence still refutes the lab when another is missing
    assert p1q2.rule(beta_sweep(interp_smoothness=None, kl_active_units=(8, 2, 6)), NO_KL).status == "not_confirmed"
    # without beta = 1 inside the sweep, the sentences that compare with it are missing; balance is still measured
    no_ref = p1q2.rule(beta_sweep(betas=(0.0, 2.0, 4.0)), NO_KL)
    assert no_ref.status == "missing" and {"what": "arm", "arm": "beta=1"} in no_ref.missing
    assert no_ref.numbers["claims"]["balance"] == "confirmed" and no_ref.numbers["claims"]["units"] == "missing"
    two = p1q2.rule(beta_sweep(betas=(0.0, 4.0), **{m: v[::2] for m, v in LAB_P1Q2.items()}), NO_KL)
    assert two.status == "missing" and {"what": "count", "key": "beta", "have": 2, "need": 3} in two.missing


def with_conv_check(sweep: pd.DataFrame, check: pd.DataFrame) -> pd.DataFrame:
    check = check.assign(**{"tags.genlab.arm": [f"conv beta={b}" for b in check["params.beta"]],
                            "run_id": [f"conv{i:02d}" for i in range(len(check))]})
    return pd.concat([sweep.assign(**{"tags.genlab.arm": "sweep"}), check], ignore_index=True)


def test_p1q2_checks_its_verdict_against_the_conv_architecture_both_ways():
    sweep = beta_sweep()
    agree = p1q2.rule(with_conv_check(sweep, beta_sweep(betas=(0.0, 1.0, 8.0), test_recon=(180, 190, 230))), NO_KL)
    assert agree.status == "confirmed" and agree.numbers["conv_check"]["agrees"]
    assert agree.numbers["conv_check"]["status"] == "confirmed" and set(agree.rests_on) == set(sweep["run_id"])
    assert agree.rows == p1q2.rule(sweep, NO_KL).rows  # the check's runs stay out of the sweep's numbers
    # the conv VAE's latent space has no holes at beta 0: its MMD is as low as at beta 1
    holes = p1q2.rule(with_conv_check(sweep, beta_sweep(aggregate_posterior_mmd=(0.01, 0.3, 0.01))), NO_KL)
    assert holes.status == "inconclusive_architecture" and not holes.numbers["conv_check"]["agrees"]
    assert holes.numbers["sweep_status"] == "confirmed"
    assert holes.numbers["conv_check"]["status"] == "not_confirmed"
    assert holes.numbers["conv_check"]["claims"]["holes"] == "not_confirmed"
    # a conv sweep without the new metrics is no check of them: its status is missing, the verdict stands
    old = p1q2.rule(with_conv_check(sweep, beta_sweep(interp_smoothness=None)), NO_KL)
    assert old.status == "confirmed" and old.numbers["conv_check"]["status"] == "missing" and not old.missing
    assert p1q2.rule(sweep, NO_KL).numbers["conv_check"] is None  # not planned: nothing to say


def dim_sweep(gaps, tests, control=(1.0, 12.0), ae_gaps=(1.0, 1.0, 1.0)) -> pd.DataFrame:
    """beta = 1 VAEs at latent_dim 4, 16, 64 with those gaps (test - train reconstruction) and test recons (so the
    training recon is test - gap), the positive control's autoencoders at 4 and 64 with the gaps ``control`` (None:
    no control runs), and the sweep's autoencoders at 4, 16, 64 with the gaps ``ae_gaps`` (None: none), after
    them. The validation recon carries the gaps in reverse order: a rule reading it would see the gap shrink."""
    rows = []
    for d, g, t, reverse in zip((4, 16, 64), gaps, tests, gaps[::-1], strict=True):
        for seed, e in enumerate((-0.1, 0.0, 0.1)):
            rows.append({"kind": "vae", "arm": f"z={d}", "beta": 1.0, "latent_dim": d, "seed": seed,
                         "train_eval_recon": t - g + e, "val_recon": t - g + reverse + e, "test_recon": t + e})
    for d, g in zip((4, 64) if control else (), control or (), strict=True):
        for seed, e in enumerate((-0.1, 0.0, 0.1)):
            rows.append({"kind": "vae", "arm": f"control ae z={d}", "beta": 0.0, "latent_dim": d, "seed": seed,
                         "train_eval_recon": 150 + e, "val_recon": 150 + g + e, "test_recon": 150 + g})
    for d, g in zip((4, 16, 64) if ae_gaps else (), ae_gaps or (), strict=True):
        for seed, e in enumerate((-0.1, 0.0, 0.1)):
            rows.append({"kind": "vae", "arm": f"ae z={d}", "beta": 0.0, "latent_dim": d, "seed": seed,
                         "train_eval_recon": 180 + e, "val_recon": 180 + g + e, "test_recon": 180 + g})
    return frame(rows)


def outcome(numbers: dict, key: str) -> str | None:
    """The outcome of the comparison ``numbers[key]``; None when the rule did not make it."""
    return numbers[key].outcome if key in numbers else None


# The base sweep: the gap grows 1 -> 2 -> 7.5 nats from latent_dim 4 to 64, test recon is best at 16 and 6 nats
# worse at 64, the training recon within 0.5 nats of 16's there; the positive control's AEs have gaps 1 and 12, the
# sweep's AEs 1 each. Each case changes that (dim_sweep's arguments) and expects: status, shape, fit, gap_ok, the
# control's excess over the sweep AE of its size (outcome, paired difference in nats; None: not measured), the
# control's own growth, control_ae rows.
P1Q3_CASES = [
    pytest.param({}, "confirmed", "worsens", "overfitting", True, ("greater", 11.0), "greater", 2,
                 id="confirmed: overfitting grows with latent_dim, the control memorises"),
    # the control's own growth with latent_dim is shown, not required: on a few hundred images a small AE memorises
    pytest.param(dict(control=(12.0, 12.0)), "confirmed", "worsens", "overfitting", True, ("greater", 11.0), "none",
                 2, id="confirmed: control already memorises at the smallest latent_dim"),
    pytest.param(dict(control=(1.0, 1.5)), "inconclusive_control", "worsens", "overfitting", True, ("none", 0.5),
                 "none", 2, id="inconclusive_control: control no more memorisation than the sweep AE"),
    pytest.param(dict(ae_gaps=(1.0, 1.0, 11.0)), "inconclusive_control", "worsens", "overfitting", True,
                 ("none", 1.0), "greater", 2, id="inconclusive_control: the sweep AE memorises as much as the control"),
    pytest.param(dict(control=None), "inconclusive_control", "worsens", "overfitting", True, None, None, 0,
                 id="inconclusive_control: no control runs"),
    pytest.param(dict(ae_gaps=None), "inconclusive_control", "worsens", "overfitting", True, None, "greater", 2,
                 id="inconclusive_control: no sweep AE to measure the control against"),
    # worse test AND worse train reconstruction at the largest size: underfitting, not memorisation
    pytest.param(dict(gaps=(1, 2, 4)), "not_confirmed", "worsens", "underfitting", True, ("greater", 11.0),
                 "greater", 2, id="not_confirmed: underfitting, the training recon is worse too"),
    pytest.param(dict(tests=(230, 220, 220.5)), "not_confirmed", "plateau", "neither", True, ("greater", 11.0),
                 "greater", 2, id="not_confirmed: test recon plateaus within RECON_WORSE_MIN"),
    pytest.param(dict(tests=(230, 220, 215)), "not_confirmed", "improves", "neither", True, ("greater", 11.0),
                 "greater", 2, id="not_confirmed: test recon improves up to the largest latent_dim"),
    pytest.param(dict(gaps=(1, 1.5, 2.5), tests=(230, 220, 221.5)), "not_confirmed", "worsens", "overfitting", False,
                 ("greater", 11.0), "greater", 2, id="not_confirmed: the gap does not grow"),
]


@pytest.mark.parametrize("changes, status, shape, fit, gap_ok, excess, control_growth, control_rows", P1Q3_CASES)
def test_p1q3_shapes(changes, status, shape, fit, gap_ok, excess, control_growth, control_rows):
    v = p1q3.rule(dim_sweep(**{"gaps": (1, 2, 7.5), "tests": (230, 220, 226), **changes}))
    n = v.numbers
    assert v.status == status
    assert (n["shape"], n["fit"], n["gap_ok"]) == (shape, fit, gap_ok)
    assert outcome(n, "control_gap_growth") == control_growth
    if excess is None:
        assert "control_gap_excess" not in n
    else:
        assert (n["control_gap_excess"].outcome, n["control_gap_excess"].paired) == (excess[0], True)
        assert n["control_gap_excess"].diff == pytest.approx(excess[1])
    assert n["control_ok"] == (excess is not None and excess[0] == "greater")
    assert [r["model"] for r in v.rows].count("control_ae") == control_rows


def gan(finals: dict[str, list[float]]) -> pd.DataFrame:
    return frame([{"kind": "gan", "arm": arm, "seed": s, "fid_proxy": f}
                  for arm, values in finals.items() for s, f in enumerate(values)])


def test_p2q1_claims_inside_the_noise_are_underpowered_and_calm_equal_arms_show_no_effect():
    v = p2q1.rule(gan({"vae_decoder": [20, 35, 50], "random": [30, 40, 45], "ae_decoder": [25, 45, 40]}), NO_HISTORY)
    assert v.numbers["claims"] == {"decoder_init": "inconclusive_underpowered",
                                   "normal_latent": "inconclusive_underpowered"}
    assert v.status == "inconclusive_underpowered"
    calm = p2q1.rule(gan({"vae_decoder": [30, 30.2, 29.9], "random": [30.1, 30.1, 30.0],
                          "ae_decoder": [30.0, 30.1, 30.0]}), NO_HISTORY)
    assert calm.status == "no_significant_difference" and calm.numbers["normal_latent"].paired
    assert calm.numbers["normal_latent"].mde < calm.numbers["normal_latent"].min_effect
    partial = p2q1.rule(gan({"vae_decoder": [20, 21, 19], "random": [40, 41, 39]}), NO_HISTORY)
    assert partial.numbers["claims"] == {"decoder_init": "confirmed", "normal_latent": "missing"}
    assert partial.status == "missing" and {"what": "arm", "arm": "ae_decoder"} in partial.missing


def gan_started(finals: dict[str, list[float]], starts: dict[str, list[float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GAN runs with the final fid_proxy ``finals`` and the step-0 fid_proxy ``starts`` (per arm, one value per seed):
    the runs frame and the history the P2Q1 rule reads."""
    runs = gan(finals)
    history = pd.DataFrame([{"run_id": rid, "key": "fid_proxy", "step": 0, "value": starts[a][int(seed)]}
                            for rid, a, seed in zip(runs["run_id"], runs["tags.genlab.arm"], runs["params.seed"],
                                                    strict=True) if a in starts])
    return runs, history


# seed s of every arm shares a small noise of its own (paired); the VAE decoder starts at 60 and ends at 20
FINALS = {"vae_decoder": [20.1, 19.9, 20.0], "random": [40.0, 40.1, 39.9], "ae_decoder": [29.9, 30.0, 30.1]}
STARTS = {"vae_decoder": [60.1, 59.9, 60.0], "random": [300.0, 300.1, 299.9], "ae_decoder": [119.9, 120.0, 120.1]}


def test_p2q1_step0_claim_tests_the_lab_reason_before_any_gan_update():
    v = p2q1.rule(*gan_started(FINALS, STARTS))
    assert v.numbers["step0_claims"] == {"normal_latent_step0": "confirmed"}
    c = v.numbers["normal_latent_step0"]  # autoencoder decoder - VAE decoder, both fed N(0, I)
    assert c.paired and c.holm and c.diff == pytest.approx(60.0) and c.min_effect == pytest.approx(6.0)
    flipped = p2q1.rule(*gan_started(FINALS, {**STARTS, "vae_decoder": STARTS["ae_decoder"],
                                              "ae_decoder": STARTS["vae_decoder"]}))
    assert flipped.numbers["step0_claims"] == {"normal_latent_step0": "not_confirmed"}
    assert flipped.numbers["claims"] == v.numbers["claims"] == {"decoder_init": "confirmed", "normal_latent": "confirmed"}
    even = p2q1.rule(*gan_started(FINALS, {**STARTS, "ae_decoder": [60.0, 60.1, 59.9]}))
    assert even.numbers["step0_claims"] == {"normal_latent_step0": "no_significant_difference"}
    noisy = p2q1.rule(*gan_started(FINALS, {**STARTS, "ae_decoder": [20.0, 140.0, 60.0]}))
    assert noisy.numbers["step0_claims"] == {"normal_latent_step0": "inconclusive_underpowered"}
    assert p2q1.rule(gan(FINALS), NO_HISTORY).numbers["step0_claims"] == {"normal_latent_step0": "missing"}
    # a GAN that did not converge makes the final claims inconclusive, never the one measured before training
    runs, history = gan_started(FINALS, STARTS)
    gated = p2q1.QUESTION.judge(runs.assign(**{"metrics.converged": 0.0}), {"history": history})
    assert gated.status == "inconclusive_not_converged"
    assert set(gated.numbers["claims"].values()) == {"inconclusive_not_converged"}
    assert gated.numbers["step0_claims"] == {"normal_latent_step0": "confirmed"}
    # random and ae_decoder are the equal-budget baselines: either still improving gates nothing; vae_decoder or
    # the control does
    runs, history = gan_started({**FINALS, "ae_decoder_matched": [20.0, 20.1, 19.9]},
                                {**STARTS, "ae_decoder_matched": [60.0, 60.1, 59.9]})
    for name in ("random", "ae_decoder", "vae_decoder", "ae_decoder_matched"):
        one = (runs["tags.genlab.arm"] == name).to_numpy()
        v = p2q1.QUESTION.judge(runs.assign(**{"metrics.converged": [0.0 if o else 1.0 for o in one]}),
                                {"history": history})
        assert v.status == ("confirmed" if name in p2q1.BASELINES else "inconclusive_not_converged"), name
        assert v.numbers["still_improving"] == {b: 3 * (b == name) for b in p2q1.BASELINES}, name


def test_p2q1_holm_family_holds_the_step0_claim():
    """Raw p-values 0.019 and 0.028: both claims pass Holm in a family of two (0.025, then 0.05); with the step-0
    claim (p = 1) in the family, 0.019 faces 0.05 / 3 and neither passes."""
    base = [20.0, 22.0, 18.0, 21.0, 19.0]  # seed s of every arm shares base[s]
    d_random, d_ae = [3.0, 1.0, 5.0, 1.5, 4.5], [3.2, 1.3, 5.0, 0.8, 5.4]
    finals = {"vae_decoder": base, "random": [b + d for b, d in zip(base, d_random, strict=True)],
              "ae_decoder": [b + d for b, d in zip(base, d_ae, strict=True)]}
    two = p2q1.rule(*gan_started(finals, {}))
    assert two.numbers["claims"] == {"decoder_init": "confirmed", "normal_latent": "confirmed"}
    assert two.numbers["decoder_init"].p_value == pytest.approx(0.0192, abs=1e-4)
    assert two.numbers["normal_latent"].p_value == pytest.approx(0.0282, abs=1e-4)
    even = {"vae_decoder": [60.0] * 5, "ae_decoder": [60.1, 59.8, 60.1, 60.2, 59.8]}
    three = p2q1.rule(*gan_started(finals, even))
    assert all(three.numbers[name].holm for name in ("decoder_init", "normal_latent", "normal_latent_step0"))
    assert "confirmed" not in three.numbers["claims"].values()
    assert three.numbers["step0_claims"] == {"normal_latent_step0": "no_significant_difference"}


def p2q1_cause(matched_start: list[float], matched_final: list[float], finals: dict | None = None,
               ) -> tuple[dict[str, str], str]:
    v = p2q1.rule(*gan_started({**(finals or FINALS), "ae_decoder_matched": matched_final},
                               {**STARTS, "ae_decoder_matched": matched_start}))
    assert v.status == v.numbers["claims"]["normal_latent"]  # the control never changes the verdict
    assert {v.numbers["cause"], *v.numbers["causes"].values()} <= set(p2q1.CAUSES)
    return v.numbers["causes"], v.numbers["cause"]


def test_p2q1_control_names_what_the_vae_decoder_advantage_came_from():
    caught_up, behind = ([60.0, 60.1, 59.9], [20.0, 20.1, 19.9]), ([100.0, 100.1, 99.9], [28.0, 28.1, 27.9])
    assert p2q1_cause(*caught_up) == ({"step0": "latent_distribution", "final": "latent_distribution"},
                                      "latent_distribution")
    assert p2q1_cause(*behind) == ({"step0": "decoder", "final": "decoder"}, "decoder")
    # better than the VAE decoder is caught up too
    assert p2q1_cause([50.0, 50.1, 49.9], [15.0, 15.1, 14.9])[1] == "latent_distribution"
    # the two points disagree, or the seeds cannot tell: undetermined
    assert p2q1_cause(caught_up[0], behind[1]) == ({"step0": "latent_distribution", "final": "decoder"},
                                                   "undetermined")
    assert p2q1_cause([20.0, 100.0, 60.0], caught_up[1]) == ({"step0": "undetermined",
                                                              "final": "latent_distribution"}, "undetermined")
    # where the VAE decoder has no advantage there is nothing to explain: the other point names the cause
    even = {**FINALS, "ae_decoder": [20.0, 20.1, 19.9]}
    assert p2q1_cause(*behind, finals=even) == ({"step0": "decoder", "final": "no_advantage"}, "decoder")
    worse = {**FINALS, "vae_decoder": [40.1, 39.9, 40.0]}
    assert p2q1_cause(*caught_up, finals=worse)[0]["final"] == "no_advantage"
    # the control is read without Holm's correction, at 5 % of the VAE decoder's mean
    v = p2q1.rule(*gan_started({**FINALS, "ae_decoder_matched": behind[1]}, {**STARTS, "ae_decoder_matched": behind[0]}))
    assert not v.numbers["control_final"].holm and v.numbers["control_final"].min_effect == pytest.approx(1.0)
    assert v.numbers["control_step0"].paired and v.numbers["control_step0"].diff == pytest.approx(40.0)
    # without the control's runs
    v = p2q1.rule(*gan_started(FINALS, STARTS))
    assert v.numbers["causes"] == {"step0": "missing", "final": "missing"} and v.numbers["cause"] == "missing"
    assert {"what": "arm", "arm": "ae_decoder_matched"} in v.missing and v.status == "confirmed"


NETS = ("encoder", "discriminator", "untrained_encoder", "untrained_discriminator")


def probe_runs(enc: float = 0.80, disc: float = 0.70, seeds: int = 3, recon=(250.0, 280.0, 300.0, 301.0),
               auroc=(0.80, 0.95, 0.70, 0.71), spread=(0.0, 0.0), **more: float) -> pd.DataFrame:
    """Probe runs of several seeds. ``recon`` and ``auroc`` (the mean-difference real/fake AUROC): each network's
    readout (encoder, discriminator, untrained encoder, untrained discriminator; the encoders' are their penultimate
    layers). Seed s moves every
    number of its run together (paired within a run), and the trained discriminator's readouts alone by a little
    (so the intervals are not empty) plus -1, 0, +1 times ``spread`` (reconstruction, AUROC)."""
    rows = []
    for s, e in enumerate((0.0, -0.01, 0.01)[:seeds]):
        own = (0.0, 0.3, -0.3)[s] + (0.0, -1.0, 1.0)[s] * spread[0], (0.0, 0.002, -0.002)[s] + (0.0, -1.0, 1.0)[s] * spread[1]
        row = {"kind": "probe", "seed": s, "encoder_probe_accuracy": enc + e, "discriminator_probe_accuracy": disc + e,
               "encoder_trunk_pca_probe_accuracy": 0.7 + e, "discriminator_pca_probe_accuracy": 0.6 + e,
               **{k: v + e for k, v in more.items()}}
        for net, r, a in zip(NETS, recon, auroc, strict=True):
            row[f"{net}_recon_from_features"] = r + 100 * e + (own[0] if net == "discriminator" else 0.0)
            row[f"{net}_realfake_centroid_auroc"] = a + e + (own[1] if net == "discriminator" else 0.0)
            row[f"{net}_realfake_auroc"] = 1.0  # the logistic probe at its ceiling: the claim must not read it
        rows.append(row)
    return frame(rows)


def test_p2q2_each_claim_flips_both_ways_beyond_its_untrained_control():
    def claims(**planted):
        v = p2q2.rule(probe_runs(**planted))
        return v.status, v.numbers["claims"]

    ok = p2q2.rule(probe_runs())  # D - encoder: +30 nats and +0.15 AUROC trained, +1 and +0.01 untrained
    assert ok.status == "confirmed" and set(ok.numbers["claims"].values()) == {"confirmed"}
    keeps = ok.numbers["keeps_image"]
    assert keeps.paired and keeps.holm and keeps.diff == pytest.approx(29.0) and keeps.a.mean == pytest.approx(30.0)
    assert keeps.b.mean == pytest.approx(1.0) and keeps.min_effect == p2q2.RECON_MIN_EFFECT
    assert ok.numbers["separates_real"].diff == pytest.approx(0.14) and ok.rests_on == ok.run_ids
    # claim 1 refuted: D's layer reconstructs the images better than the encoder's
    assert claims(recon=(290.0, 260.0, 300.0, 301.0)) == (
        "not_confirmed", {"keeps_image": "not_confirmed", "separates_real": "confirmed"})
    # claim 2 refuted: the encoder's layer separates real from generated better than D's
    assert claims(auroc=(0.95, 0.80, 0.70, 0.71)) == (
        "not_confirmed", {"keeps_image": "confirmed", "separates_real": "not_confirmed"})
    # the trained gaps alone would confirm both; the untrained networks show the same gaps: no effect of training
    assert claims(recon=(250.0, 280.0, 270.0, 300.0)) == (
        "no_significant_difference", {"keeps_image": "no_significant_difference", "separates_real": "confirmed"})
    assert claims(auroc=(0.80, 0.95, 0.70, 0.85)) == (
        "no_significant_difference", {"keeps_image": "confirmed", "separates_real": "no_significant_difference"})
    # ... and a gap that only training made counts, though the untrained networks rank the other way round
    assert claims(recon=(290.0, 290.0, 320.0, 300.0))[1]["keeps_image"] == "confirmed"


def test_p2q2_untrained_layers_at_the_auroc_ceiling_leave_claim_2_to_its_control():
    at_ceiling = p2q2.rule(probe_runs(auroc=(0.985, 0.99, 0.985, 0.99)))  # every layer separates almost perfectly
    assert at_ceiling.numbers["realfake_ceiling"] and at_ceiling.numbers["separates_real"].outcome == "none"
    assert at_ceiling.numbers["claims"] == {"keeps_image": "confirmed", "separates_real": "inconclusive_control"}
    assert at_ceiling.status == "inconclusive_control"
    # the ceiling does not hide what training took away: the encoder's layer no longer separates them
    lost = p2q2.rule(probe_runs(auroc=(0.80, 0.99, 0.985, 0.99)))
    assert lost.numbers["realfake_ceiling"] and lost.numbers["claims"]["separates_real"] == "confirmed"
    # below the ceiling "no effect" is a finding
    assert not p2q2.rule(probe_runs(auroc=(0.80, 0.95, 0.80, 0.95))).numbers["realfake_ceiling"]


def test_p2q2_wide_seeds_or_one_probe_run_are_underpowered_never_no_difference():
    wide = p2q2.rule(probe_runs(spread=(40.0, 0.15)))  # the same means, D's readouts spread widely over seeds
    assert wide.numbers["claims"] == {"keeps_image": "inconclusive_underpowered",
                                      "separates_real": "inconclusive_underpowered"}
    assert wide.status == "inconclusive_underpowered"
    assert wide.numbers["keeps_image"].mde > p2q2.RECON_MIN_EFFECT
    assert wide.numbers["separates_real"].mde > p2q2.AUROC_MIN_EFFECT
    one = p2q2.rule(probe_runs(seeds=1))
    assert one.status == "inconclusive_underpowered" and one.numbers["keeps_image"].too_few_seeds
    # one claim underpowered and the other confirmed: the verdict is the weaker
    assert p2q2.rule(probe_runs(spread=(40.0, 0.0))).status == "inconclusive_underpowered"


def test_p2q2_needs_the_controls_and_keeps_the_class_probes_as_supporting_evidence():
    assert p2q2.rule(frame([{"kind": "probe", "encoder_probe_accuracy": 0.8}])).status == "missing"
    old = p2q2.rule(frame([{"kind": "probe", "seed": s, "encoder_probe_accuracy": 0.8,
                            "discriminator_probe_accuracy": 0.7} for s in range(3)]))  # made before issue 15
    assert old.status == "missing" and not old.rows
    assert {m["metric"] for m in old.missing} == {m for ms in p2q2.CLAIMS.values() for m in ms}
    # the class probes are described beside the verdict, never part of its rule
    v = p2q2.rule(probe_runs(enc=0.60, disc=0.75, encoder_trunk_probe_accuracy=0.78))
    assert v.status == "confirmed" and v.numbers["difference"].outcome == "less"
    assert v.numbers["same_width"].diff == pytest.approx(0.03) and v.numbers["pca_width"].diff == pytest.approx(0.1)
    assert [r["features"] for r in v.rows] == ["encoder", "encoder_trunk", "discriminator", "raw"]
    assert [r["features"] for r in v.numbers["readouts"]] == [*p2q2.READOUTS, "raw"]
    assert v.numbers["readouts"][0]["recon"].mean == pytest.approx(250.0)


def test_p2q2_rests_on_its_probe_runs_for_the_convergence_gate():
    runs = probe_runs().assign(**{"metrics.converged": 1.0})
    assert p2q2.QUESTION.judge(runs, {}).status == "confirmed"
    runs.loc[1, "metrics.converged"] = 0.0  # the networks of seed 1 did not converge
    v = p2q2.QUESTION.judge(runs, {})
    assert v.status == "inconclusive_not_converged" and v.numbers["not_converged"] == ["run01"]
    assert v.numbers["rule_claims"] == {"keeps_image": "confirmed", "separates_real": "confirmed"}
    assert set(v.numbers["claims"].values()) == {"inconclusive_not_converged"}


def test_select_runs_profile_unfinished_and_duplicates():
    runs = frame([{"question": "p1q3", "profile": "quick", "kind": "vae", "arm": "z=2", "seed": 0, "val_recon": 1},
                  {"question": "p1q3", "profile": "full", "kind": "vae", "arm": "z=2", "seed": 0, "val_recon": 2},
                  {"question": "p1q3", "profile": "full", "kind": "vae", "arm": "z=2", "seed": 0, "val_recon": 3},
                  {"question": "p1q3", "profile": "full", "kind": "vae", "arm": "z=8", "seed": 0, "val_recon": 4,
                   "status": "FAILED"},
                  {"question": "p2q2", "profile": "quick", "kind": "probe", "arm": "probe", "seed": 0}])
    per_q, used, ignored = V.select_runs(runs, "any", questions.NAMES)
    assert used["p1q3"] == "full" and used["p2q2"] == "quick" and used["p1q1"] == "quick" and ignored == 1
    assert per_q["p1q3"]["metrics.val_recon"].tolist() == [3]  # full only, latest duplicate
    per_q, used, _ = V.select_runs(runs, "quick", questions.NAMES)
    assert per_q["p1q3"]["metrics.val_recon"].tolist() == [1] and used["p1q3"] == "quick"


class FakeReader:
    """reports.verdicts.Reader without a store: one KL list per run, a scatter PNG for every run asked."""

    def history(self, run_ids: list[str], key: str) -> pd.DataFrame:
        return pd.DataFrame({"run_id": run_ids, "key": key, "step": 0, "value": 1.0})

    def json(self, artifact_uri: str, path: str):
        return [3.0, 1.0] if path == "kl_per_dim.json" else None

    def png(self, artifact_uri: str, path: str) -> bytes | None:
        return b"\x89PNG " + artifact_uri.encode() if path == "latent_scatter.png" else None


def test_p1q2_keeps_its_kl_per_dimension_and_scatters_as_its_own_data():
    runs = beta_sweep()
    runs = pd.concat([runs, frame([{"kind": "vae", "beta": 1.0, "latent_dim": 2, "seed": 0, "test_kl": 3,
                                    "test_recon": 250, "test_neg_elbo": 253,
                                    "test_active_units": 2}]).assign(run_id="run2d")])
    v = p1q2.QUESTION.verdict(runs, FakeReader())
    assert v.status == "confirmed" and v.numbers["scatter_run_ids"] == ["run2d"]
    kl = v.frames["kl_per_dim"]  # the sweep's runs only, each labelled with its beta
    sweep_ids = [f"run{i:02d}" for i in range(9)]
    assert sorted(set(kl["run_id"])) == sweep_ids and kl["beta"].tolist() == [0] * 6 + [1] * 6 + [4] * 6
    assert list(v.images) == ["run2d"]
    drawn = p1q2.figures(v, {})
    assert drawn["p1q2_scatter_run2d"] == (v.images["run2d"], ["run2d"])
    assert drawn["p1q2_kl_per_dim"][0] is not None and drawn["p1q2_kl_per_dim"][1] == sweep_ids


def test_each_question_reads_its_own_history():
    runs = gan({"vae_decoder": [20, 21, 19], "random": [40, 41, 39], "ae_decoder": [30, 31, 29],
                "ae_decoder_matched": [20, 21, 19]})
    v = p2q1.QUESTION.verdict(runs, FakeReader())
    assert set(v.frames["history"]["key"]) == {"fid_proxy"} and set(v.frames["history"]["arm"]) == set(p2q1.ARMS)
    assert v.rows[0]["step0"].n == 3  # step 0 comes from the history the question read
    assert set(p1q1.QUESTION.read(p1q1_runs(), FakeReader())["history"]["key"]) == {"val_neg_elbo"}


def test_every_question_has_a_partial_in_each_language_and_one_meaning_per_label():
    from reports import build

    assert len(set(questions.NAMES)) == len(questions.NAMES) == len(questions.QUESTIONS)
    for lang in build.LANGUAGES:
        env = build.environment(lang, {}, "")
        for name in questions.NAMES:
            part = env.get_template(build.partial(lang, name)).module
            assert part.title.startswith(name.upper()) and callable(part.section), (lang, name)
        labels = build.labels_of(lang)  # raises if two partials give one key different words
        assert {"epoch", "pic_condition", "val_neg_elbo", "beta", "vae", "vae_decoder", "raw"} <= set(labels)


def test_p2q1_holm_correction_over_its_two_claims():
    """Each claim's raw p-value passes 0.05, neither passes Holm's 0.025 for the smaller one: no claim confirmed."""
    base = [20.0, 22.0, 18.0, 21.0, 19.0]  # seed s of every arm shares base[s]
    d_random, d_ae = [3.0, 1.0, 5.0, 0.5, 5.5], [3.2, 1.3, 5.0, 0.8, 5.4]
    runs = gan({"vae_decoder": base, "random": [b + d for b, d in zip(base, d_random, strict=True)],
                "ae_decoder": [b + d for b, d in zip(base, d_ae, strict=True)]})
    v = p2q1.rule(runs, NO_HISTORY)
    raw = {name: V.compare_runs(runs[runs["tags.genlab.arm"] == ref], runs[runs["tags.genlab.arm"] == "vae_decoder"],
                                "fid_proxy", v.numbers[name].min_effect) for name, ref in p2q1.CLAIMS}
    for name, c in raw.items():  # without the correction each claim would be confirmed
        assert 0.025 < c.p_value < 0.05 and c.outcome == "greater" and V.claim(c) == "confirmed", name
        held = v.numbers[name]
        assert held.holm and held.paired and held.p_value == pytest.approx(c.p_value)
        assert v.numbers["claims"][name] == "inconclusive_underpowered"
    assert v.status == "inconclusive_underpowered"
    # one claim alone is not corrected
    alone = p2q1.rule(runs[runs["tags.genlab.arm"] != "ae_decoder"], NO_HISTORY)
    assert alone.numbers["claims"]["decoder_init"] == "confirmed" and not alone.numbers["decoder_init"].holm


def test_convergence_gate_names_the_runs_and_keeps_what_the_rule_said():
    finals = {"vae_decoder": [20, 21, 19], "random": [40, 41, 39], "ae_decoder": [30, 31, 29],
              "ae_decoder_matched": [20, 21, 19]}
    runs = gan(finals).assign(**{"metrics.converged": 1.0})
    assert p2q1.QUESTION.verdict(runs, FakeReader()).status == "confirmed"
    runs.loc[4, "metrics.converged"] = 0.0  # random, seed 1: an equal-budget baseline, not gated
    runs.loc[7, "metrics.converged"] = 0.0  # ae_decoder, seed 1: likewise
    assert p2q1.QUESTION.verdict(runs, FakeReader()).status == "confirmed"
    runs.loc[1, "metrics.converged"] = 0.0  # vae_decoder, seed 1
    runs.loc[10, "metrics.converged"] = math.nan  # ae_decoder_matched, seed 1: made before `converged` was logged
    v = p2q1.QUESTION.verdict(runs, FakeReader())
    assert v.status == "inconclusive_not_converged" and v.numbers["rule_status"] == "confirmed"
    assert v.numbers["not_converged"] == ["run01", "run10"] and v.numbers["not_measured"] == ["run10"]
    assert v.numbers["claims"] == {"decoder_init": "inconclusive_not_converged",
                                   "normal_latent": "inconclusive_not_converged"}
    assert v.numbers["rule_claims"] == {"decoder_init": "confirmed", "normal_latent": "confirmed"}
    # runs without the metric at all (an old store) are not measured, hence not converged
    old = gan(finals)
    assert (p2q1.QUESTION.verdict(old, FakeReader()).numbers["not_measured"]
            == ids_of(old[~V.arm(old).isin(p2q1.BASELINES)]))
    # a missing verdict stays missing
    assert p2q1.QUESTION.verdict(gan({"vae_decoder": [20, 21, 19]}), FakeReader()).status == "missing"


def ids_of(runs: pd.DataFrame) -> list[str]:
    return runs["run_id"].tolist()


def test_convergence_gate_looks_only_at_the_runs_a_verdict_rests_on():
    # P1Q1 rests on the reparam and detach VAEs and the gradvar runs: a score-function VAE that did not converge
    # is what the question measures (it learns slowly), not a reason for "inconclusive"
    runs = p1q1_runs()
    runs.loc[V.arm(runs) == "score", "metrics.converged"] = 0.0
    assert p1q1.QUESTION.judge(runs, {"history": NO_HISTORY}).status == "confirmed"
    # ... but the VAE the gradients were measured on must have converged, and so must the detach VAEs
    unconverged = p1q1.QUESTION.judge(p1q1_runs(grad=gradvar(3.0, converged=0.0)), {"history": NO_HISTORY})
    assert unconverged.status == "inconclusive_not_converged" and unconverged.numbers["rule_status"] == "confirmed"
    runs = p1q1_runs()
    runs.loc[V.arm(runs) == "detach", "metrics.converged"] = 0.0
    assert p1q1.QUESTION.judge(runs, {"history": NO_HISTORY}).status == "inconclusive_not_converged"
    # P1Q3 rests on the beta = 1 VAEs, not on the autoencoders shown for contrast
    sweep = dim_sweep((1, 2, 7.5), (230, 220, 226), ae_gaps=None).assign(**{"metrics.converged": 1.0})
    ae = sweep[:9].assign(**{"params.beta": "0.0", "tags.genlab.arm": "ae", "metrics.converged": [0.0] * 6 + [1.0] * 3,
                             "run_id": [f"ae{i}" for i in range(9)]})
    assert p1q3.QUESTION.judge(pd.concat([sweep, ae]), {}).status == "confirmed"
    ae.loc[8, "metrics.converged"] = 0.0  # ... but the largest AE is the control's baseline: it must have converged
    assert p1q3.QUESTION.judge(pd.concat([sweep, ae]), {}).numbers["not_converged"] == ["ae8"]
    ae.loc[8, "metrics.converged"] = 1.0
    sweep.loc[8, "metrics.converged"] = 0.0
    gated = p1q3.QUESTION.judge(pd.concat([sweep, ae]), {})
    assert gated.status == "inconclusive_not_converged" and gated.numbers["not_converged"] == ["run08"]
    sweep.loc[8, "metrics.converged"] = 1.0
    sweep.loc[12, "metrics.converged"] = 0.0  # the positive control is gated too: it must have trained to the end
    assert p1q3.QUESTION.judge(pd.concat([sweep, ae]), {}).numbers["not_converged"] == ["run12"]


def test_p1q3_shows_the_importance_weighted_gap_beside_the_reconstruction_gap():
    runs = dim_sweep((1, 2, 7.5), (230, 220, 226))
    runs = runs.assign(**{"metrics.train_nll_iw": 300.0, "metrics.test_nll_iw": 300.0 + runs["params.latent_dim"].astype(float)})
    v = p1q3.rule(runs)
    vae_rows = [r for r in v.rows if r["model"] == "vae"]
    assert [r["nll_gap"].mean for r in vae_rows] == [4.0, 16.0, 64.0]
    assert v.numbers["nll_gap_growth"].diff == pytest.approx(60.0) and v.numbers["nll_gap_growth"].outcome == "greater"
    assert set(v.data["metric"]) >= {"gap", "nll_gap"} and v.status == "confirmed"  # the rule keeps the recon gap
    assert p1q3.rule(dim_sweep((1, 2, 7.5), (230, 220, 226))).rows[0]["nll_gap"].n == 0  # older runs: no number


def test_select_runs_prefers_the_most_thorough_profile():
    rows = [{"question": "p2q2", "profile": p, "kind": "probe", "arm": "probe", "seed": 0, "encoder_probe_accuracy": i}
            for i, p in enumerate(("quick", "paper", "full"))]
    per_q, used, _ = V.select_runs(frame(rows), "any", questions.NAMES)
    assert used["p2q2"] == "paper" and per_q["p2q2"]["metrics.encoder_probe_accuracy"].tolist() == [1]


def test_every_status_has_words_in_each_language():
    from reports import build

    for lang in build.LANGUAGES:
        common = build.environment(lang, {}, "").get_template(f"{lang}/common.md.j2").module
        assert set(V.STATUSES) <= set(common.verdict_word) and set(V.OUTCOMES) <= set(common.outcome_word)
