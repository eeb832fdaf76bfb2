"""The Optuna search read back (experiments/search.yaml): its trials over latent_dim x beta, and what the lab's
"find a balance" sentences take from them (P1Q2 for beta, P1Q3 for latent_dim).

The grid sweeps are the controlled comparison (seeds, intervals, tests); the search is the exploration beside them:
where, over both parameters at once, the best trials lie. A search is one parent run (tags genlab.study,
genlab.question = search) with one child run per trial (tag optuna.state). ``summary`` gives, for one parameter,
the best region (its spread over the TOP_FRACTION best COMPLETE trials by the search's objective), whether the
grid's best value lies inside it, and the Pareto front of test reconstruction against fid_proxy; ``figures`` draws
the region and the front, and shows Optuna's importances as the search logged them (``importances.png``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from genlab import tags
from reports.verdicts import Drawn, column, numeric, of_kind, select_runs

QUESTION = "search"  # the genlab.question of the search's parent run (experiments/search.yaml)
OBJECTIVE = "val_neg_elbo"  # what the study's search minimises (and prunes on), nats/image
TOP_FRACTION = 0.25  # the best quarter of the complete trials is the search's best region
MIN_TOP = 3  # ... and at least this many trials, so that a region has a spread
MIN_COMPLETE = 8  # fewer complete trials locate no region: "too few trials"
FRONT = ("test_recon", "fid_proxy")  # the Pareto front: reconstruction (nats/image) against sample quality
METRICS = (OBJECTIVE, "test_recon", "test_neg_elbo", "fid_proxy")
PARAMS = ("latent_dim", "beta")
FRAME, IMPORTANCES = "search_trials", "search_importances"  # where a Verdict keeps the trials and the PNG
THRESHOLDS = {"search_top_fraction": TOP_FRACTION, "search_min_top": MIN_TOP, "search_min_complete": MIN_COMPLETE}


def collect(runs: pd.DataFrame, profile: str, children: Callable[[str], pd.DataFrame],
            png: Callable[[str, str], bytes | None]) -> dict[str, Any]:
    """The study's search (the latest FINISHED parent of the chosen profile) and its trials: ``trials`` (one row
    per trial: run_id, state, latent_dim, beta, METRICS), ``parent`` (its run id or None) and ``importances``
    (the PNG the search logged, or None). ``children(run_id)`` gives a run's child runs, ``png(artifact_uri,
    path)`` an artifact."""
    per_question, _, _ = select_runs(runs, profile, (QUESTION,))
    parents = of_kind(per_question[QUESTION], tags.SEARCH)
    if parents.empty:
        return {"trials": trials_frame(pd.DataFrame()), "parent": None, "importances": None}
    parent = parents.sort_values("start_time").iloc[-1]
    return {"trials": trials_frame(children(parent["run_id"])), "parent": parent["run_id"],
            "importances": png(str(parent["artifact_uri"]), "importances.png")}


def unpack(search: dict[str, Any] | None) -> tuple[pd.DataFrame, dict[str, bytes]]:
    """What a question's Verdict keeps of ``collect``'s result: the trials (empty without a search) and its images
    entry for the importances figure (none without one)."""
    if not search:
        return trials_frame(pd.DataFrame()), {}
    return search["trials"], ({IMPORTANCES: search["importances"]} if search.get("importances") else {})


def trials_frame(children: pd.DataFrame) -> pd.DataFrame:
    """One row per trial run: its id, experiment and name (for the report's links), Optuna state, parameters and
    final METRICS (NaN where it logged none)."""
    columns = ["run_id", "experiment_id", "run_name", "state", *PARAMS, *METRICS]
    if children is None or children.empty:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame({"run_id": children["run_id"], "experiment_id": column(children, "experiment_id"),
                          "run_name": column(children, "tags.mlflow.runName").fillna(""),
                          "state": column(children, tags.column(tags.OPTUNA_STATE)).fillna("")})
    for name in PARAMS:
        frame[name] = numeric(children, f"params.{name}")
    for name in METRICS:
        frame[name] = numeric(children, f"metrics.{name}")
    return frame.reset_index(drop=True)


def summary(trials: pd.DataFrame, param: str, grid_best: float | None) -> dict[str, Any]:
    """What the search says of ``param`` ("beta" or "latent_dim"): counts; with MIN_COMPLETE complete trials, the
    best region (``low``, ``median``, ``high`` of ``param`` over the ``top_n`` best trials, their ``top_ids``, the
    ``best`` trial), ``agrees`` (the grid's best value lies inside [low, high]; None without one) and ``front``
    (the Pareto-optimal complete trials on FRONT); ``status``: too_few, agrees, disagrees or no_grid."""
    complete = trials[(trials["state"] == "COMPLETE") & trials[OBJECTIVE].notna()] if len(trials) else trials
    out: dict[str, Any] = {"param": param, "n_trials": len(trials), "n_complete": len(complete),
                           "n_pruned": int((trials["state"] == "PRUNED").sum()) if len(trials) else 0,
                           "run_ids": list(trials["run_id"]) if len(trials) else []}
    if len(complete) < MIN_COMPLETE:
        return {**out, "status": "too_few"}
    top_n = max(MIN_TOP, math.ceil(TOP_FRACTION * len(complete)))
    top = complete.nsmallest(top_n, OBJECTIVE)
    best = top.iloc[0]
    out.update(top_n=top_n, low=float(top[param].min()), median=float(top[param].median()),
               high=float(top[param].max()), top_ids=list(top["run_id"]),
               best={"run_id": best["run_id"], "latent_dim": int(best["latent_dim"]), "beta": float(best["beta"]),
                     "value": float(best[OBJECTIVE])},
               front=pareto_front(complete), grid_best=grid_best)
    if grid_best is None or (isinstance(grid_best, float) and math.isnan(grid_best)):
        out.update(agrees=None, status="no_grid")
    else:
        out["agrees"] = bool(out["low"] <= float(grid_best) <= out["high"])
        out["status"] = "agrees" if out["agrees"] else "disagrees"
    return out


def pareto_front(trials: pd.DataFrame) -> list[dict[str, Any]]:
    """The trials no other trial beats on both FRONT metrics (lower is better on each), by reconstruction."""
    scored = trials.dropna(subset=list(FRONT))
    front = []
    for _, t in scored.iterrows():
        dominated = ((scored[FRONT[0]] <= t[FRONT[0]]) & (scored[FRONT[1]] <= t[FRONT[1]])
                     & ((scored[FRONT[0]] < t[FRONT[0]]) | (scored[FRONT[1]] < t[FRONT[1]]))).any()
        if not dominated:
            front.append({"run_id": t["run_id"], "latent_dim": int(t["latent_dim"]), "beta": float(t["beta"]),
                          **{m: float(t[m]) for m in FRONT}})
    return sorted(front, key=lambda r: r[FRONT[0]])


def figures(trials: pd.DataFrame, s: dict[str, Any], importances: bytes | None, prefix: str,
            labels: dict[str, str]) -> dict[str, Drawn]:
    """``<prefix>_search_region`` (latent_dim x beta, coloured by the objective, the best region ringed),
    ``<prefix>_search_front`` (reconstruction against fid_proxy, the front joined) and
    ``<prefix>_search_importances`` (Optuna's fANOVA importances, as the search logged them)."""
    if trials is None or s.get("status", "too_few") == "too_few":
        return {}
    from matplotlib.ticker import NullLocator

    from reports import figures as F

    complete = trials[trials["state"] == "COMPLETE"]
    fig, (region, front) = F.panels(2, 5.0, 3.8)
    points = region.scatter(complete["latent_dim"], complete["beta"], c=complete[OBJECTIVE], cmap="viridis_r", s=28)
    top = complete[complete["run_id"].isin(s["top_ids"])]
    region.scatter(top["latent_dim"], top["beta"], facecolors="none", edgecolors="red", s=120, linewidths=1.5,
                   label=F.label(labels, "search_top"))
    dims = sorted({int(d) for d in complete["latent_dim"].dropna()})
    region.set_xscale("log", base=2)
    region.set_xticks(dims, [str(d) for d in dims], minor=False)
    region.xaxis.set_minor_locator(NullLocator())
    region.set(yscale="log", xlabel=F.label(labels, "search_latent_dim"), ylabel=F.label(labels, "search_beta"),
               title=F.label(labels, "title_search_region"))
    region.legend(fontsize=7)
    fig.colorbar(points, ax=region, label=F.label(labels, "search_objective"))
    front.scatter(complete[FRONT[0]], complete[FRONT[1]], s=18, color="grey")
    line = pd.DataFrame(s["front"])
    if len(line):
        front.plot(line[FRONT[0]], line[FRONT[1]], "o-", color="C3", label=F.label(labels, "search_front"))
        front.legend(fontsize=7)
    front.set(xlabel=F.label(labels, "search_recon"), ylabel=F.label(labels, "search_fid"),
              title=F.label(labels, "title_search_front"))
    fig.tight_layout()
    drawn: dict[str, Drawn] = {f"{prefix}_search": (fig, s["run_ids"])}
    if importances is not None:
        drawn[f"{prefix}_search_importances"] = (importances, s["run_ids"])
    return drawn
