"""Each question's rule as a pure function of the runs: verdict, the numbers behind it, the run ids used.

Input: the DataFrame of ``genlab.tracking.search_runs`` (columns ``run_id``, ``experiment_id``, ``status``,
``start_time``, ``metrics.*``, ``params.*``, ``tags.*``), plus, where a question needs them, tidy frames that
build.py fetched (metric histories ``run_id, key, step, value``; KL per latent dimension ``run_id, dim, kl``).
No I/O here, no text: the templates turn a Verdict into words in each language.

Statistics: seeds of one condition -> mean and 95 % t-interval (half-width; none with one seed). Two conditions
are "different" when the difference of means exceeds the question's minimum effect AND, when both have at least
two seeds, the 95 % Welch interval of the difference excludes 0. With one seed per condition there is no
interval: the rule falls back on the minimum effect alone, and the report says so.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

QUESTIONS = ("p1q1", "p1q2", "p1q3", "p2q1", "p2q2")

# The rules' thresholds, quoted by the report text (change them here, the text follows).
P1Q1_RATIO_MIN = 10.0  # score-function / reparameterised gradient variance
P1Q1_NO_TRICK_NORM_MAX = 0.0  # encoder gradient norm of the reconstruction term without the trick must be exactly 0
P1Q1_CURVE_MIN_EFFECT = 1.0  # nats/image, final val_neg_elbo score - reparam (supporting evidence only)
P1Q2_SPEARMAN_MIN = 0.8  # |Spearman rho| of beta vs KL and vs recon (means per beta)
P1Q2_MIN_BETAS = 3
P1Q2_UNITS_MIN_EFFECT = 0.5  # active units, smallest beta - largest beta
P1Q3_GAP_GROWTH_MIN = 2.0  # nats/image, gap(largest latent_dim) - gap(smallest latent_dim)
P1Q3_RECON_WORSE_MIN = 1.0  # nats/image, test_recon(largest latent_dim) - test_recon(best latent_dim)
P2Q1_MIN_EFFECT_REL = 0.05  # fraction of the reference arm's mean fid_proxy
P2Q2_ACCURACY_MIN_DIFF = 0.02  # probe accuracy, encoder - discriminator

P2Q1_ARMS = ("vae_decoder", "random", "ae_decoder")


@dataclass
class Stat:
    """Mean of one quantity over the seeds of one condition, with the 95 % t-interval half-width (NaN if n < 2)."""

    mean: float
    half: float
    n: int
    run_ids: list[str] = field(default_factory=list)

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


@dataclass
class Comparison:
    """a - b with its 95 % Welch interval; ``outcome`` is ``greater``, ``less`` or ``none`` (no significant difference)."""

    a: Stat
    b: Stat
    diff: float
    low: float
    high: float
    min_effect: float
    outcome: str

    @property
    def has_ci(self) -> bool:
        return not math.isnan(self.low)


@dataclass
class Verdict:
    """What the templates need: ``status`` is ``confirmed``, ``not_confirmed``, ``no_significant_difference`` or
    ``missing``; ``numbers`` the values quoted in the text; ``rows`` the table; ``data`` tidy per-run values for
    the figures; ``missing`` what runs are lacking (dicts with a ``what`` key)."""

    question: str
    status: str
    numbers: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    data: pd.DataFrame = field(default_factory=pd.DataFrame)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    profile: str = ""


# ---------------------------------------------------------------- statistics

def stat(values: Any, run_ids: Any = ()) -> Stat:
    v = np.asarray(pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna(), dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return Stat(mean, half, n, list(run_ids))


def compare(a: Stat, b: Stat, a_values: Any, b_values: Any, min_effect: float) -> Comparison:
    """Is a greater or less than b by more than ``min_effect``, beyond the 95 % Welch interval when seeds allow?"""
    diff = a.mean - b.mean
    low = high = math.nan
    if a.n >= 2 and b.n >= 2:
        va = float(np.var(np.asarray(list(a_values), float), ddof=1)) / a.n
        vb = float(np.var(np.asarray(list(b_values), float), ddof=1)) / b.n
        se2 = va + vb
        if se2 == 0:  # identical seeds: no noise at all
            low = high = diff
        else:
            dof = se2 ** 2 / ((va ** 2 / (a.n - 1) if va else 0.0) + (vb ** 2 / (b.n - 1) if vb else 0.0))
            h = float(stats.t.ppf(0.975, dof)) * math.sqrt(se2)
            low, high = diff - h, diff + h
    has_ci = not math.isnan(low)
    if math.isnan(diff):
        outcome = "none"
    elif diff > min_effect and (not has_ci or low > 0):
        outcome = "greater"
    elif diff < -min_effect and (not has_ci or high < 0):
        outcome = "less"
    else:
        outcome = "none"
    return Comparison(a, b, diff, low, high, min_effect, outcome)


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation, NaN when undefined (fewer than 3 points or a constant series)."""
    x, y = list(x), list(y)
    if len(x) < 3:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(x, y).statistic
    return float(rho) if rho is not None and np.isfinite(rho) else math.nan


