"""P1Q3: how does the size of the latent space (latent_dim) affect reconstruction?

Runs: VAEs at beta = 1 with latent_dim swept, and plain autoencoders (beta = 0) at the same sizes for contrast (train,
validation and test reconstruction, the importance-weighted bound on -log p(x) on train and test images, test
active units, fid_proxy); the positive control: autoencoders (and VAEs, shown) at the smallest and largest sizes
trained on a few hundred images for many epochs (arms ``control ae z=<d>``, ``control z=<d>``), where the gap
must show memorisation that the sweep's autoencoder of the same size, trained on all the sweep's images, does not.
Text: templates/<lang>/questions/p1q3.md.j2.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from genlab import tags
from reports import search_trials
from reports.gallery import GallerySpec, beta, latent_dim
from reports.verdicts import (
    Comparison,
    Drawn,
    Question,
    Verdict,
    arm,
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
REQUIRED = ("train_eval_recon", "test_recon")
VAE_BETA, AE_BETA = 1.0, 0.0
CONTROL = "control"  # in the arm of the positive control's runs: a few hundred training images, many epochs


def _dims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for d in sorted(runs["_z"].unique()):
        r = runs[runs["_z"] == d]
        rows.append({"latent_dim": int(d), "gap": stat(r["_gap"], ids(r)), "nll_gap": stat(r["_nll_gap"], ids(r)),
                     **{m: cell(r, m) for m in METRICS}, "run_ids": ids(r), "_runs": r})
    return rows


def _gap_growth(rows: list[dict[str, Any]], gap: str = "_gap") -> Comparison:
    """The gap (``_gap``: reconstruction, ``_nll_gap``: IW bound) at the largest latent_dim minus at the smallest."""
    first, last = rows[0], rows[-1]
    return compare_runs(last["_runs"], first["_runs"], gap, GAP_GROWTH_MIN)


def _control_baseline(control_rows: list[dict[str, Any]], ae_rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The sweep's autoencoder row at the control's largest latent_dim: what the control is compared with (None when
    there is no control or no such autoencoder)."""
    size = control_rows[-1]["latent_dim"] if control_rows else None
    return next((r for r in ae_rows if r["latent_dim"] == size), None)


def _figure_data(main: pd.DataFrame, ae: pd.DataFrame) -> pd.DataFrame:
    """Tidy per-run values of both models, the two generalisation gaps included."""
    both = pd.concat([main, ae])
    models = ["vae"] * len(main) + ["ae"] * len(ae)
    data = tidy(both, "latent_dim", both["_z"], METRICS, "model", models)
    gaps = [pd.DataFrame({"run_id": ids(both), "latent_dim": list(both["_z"]), "metric": name,
                          "value": list(both[column]), "model": models}).dropna(subset=["value"])
            for name, column in (("gap", "_gap"), ("nll_gap", "_nll_gap"))]
    return pd.concat([data, *gaps], ignore_index=True) if len(both) else data


