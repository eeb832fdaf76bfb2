"""P1Q3: how does the size of the latent space (latent_dim) affect reconstruction?

Runs: VAEs at beta = 1 with latent_dim swept, and plain autoencoders (beta = 0) at the same sizes for contrast (train,
validation and test reconstruction, the importance-weighted bound on -log p(x) on train and test images, test
active units, fid_proxy). Text: templates/<lang>/questions/p1q3.md.j2.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from genlab import tags
from reports.pictures import GallerySpec, beta, latent_dim
from reports.verdicts import (
    Comparison,
    Drawn,
    Question,
    Verdict,
    cell,
    compare_runs,
    ids,
    numeric,
    of_kind,
    stat,
    tidy,
    with_metrics,
)

GAP_GROWTH_MIN = 2.0  # nats/image, gap(largest latent_dim) - gap(smallest latent_dim)
RECON_WORSE_MIN = 1.0  # nats/image, test_recon(largest latent_dim) - test_recon(best latent_dim)

METRICS = ("train_eval_recon", "val_recon", "test_recon", "train_nll_iw", "test_nll_iw", "test_active_units",
           "fid_proxy", "recon_fid_proxy")
REQUIRED = ("train_eval_recon", "val_recon", "test_recon")
VAE_BETA, AE_BETA = 1.0, 0.0


def _dims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for d in sorted(runs["_z"].unique()):
        r = runs[runs["_z"] == d]
        rows.append({"latent_dim": int(d), "gap": stat(r["_gap"], ids(r)), "nll_gap": stat(r["_nll_gap"], ids(r)),
                     **{m: cell(r, m) for m in METRICS}, "run_ids": ids(r), "_runs": r})
    return rows


def _gap_growth(rows: list[dict[str, Any]]) -> Comparison:
    first, last = rows[0], rows[-1]
    return compare_runs(last["_runs"], first["_runs"], "_gap", GAP_GROWTH_MIN)


def _figure_data(main: pd.DataFrame, ae: pd.DataFrame) -> pd.DataFrame:
    """Tidy per-run values of both models, the two generalisation gaps included."""
    both = pd.concat([main, ae])
    models = ["vae"] * len(main) + ["ae"] * len(ae)
    data = tidy(both, "latent_dim", both["_z"], METRICS, "model", models)
    gaps = [pd.DataFrame({"run_id": ids(both), "latent_dim": list(both["_z"]), "metric": name,
                          "value": list(both[column]), "model": models}).dropna(subset=["value"])
            for name, column in (("gap", "_gap"), ("nll_gap", "_nll_gap"))]
    return pd.concat([data, *gaps], ignore_index=True) if len(both) else data


def rule(runs: pd.DataFrame) -> Verdict:
    """"Memorises noise" confirmed iff the generalisation gap (val_recon - train_eval_recon, nats/image) at the
    largest latent_dim exceeds the gap at the smallest by more than GAP_GROWTH_MIN AND test_recon at the largest
    latent_dim is worse than at the best one by more than RECON_WORSE_MIN (each beyond its interval, paired on
    seeds when the sizes ran the same ones; a conjunction, so no multiplicity correction). Otherwise not confirmed,
    and the shape says whether recon keeps improving, plateaus or worsens; inconclusive_underpowered when a part
    the seeds could not have detected is all that stands between the data and a verdict. The gap of the
    importance-weighted bound (test_nll_iw - train_nll_iw) is shown beside, not part of the rule."""
    missing: list[dict] = []
    vae = with_metrics(of_kind(runs, tags.VAE), REQUIRED, missing)
    vae = vae.assign(_beta=numeric(vae, "params.beta"), _z=numeric(vae, "params.latent_dim"),
                     _gap=numeric(vae, "metrics.val_recon") - numeric(vae, "metrics.train_eval_recon"),
                     _nll_gap=numeric(vae, "metrics.test_nll_iw") - numeric(vae, "metrics.train_nll_iw"))
    vae = vae[vae["_z"].notna()]
    main, ae = vae[vae["_beta"] == VAE_BETA], vae[vae["_beta"] == AE_BETA]
    rows, ae_rows = _dims(main), _dims(ae)
    if len(rows) < 2:
        missing.append({"what": "count", "key": "latent_dim", "have": len(rows), "need": 2})
    numbers: dict[str, Any] = {}
    data = _figure_data(main, ae)
    if len(ae_rows) >= 2:
        numbers["ae_gap_growth"] = _gap_growth(ae_rows)
    table = [{k: v for k, v in r.items() if k != "_runs"} | {"model": "vae"} for r in rows] + \
            [{k: v for k, v in r.items() if k != "_runs"} | {"model": "ae"} for r in ae_rows]
    run_ids = ids(main) + ids(ae)
    if len(rows) < 2:
        return Verdict("p1q3", "missing", numbers, table, run_ids, missing, data)

    best = min(rows, key=lambda r: r["test_recon"].mean)
    last = rows[-1]
    numbers.update(d_min=rows[0]["latent_dim"], d_max=last["latent_dim"], d_best=best["latent_dim"],
                   gap_growth=_gap_growth(rows),
                   recon_worse=compare_runs(last["_runs"], best["_runs"], "test_recon", RECON_WORSE_MIN))
    outcome = numbers["recon_worse"].outcome
    numbers["shape"] = "improves" if best is last else {"greater": "worsens", "underpowered": "uncertain"}.get(
        outcome, "plateau")
    numbers["gap_ok"] = numbers["gap_growth"].outcome == "greater"
    return Verdict("p1q3", _status(numbers), numbers, table, run_ids, missing, data, rests_on=ids(main))


def _status(numbers: dict[str, Any]) -> str:
    """Confirmed when both parts hold; not confirmed when one part is a powered no (or reconstruction keeps
    improving); otherwise a part is underpowered and the verdict inconclusive."""
    gap, shape = numbers["gap_growth"].outcome, numbers["shape"]
    if numbers["gap_ok"] and shape == "worsens":
        return "confirmed"
    if gap in ("none", "less") or shape in ("improves", "plateau"):
        return "not_confirmed"
    return "inconclusive_underpowered"


def figures(v: Verdict, labels: dict[str, str]) -> dict[str, Drawn]:
    from reports import figures as F

    vae = v.data[v.data["model"] == "vae"] if len(v.data) else v.data
    return {
        "p1q3_gap": (F.sweep(v.data, "latent_dim", ("gap", "nll_gap"), labels, hue="model", log_x="log2"),
                     F.run_ids(v.data)),
        "p1q3_recon": (F.lines(vae, "latent_dim", ("train_eval_recon", "val_recon", "test_recon"), labels,
                               "recon_nats", log_x="log2"), F.run_ids(vae)),
        "p1q3_quality": (F.sweep(v.data, "latent_dim", ("test_active_units", "fid_proxy", "recon_fid_proxy"), labels,
                                 hue="model", log_x="log2"), F.run_ids(v.data)),
    }


GALLERIES = {"p1q3_pictures": GallerySpec(
    tags.VAE, lambda r: ("latent_dim", latent_dim(r)),
    lambda r: [("ae" if beta(r) == AE_BETA else "vae", "pictures/reconstructions.png")])}

QUESTION = Question("p1q3", rule, figures, galleries=GALLERIES, thresholds={
    "gap_growth_min": GAP_GROWTH_MIN, "recon_worse_min": RECON_WORSE_MIN})
