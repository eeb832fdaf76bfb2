"""P1Q2: how does the KL divergence loss shape the latent space?

Runs: VAEs at one latent_dim with beta swept, with what each logs at its end on the test split (genlab/runs/vae.py):
reconstruction, KL and neg-ELBO (nats/image), ``kl_active_units``, ``aggregate_posterior_mmd``,
``latent_probe_accuracy`` and, scored by the feature classifier, ``interp_smoothness``, ``interp_path_length``,
``fid_proxy`` (prior samples) and ``aggregate_fid_proxy`` (aggregate-posterior samples); their KL per latent dimension (artifact
``kl_per_dim.json``); latent_dim=2 VAEs for the latent scatter (artifact ``latent_scatter.png``) and the manifold
picture; the same sweep with the conv VAE (arms ``conv beta=<b>``). Text: templates/<lang>/questions/p1q2.md.j2.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from genlab import tags
from reports import search_trials
from reports.gallery import GallerySpec, beta, latent_dim
from reports.verdicts import (
    Comparison,
    Drawn,
    Question,
    Reader,
    Verdict,
    cell,
    compare_runs,
    holm_claims,
    ids,
    numeric,
    of_kind,
    run_values,
    spearman,
    tidy,
    with_metrics,
)

REFERENCE_BETA = 1.0  # the VAE proper: each sentence compares one end of the sweep with it
MIN_BETAS = 3  # an interior minimum needs a beta between the two ends
# The minimum effects, one per measured quantity.
SMOOTHNESS_MIN_EFFECT = 0.1  # interp_smoothness (largest / mean step, 1 = even): a tenth of an even line's value
PATH_LENGTH_MIN_EFFECT_REL = 0.1  # interp_path_length: a tenth of the smallest beta's mean, as for interp_smoothness
# aggregate_posterior_mmd (MMD^2, at most 2): about what a code cloud 25 % wider than N(0, I) scores, and ~100 times
# the spread of the estimate between two samples of the prior itself (2,000 codes, vae.MMD_IMAGES)
MMD_MIN_EFFECT = 0.01
FID_MIN_EFFECT_REL = 0.05  # fid_proxy differences: 5 % of the beta = 1 (holes) or best beta's (balance) mean, as P2Q1
RECON_MIN_EFFECT = 5.0  # nats/image of test reconstruction (as P1Q1): the detail a heavy KL term costs
NEG_ELBO_MIN_EFFECT = 5.0  # nats/image of test neg-ELBO between an end of the sweep and the best beta
UNITS_MIN_EFFECT = 0.5  # kl_active_units, beta = 1 minus the largest beta

# How the runs measured them, quoted by the text: metrics.KL_ACTIVE_THRESHOLD, vae.MMD_IMAGES, vae.INTERP_PAIRS,
# vae.INTERP_STEPS, vae.PPL_POINTS and vae.PPL_EPSILON (copied, not imported: the report reads a store without
# loading torch; tests/train/test_vae.py checks that they agree)
MEASURED_WITH = {"kl_active_threshold": 0.01, "mmd_images": 2000, "interp_pairs": 32, "interp_steps": 16,
                 "ppl_points": 16, "ppl_epsilon": 1e-4}
CLAIMS = ("continuous", "holes", "detail", "balance", "units")  # the lab's sentences, in the order of its answer
# A sentence measured twice, by our measure and an established one, holds or fails only when both agree:
# sentence -> (ours, established), parts of its plan
TWO_MEASURES = {"continuous": ("smoothness", "path_length")}
BALANCED = ("test_neg_elbo", "fid_proxy")  # the quantities whose minimum over beta must lie inside the sweep
HOLE_GAP = "_hole_gap"  # fid_proxy - aggregate_fid_proxy of each run: what prior draws lose to the holes
METRICS = ("test_recon", "test_kl", "test_neg_elbo", "kl_active_units", "interp_smoothness", "interp_path_length",
           "interp_path_length_pixels", "aggregate_posterior_mmd", "fid_proxy", "aggregate_fid_proxy", HOLE_GAP,
           "latent_probe_accuracy")
REQUIRED = ("test_recon", "test_kl", "test_neg_elbo")  # the others: a sentence without its metric is missing
SCATTER_DIM = 2  # latent_dim of the VAEs whose test codes are drawn as a scatter
CHECK_PREFIX = "conv "  # arms "conv beta=<b>": the same sweep with the conv VAE, to check the architecture's role


def read(runs: pd.DataFrame, reader: Reader) -> dict[str, Any]:
    """KL per latent dimension of every run that logged it, and the latent scatter of the 2-d VAEs."""
    kl_rows, scatters = [], {}
    for _, run in runs.iterrows():
        rid, root = run["run_id"], str(run["artifact_uri"])
        values = reader.json(root, "kl_per_dim.json")
        if isinstance(values, list) and values and all(isinstance(x, (int, float)) and math.isfinite(x) for x in values):
            kl_rows += [(rid, d, float(x)) for d, x in enumerate(values)]
        if str(run.get("params.latent_dim", "")) == str(SCATTER_DIM):
            png = reader.png(root, "latent_scatter.png")
            if png is not None:
                scatters[rid] = png
    return {"kl_per_dim": pd.DataFrame(kl_rows, columns=["run_id", "dim", "kl"]), "scatters": scatters}


def rule(runs: pd.DataFrame, kl_per_dim: pd.DataFrame, scatters: dict[str, bytes] | None = None,
         search: dict[str, Any] | None = None) -> Verdict:
    """The lab's answer as five sentences, each measured on the sweep at one latent_dim by comparisons against
    named minimum effects, paired on seeds (seed s of every beta shares its initialisation and data order), all
    the comparisons Holm-corrected together:

    - continuous (the KL term keeps the space continuous: nearby codes decode to similar images):
      ``interp_smoothness`` (ours) and ``interp_path_length`` (the perceptual path length, established) each lower
      at beta = 1 than at the smallest beta (0: the plain autoencoder); the sentence holds or fails only when
      both say so, and reads inconclusive_measure when they disagree (see _agreed);
    - holes (too little of it scatters the codes, and prior draws land in the holes between them):
      ``aggregate_posterior_mmd`` and the gap ``fid_proxy - aggregate_fid_proxy`` both larger at the smallest
      beta than at beta = 1;
    - detail (too much of it loses the detail): ``test_recon`` worse at the largest beta than at beta = 1;
    - balance: ``test_neg_elbo`` (the beta = 1 bound) and prior-sample ``fid_proxy`` each lowest at a beta inside
      the sweep, significantly below both ends;
    - units: fewer ``kl_active_units`` at the largest beta than at beta = 1.

    Beside the balance sentence, not part of its test: where the Optuna search (``search``, from
    reports/search_trials.collect) puts its best trials in beta, and whether the sweep's best beta for the
    test neg-ELBO lies among them (``numbers["search"]``, search_trials.summary).

    A sentence is confirmed when all its comparisons go its way, not_confirmed when one goes significantly the
    other way, else inconclusive_underpowered or no_significant_difference (see _joint), missing when a metric
    or a beta it needs is absent. The verdict: not_confirmed when a sentence is, else missing when one could not
    be measured, else the weakest sentence's status. The conv VAE's runs (arms ``conv beta=<b>``) go through the
    same rule; a decisive verdict that they contradict becomes inconclusive_architecture."""
    missing: list[dict] = []
    vae = with_metrics(of_kind(runs, tags.VAE), REQUIRED, missing)
    vae = vae.assign(_beta=numeric(vae, "params.beta"), _z=numeric(vae, "params.latent_dim"),
                     **{HOLE_GAP: run_values(vae, "fid_proxy") - run_values(vae, "aggregate_fid_proxy")})
    vae = vae[vae["_beta"].notna() & vae["_z"].notna()]
    is_check = vae.get(tags.column(tags.ARM), pd.Series("", index=vae.index)).fillna("").str.startswith(CHECK_PREFIX)
    check, vae = vae[is_check], vae[~is_check]
    # the sweep is at one latent_dim: the one with the most betas (extra latent_dim=2 runs only feed the scatter)
    betas_per_z = vae.groupby("_z")["_beta"].nunique()
    z = int(max(betas_per_z.index, key=lambda d: (betas_per_z[d], d))) if len(betas_per_z) else None
    sweep = vae[vae["_z"] == z] if z is not None else vae.iloc[0:0]
    betas = sorted(sweep["_beta"].unique())
    if len(betas) < MIN_BETAS:
        missing.append({"what": "count", "key": "beta", "have": len(betas), "need": MIN_BETAS})

    rows = [{"beta": b, **{m: cell(r, m) for m in METRICS}, "run_ids": ids(r)}
            for b, r in ((b, sweep[sweep["_beta"] == b]) for b in betas)]
    numbers: dict[str, Any] = {"latent_dim": z, "betas": betas}
    data = tidy(sweep, "beta", sweep["_beta"], tuple(m for m in METRICS if not m.startswith("_")))
    kl = kl_per_dim[kl_per_dim["run_id"].isin(ids(sweep))] if len(kl_per_dim) else kl_per_dim
    if len(kl):
        kl = kl.assign(beta=kl["run_id"].map(dict(zip(sweep["run_id"], sweep["_beta"], strict=True))))
    scatter_ids = ids(vae[vae["_z"] == SCATTER_DIM])
    numbers["scatter_run_ids"] = scatter_ids
    trials, search_images = search_trials.unpack(search)
    extra = {"frames": {"kl_per_dim": kl, search_trials.FRAME: trials}, "images": {**(scatters or {}), **search_images}}
    if len(betas) < MIN_BETAS:
        numbers["search"] = search_trials.summary(trials, "beta", None)
        return Verdict("p1q2", "missing", numbers, rows, ids(sweep) + scatter_ids, missing, data, **extra)

    _record_absent(sweep, missing)
    numbers.update(_sentences(sweep, betas, rows, missing))
    numbers["search"] = search_trials.summary(trials, "beta", numbers["best"]["test_neg_elbo"])
    status = _status(numbers["claims"])
    numbers["conv_check"] = _conv_check(check, status)
    decisive = ("confirmed", "not_confirmed")
    if numbers["conv_check"] and status in decisive and numbers["conv_check"]["status"] in decisive \
            and not numbers["conv_check"]["agrees"]:
        numbers["sweep_status"], status = status, "inconclusive_architecture"  # the verdict hangs on the MLP
    return Verdict("p1q2", status, numbers, rows, ids(sweep) + scatter_ids + ids(check), missing, data,
                   rests_on=ids(sweep), **extra)


def _status(claims: dict[str, str]) -> str:
    """The lab's answer holds when all its sentences do; one contradicted sentence contradicts it; an unmeasured
    one leaves it without a verdict; otherwise the weakest status of a sentence."""
    found = set(claims.values())
    for status in ("not_confirmed", "missing", "inconclusive_measure", "inconclusive_underpowered",
                   "no_significant_difference"):
        if status in found:
            return status
    return "confirmed"


def _joint(parts: dict[str, Comparison]) -> str:
    """A sentence's status from its comparisons (each ``a - b`` expected above its minimum effect): confirmed when
    all are (``greater``); not_confirmed when one is significantly the other way (``less``); else
    inconclusive_underpowered when one could not have detected its minimum effect, or no_significant_difference."""
    outcomes = {c.outcome for c in parts.values()}
    if "less" in outcomes:
        return "not_confirmed"
    if outcomes == {"greater"}:
        return "confirmed"
    return "inconclusive_underpowered" if "underpowered" in outcomes else "no_significant_difference"


# the metrics the sentences need beyond REQUIRED: a run without one is named, the sentences it feeds are missing
SENTENCE_METRICS = ("kl_active_units", "interp_smoothness", "interp_path_length", "aggregate_posterior_mmd",
                    "fid_proxy", "aggregate_fid_proxy")


def _record_absent(runs: pd.DataFrame, missing: list[dict]) -> None:
    """Name the runs that lack a metric of SENTENCE_METRICS (made before it was logged, or with eval_samples 0)."""
    for m in SENTENCE_METRICS:
        lacking = ids(runs[run_values(runs, m).isna()])
        if lacking:
            missing.append({"what": "metric", "metric": m, "run_ids": lacking})


def _lowest(rows: list[dict[str, Any]], betas: list[float], metric: str) -> float | None:
    """The beta among ``betas`` with the lowest mean ``metric``; None when none of them has a value."""
    scored = [r for r in rows if r["beta"] in betas and r[metric].n]
    return min(scored, key=lambda r: r[metric].mean)["beta"] if scored else None


def _plan(runs: pd.DataFrame, betas: list[float], best: dict[str, float | None],
          ) -> dict[str, dict[str, tuple[Any, Any, str, float]]]:
    """sentence -> part -> (runs a, runs b, metric, minimum effect): the part holds when mean(a) - mean(b) of the
    metric exceeds the minimum effect. An arm is None when the sweep lacks its beta (beta = 1 must lie inside)."""
    at = {b: runs[runs["_beta"] == b] for b in betas}
    low, high = at[betas[0]], at[betas[-1]]
    ref = at[REFERENCE_BETA] if REFERENCE_BETA in betas[1:-1] else None
    best_runs = {m: at[b] if b is not None else None for m, b in best.items()}

    def mean(r: pd.DataFrame | None, metric: str) -> float:
        return cell(r, metric).mean if r is not None else math.nan

    effects = {"test_neg_elbo": NEG_ELBO_MIN_EFFECT,
               "fid_proxy": FID_MIN_EFFECT_REL * mean(best_runs["fid_proxy"], "fid_proxy")}
    return {
        "continuous": {"smoothness": (low, ref, "interp_smoothness", SMOOTHNESS_MIN_EFFECT),
                       "path_length": (low, ref, "interp_path_length",
                                       PATH_LENGTH_MIN_EFFECT_REL * mean(low, "interp_path_length"))},
        "holes": {"mmd": (low, ref, "aggregate_posterior_mmd", MMD_MIN_EFFECT),
                  "fid_gap": (low, ref, HOLE_GAP, FID_MIN_EFFECT_REL * mean(ref, "fid_proxy"))},
        "detail": {"recon": (high, ref, "test_recon", RECON_MIN_EFFECT)},
        "balance": {f"{m}_{end}": (r, best_runs[m], m, effects[m])
                    for m in BALANCED for end, r in (("low", low), ("high", high))},
        "units": {"units": (ref, high, "kl_active_units", UNITS_MIN_EFFECT)},
    }


def _measurable(a: pd.DataFrame | None, b: pd.DataFrame | None, metric: str, effect: float) -> bool:
    """Both arms exist and have a value of ``metric``, and the minimum effect is a number."""
    return a is not None and b is not None and not math.isnan(effect) \
        and bool(run_values(a, metric).notna().any()) and bool(run_values(b, metric).notna().any())


def _sentences(runs: pd.DataFrame, betas: list[float], rows: list[dict[str, Any]], missing: list[dict],
               ) -> dict[str, Any]:
    """The rule on one sweep (the MLP's, or the conv check's): ``tests`` (sentence -> part -> Comparison, all
    Holm-corrected together), ``claims`` (sentence -> status), ``best`` (the interior beta where each BALANCED
    quantity is lowest); described beside them, not tested: Spearman's rho of beta against the mean test KL and
    reconstruction (the trade-off the objective itself sets) and the beta of the most class-informative codes."""
    numbers: dict[str, Any] = {"rho_kl": spearman(betas, [r["test_kl"].mean for r in rows]),
                               "rho_recon": spearman(betas, [r["test_recon"].mean for r in rows])}
    scored = [r for r in rows if r["latent_probe_accuracy"].n]
    if scored:
        best_probe = max(scored, key=lambda r: r["latent_probe_accuracy"].mean)
        numbers["best_latent_probe_accuracy"] = {"beta": best_probe["beta"], "value": best_probe["latent_probe_accuracy"]}
    numbers["best"] = best = {m: _lowest(rows, betas[1:-1], m) for m in BALANCED}
    if REFERENCE_BETA not in betas[1:-1]:
        missing.append({"what": "arm", "arm": f"beta={REFERENCE_BETA:g}"})
    claims, tested = {}, {}
    for sentence, parts in _plan(runs, betas, best).items():
        if all([_measurable(*part) for part in parts.values()]):
            tested.update({f"{sentence}.{p}": compare_runs(*part) for p, part in parts.items()})
        else:
            claims[sentence] = "missing"
    held = holm_claims(tested)
    numbers["tests"] = {s: {key.split(".", 1)[1]: c for key, c in held.items() if key.split(".", 1)[0] == s}
                        for s in CLAIMS if s not in claims}
    numbers["measure_claims"] = {s: {p: _joint({p: numbers["tests"][s][p]}) for p in TWO_MEASURES[s]}
                                 for s in TWO_MEASURES if s in numbers["tests"]}
    numbers["claims"] = {s: claims.get(s) or (_agreed(numbers["measure_claims"][s]) if s in TWO_MEASURES
                                              else _joint(numbers["tests"][s])) for s in CLAIMS}
    return numbers


def _agreed(by_measure: dict[str, str]) -> str:
    """A sentence measured twice: its status when both measures give the same; inconclusive_underpowered when
    either could not have seen its effect; else inconclusive_measure (one holds where the other does not)."""
    found = set(by_measure.values())
    if len(found) == 1:
        return found.pop()
    return "inconclusive_underpowered" if "inconclusive_underpowered" in found else "inconclusive_measure"


def _conv_check(check: pd.DataFrame, status: str) -> dict[str, Any] | None:
    """The same rule on the conv VAE's runs (arms ``conv beta=<b>``): its status and whether it agrees with the
    sweep's. None without such runs (a study that did not plan the check)."""
    betas = sorted(check["_beta"].unique()) if len(check) else []
    if len(betas) < MIN_BETAS:
        return None
    rows = [{"beta": b, **{m: cell(r, m) for m in METRICS}, "run_ids": ids(r)}
            for b, r in ((b, check[check["_beta"] == b]) for b in betas)]
    numbers: dict[str, Any] = {"betas": betas, "rows": rows, "run_ids": ids(check)}
    numbers.update(_sentences(check, betas, rows, []))  # what the check lacks is not the verdict's missing runs
    numbers["status"] = _status(numbers["claims"])
    numbers["agrees"] = numbers["status"] == status
    numbers["not_converged"] = ids(check[numeric(check, "metrics.converged") != 1])
    return numbers


