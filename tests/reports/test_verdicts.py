"""The verdict rules as pure functions on run frames (no store): edge cases the end-to-end test does not reach."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from reports import verdicts as V

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
    assert V.p1q1(gradvar(100, 0.0), NO_HISTORY).status == "confirmed"
    assert V.p1q1(gradvar(100, 0.3), NO_HISTORY).status == "not_confirmed"
    assert V.p1q1(gradvar(9, 0.0), NO_HISTORY).status == "not_confirmed"
    missing = V.p1q1(frame([]), NO_HISTORY)
    assert missing.status == "missing" and {"what": "kind", "kind": "gradvar"} in missing.missing


def beta_sweep(kl, recon, units, betas=(0.0, 1.0, 4.0)) -> pd.DataFrame:
    return frame([{"kind": "vae", "beta": b, "latent_dim": 8, "seed": 0, "test_kl": k, "test_recon": r,
                   "active_units": u} for b, k, r, u in zip(betas, kl, recon, units, strict=True)])


def test_p1q2_each_part_of_the_trade_off_can_fail_alone():
    ok = V.p1q2(beta_sweep((30, 15, 5), (200, 210, 240), (8, 6, 2)), NO_KL)
    assert ok.status == "confirmed" and ok.numbers["rho_kl"] == pytest.approx(-1.0)
    units_flat = V.p1q2(beta_sweep((30, 15, 5), (200, 210, 240), (8, 8, 8)), NO_KL)
    assert units_flat.status == "not_confirmed" and units_flat.numbers["kl_ok"] and not units_flat.numbers["units_ok"]
    recon_flat = V.p1q2(beta_sweep((30, 15, 5), (210, 200, 205), (8, 6, 2)), NO_KL)
    assert recon_flat.status == "not_confirmed" and not recon_flat.numbers["recon_ok"]
    two = V.p1q2(beta_sweep((30, 5), (200, 240), (8, 2), betas=(0.0, 4.0)), NO_KL)
    assert two.status == "missing" and {"what": "count", "key": "beta", "have": 2, "need": 3} in two.missing


def dim_sweep(gaps, tests) -> pd.DataFrame:
    rows = []
    for d, g, t in zip((4, 16, 64), gaps, tests, strict=True):
        for seed, e in enumerate((-0.1, 0.0, 0.1)):
            rows.append({"kind": "vae", "beta": 1.0, "latent_dim": d, "seed": seed, "train_eval_recon": 200 + e,
                         "val_recon": 200 + g + e, "test_recon": t + e})
    return frame(rows)


def test_p1q3_shapes():
    assert V.p1q3(dim_sweep((1, 2, 6), (230, 220, 226))).status == "confirmed"
    plateau = V.p1q3(dim_sweep((1, 2, 6), (230, 220, 220.5)))
    assert plateau.status == "not_confirmed" and plateau.numbers["shape"] == "plateau" and plateau.numbers["gap_ok"]
    improves = V.p1q3(dim_sweep((1, 2, 6), (230, 220, 215)))
    assert improves.numbers["shape"] == "improves" and improves.status == "not_confirmed"
    no_gap = V.p1q3(dim_sweep((1, 1.5, 2), (230, 220, 226)))
    assert no_gap.numbers["shape"] == "worsens" and no_gap.status == "not_confirmed"


def gan(finals: dict[str, list[float]]) -> pd.DataFrame:
    return frame([{"kind": "gan", "arm": arm, "seed": s, "fid_proxy": f}
                  for arm, values in finals.items() for s, f in enumerate(values)])


def test_p2q1_claims_inside_the_noise_are_no_significant_difference():
    v = V.p2q1(gan({"vae_decoder": [20, 35, 50], "random": [30, 40, 45], "ae_decoder": [25, 45, 40]}), NO_HISTORY)
    assert v.numbers["claims"] == {"decoder_init": "no_significant_difference",
                                   "normal_latent": "no_significant_difference"}
    assert v.status == "no_significant_difference"
    partial = V.p2q1(gan({"vae_decoder": [20, 21, 19], "random": [40, 41, 39]}), NO_HISTORY)
    assert partial.numbers["claims"] == {"decoder_init": "confirmed", "normal_latent": "missing"}
    assert partial.status == "missing" and {"what": "arm", "arm": "ae_decoder"} in partial.missing


def test_p2q2_three_outcomes():
    def probe(enc, disc):
        return V.p2q2(frame([{"kind": "probe", "encoder_probe_accuracy": enc, "discriminator_probe_accuracy": disc}]))
    assert probe(0.80, 0.70).status == "confirmed"
    assert probe(0.70, 0.80).status == "not_confirmed"
    assert probe(0.80, 0.79).status == "no_significant_difference"
    assert V.p2q2(frame([{"kind": "probe", "encoder_probe_accuracy": 0.8}])).status == "missing"
    # the encoder's penultimate layer is described beside the verdict, never part of its rule
    assert "same_width" not in probe(0.80, 0.70).numbers  # probe runs from before it was measured
    v = V.p2q2(frame([{"kind": "probe", "encoder_probe_accuracy": 0.80, "discriminator_probe_accuracy": 0.70,
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
    per_q, used, ignored = V.select_runs(runs, "any")
    assert used["p1q3"] == "full" and used["p2q2"] == "quick" and used["p1q1"] == "quick" and ignored == 1
    assert per_q["p1q3"]["metrics.val_recon"].tolist() == [3]  # full only, latest duplicate
    per_q, used, _ = V.select_runs(runs, "quick")
    assert per_q["p1q3"]["metrics.val_recon"].tolist() == [1] and used["p1q3"] == "quick"
