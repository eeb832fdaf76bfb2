"""genlab.compare: two studies' runs matched by question and plan name; every kind of difference is seen."""

from __future__ import annotations

import copy
import json

import pytest

from genlab import compare

RUN_A, RUN_B = "a" * 32, "b" * 32
STUDY = {("p1q2", "p1q2_beta1_s0"): {"status": "FINISHED", "params": {"beta": "1.0", "init_from": RUN_A},
                                       "metrics": {"test_neg_elbo": 250.0, "converged": 1.0}}}


def test_the_same_study_has_no_difference_and_run_ids_compare_equal():
    other = copy.deepcopy(STUDY)
    other[("p1q2", "p1q2_beta1_s0")]["params"]["init_from"] = RUN_B  # another store numbers its runs apart
    assert compare.differences(STUDY, other, rtol=1e-6) == []


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.update(status="FAILED"), "status FINISHED vs FAILED"),
    (lambda r: r["params"].update(beta="2.0"), "param beta 1.0 vs 2.0"),
    (lambda r: r["params"].update(init_from="none"), f"param init_from {RUN_A} vs none"),
    (lambda r: r["metrics"].update(test_neg_elbo=250.0 * (1 + 1e-5)), "metric test_neg_elbo"),
    (lambda r: r["metrics"].pop("converged"), "metric converged 1.0 vs None"),
], ids=["status", "param", "run id vs not", "metric beyond rtol", "metric absent"])
def test_each_kind_of_difference_is_seen(change, expected):
    other = copy.deepcopy(STUDY)
    change(other[("p1q2", "p1q2_beta1_s0")])
    found = compare.differences(STUDY, other, rtol=1e-6)
    assert len(found) == 1 and expected in found[0]


def test_a_run_in_one_study_only_and_the_tolerance():
    other = copy.deepcopy(STUDY)
    other[("p1q2", "p1q2_beta0_s0")] = other[("p1q2", "p1q2_beta1_s0")]
    assert compare.differences(STUDY, other, rtol=1e-6) == ["p1q2/p1q2_beta0_s0: only in B"]
    other = copy.deepcopy(STUDY)
    other[("p1q2", "p1q2_beta1_s0")]["metrics"]["test_neg_elbo"] = 250.0 * (1 + 1e-7)
    assert compare.differences(STUDY, other, rtol=1e-6) == []


def test_verdicts_compare_status_and_claims_not_run_ids(tmp_path):
    base = {"p1q2": {"status": "confirmed", "claims": {"continuity": "holds"}, "run_ids": [RUN_A]}}
    same = {"p1q2": {**base["p1q2"], "run_ids": [RUN_B]}}
    flipped = {"p1q2": {**base["p1q2"], "claims": {"continuity": "fails"}}}
    paths = {}
    for name, content in (("a", base), ("same", same), ("flipped", flipped)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(content))
    assert compare.verdict_differences(paths["a"], paths["same"]) == []
    assert compare.verdict_differences(paths["a"], paths["flipped"]) == [
        "verdict p1q2: claims {'continuity': 'holds'} vs {'continuity': 'fails'}"]


def test_a_missing_verdicts_file_is_bad_input(tmp_path, capsys):
    assert compare.main(["sqlite:///x.db", "sqlite:///y.db", "--verdicts", str(tmp_path / "no.json"),
                         str(tmp_path / "no.json")]) == 2
    assert "no file" in capsys.readouterr().err


def test_a_missing_store_is_bad_input_and_is_not_created(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "restored-after-the-test")  # compare points the process at each store
    missing = tmp_path / "none.db"
    assert compare.main([f"sqlite:///{missing}", f"sqlite:///{missing}"]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing.exists()
