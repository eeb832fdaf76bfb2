"""Addresses in MLflow's UI (3.17) and the views genlab stores for it. Standard library only: the store is read and
written through genlab/tracking.py. ``python -m genlab.ui`` prints the links `make ui` shows before serving.

What the UI's code (its JavaScript bundle, ``mlflow/server/js/build``) reads, and Chromium showed (the report's
links: tests/reports/test_mlflow_ui.py):

- The UI is a hash-routed page: its query parameters go after the route, inside the fragment
  (``BASE/#/experiments/3/runs?workflowType=machine_learning``); a query before the ``#`` is not read.
- ``workflowType=machine_learning`` opens the UI in its "Model training" mode. Without it, the UI opens in its GenAI
  mode (traces, token usage), whatever the experiment's ``mlflow.experimentKind`` tag says, unless this browser chose
  Model training with the UI's own switch before: the UI remembers the switch, not the parameter.
- A shared view is an experiment tag ``mlflow.sharedViewState.<key>`` holding what the UI's "Save view" writes, the
  envelope ``{"name", "createdAt", "updatedAt", "state"}`` whose ``state`` is a JSON string of the runs page's search
  facets and display state; ``viewStateShareKey=<key>`` on the experiment's runs page opens it, and the page's views
  menu lists it by name. The UI fills what a state leaves out with its defaults, so a view names only what it sets.
- ``compareRunsMode=CHART`` opens the runs page on its charts rather than its table.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from genlab import tags

DEFAULT = "http://127.0.0.1:5000"  # what `make ui` serves
MODEL_TRAINING = ("workflowType", "machine_learning")
SHARE_KEY = "viewStateShareKey"
CHARTS = ("compareRunsMode", "CHART")
MAX_VIEW_CHARS = 20_000  # MLflow's limit on an experiment tag's value, and the UI's on a view it saves
SECTION_ID = "genlab-deciding"  # the first chart section of a view


def _address(base: str, route: str, *query: tuple[str, str]) -> str:
    return f"{base.rstrip('/')}/#{route}?{urlencode([MODEL_TRAINING, *query])}"


def experiments_url(base: str) -> str:
    """The list of experiments."""
    return _address(base, "/experiments")


def experiment_url(base: str, experiment_id: str) -> str:
    """An experiment's runs page."""
    return _address(base, f"/experiments/{experiment_id}/runs")


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page."""
    return _address(base, f"/experiments/{experiment_id}/runs/{run_id}")


def view_url(base: str, experiment_id: str, key: str) -> str:
    """An experiment's runs page in its shared view ``key``, on the charts."""
    return _address(base, f"/experiments/{experiment_id}/runs", (SHARE_KEY, key), CHARTS)


@dataclass(frozen=True)
class View:
    """A runs page whose runs are grouped by the value of a tag, each group's runs (its seeds) averaged in the table
    and in the charts, with a first chart section of ``metrics`` in their order: those of ``curves`` over steps, a
    line per group; the others as bars of each group's last value. Their columns lead the table."""

    name: str  # in the page's views menu
    section: str  # the first chart section's title
    group_by: str  # a run tag
    metrics: tuple[str, ...]
    curves: tuple[str, ...] = ()
    search: str = ""  # an MLflow search filter: the runs of the experiment it shows (all when empty)


def _chart(metric: str, curve: bool) -> dict[str, Any]:
    """One chart as the UI stores it (the fields its own line and bar charts have, at their defaults)."""
    chart = {"uuid": f"genlab-{metric}", "metricSectionId": SECTION_ID, "runsCountToCompare": 10, "deleted": False,
             "isGenerated": False, "displayName": metric, "metricKey": metric}
    if not curve:
        return {**chart, "type": "BAR"}
    # the view's own x axis (steps) and no smoothing, whatever the page's global chart settings are
    return {**chart, "type": "LINE", "selectedMetricKeys": [metric], "xAxisKey": "step", "selectedXAxisMetricKey": "",
            "xAxisScaleType": "linear", "scaleType": "linear", "lineSmoothness": 0, "range": {}, "yAxisKey": "metric",
            "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": False,
            "useGlobalLineSmoothing": False}


def view_state(view: View) -> dict[str, Any]:
    """The page state of ``view``; what it leaves out (sort order, the other charts, ...) the UI takes from its
    defaults, and it adds the metrics not named here in sections after this one."""
    section = {"uuid": SECTION_ID, "name": view.section, "display": True, "deleted": False, "isGenerated": False,
               # kept in the order given: the UI sorts a section's charts by name unless it was reordered
               "isReordered": True, "columns": max(1, min(3, len(view.metrics)))}
    return {
        "searchFilter": view.search,
        "selectedColumns": [f"metrics.`{m}`" for m in view.metrics],
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": view.group_by}]},
        "useGroupedValuesInCharts": True,
        "runsHiddenMode": "SHOW_ALL",  # the default shows the first 10 rows (groups) in the charts
        "compareRunSections": [section],
        "isAccordionReordered": True,  # sections in the order given, this one first
        "compareRunCharts": [_chart(m, m in view.curves) for m in view.metrics],
    }


def envelope(view: View, now_ms: int) -> str:
    """The value of the tag that stores ``view``, created and updated at ``now_ms``; ValueError when it is longer
    than an experiment tag may be."""
    value = json.dumps({"name": view.name, "createdAt": now_ms, "updatedAt": now_ms,
                        "state": json.dumps(view_state(view))})
    if len(value) > MAX_VIEW_CHARS:
        raise ValueError(f"view {view.name!r} takes {len(value)} characters, more than an experiment tag's "
                         f"{MAX_VIEW_CHARS}")
    return value


def view_tag(key: str) -> str:
    """The experiment tag that stores the view ``key``."""
    return f"{tags.SHARED_VIEW}{key}"


def views_of(experiment_tags: dict[str, str]) -> list[tuple[str, str]]:
    """(key, name) of the views stored on an experiment, by key (views saved in the UI too; unreadable ones left out)."""
    out = []
    for tag, value in sorted(experiment_tags.items()):
        if not tag.startswith(tags.SHARED_VIEW):
            continue
        try:
            name = json.loads(value)["name"]
        except (ValueError, TypeError, KeyError):
            continue
        out.append((tag.removeprefix(tags.SHARED_VIEW), str(name)))
    return out


def links(base: str) -> list[str]:
    """Lines: the experiments list, then each experiment of the store (MLFLOW_TRACKING_URI) with its views."""
    from genlab import tracking

    lines = [f"  experiments: {experiments_url(base)}"]
    try:
        tracking.open_existing_store()
    except tracking.TrackingError as e:
        return [*lines, f"  ({e})"]
    for experiment_id, name, experiment_tags in sorted(tracking.list_experiments(), key=lambda e: e[1]):
        lines.append(f"  {name}: {experiment_url(base, experiment_id)}")
        lines += [f"    view \"{title}\": {view_url(base, experiment_id, key)}"
                  for key, title in views_of(experiment_tags)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genlab.ui", description="Print the MLflow UI's links to the "
                                     "store's experiments and views, in the UI's Model training mode.")
    parser.add_argument("--base", default=DEFAULT, help=f"the UI's address (default {DEFAULT})")
    args = parser.parse_args(argv)
    print(f"MLflow UI at {args.base}: open these links, in its Model training mode (a bare {args.base} opens its "
          "GenAI mode; its switch at the top left changes mode, and the browser remembers it)")
    print("\n".join(links(args.base)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
