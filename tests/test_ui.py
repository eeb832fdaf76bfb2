"""genlab/ui.py: the MLflow UI's addresses (Model training mode, the query inside the hash-routed fragment) and the
views it stores on experiments, in the format MLflow 3.17's UI reads (checked in Chromium by
tests/reports/test_mlflow_ui.py); `python -m genlab.ui`, what `make ui` prints."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import pytest
from mlflow.tracking import MlflowClient

from genlab import ui

BASE = "http://127.0.0.1:5000"


def fragment_query(url: str) -> tuple[str, dict[str, str]]:
    """The route and query parameters of a hash-routed address (what the UI's router reads)."""
    parts = urlsplit(url)
    assert parts.query == "", url  # a query before the '#' is not the UI's
    route, _, query = parts.fragment.partition("?")
    return route, dict(parse_qsl(query))


@pytest.mark.parametrize("url,route", [
    (ui.experiments_url(BASE + "/"), "/experiments"),
    (ui.experiment_url(BASE, "7"), "/experiments/7/runs"),
    (ui.run_url(BASE, "7", "ab12"), "/experiments/7/runs/ab12"),
])
def test_every_address_opens_the_model_training_mode(url, route):
    assert url.startswith(f"{BASE}/#/")
    assert fragment_query(url) == (route, {"workflowType": "machine_learning"})


def test_a_view_address_names_its_key_and_opens_the_charts():
    url = ui.view_url(BASE, "7", "genlab-lab1-p2q1-full")
    assert url == (f"{BASE}/#/experiments/7/runs?workflowType=machine_learning"
                   "&viewStateShareKey=genlab-lab1-p2q1-full&compareRunsMode=CHART")
    assert fragment_query(url)[1]["viewStateShareKey"] == "genlab-lab1-p2q1-full"


VIEW = ui.View("P2Q1 by arm", "P2Q1: the deciding metrics", "genlab.arm", ("fid_proxy", "test_recon"),
               curves=("fid_proxy",), search="tags.`genlab.question` = 'p2q1'")


def test_view_state_groups_by_the_tag_averages_seeds_and_puts_the_metrics_first_in_order():
    state = ui.view_state(VIEW)
    assert state["groupBy"] == {"aggregateFunction": "average",
                                "groupByKeys": [{"mode": "tag", "groupByData": "genlab.arm"}]}
    assert state["useGroupedValuesInCharts"] is True and state["searchFilter"] == VIEW.search
    assert state["selectedColumns"] == ["metrics.`fid_proxy`", "metrics.`test_recon`"]
    (section,) = state["compareRunSections"]
    assert section["name"] == VIEW.section and section["isReordered"] and state["isAccordionReordered"]
    charts = state["compareRunCharts"]
    assert [(c["metricKey"], c["type"], c["metricSectionId"]) for c in charts] == [
        ("fid_proxy", "LINE", section["uuid"]), ("test_recon", "BAR", section["uuid"])]
    assert charts[0]["xAxisKey"] == "step" and not charts[0]["useGlobalXaxisKey"]
    assert len({c["uuid"] for c in charts}) == 2


def test_envelope_is_what_the_uis_save_view_writes_and_has_a_size_limit():
    value = json.loads(ui.envelope(VIEW, 1234))
    assert value == {"name": "P2Q1 by arm", "createdAt": 1234, "updatedAt": 1234,
                     "state": json.dumps(ui.view_state(VIEW))}
    huge = ui.View("big", "s", "genlab.arm", ("m",), search="x" * ui.MAX_VIEW_CHARS)
    with pytest.raises(ValueError, match="more than an experiment tag"):
        ui.envelope(huge, 0)


def test_views_of_an_experiment_are_its_readable_view_tags():
    found = ui.views_of({ui.view_tag("b"): ui.envelope(VIEW, 0), "mlflow.note.content": "x",
                         ui.view_tag("a"): json.dumps({"name": "mine", "createdAt": 1, "state": "{}"}),
                         ui.view_tag("broken"): "not json"})
    assert found == [("a", "mine"), ("b", "P2Q1 by arm")]


def test_links_print_each_experiment_and_its_views(store, capsys):
    from genlab import tracking

    experiment = MlflowClient().create_experiment("lab1-p2q1")
    tracking.set_experiment_tag(experiment, ui.view_tag("genlab-lab1-p2q1-full"), ui.envelope(VIEW, 0))
    assert ui.main(["--base", "http://127.0.0.1:5055"]) == 0
    out = capsys.readouterr().out
    assert "  experiments: http://127.0.0.1:5055/#/experiments?workflowType=machine_learning\n" in out
    assert f"  lab1-p2q1: {ui.experiment_url('http://127.0.0.1:5055', experiment)}\n" in out
    assert f'    view "P2Q1 by arm": {ui.view_url("http://127.0.0.1:5055", experiment, "genlab-lab1-p2q1-full")}\n' in out


def test_links_without_a_store_say_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    assert ui.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"  experiments: {ui.experiments_url(ui.DEFAULT)}" and "does not exist" in lines[2]
    assert not (tmp_path / "none.db").exists()
