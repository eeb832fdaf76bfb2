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


def test_t_interval_and_welch_difference():
    s = V.stat([9.8, 10.0, 10.2])
    assert s.n == 3 and s.mean == pytest.approx(10.0) and s.half == pytest.approx(0.4968, abs=1e-4)
    assert math.isnan(V.stat([3.0]).half)
    c = V.compare(V.stat([2.0, 2.1, 1.9]), V.stat([1.0, 1.1, 0.9]), [2.0, 2.1, 1.9], [1.0, 1.1, 0.9], 0.5)
    assert c.outcome == "greater" and c.low > 0
    noisy = V.compare(V.stat([2.0, 5.0, -1.0]), V.stat([1.0, 1.1, 0.9]), [2.0, 5.0, -1.0], [1.0, 1.1, 0.9], 0.5)
    assert noisy.outcome == "none" and noisy.low < 0 < noisy.high  # inside the noise
    one_seed = V.compare(V.stat([2.0]), V.stat([1.0]), [2.0], [1.0], 0.5)
    assert one_seed.outcome == "greater" and not one_seed.has_ci  # threshold alone
    assert V.compare(V.stat([1.2]), V.stat([1.0]), [1.2], [1.0], 0.5).outcome == "none"


def gradvar(ratio: float, no_trick: float) -> pd.DataFrame:
    return frame([{"kind": "gradvar", "grad_variance_reparam": 1.0, "grad_variance_score": ratio,
                   "encoder_grad_norm_no_trick": no_trick}])


def test_p1q1_needs_both_the_ratio_and_a_zero_gradient_without_the_trick():
    assert p1q1.rule(gradvar(100, 0.0), NO_HISTORY).status == "confirmed"
    assert p1q1.rule(gradvar(100, 0.3), NO_HISTORY).status == "not_confirmed"
    assert p1q1.rule(gradvar(9, 0.0), NO_HISTORY).status == "not_confirmed"
    missing = p1q1.rule(frame([]), NO_HISTORY)
    assert missing.status == "missing" and {"what": "kind", "kind": "gradvar"} in missing.missing


def beta_sweep(kl, recon, units, betas=(0.0, 1.0, 4.0)) -> pd.DataFrame:
    return frame([{"kind": "vae", "beta": b, "latent_dim": 8, "seed": 0, "test_kl": k, "test_recon": r,
                   "active_units": u} for b, k, r, u in zip(betas, kl, recon, units, strict=True)])


def test_p1q2_each_part_of_the_trade_off_can_fail_alone():
    ok = p1q2.rule(beta_sweep((30, 15, 5), (200, 210, 240), (8, 6, 2)), NO_KL)
    assert ok.status == "confirmed" and ok.numbers["rho_kl"] == pytest.approx(-1.0)
    units_flat = p1q2.rule(beta_sweep((30, 15, 5), (200, 210, 240), (8, 8, 8)), NO_KL)
    assert units_flat.status == "not_confirmed" and units_flat.numbers["kl_ok"] and not units_flat.numbers["units_ok"]
    recon_flat = p1q2.rule(beta_sweep((30, 15, 5), (210, 200, 205), (8, 6, 2)), NO_KL)
    assert recon_flat.status == "not_confirmed" and not recon_flat.numbers["recon_ok"]
    two = p1q2.rule(beta_sweep((30, 5), (200, 240), (8, 2), betas=(0.0, 4.0)), NO_KL)
    assert two.status == "missing" and {"what": "count", "key": "beta", "have": 2, "need": 3} in two.missing


def dim_sweep(gaps, tests) -> pd.DataFrame:
    rows = []
    for d, g, t in zip((4, 16, 64), gaps, tests, strict=True):
        for seed, e in enumerate((-0.1, 0.0, 0.1)):
            rows.append({"kind": "vae", "beta": 1.0, "latent_dim": d, "seed": seed, "train_eval_recon": 200 + e,
                         "val_recon": 200 + g + e, "test_recon": t + e})
    return frame(rows)


