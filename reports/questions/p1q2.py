"""P1Q2: how does the KL divergence loss shape the latent space?

Runs: VAEs at one latent_dim with beta swept (test reconstruction, KL, active units, probe accuracy: all on the test
split; fid_proxy of prior samples),
their KL per latent dimension (artifact ``kl_per_dim.json``), and latent_dim=2 VAEs for the latent scatter
(artifact ``latent_scatter.png``) and the manifold picture. Text: templates/<lang>/questions/p1q2.md.j2.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from genlab import tags
from reports.pictures import GallerySpec, beta, latent_dim
from reports.verdicts import (
    Drawn,
    Question,
    Reader,
    Verdict,
    cell,
    compare_runs,
    ids,
    numeric,
    of_kind,
    spearman,
    tidy,
    with_metrics,
)

SPEARMAN_MIN = 0.8  # |Spearman rho| of beta vs KL and vs recon (means per beta)
MIN_BETAS = 3
UNITS_MIN_EFFECT = 0.5  # active units, smallest beta - largest beta

METRICS = ("test_recon", "test_kl", "test_active_units", "latent_probe_accuracy", "fid_proxy")
REQUIRED = ("test_recon", "test_kl", "test_active_units")  # the test split's (``active_units`` is validation's)
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


def rule(runs: pd.DataFrame, kl_per_dim: pd.DataFrame, scatters: dict[str, bytes] | None = None) -> Verdict:
    """Trade-off confirmed iff, over the per-beta means at one latent_dim, Spearman(beta, KL) <= -SPEARMAN_MIN,
    Spearman(beta, recon) >= SPEARMAN_MIN, and test active units at the largest beta are fewer than at the
    smallest (by more than UNITS_MIN_EFFECT, beyond the interval, paired on seeds when both ran the same ones).
    When the trends hold but the seeds could not have detected the drop in units: inconclusive_underpowered."""
    missing: list[dict] = []
    vae = with_metrics(of_kind(runs, tags.VAE), REQUIRED, missing)
    vae = vae.assign(_beta=numeric(vae, "params.beta"), _z=numeric(vae, "params.latent_dim"))
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
    data = tidy(sweep, "beta", sweep["_beta"], METRICS)
    kl = kl_per_dim[kl_per_dim["run_id"].isin(ids(sweep))] if len(kl_per_dim) else kl_per_dim
    if len(kl):
        kl = kl.assign(beta=kl["run_id"].map(dict(zip(sweep["run_id"], sweep["_beta"], strict=True))))
    scatter_ids = ids(vae[vae["_z"] == SCATTER_DIM])
    numbers["scatter_run_ids"] = scatter_ids
    extra = {"frames": {"kl_per_dim": kl}, "images": dict(scatters or {})}
    if len(betas) < MIN_BETAS:
        return Verdict("p1q2", "missing", numbers, rows, ids(sweep) + scatter_ids, missing, data, **extra)

    _trade_off(sweep, betas, rows, numbers)
    status = _status(numbers)
    numbers["conv_check"] = _conv_check(check, status)
    decisive = ("confirmed", "not_confirmed")
    if numbers["conv_check"] and status in decisive and numbers["conv_check"]["status"] in decisive \
            and not numbers["conv_check"]["agrees"]:
        numbers["sweep_status"], status = status, "inconclusive_architecture"  # the verdict hangs on the MLP
    return Verdict("p1q2", status, numbers, rows, ids(sweep) + scatter_ids + ids(check), missing, data,
                   rests_on=ids(sweep), **extra)


def _status(numbers: dict[str, Any]) -> str:
    if numbers["kl_ok"] and numbers["recon_ok"] and numbers["units"].outcome == "underpowered":
        return "inconclusive_underpowered"
    return "confirmed" if numbers["kl_ok"] and numbers["recon_ok"] and numbers["units_ok"] else "not_confirmed"


def _conv_check(check: pd.DataFrame, status: str) -> dict[str, Any] | None:
    """The same rule on the conv VAE's runs (arms ``conv beta=<b>``): its status and whether it agrees with the
    sweep's. None without such runs (a study that did not plan the check)."""
    betas = sorted(check["_beta"].unique()) if len(check) else []
    if len(betas) < MIN_BETAS:
        return None
    rows = [{"beta": b, **{m: cell(r, m) for m in METRICS}, "run_ids": ids(r)}
            for b, r in ((b, check[check["_beta"] == b]) for b in betas)]
    numbers: dict[str, Any] = {"betas": betas, "rows": rows, "run_ids": ids(check)}
    _trade_off(check, betas, rows, numbers)
    numbers["status"] = _status(numbers)
    numbers["agrees"] = numbers["status"] == status
    numbers["not_converged"] = ids(check[numeric(check, "metrics.converged") != 1])
    return numbers


def _trade_off(sweep: pd.DataFrame, betas: list[float], rows: list[dict[str, Any]], numbers: dict[str, Any]) -> None:
    """The three parts of the rule, and where the balance lies, into ``numbers``."""
    numbers["rho_kl"] = spearman(betas, [r["test_kl"].mean for r in rows])
    numbers["rho_recon"] = spearman(betas, [r["test_recon"].mean for r in rows])
    low, high = sweep[sweep["_beta"] == betas[0]], sweep[sweep["_beta"] == betas[-1]]
    numbers["units"] = compare_runs(low, high, "test_active_units", UNITS_MIN_EFFECT)
    for m in ("fid_proxy", "latent_probe_accuracy"):  # descriptive: where the balance lies, not part of the rule
        scored = [r for r in rows if r[m].n]
        if scored:
            best = (min if m == "fid_proxy" else max)(scored, key=lambda r: r[m].mean)
            numbers[f"best_{m}"] = {"beta": best["beta"], "value": best[m]}
    numbers["kl_ok"] = numbers["rho_kl"] <= -SPEARMAN_MIN  # NaN compares False: an undefined trend fails
    numbers["recon_ok"] = numbers["rho_recon"] >= SPEARMAN_MIN
    numbers["units_ok"] = numbers["units"].outcome == "greater"


def figures(v: Verdict, labels: dict[str, str]) -> dict[str, Drawn]:
    """The sweep, the KL per dimension, and each 2-d VAE's scatter as the run logged it."""
    from reports import figures as F

    kl = v.frames.get("kl_per_dim", pd.DataFrame())
    drawn: dict[str, Drawn] = {
        "p1q2_sweep": (F.sweep(v.data, "beta", ("test_kl", "test_recon", "test_active_units", "latent_probe_accuracy"),
                               labels, log_x="symlog"), F.run_ids(v.data)),
        "p1q2_kl_per_dim": (kl_heatmap(kl, labels), F.run_ids(kl))}
    for rid, png in v.images.items():
        drawn[f"p1q2_scatter_{rid[:8]}"] = (png, [rid])
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

QUESTION = Question("p1q2", rule, figures, read, GALLERIES, {
    "spearman_min": SPEARMAN_MIN, "min_betas": MIN_BETAS, "units_min_effect": UNITS_MIN_EFFECT})
