"""P1Q1: why do we use the reparameterisation trick in VAEs?

Runs: one ``gradvar`` run (gradient variance of the reconstruction term under each estimator, encoder gradient norm
without the trick) and, as supporting evidence, VAEs trained with each estimator (arms ``reparam`` and ``score``)
with their validation curves. Text: templates/<lang>/questions/p1q1.md.j2.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import pandas as pd

from genlab import tags
from reports.pictures import GallerySpec
from reports.verdicts import (
    MIN_SEEDS,
    Drawn,
    Question,
    Reader,
    Verdict,
    arm,
    cell,
    compare_runs,
    ids,
    numeric,
    of_kind,
    stat,
    with_arm,
    with_metrics,
)

RATIO_MIN = 10.0  # score-function / reparameterised gradient variance
NO_TRICK_NORM_MAX = 0.0  # encoder gradient norm of the reconstruction term without the trick must be exactly 0
CURVE_MIN_EFFECT = 1.0  # nats/image, final val_neg_elbo score - reparam (supporting evidence only)

GRADVAR_METRICS = ("grad_variance_reparam", "grad_variance_score", "encoder_grad_norm_no_trick")
ARMS = ("reparam", "score")  # the VAEs trained with each estimator
CURVE = "val_neg_elbo"


def read(runs: pd.DataFrame, reader: Reader) -> dict[str, Any]:
    return {"history": reader.history(ids(runs), CURVE)}


def rule(runs: pd.DataFrame, history: pd.DataFrame) -> Verdict:
    """Confirmed iff mean variance ratio score/reparam > RATIO_MIN and the encoder's gradient norm without the
    trick is exactly 0 in every measurement. The estimator-trained VAEs' curves are supporting evidence."""
    missing: list[dict] = []
    grad = of_kind(runs, tags.GRADVAR)
    if grad.empty:
        missing.append({"what": "kind", "kind": tags.GRADVAR})
    grad = with_metrics(grad, GRADVAR_METRICS, missing)
    vae = of_kind(runs, tags.VAE)
    vae = vae[arm(vae).isin(ARMS)]
    vae = vae[numeric(vae, f"metrics.{CURVE}").notna()]
    for a in ARMS:
        if not (arm(vae) == a).any():
            missing.append({"what": "arm", "arm": a, "optional": True})

    numbers: dict[str, Any] = {}
    rows = _gradient_rows(grad, numbers) if not grad.empty else []
    curves = {a: vae[arm(vae) == a] for a in ARMS}
    numbers["final"] = {a: cell(r, CURVE) for a, r in curves.items()}
    if all(len(r) for r in curves.values()):
        numbers["training"] = compare_runs(curves["score"], curves["reparam"], CURVE, CURVE_MIN_EFFECT)
        numbers["training_not_converged"] = ids(vae[numeric(vae, "metrics.converged") != 1])
    if grad.empty:
        status = "missing"
    else:
        numbers["ratio_ok"] = numbers["ratio"].mean > RATIO_MIN
        numbers["no_trick_ok"] = numbers["no_trick_max"] <= NO_TRICK_NORM_MAX
        status = "confirmed" if numbers["ratio_ok"] and numbers["no_trick_ok"] else "not_confirmed"
        if numbers["ratio"].n < MIN_SEEDS:  # one heavy-tailed ratio per seed: fewer seeds decide nothing
            numbers["rule_status_few_seeds"], status = status, "inconclusive_underpowered"
    # the verdict rests on the gradvar measurement; the trained VAEs (a score-function VAE may well not converge:
    # that is the point) are supporting evidence, outside the convergence gate
    return Verdict("p1q1", status, numbers, rows, ids(grad) + ids(vae), missing,
                   frames={"history": with_arm(history, vae, CURVE)}, rests_on=ids(grad))


def _gradient_rows(grad: pd.DataFrame, numbers: dict[str, Any]) -> list[dict[str, Any]]:
    """The gradvar measurements into ``numbers``; returns the estimator table."""
    ratio_values = numeric(grad, "metrics.grad_variance_score") / numeric(grad, "metrics.grad_variance_reparam")
    numbers.update(
        var_reparam=cell(grad, "grad_variance_reparam"), var_score=cell(grad, "grad_variance_score"),
        ratio=stat(ratio_values, ids(grad)), no_trick_max=float(numeric(grad, "metrics.encoder_grad_norm_no_trick").max()),
        reparam_norm=cell(grad, "encoder_grad_norm_reparam"), gradvar_run_ids=ids(grad))
    return [{"estimator": "reparam", "variance": numbers["var_reparam"], "encoder_norm": numbers["reparam_norm"],
             "run_ids": ids(grad)},
            {"estimator": "score", "variance": numbers["var_score"], "encoder_norm": None, "run_ids": ids(grad)},
            {"estimator": "no_trick", "variance": None,
             "encoder_norm": cell(grad, "encoder_grad_norm_no_trick"), "run_ids": ids(grad)}]


def figures(v: Verdict, labels: dict[str, str]) -> dict[str, Drawn]:
    from reports import figures as F

    history = v.frames.get("history", pd.DataFrame())
    return {"p1q1_variance": (grad_variance(v, labels), v.numbers.get("gradvar_run_ids", [])),
            "p1q1_curves": (F.curves(history, labels, CURVE, "title_training_curves"), F.run_ids(history))}


def grad_variance(v: Verdict, labels: dict[str, str]) -> Any:
    """Bars of the two estimators' gradient variance (log scale), None without a gradvar run."""
    if "var_reparam" not in v.numbers:
        return None
    from reports import figures as F

    arms = [("reparam", v.numbers["var_reparam"]), ("score", v.numbers["var_score"])]
    fig, (ax,) = F.panels(1, 5.5)
    names = [textwrap.fill(F.label(labels, a), 20) for a, _ in arms]
    means = [s.mean for _, s in arms]
    errs = [0.0 if math.isnan(s.half) else s.half for _, s in arms]
    ax.bar(names, means, yerr=errs if any(errs) else None, color=F.sns.color_palette()[:2], capsize=4)
    ax.set_yscale("log")
    ax.set_ylabel(F.label(labels, "grad_variance"))
    ax.set_title(F.label(labels, "title_grad_variance"))
    fig.tight_layout()
    return fig


GALLERIES = {"p1q1_pictures": GallerySpec(tags.VAE, lambda r: ("arm", r.get("params.estimator", "")),
                                          lambda r: [("pic_samples", "pictures/samples.png")])}

QUESTION = Question("p1q1", rule, figures, read, GALLERIES, {
    "ratio_min": RATIO_MIN, "no_trick_norm_max": NO_TRICK_NORM_MAX, "curve_min_effect": CURVE_MIN_EFFECT})
