"""P1Q1: why do we use the reparameterisation trick in VAEs?

Runs: VAEs trained with each gradient estimator (arms ``reparam``, ``score``, ``detach``: the lab's claim is tested
by training) and, per seed, ``gradvar`` runs on the trained reparam VAE (arm ``gradvar``) and at initialisation
(arm ``gradvar_init``): the gradient variance of each estimator, as ratios with intervals.
Text: templates/<lang>/questions/p1q1.md.j2.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import numpy as np
import pandas as pd

from genlab import tags
from reports.gallery import GallerySpec
from reports.verdicts import (
    MIN_SEEDS,
    Drawn,
    Question,
    Reader,
    Verdict,
    arm,
    cell,
    claim,
    compare_runs,
    holm_claims,
    ids,
    numeric,
    of_kind,
    stat,
    with_arm,
    with_metrics,
)

KL_COLLAPSED_MAX = 0.5  # nats/image: a test KL below this carries (almost) nothing about the image: posterior collapse
RECON_MIN_EFFECT = 5.0  # nats/image of test reconstruction that the encoder's information must buy
CURVE_MIN_EFFECT = 1.0  # nats/image, final val_neg_elbo score - reparam: "learns more slowly"

ARMS = ("reparam", "score", "detach")  # the VAEs trained with each estimator (train_vae --estimator)
RATIOS = ("no_baseline", "running_mean", "per_image", "matched")  # gradvar's grad_variance_ratio_<name>
GRADVAR_ARMS = ("gradvar", "gradvar_init")  # the trained reparam VAE of each seed; the initialisation
CURVE = "val_neg_elbo"
# claim -> (the arm expected higher, the arm expected lower, metric, minimum effect); Holm-corrected together
CLAIMS = {"no_backprop": ("detach", "reparam", "test_recon", RECON_MIN_EFFECT),
          "unbiased_without_trick": ("detach", "score", "test_neg_elbo", RECON_MIN_EFFECT),
          "slower": ("score", "reparam", CURVE, CURVE_MIN_EFFECT)}


def read(runs: pd.DataFrame, reader: Reader) -> dict[str, Any]:
    return {"history": reader.history(ids(runs), CURVE)}


def rule(runs: pd.DataFrame, history: pd.DataFrame) -> Verdict:
    """The lab's claim, tested by training: without the trick, backpropagation cannot train the encoder.

    Claims, each a paired comparison on seeds against its minimum effect, Holm-corrected together:
    ``no_backprop`` (the verdict): the ``detach`` VAE (plain backpropagation through a sample drawn without the
    trick) reconstructs the test images worse than the ``reparam`` VAE, and its test KL is below KL_COLLAPSED_MAX
    (the encoder fell to the prior) while the reparam VAE's is above it (the control: the same measurement sees an
    encoder that learned; if it does not, ``inconclusive_control``); ``unbiased_without_trick``: the score-function
    VAE ends with a better test neg-ELBO than the detach one (a usable gradient exists without the trick);
    ``slower``: the score-function VAE's final validation neg-ELBO is worse than the reparam one's at the same
    epochs. ``lower_variance``: the gradient variance ratio at matched decoder passes, over the seeds' gradvar runs
    on the trained VAEs (log10 scale), is above 1."""
    missing: list[dict] = []
    vae = with_metrics(of_kind(runs, tags.VAE), ("test_recon", "test_kl", "test_neg_elbo", CURVE), missing)
    arms = {a: vae[arm(vae) == a] for a in ARMS}
    missing += [{"what": "arm", "arm": a} for a, r in arms.items() if r.empty]
    grad = of_kind(runs, tags.GRADVAR)
    grad = with_metrics(grad, tuple(f"grad_variance_ratio_{r}" for r in RATIOS), missing)
    gradvar = {a: grad[arm(grad) == a] for a in GRADVAR_ARMS}
    if gradvar["gradvar"].empty:
        missing.append({"what": "arm", "arm": "gradvar"})

    numbers: dict[str, Any] = {"arms": {a: {m: cell(r, m) for m in ("test_recon", "test_kl", "test_neg_elbo",
                                                                    "test_active_units", CURVE)}
                                        for a, r in arms.items()}}
    numbers["ratios"] = {a: _ratio_rows(r) for a, r in gradvar.items()}
    numbers["no_trick_max"] = float(numeric(grad, "metrics.encoder_grad_norm_no_trick").max()) if len(grad) else math.nan
    tested = {name: compare_runs(arms[hi], arms[lo], metric, effect)
              for name, (hi, lo, metric, effect) in CLAIMS.items() if len(arms[hi]) and len(arms[lo])}
    numbers.update(holm_claims(tested))
    numbers["claims"] = {name: claim(numbers[name]) if name in numbers else "missing" for name in CLAIMS}
    _collapse_checks(numbers)
    numbers["claims"]["lower_variance"] = _variance_claim(gradvar["gradvar"], numbers)
    gate = ids(arms["reparam"]) + ids(arms["detach"]) + ids(gradvar["gradvar"])
    return Verdict("p1q1", numbers["claims"]["no_backprop"], numbers, [], ids(vae) + ids(grad), missing,
                   frames={"history": with_arm(history, vae, CURVE)}, rests_on=gate)


def _collapse_checks(numbers: dict[str, Any]) -> None:
    """The KL side of the claims: an arm "learned" when its mean test KL is above KL_COLLAPSED_MAX. no_backprop
    needs detach collapsed and reparam not (else not_confirmed, or inconclusive_control when reparam collapsed
    too); unbiased_without_trick needs the score VAE to have learned."""
    kl = {a: numbers["arms"][a]["test_kl"].mean for a in ARMS}
    numbers["learned"] = {a: bool(v > KL_COLLAPSED_MAX) for a, v in kl.items() if not math.isnan(v)}
    claims, learned = numbers["claims"], numbers["learned"]
    if claims["no_backprop"] != "missing":
        if not learned.get("reparam", False):
            claims["no_backprop"] = "inconclusive_control"
        elif learned.get("detach", False) and claims["no_backprop"] == "confirmed":
            claims["no_backprop"] = "not_confirmed"
    if claims["unbiased_without_trick"] == "confirmed" and not learned.get("score", False):
        claims["unbiased_without_trick"] = "not_confirmed"


def _ratio_rows(grad: pd.DataFrame) -> dict[str, Any]:
    """Per ratio: the mean over seeds (t-interval) and the widest span of the runs' own bootstrap intervals."""
    out = {}
    for r in RATIOS if len(grad) else ():
        name = f"grad_variance_ratio_{r}"
        out[r] = {"mean": cell(grad, name), "ci_low": float(numeric(grad, f"metrics.{name}_ci_low").min()),
                  "ci_high": float(numeric(grad, f"metrics.{name}_ci_high").max())}
    return out