def test_p1q3_shapes():
    assert p1q3.rule(dim_sweep((1, 2, 6), (230, 220, 226))).status == "confirmed"
    plateau = p1q3.rule(dim_sweep((1, 2, 6), (230, 220, 220.5)))
    assert plateau.status == "not_confirmed" and plateau.numbers["shape"] == "plateau" and plateau.numbers["gap_ok"]
    improves = p1q3.rule(dim_sweep((1, 2, 6), (230, 220, 215)))
    assert improves.numbers["shape"] == "improves" and improves.status == "not_confirmed"
    no_gap = p1q3.rule(dim_sweep((1, 1.5, 2), (230, 220, 226)))
    assert no_gap.numbers["shape"] == "worsens" and no_gap.status == "not_confirmed"


def gan(finals: dict[str, list[float]]) -> pd.DataFrame:
    return frame([{"kind": "gan", "arm": arm, "seed": s, "fid_proxy": f}
                  for arm, values in finals.items() for s, f in enumerate(values)])


def test_p2q1_claims_inside_the_noise_are_no_significant_difference():
    v = p2q1.rule(gan({"vae_decoder": [20, 35, 50], "random": [30, 40, 45], "ae_decoder": [25, 45, 40]}), NO_HISTORY)
    assert v.numbers["claims"] == {"decoder_init": "no_significant_difference",
                                   "normal_latent": "no_significant_difference"}
    assert v.status == "no_significant_difference"
    partial = p2q1.rule(gan({"vae_decoder": [20, 21, 19], "random": [40, 41, 39]}), NO_HISTORY)
    assert partial.numbers["claims"] == {"decoder_init": "confirmed", "normal_latent": "missing"}
    assert partial.status == "missing" and {"what": "arm", "arm": "ae_decoder"} in partial.missing


def test_p2q2_three_outcomes():
    def probe(enc, disc):
        return p2q2.rule(frame([{"kind": "probe", "encoder_probe_accuracy": enc, "discriminator_probe_accuracy": disc}]))
    assert probe(0.80, 0.70).status == "confirmed"
    assert probe(0.70, 0.80).status == "not_confirmed"
    assert probe(0.80, 0.79).status == "no_significant_difference"
    assert p2q2.rule(frame([{"kind": "probe", "encoder_probe_accuracy": 0.8}])).status == "missing"
    # the encoder's penultimate layer is described beside the verdict, never part of its rule
    assert "same_width" not in probe(0.80, 0.70).numbers  # probe runs from before it was measured
    v = p2q2.rule(frame([{"kind": "probe", "encoder_probe_accuracy": 0.80, "discriminator_probe_accuracy": 0.70,
                       "encoder_trunk_probe_accuracy": 0.60}]))
    assert v.status == "confirmed" and v.numbers["same_width"].diff == pytest.approx(-0.10)
    assert [r["features"] for r in v.rows] == ["encoder", "encoder_trunk", "discriminator", "raw"]


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
    runs = beta_sweep((30, 15, 5), (200, 210, 240), (8, 6, 2))
    runs = pd.concat([runs, frame([{"kind": "vae", "beta": 1.0, "latent_dim": 2, "seed": 0, "test_kl": 3,
                                    "test_recon": 250, "active_units": 2}]).assign(run_id="run2d")])
    v = p1q2.QUESTION.verdict(runs, FakeReader())
    assert v.status == "confirmed" and v.numbers["scatter_run_ids"] == ["run2d"]
    kl = v.frames["kl_per_dim"]  # the sweep's runs only, each labelled with its beta
    assert sorted(set(kl["run_id"])) == ["run00", "run01", "run02"] and kl["beta"].tolist() == [0, 0, 1, 1, 4, 4]
    assert list(v.images) == ["run2d"]
    drawn = p1q2.figures(v, {})
    assert drawn["p1q2_scatter_run2d"] == (v.images["run2d"], ["run2d"])
    assert drawn["p1q2_kl_per_dim"][0] is not None and drawn["p1q2_kl_per_dim"][1] == ["run00", "run01", "run02"]


def test_each_question_reads_its_own_history():
    runs = gan({"vae_decoder": [20, 21, 19], "random": [40, 41, 39], "ae_decoder": [30, 31, 29]})
    v = p2q1.QUESTION.verdict(runs, FakeReader())
    assert set(v.frames["history"]["key"]) == {"fid_proxy"} and set(v.frames["history"]["arm"]) == set(p2q1.ARMS)
    assert v.rows[0]["step0"].n == 3  # step 0 comes from the history the question read
    assert set(p1q1.QUESTION.read(gradvar(100, 0.0), FakeReader())["history"]["key"]) == {"val_neg_elbo"}


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