# ---------------------------------------------------------------- selecting the runs

def column(runs: pd.DataFrame, name: str) -> pd.Series:
    """A column of the runs frame, or NaN/None everywhere when no run has it."""
    if name in runs.columns:
        return runs[name]
    return pd.Series([None] * len(runs), index=runs.index, dtype=object)


def numeric(runs: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(column(runs, name), errors="coerce")


def select_runs(runs: pd.DataFrame, profile: str) -> tuple[dict[str, pd.DataFrame], dict[str, str], int]:
    """The FINISHED runs of each question for ``profile`` (``any``: per question the full-profile runs if there are
    any, else the quick ones, never a mix), the latest run per (kind, arm, seed) when a condition was run twice.

    Returns (runs per question, profile used per question, number of unfinished runs ignored).
    """
    if runs.empty or "tags.genlab.question" not in runs.columns:
        fallback = "quick" if profile == "any" else profile
        return {q: runs.iloc[0:0] for q in QUESTIONS}, {q: fallback for q in QUESTIONS}, 0
    study = runs[column(runs, "tags.genlab.question").isin(QUESTIONS)]
    finished = study[column(study, "status") == "FINISHED"]
    ignored = len(study) - len(finished)
    per_question, used = {}, {}
    for q in QUESTIONS:
        rows = finished[column(finished, "tags.genlab.question") == q]
        profiles = column(rows, "tags.genlab.profile")
        if profile == "any":
            chosen = "full" if (profiles == "full").any() else "quick"
        else:
            chosen = profile
        rows = rows[profiles == chosen]
        rows = rows.assign(_kind=column(rows, "tags.genlab.kind").fillna(""),
                           _arm=column(rows, "tags.genlab.arm").fillna(""),
                           _seed=column(rows, "params.seed").fillna(""))
        rows = rows.sort_values("start_time").drop_duplicates(["_kind", "_arm", "_seed"], keep="last")
        per_question[q] = rows.drop(columns=["_kind", "_arm", "_seed"]).reset_index(drop=True)
        used[q] = chosen
    return per_question, used, ignored


def _with_metrics(runs: pd.DataFrame, metrics: tuple[str, ...], missing: list[dict]) -> pd.DataFrame:
    """Keep runs that have every metric; record the others as missing (a run without a number is no number)."""
    ok = pd.Series(True, index=runs.index)
    for m in metrics:
        has = numeric(runs, f"metrics.{m}").notna()
        lacking = runs.loc[~has, "run_id"].tolist() if len(runs) else []
        if lacking:
            missing.append({"what": "metric", "metric": m, "run_ids": lacking})
        ok &= has
    return runs[ok]


def _ids(runs: pd.DataFrame) -> list[str]:
    return runs["run_id"].tolist() if len(runs) else []


def _cell(runs: pd.DataFrame, metric: str) -> Stat:
    return stat(numeric(runs, f"metrics.{metric}"), _ids(runs))


def _tidy(runs: pd.DataFrame, x: str, x_values: pd.Series, metrics: tuple[str, ...], hue: str | None = None,
          hue_values: Any = None) -> pd.DataFrame:
    """One row per run and metric: run_id, <x>, [<hue>], metric, value (for the figures)."""
    frames = []
    for m in metrics:
        f = pd.DataFrame({"run_id": _ids(runs), x: list(x_values), "metric": m,
                          "value": list(numeric(runs, f"metrics.{m}"))})
        if hue:
            f[hue] = list(hue_values)
        frames.append(f)
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"]) if frames and len(runs) else pd.DataFrame()


# ---------------------------------------------------------------- P1Q1: the reparameterisation trick

def p1q1(runs: pd.DataFrame, history: pd.DataFrame) -> Verdict:
    """Confirmed iff mean variance ratio score/reparam > P1Q1_RATIO_MIN and the encoder's gradient norm without
    the trick is exactly 0 in every measurement. The estimator-trained VAEs' curves are supporting evidence."""
    missing: list[dict] = []
    kind = column(runs, "tags.genlab.kind")
    grad = runs[kind == "gradvar"]
    if grad.empty:
        missing.append({"what": "kind", "kind": "gradvar"})
    grad = _with_metrics(grad, ("grad_variance_reparam", "grad_variance_score", "encoder_grad_norm_no_trick"), missing)
    vae = runs[(kind == "vae") & column(runs, "tags.genlab.arm").isin(("reparam", "score"))]
    vae = vae[numeric(vae, "metrics.val_neg_elbo").notna()]
    for arm in ("reparam", "score"):
        if not (column(vae, "tags.genlab.arm") == arm).any():
            missing.append({"what": "arm", "arm": arm, "optional": True})

    rows = []
    numbers: dict[str, Any] = {}
    if not grad.empty:
        ratio_values = numeric(grad, "metrics.grad_variance_score") / numeric(grad, "metrics.grad_variance_reparam")
        numbers.update(
            var_reparam=_cell(grad, "grad_variance_reparam"), var_score=_cell(grad, "grad_variance_score"),
            ratio=stat(ratio_values, _ids(grad)), no_trick_max=float(numeric(grad, "metrics.encoder_grad_norm_no_trick").max()),
            reparam_norm=_cell(grad, "encoder_grad_norm_reparam"), gradvar_run_ids=_ids(grad))
        rows += [{"estimator": "reparam", "variance": numbers["var_reparam"], "encoder_norm": numbers["reparam_norm"],
                  "run_ids": _ids(grad)},
                 {"estimator": "score", "variance": numbers["var_score"], "encoder_norm": None, "run_ids": _ids(grad)},
                 {"estimator": "no_trick", "variance": None,
                  "encoder_norm": _cell(grad, "encoder_grad_norm_no_trick"), "run_ids": _ids(grad)}]
    curves = {arm: vae[column(vae, "tags.genlab.arm") == arm] for arm in ("reparam", "score")}
    numbers["final"] = {arm: _cell(r, "val_neg_elbo") for arm, r in curves.items()}
    if all(len(r) for r in curves.values()):
        numbers["training"] = compare(numbers["final"]["score"], numbers["final"]["reparam"],
                                      numeric(curves["score"], "metrics.val_neg_elbo"),
                                      numeric(curves["reparam"], "metrics.val_neg_elbo"), P1Q1_CURVE_MIN_EFFECT)

    hist = history[history["run_id"].isin(_ids(vae)) & (history["key"] == "val_neg_elbo")] if len(history) else history
    if len(hist):
        arms = dict(zip(vae["run_id"], column(vae, "tags.genlab.arm"), strict=True))
        hist = hist.assign(arm=hist["run_id"].map(arms))
    if grad.empty:
        status = "missing"
    else:
        numbers["ratio_ok"] = numbers["ratio"].mean > P1Q1_RATIO_MIN
        numbers["no_trick_ok"] = numbers["no_trick_max"] <= P1Q1_NO_TRICK_NORM_MAX
        status = "confirmed" if numbers["ratio_ok"] and numbers["no_trick_ok"] else "not_confirmed"
    return Verdict("p1q1", status, numbers, rows, _ids(grad) + _ids(vae), missing, history=hist)


# ---------------------------------------------------------------- P1Q2: the KL term and the latent space

P1Q2_METRICS = ("test_recon", "test_kl", "active_units", "latent_probe_accuracy", "fid_proxy")


def p1q2(runs: pd.DataFrame, kl_per_dim: pd.DataFrame) -> Verdict:
    """Trade-off confirmed iff, over the per-beta means at one latent_dim, Spearman(beta, KL) <= -P1Q2_SPEARMAN_MIN,
    Spearman(beta, recon) >= P1Q2_SPEARMAN_MIN, and active units at the largest beta are fewer than at the smallest
    (by more than P1Q2_UNITS_MIN_EFFECT, beyond the interval when seeds allow)."""
    missing: list[dict] = []
    vae = runs[column(runs, "tags.genlab.kind") == "vae"]
    vae = _with_metrics(vae, ("test_recon", "test_kl", "active_units"), missing)
    vae = vae.assign(_beta=numeric(vae, "params.beta"), _z=numeric(vae, "params.latent_dim"))
    vae = vae[vae["_beta"].notna() & vae["_z"].notna()]
    # the sweep is at one latent_dim: the one with the most betas (extra latent_dim=2 runs only feed the scatter)
    betas_per_z = vae.groupby("_z")["_beta"].nunique()
    latent_dim = int(max(betas_per_z.index, key=lambda z: (betas_per_z[z], z))) if len(betas_per_z) else None
    sweep = vae[vae["_z"] == latent_dim] if latent_dim is not None else vae.iloc[0:0]
    betas = sorted(sweep["_beta"].unique())
    if len(betas) < P1Q2_MIN_BETAS:
        missing.append({"what": "count", "key": "beta", "have": len(betas), "need": P1Q2_MIN_BETAS})

    rows = []
    for b in betas:
        r = sweep[sweep["_beta"] == b]
        rows.append({"beta": b, **{m: _cell(r, m) for m in P1Q2_METRICS}, "run_ids": _ids(r)})
    numbers: dict[str, Any] = {"latent_dim": latent_dim, "betas": betas}
    data = _tidy(sweep, "beta", sweep["_beta"], P1Q2_METRICS)
    kl = kl_per_dim[kl_per_dim["run_id"].isin(_ids(sweep))] if len(kl_per_dim) else kl_per_dim
    if len(kl):
        kl = kl.assign(beta=kl["run_id"].map(dict(zip(sweep["run_id"], sweep["_beta"], strict=True))))
    scatter_ids = _ids(vae[vae["_z"] == 2])
    numbers["scatter_run_ids"] = scatter_ids
    if len(betas) < P1Q2_MIN_BETAS:
        return Verdict("p1q2", "missing", numbers, rows, _ids(sweep) + scatter_ids, missing, data, kl)

    numbers["rho_kl"] = spearman(betas, [r["test_kl"].mean for r in rows])
    numbers["rho_recon"] = spearman(betas, [r["test_recon"].mean for r in rows])
    low, high = sweep[sweep["_beta"] == betas[0]], sweep[sweep["_beta"] == betas[-1]]
    numbers["units"] = compare(_cell(low, "active_units"), _cell(high, "active_units"),
                               numeric(low, "metrics.active_units"), numeric(high, "metrics.active_units"),
                               P1Q2_UNITS_MIN_EFFECT)
    for m in ("fid_proxy", "latent_probe_accuracy"):  # descriptive: where the balance lies, not part of the rule
        scored = [r for r in rows if r[m].n]
        if scored:
            best = (min if m == "fid_proxy" else max)(scored, key=lambda r: r[m].mean)
            numbers[f"best_{m}"] = {"beta": best["beta"], "value": best[m]}
    numbers["kl_ok"] = numbers["rho_kl"] <= -P1Q2_SPEARMAN_MIN  # NaN compares False: an undefined trend fails
    numbers["recon_ok"] = numbers["rho_recon"] >= P1Q2_SPEARMAN_MIN
    numbers["units_ok"] = numbers["units"].outcome == "greater"
    ok = numbers["kl_ok"] and numbers["recon_ok"] and numbers["units_ok"]
    return Verdict("p1q2", "confirmed" if ok else "not_confirmed", numbers, rows, _ids(sweep) + scatter_ids,
                   missing, data, kl)


# ---------------------------------------------------------------- P1Q3: latent_dim and reconstruction

P1Q3_METRICS = ("train_eval_recon", "val_recon", "test_recon", "active_units", "fid_proxy", "recon_fid_proxy")


def _dims(runs: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for d in sorted(runs["_z"].unique()):
        r = runs[runs["_z"] == d]
        rows.append({"latent_dim": int(d), "gap": stat(r["_gap"], _ids(r)), **{m: _cell(r, m) for m in P1Q3_METRICS},
                     "run_ids": _ids(r), "_runs": r})
    return rows


def _gap_growth(rows: list[dict[str, Any]]) -> Comparison:
    first, last = rows[0], rows[-1]
    return compare(last["gap"], first["gap"], last["_runs"]["_gap"], first["_runs"]["_gap"], P1Q3_GAP_GROWTH_MIN)


def p1q3(runs: pd.DataFrame) -> Verdict:
    """"Memorises noise" confirmed iff the generalisation gap (val_recon - train_eval_recon, nats/image) at the
    largest latent_dim exceeds the gap at the smallest by more than P1Q3_GAP_GROWTH_MIN AND test_recon at the
    largest latent_dim is worse than at the best one by more than P1Q3_RECON_WORSE_MIN (beyond the intervals when
    seeds allow). Otherwise not confirmed, and the shape says whether recon keeps improving or plateaus."""
    missing: list[dict] = []
    vae = runs[column(runs, "tags.genlab.kind") == "vae"]
    vae = _with_metrics(vae, ("train_eval_recon", "val_recon", "test_recon"), missing)
    vae = vae.assign(_beta=numeric(vae, "params.beta"), _z=numeric(vae, "params.latent_dim"),
                     _gap=numeric(vae, "metrics.val_recon") - numeric(vae, "metrics.train_eval_recon"))
    vae = vae[vae["_z"].notna()]
    main, ae = vae[vae["_beta"] == 1.0], vae[vae["_beta"] == 0.0]
    rows, ae_rows = _dims(main), _dims(ae)
    if len(rows) < 2:
        missing.append({"what": "count", "key": "latent_dim", "have": len(rows), "need": 2})
    numbers: dict[str, Any] = {}
    both = pd.concat([main, ae])
    data = _tidy(both, "latent_dim", both["_z"], P1Q3_METRICS, "model", ["vae"] * len(main) + ["ae"] * len(ae))
    gap_data = pd.DataFrame({"run_id": _ids(both), "latent_dim": list(both["_z"]), "metric": "gap",
                             "value": list(both["_gap"]), "model": ["vae"] * len(main) + ["ae"] * len(ae)})
    data = pd.concat([data, gap_data], ignore_index=True) if len(both) else data
    if len(ae_rows) >= 2:
        numbers["ae_gap_growth"] = _gap_growth(ae_rows)
    table = [{k: v for k, v in r.items() if k != "_runs"} | {"model": "vae"} for r in rows] + \
            [{k: v for k, v in r.items() if k != "_runs"} | {"model": "ae"} for r in ae_rows]
    if len(rows) < 2:
        return Verdict("p1q3", "missing", numbers, table, _ids(both), missing, data)

    best = min(rows, key=lambda r: r["test_recon"].mean)
    last = rows[-1]
    numbers.update(d_min=rows[0]["latent_dim"], d_max=last["latent_dim"], d_best=best["latent_dim"],
                   gap_growth=_gap_growth(rows))
    numbers["recon_worse"] = compare(last["test_recon"], best["test_recon"], numeric(last["_runs"], "metrics.test_recon"),
                                     numeric(best["_runs"], "metrics.test_recon"), P1Q3_RECON_WORSE_MIN)
    if best is last:
        shape = "improves"
    elif numbers["recon_worse"].outcome == "greater":
        shape = "worsens"
    else:
        shape = "plateau"
    numbers["shape"] = shape
    numbers["gap_ok"] = numbers["gap_growth"].outcome == "greater"
    ok = numbers["gap_ok"] and shape == "worsens"
    return Verdict("p1q3", "confirmed" if ok else "not_confirmed", numbers, table, _ids(both), missing, data)


# ---------------------------------------------------------------- P2Q1: the VAE decoder as a GAN generator

def _claim(c: Comparison) -> str:
    return {"greater": "confirmed", "less": "not_confirmed"}.get(c.outcome, "no_significant_difference")


def p2q1(runs: pd.DataFrame, history: pd.DataFrame) -> Verdict:
    """Two claims on the final fid_proxy (lower is better), each "better" meaning lower by more than
    P2Q1_MIN_EFFECT_REL of the other arm's mean and beyond the 95 % Welch interval when seeds allow:
    decoder_init: vae_decoder better than random; normal_latent (the lab's reason): vae_decoder better than
    ae_decoder. confirmed / not_confirmed (significantly worse) / no_significant_difference, per claim."""
    missing: list[dict] = []
    gan = runs[column(runs, "tags.genlab.kind") == "gan"]
    gan = _with_metrics(gan, ("fid_proxy",), missing)
    arm_of = column(gan, "tags.genlab.arm")
    arms = {a: gan[arm_of == a] for a in P2Q1_ARMS}
    for a, r in arms.items():
        if r.empty:
            missing.append({"what": "arm", "arm": a})
    hist = history[history["run_id"].isin(_ids(gan)) & (history["key"] == "fid_proxy")] if len(history) else history
    if len(hist):
        hist = hist.assign(arm=hist["run_id"].map(dict(zip(gan["run_id"], arm_of, strict=True))))
    step0 = hist[hist["step"] == 0].set_index("run_id")["value"] if len(hist) else pd.Series(dtype=float)

    numbers: dict[str, Any] = {}
    threshold = _cell(arms["random"], "fid_proxy").mean if len(arms["random"]) else math.nan
    numbers["threshold"] = threshold
    rows = []
    for a, r in arms.items():
        if r.empty:
            continue
        reach = []
        for rid in _ids(r):
            h = hist[hist["run_id"] == rid] if len(hist) else hist
            hit = h[h["value"] <= threshold]["step"] if len(h) and not math.isnan(threshold) else pd.Series(dtype=float)
            reach.append(float(hit.min()) if len(hit) else math.nan)
        rows.append({"arm": a, "final": _cell(r, "fid_proxy"), "step0": stat(step0.reindex(_ids(r)), _ids(r)),
                     "epochs_to_threshold": stat(reach, _ids(r)), "reached": int(np.isfinite(reach).sum()),
                     "n": len(r), "run_ids": _ids(r)})
    by_arm = {r["arm"]: r for r in rows}

    def claim(ref: str) -> Comparison:
        a, b = arms[ref], arms["vae_decoder"]
        return compare(by_arm[ref]["final"], by_arm["vae_decoder"]["final"], numeric(a, "metrics.fid_proxy"),
                       numeric(b, "metrics.fid_proxy"), P2Q1_MIN_EFFECT_REL * by_arm[ref]["final"].mean)

    claims = {}
    for name, ref in (("decoder_init", "random"), ("normal_latent", "ae_decoder")):
        if ref in by_arm and "vae_decoder" in by_arm:
            numbers[name] = claim(ref)
            claims[name] = _claim(numbers[name])
        else:
            claims[name] = "missing"
    numbers["claims"] = claims
    if "vae_decoder" in by_arm and "random" in by_arm and by_arm["vae_decoder"]["step0"].n:
        s0 = by_arm["random"]["step0"]
        numbers["head_start"] = compare(s0, by_arm["vae_decoder"]["step0"], step0.reindex(s0.run_ids),
                                        step0.reindex(by_arm["vae_decoder"]["step0"].run_ids),
                                        P2Q1_MIN_EFFECT_REL * s0.mean)
    return Verdict("p2q1", claims["normal_latent"], numbers, rows, _ids(gan), missing, history=hist)


# ---------------------------------------------------------------- P2Q2: VAE encoder vs GAN discriminator

def p2q2(runs: pd.DataFrame) -> Verdict:
    """Our reading of the lab: the encoder keeps the image's content (a latent code), the discriminator only what
    separates real from generated. Confirmed iff the linear-probe accuracy on the encoder's z_mean exceeds the one
    on the discriminator's penultimate features by more than P2Q2_ACCURACY_MIN_DIFF (beyond the interval when
    seeds allow); not_confirmed if the discriminator wins by as much; else no_significant_difference."""
    missing: list[dict] = []
    probe = runs[column(runs, "tags.genlab.kind") == "probe"]
    if probe.empty:
        missing.append({"what": "kind", "kind": "probe"})
    probe = _with_metrics(probe, ("encoder_probe_accuracy", "discriminator_probe_accuracy"), missing)
    if probe.empty:
        return Verdict("p2q2", "missing", {}, [], [], missing)
    enc, disc = _cell(probe, "encoder_probe_accuracy"), _cell(probe, "discriminator_probe_accuracy")
    c = compare(enc, disc, numeric(probe, "metrics.encoder_probe_accuracy"),
                numeric(probe, "metrics.discriminator_probe_accuracy"), P2Q2_ACCURACY_MIN_DIFF)
    trunk = _cell(probe, "encoder_trunk_probe_accuracy")  # absent from probe runs made before it was measured
    numbers = {"encoder": enc, "discriminator": disc, "raw": _cell(probe, "encoder_probe_accuracy_raw"),
               "encoder_trunk": trunk,
               "encoder_params": _cell(probe, "encoder_param_count"),
               "discriminator_params": _cell(probe, "discriminator_param_count"), "difference": c}
    rows = [{"features": "encoder", "accuracy": enc, "params": numbers["encoder_params"], "run_ids": _ids(probe)},
            {"features": "discriminator", "accuracy": disc, "params": numbers["discriminator_params"],
             "run_ids": _ids(probe)},
            {"features": "raw", "accuracy": numbers["raw"], "params": None, "run_ids": _ids(probe)}]
    if trunk.n:  # same width as the discriminator's layer: described beside the verdict, not part of its rule
        numbers["same_width"] = compare(trunk, disc, numeric(probe, "metrics.encoder_trunk_probe_accuracy"),
                                        numeric(probe, "metrics.discriminator_probe_accuracy"), P2Q2_ACCURACY_MIN_DIFF)
        rows.insert(1, {"features": "encoder_trunk", "accuracy": trunk, "params": None, "run_ids": _ids(probe)})
    return Verdict("p2q2", _claim(c), numbers, rows, _ids(probe), missing)