def figures(v: Verdict, labels: dict[str, str]) -> dict[str, Drawn]:
    """The sweep (the objective's terms; the sentences' measures), the KL per dimension, and each 2-d VAE's scatter
    as the run logged it."""
    from reports import figures as F

    kl = v.frames.get("kl_per_dim", pd.DataFrame())
    measures = ("interp_smoothness", "interp_path_length", "aggregate_posterior_mmd", "test_neg_elbo", "fid_proxy",
                "aggregate_fid_proxy")
    drawn: dict[str, Drawn] = {
        "p1q2_sweep": (F.sweep(v.data, "beta", ("test_kl", "test_recon", "kl_active_units", "latent_probe_accuracy"),
                               labels, log_x="symlog"), F.run_ids(v.data)),
        "p1q2_sentences": (F.sweep(v.data, "beta", measures, labels, log_x="symlog"), F.run_ids(v.data)),
        "p1q2_kl_per_dim": (kl_heatmap(kl, labels), F.run_ids(kl))}
    for rid, png in v.images.items():
        if rid in v.numbers.get("scatter_run_ids", ()):
            drawn[f"p1q2_scatter_{rid[:8]}"] = (png, [rid])
    drawn.update(search_trials.figures(v.frames.get(search_trials.FRAME), v.numbers["search"],
                                       v.images.get(search_trials.IMPORTANCES), "p1q2", labels))
    return drawn


