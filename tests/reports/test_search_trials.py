"""reports/search_trials.py: the search's best region, its agreement with a sweep's best value (flipped both ways),
too few trials, and the Pareto front."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from reports import search_trials as S


def trials(rows: list[tuple[int, float, float | None, float, float]]) -> pd.DataFrame:
    """(latent_dim, beta, val_neg_elbo or None for a pruned trial, test_recon, fid_proxy) per trial."""
    return pd.DataFrame([{"run_id": f"{i:032x}", "experiment_id": "1", "run_name": f"t{i}",
                          "state": "COMPLETE" if v is not None else "PRUNED", "latent_dim": d, "beta": b,
                          "val_neg_elbo": v if v is not None else math.nan, "test_recon": r, "test_neg_elbo": math.nan,
                          "fid_proxy": f} for i, (d, b, v, r, f) in enumerate(rows)])


# twelve complete trials: the best three at beta 0.5-1 and latent_dim 8-16, then worse ones; one pruned
TWELVE = [(8, 0.5, 250, 200, 40), (16, 1.0, 251, 210, 35), (8, 0.8, 252, 205, 45)] + \
    [(2 ** (1 + i % 6), 0.1 * (i + 2), 260 + i, 220 + i, 30 + i) for i in range(9)] + [(4, 3.0, None, 0, 0)]


@pytest.mark.parametrize("param, grid_best, status", [
    ("beta", 0.8, "agrees"), ("beta", 0.5, "agrees"), ("beta", 1.0, "agrees"),
    ("beta", 0.49, "disagrees"), ("beta", 2.0, "disagrees"),
    ("latent_dim", 8, "agrees"), ("latent_dim", 32, "disagrees"), ("beta", None, "no_grid"),
], ids=["inside", "low end", "high end", "just below", "above", "dim inside", "dim outside", "no grid"])
def test_the_best_region_and_whether_the_sweep_agrees(param, grid_best, status):
    s = S.summary(trials(TWELVE), param, grid_best)
    assert s["status"] == status and (s["n_trials"], s["n_complete"], s["n_pruned"]) == (13, 12, 1)
    assert s["top_n"] == 3 and s["best"]["value"] == 250 and s["best"]["latent_dim"] == 8
    expected = {"beta": (0.5, 0.8, 1.0), "latent_dim": (8, 8, 16)}[param]
    assert (s["low"], s["median"], s["high"]) == expected


def test_too_few_complete_trials_locate_no_region():
    s = S.summary(trials(TWELVE[:S.MIN_COMPLETE - 1]), "beta", 0.5)
    assert s["status"] == "too_few" and "low" not in s
    assert S.summary(trials(TWELVE[:S.MIN_COMPLETE]), "beta", 0.5)["status"] == "agrees"
    assert S.summary(S.trials_frame(pd.DataFrame()), "beta", 0.5) == {
        "param": "beta", "n_trials": 0, "n_complete": 0, "n_pruned": 0, "run_ids": [], "status": "too_few"}


def test_the_top_grows_with_the_number_of_trials():
    many = TWELVE[:12] + [(2, 5.0, 300 + i, 300, 300) for i in range(8)]  # 20 complete: the best quarter is 5
    assert S.summary(trials(many), "beta", 0.5)["top_n"] == 5


def test_the_pareto_front_keeps_the_trials_no_other_beats_on_both():
    front = S.pareto_front(trials([(2, 1, 1, 10, 50), (4, 1, 1, 20, 40), (8, 1, 1, 15, 60), (16, 1, 1, 30, 30),
                                   (32, 1, 1, 30, 35)]))
    assert [f["latent_dim"] for f in front] == [2, 4, 16]  # 8 is beaten by 2, 32 by 16; sorted by reconstruction


def test_trials_frame_reads_the_child_runs():
    children = pd.DataFrame({"run_id": ["a" * 32], "experiment_id": ["3"], "tags.mlflow.runName": ["trial 0"],
                             "tags.optuna.state": ["COMPLETE"], "params.latent_dim": ["8"], "params.beta": ["0.5"],
                             "metrics.val_neg_elbo": [250.0], "metrics.fid_proxy": [30.0]})
    frame = S.trials_frame(children)
    row = frame.iloc[0]
    assert (row["state"], row["latent_dim"], row["beta"], row["val_neg_elbo"], row["fid_proxy"]) == \
        ("COMPLETE", 8, 0.5, 250.0, 30.0)
    assert math.isnan(row["test_recon"]) and row["run_name"] == "trial 0"