def rule(runs: pd.DataFrame, search: dict[str, Any] | None = None) -> Verdict:
    """"Memorises noise" is overfitting that grows with latent_dim. Confirmed iff, for the beta = 1 VAEs, the
    generalisation gap (test_recon - train_eval_recon, nats/image) at the largest latent_dim exceeds the gap at the
    smallest by more than GAP_GROWTH_MIN, test_recon at the largest latent_dim is worse than at the best one by more
    than RECON_WORSE_MIN, and that is overfitting (the training reconstruction is not worse there too; both worse
    is underfitting, which is not memorisation). Each part beyond its interval, paired on seeds; a conjunction, so
    no multiplicity correction. The positive control: the autoencoder trained on a few hundred images for many
    epochs (arms containing ``control``) at the largest latent_dim must have a gap larger than the sweep's
    autoencoder of that size by more than the same GAP_GROWTH_MIN (paired on seeds): memorisation of the size the
    rule asks for moves the gap. Otherwise the measurement could not have seen it and the verdict is
    ``inconclusive_control``. The control's own growth from the smallest to the largest latent_dim is shown, not
    required: on a few hundred images even the smallest autoencoder memorises. The gap of the importance-weighted
    bound (test_nll_iw - train_nll_iw) is compared the same way and shown beside, not part of the rule. So is
    the Optuna search (``search``): where its best trials lie in latent_dim, and whether the sweep's best
    latent_dim lies among them (``numbers["search"]``, search_trials.summary)."""
    missing: list[dict] = []
    vae = with_metrics(of_kind(runs, tags.VAE), REQUIRED, missing)
    vae = vae.assign(_beta=numeric(vae, "params.beta"), _z=numeric(vae, "params.latent_dim"),
                     _gap=numeric(vae, "metrics.test_recon") - numeric(vae, "metrics.train_eval_recon"),
                     _nll_gap=numeric(vae, "metrics.test_nll_iw") - numeric(vae, "metrics.train_nll_iw"))
    vae = vae[vae["_z"].notna()]
    is_control = arm(vae).fillna("").str.contains(CONTROL)
    control, control_vae = vae[is_control & (vae["_beta"] == AE_BETA)], vae[is_control & (vae["_beta"] == VAE_BETA)]
    vae = vae[~is_control]
    main, ae = vae[vae["_beta"] == VAE_BETA], vae[vae["_beta"] == AE_BETA]
    rows, ae_rows, control_rows, control_vae_rows = _dims(main), _dims(ae), _dims(control), _dims(control_vae)
    if len(rows) < 2:
        missing.append({"what": "count", "key": "latent_dim", "have": len(rows), "need": 2})
    trials, search_images = search_trials.unpack(search)
    extra = {"frames": {search_trials.FRAME: trials}, "images": search_images}
    numbers: dict[str, Any] = {}
    data = _figure_data(main, ae)
    if len(ae_rows) >= 2:
        numbers["ae_gap_growth"] = _gap_growth(ae_rows)
    if len(control_rows) >= 2:
        numbers["control_gap_growth"] = _gap_growth(control_rows)
    baseline = _control_baseline(control_rows, ae_rows)
    excess = None if baseline is None else compare_runs(control_rows[-1]["_runs"], baseline["_runs"], "_gap",
                                                        GAP_GROWTH_MIN)
    if excess is not None:
        numbers["control_gap_excess"] = excess
    if len(control_vae_rows) >= 2:  # does the VAE memorise when given the chance? shown, not part of the rule
        numbers["control_vae_gap_growth"] = _gap_growth(control_vae_rows)
    table = [{k: v for k, v in r.items() if k != "_runs"} | {"model": model}
             for model, rs in (("vae", rows), ("ae", ae_rows), ("control_ae", control_rows),
                               ("control_vae", control_vae_rows)) for r in rs]
    run_ids = ids(main) + ids(ae) + ids(control) + ids(control_vae)
    if len(rows) < 2:
        numbers["search"] = search_trials.summary(trials, "latent_dim", None)
        return Verdict("p1q3", "missing", numbers, table, run_ids, missing, data, **extra)

    best = min(rows, key=lambda r: r["test_recon"].mean)
    last = rows[-1]
    numbers.update(d_min=rows[0]["latent_dim"], d_max=last["latent_dim"], d_best=best["latent_dim"],
                   gap_growth=_gap_growth(rows), nll_gap_growth=_gap_growth(rows, "_nll_gap"),
                   recon_worse=compare_runs(last["_runs"], best["_runs"], "test_recon", RECON_WORSE_MIN),
                   train_worse=compare_runs(last["_runs"], best["_runs"], "train_eval_recon", RECON_WORSE_MIN))
    outcome = numbers["recon_worse"].outcome
    numbers["shape"] = "improves" if best is last else {"greater": "worsens", "underpowered": "uncertain"}.get(
        outcome, "plateau")
    numbers["fit"] = ("underfitting" if numbers["train_worse"].outcome == "greater" else "overfitting") \
        if numbers["shape"] == "worsens" else "neither"
    numbers["gap_ok"] = numbers["gap_growth"].outcome == "greater"
    numbers["control_ok"] = excess is not None and excess.outcome == "greater"
    numbers["search"] = search_trials.summary(trials, "latent_dim", numbers["d_best"])
    return Verdict("p1q3", _status(numbers), numbers, table, run_ids, missing, data,
                   rests_on=ids(main) + ids(control) + (baseline["run_ids"] if baseline else []), **extra)


def _status(numbers: dict[str, Any]) -> str:
    """Without a control that saw memorisation, inconclusive_control. Confirmed when the gap grows and the test
    reconstruction worsens by overfitting; not confirmed when one part is a powered no, reconstruction keeps
    improving or plateaus, or it worsens by underfitting; otherwise a part is underpowered."""
    gap, shape = numbers["gap_growth"].outcome, numbers["shape"]
    if not numbers["control_ok"]:
        return "inconclusive_control"
    if numbers["gap_ok"] and shape == "worsens" and numbers["fit"] == "overfitting":
        return "confirmed"
    if gap in ("none", "less") or shape in ("improves", "plateau") or numbers["fit"] == "underfitting":
        return "not_confirmed"
    return "inconclusive_underpowered"


def figures(v: Verdict, labels: dict[str, str]) -> dict[str, Drawn]:
    from reports import figures as F

    vae = v.data[v.data["model"] == "vae"] if len(v.data) else v.data
    drawn = search_trials.figures(v.frames.get(search_trials.FRAME), v.numbers.get("search", {}),
                                  v.images.get(search_trials.IMPORTANCES), "p1q3", labels)
    return drawn | {
        "p1q3_gap": (F.sweep(v.data, "latent_dim", ("gap", "nll_gap"), labels, hue="model", log_x="log2"),
                     F.run_ids(v.data)),
        "p1q3_recon": (F.lines(vae, "latent_dim", ("train_eval_recon", "val_recon", "test_recon"), labels,
                               "recon_nats", log_x="log2"), F.run_ids(vae)),
        "p1q3_quality": (F.sweep(v.data, "latent_dim", ("test_active_units", "fid_proxy", "recon_fid_proxy"), labels,
                                 hue="model", log_x="log2"), F.run_ids(v.data)),
    }


GALLERIES = {"p1q3_pictures": GallerySpec(  # the sweep's runs; the positive control's are in the table
    tags.VAE, lambda r: None if CONTROL in str(r.get(tags.column(tags.ARM)) or "") else ("latent_dim", latent_dim(r)),
    lambda r: [("ae" if beta(r) == AE_BETA else "vae", "pictures/reconstructions.png")])}

QUESTION = Question("p1q3", rule, figures, galleries=GALLERIES, thresholds={
    "gap_growth_min": GAP_GROWTH_MIN, "recon_worse_min": RECON_WORSE_MIN, **search_trials.THRESHOLDS},
    deciding=("test_recon", "train_eval_recon"), reads_search=True)  # the gap is test - train; test_recon: the shape