def _variance_claim(grad: pd.DataFrame, numbers: dict[str, Any]) -> str:
    """confirmed when the matched ratio's log10, over >= MIN_SEEDS seeds, has a t-interval above 0 and every run's
    own bootstrap interval is above 1; not_confirmed when the interval is below 0."""
    if grad.empty:
        return "missing"
    logs = np.log10(numeric(grad, "metrics.grad_variance_ratio_matched"))
    numbers["matched_log10"] = s = stat(logs, ids(grad))
    every_run = bool((numeric(grad, "metrics.grad_variance_ratio_matched_ci_low") > 1).all())
    if s.n < MIN_SEEDS:
        return "inconclusive_underpowered"
    if s.low > 0 and every_run:
        return "confirmed"
    return "not_confirmed" if s.high < 0 else "no_significant_difference"


def figures(v: Verdict, labels: dict[str, str]) -> dict[str, Drawn]:
    from reports import figures as F

    history = v.frames.get("history", pd.DataFrame())
    grad = [r for a in GRADVAR_ARMS for s in v.numbers.get("ratios", {}).get(a, {}).values()
            for r in s["mean"].run_ids]
    return {"p1q1_variance": (grad_variance(v, labels), sorted(set(grad))),
            "p1q1_curves": (F.curves(history, labels, CURVE, "title_training_curves"), F.run_ids(history))}


def grad_variance(v: Verdict, labels: dict[str, str]) -> Any:
    """Each variance ratio score / reparameterised (log scale; 1 = as noisy), on the trained VAEs and at
    initialisation, mean over seeds with its interval; None without a gradvar run."""
    ratios = v.numbers.get("ratios", {})
    if not any(ratios.get(a) for a in GRADVAR_ARMS):
        return None
    from reports import figures as F

    fig, (ax,) = F.panels(1, 6.5)
    width = 0.38
    for i, a in enumerate(GRADVAR_ARMS):
        stats_ = [ratios[a][r]["mean"] if ratios.get(a) else None for r in RATIOS]
        if not any(stats_):
            continue
        xs = [j + (i - 0.5) * width for j in range(len(RATIOS))]
        means = [s.mean if s else math.nan for s in stats_]
        errs = [0.0 if not s or math.isnan(s.half) else min(s.half, 0.99 * s.mean) for s in stats_]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=F.label(labels, a), color=F.sns.color_palette()[i])
    ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    ax.set_xticks(range(len(RATIOS)), [textwrap.fill(F.label(labels, f"ratio_{r}"), 16) for r in RATIOS])
    ax.set_yscale("log")
    ax.set_ylabel(F.label(labels, "grad_variance_ratio"))
    ax.set_title(F.label(labels, "title_grad_variance"))
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


GALLERIES = {"p1q1_pictures": GallerySpec(tags.VAE, lambda r: ("arm", r.get("params.estimator", "")),
                                          lambda r: [("pic_samples", "pictures/samples.png")])}

QUESTION = Question("p1q1", rule, figures, read, GALLERIES, {
    "kl_collapsed_max": KL_COLLAPSED_MAX, "recon_min_effect": RECON_MIN_EFFECT, "curve_min_effect": CURVE_MIN_EFFECT},
    deciding=("test_recon", "test_kl", "test_neg_elbo", CURVE, "grad_variance_ratio_matched"), curves=(CURVE,))