def kl_heatmap(kl: pd.DataFrame, labels: dict[str, str]) -> Any:
    """Mean KL per latent dimension (nats), dimensions sorted from most to least used, one row per beta."""
    if kl is None or kl.empty:
        return None
    from reports import figures as F

    mean = kl.groupby(["beta", "dim"])["kl"].mean().reset_index()
    mean["rank"] = mean.groupby("beta")["kl"].rank(ascending=False, method="first").astype(int)
    grid = mean.pivot(index="beta", columns="rank", values="kl").sort_index()
    fig, (ax,) = F.panels(1, 7.0, 0.5 * len(grid) + 1.8)
    F.sns.heatmap(grid, ax=ax, cmap="viridis", cbar_kws={"label": F.label(labels, "kl_nats")})
    ax.set_xlabel(F.label(labels, "dim_rank"))
    ax.set_ylabel(F.label(labels, "beta"))
    ax.set_title(F.label(labels, "title_kl_per_dim"))
    fig.tight_layout()
    return fig


_SAMPLES, _INTERPOLATION = ("pic_samples", "pictures/samples.png"), ("pic_interpolation", "pictures/interpolation.png")
GALLERIES = {
    "p1q2_pictures": GallerySpec(tags.VAE, lambda r: ("beta", beta(r)) if latent_dim(r) != SCATTER_DIM
                                 and not str(r.get(tags.column(tags.ARM), "")).startswith(CHECK_PREFIX) else None,
                                 lambda r: [_SAMPLES, _INTERPOLATION]),
    "p1q2_manifold": GallerySpec(tags.VAE, lambda r: ("beta", beta(r)) if latent_dim(r) == SCATTER_DIM else None,
                                 lambda r: [("pic_manifold", "pictures/manifold.png")]),
}

QUESTION = Question("p1q2", rule, figures, read, GALLERIES, {**search_trials.THRESHOLDS,
    "reference_beta": REFERENCE_BETA, "min_betas": MIN_BETAS, "smoothness_min_effect": SMOOTHNESS_MIN_EFFECT,
    "path_length_min_effect_rel": PATH_LENGTH_MIN_EFFECT_REL, "mmd_min_effect": MMD_MIN_EFFECT,
    "fid_min_effect_rel": FID_MIN_EFFECT_REL, "recon_min_effect": RECON_MIN_EFFECT,
    "neg_elbo_min_effect": NEG_ELBO_MIN_EFFECT, "units_min_effect": UNITS_MIN_EFFECT, **MEASURED_WITH},
    # the sentences' metrics, in the order of the lab's answer (continuous, holes, detail, balance, units)
    deciding=("interp_smoothness", "interp_path_length", "aggregate_posterior_mmd", "fid_proxy", "aggregate_fid_proxy",
              "test_recon", "test_neg_elbo", "kl_active_units"), reads_search=True)
