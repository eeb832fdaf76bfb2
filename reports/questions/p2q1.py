"""P2Q1: how can a VAE decoder be used as the generator of a GAN?

Runs: GANs whose generator starts from a beta = 1 VAE decoder, from random weights, from a beta = 0 autoencoder
decoder, and from that autoencoder decoder behind a Gaussian fitted to its own codes (arms ``vae_decoder``,
``random``, ``ae_decoder``, ``ae_decoder_matched``: train_gan's ``latent_fit=codes``), with their fid_proxy from
step 0 on. Text: templates/<lang>/questions/p2q1.md.j2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from genlab import tags
from reports.gallery import GallerySpec
from reports.verdicts import (
    Comparison,
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
    of_kind,
    run_values,
    stat,
    with_arm,
    with_metrics,
)

MIN_EFFECT_REL = 0.05  # fraction of the reference arm's mean fid_proxy

ARMS = ("vae_decoder", "random", "ae_decoder", "ae_decoder_matched")
CONTROL = "ae_decoder_matched"  # the autoencoder decoder fed noise distributed like its own codes
CLAIMS = (("decoder_init", "random"), ("normal_latent", "ae_decoder"))  # final fid_proxy: claim -> the arm vae_decoder must beat
STEP0_CLAIMS = (("normal_latent_step0", "ae_decoder"),)  # the same at step 0, before any GAN update
# The arms vae_decoder is compared against after the same number of GAN steps ("helps" as a practitioner means it:
# better quality for the same training); the convergence gate reads the others, whose final values are plateaus.
BASELINES = ("random", "ae_decoder")
TAIL_FALL = "fid_tail_fall"  # how much a run's fid_proxy still fell across its last third (the plateau test)
METRIC = "fid_proxy"  # lower is better
STEP0 = "_step0"  # the rule's column of each run's fid_proxy at step 0
# where the control is read: point -> (the measure, the claim whose gap it explains)
POINTS = {"step0": (STEP0, "normal_latent_step0"), "final": (METRIC, "normal_latent")}
CAUSES = ("latent_distribution", "decoder", "undetermined", "no_advantage", "missing")


def read(runs: pd.DataFrame, reader: Reader) -> dict[str, Any]:
    return {"history": reader.history(ids(runs), METRIC)}


def _arm_rows(arms: dict[str, pd.DataFrame], hist: pd.DataFrame, step0: pd.Series, threshold: float,
              ) -> list[dict[str, Any]]:
    """One row per arm: fid_proxy at step 0 and at the end, epochs until the random arm's final mean, and the fall
    left across the last third of its curve (a baseline still improving is compared after the same steps)."""
    rows = []
    for a, r in arms.items():
        if r.empty:
            continue
        reach = []
        for rid in ids(r):
            h = hist[hist["run_id"] == rid] if len(hist) else hist
            hit = h[h["value"] <= threshold]["step"] if len(h) and not math.isnan(threshold) else pd.Series(dtype=float)
            reach.append(float(hit.min()) if len(hit) else math.nan)
        rows.append({"arm": a, "final": cell(r, METRIC), "step0": stat(step0.reindex(ids(r)), ids(r)),
                     "epochs_to_threshold": stat(reach, ids(r)), "reached": int(np.isfinite(reach).sum()),
                     "tail_fall": cell(r, TAIL_FALL), "baseline": a in BASELINES, "n": len(r),
                     "run_ids": ids(r)})
    return rows


def rule(runs: pd.DataFrame, history: pd.DataFrame) -> Verdict:
    """Three claims, each "better" meaning a lower fid_proxy by more than MIN_EFFECT_REL of the other arm's mean,
    paired on seeds (all arms of seed s share the GAN's seed: discriminator initialisation, data order, noise; the
    decoder-initialised GANs of seed s start from the seed-s VAE or autoencoder) and Holm-corrected together:
    decoder_init: vae_decoder better than random at the end; normal_latent (the lab's reason): vae_decoder better
    than ae_decoder at the end; normal_latent_step0 (its direct test: both decoders fed N(0, I), before any GAN
    update): the same at step 0. Per claim: confirmed / not_confirmed (significantly worse) /
    no_significant_difference / inconclusive_underpowered; the verdict is normal_latent's. The convergence gate reads
    vae_decoder and the control only: the BASELINES are compared at the same number of GAN steps. The step-0
    claim is kept apart (``step0_claims``): the convergence gate, which rewrites ``claims``, judges training that
    step 0 precedes. The control (``_control``) names what a vae_decoder advantage came from (``cause``)."""
    missing: list[dict] = []
    gan = with_metrics(of_kind(runs, tags.GAN), (METRIC,), missing)
    hist = with_arm(history, gan, METRIC)
    step0 = hist[hist["step"] == 0].set_index("run_id")["value"] if len(hist) else pd.Series(dtype=float)
    gan = gan.assign(**{STEP0: list(step0.reindex(ids(gan)))}) if len(gan) else gan.assign(**{STEP0: []})
    arms = {a: gan[arm(gan) == a] for a in ARMS}
    for a, r in arms.items():
        if r.empty:
            missing.append({"what": "arm", "arm": a})

    numbers: dict[str, Any] = {}
    threshold = cell(arms["random"], METRIC).mean if len(arms["random"]) else math.nan
    numbers["threshold"] = threshold
    rows = _arm_rows(arms, hist, step0, threshold)
    present = {r["arm"] for r in rows}
    started = {a for a in present if arms[a][STEP0].notna().any()}  # arms with a step-0 fid_proxy
    tested = {name: _beaten_by_vae(arms, ref, METRIC) for name, ref in CLAIMS if {ref, "vae_decoder"} <= present}
    tested.update({name: _beaten_by_vae(arms, ref, STEP0) for name, ref in STEP0_CLAIMS
                   if {ref, "vae_decoder"} <= started})
    numbers.update(holm_claims(tested))
    numbers["claims"] = {name: claim(numbers[name]) if name in numbers else "missing" for name, _ in CLAIMS}
    numbers["step0_claims"] = {name: claim(numbers[name]) if name in numbers else "missing"
                               for name, _ in STEP0_CLAIMS}
    if {"vae_decoder", "random"} <= started:
        numbers["head_start"] = _beaten_by_vae(arms, "random", STEP0)
    numbers.update(_control(arms, present, started, {**numbers["claims"], **numbers["step0_claims"]}))
    numbers["still_improving"] = {a: int((run_values(arms[a], "converged") == 0).sum()) for a in BASELINES}
    # "helps" compares quality after the same GAN steps, so a baseline still improving at the end is what is
    # measured (its remaining fall is shown), not a reason to doubt the arm that helps
    gated = ids(gan[~arm(gan).isin(BASELINES)]) if len(gan) else []
    return Verdict("p2q1", numbers["claims"]["normal_latent"], numbers, rows, ids(gan), missing,
                   frames={"history": hist}, rests_on=gated)


def _beaten_by_vae(arms: dict[str, pd.DataFrame], ref: str, measure: str) -> Comparison:
    """``ref`` - vae_decoder on ``measure`` (positive: the VAE decoder's fid_proxy is lower), minimum effect
    MIN_EFFECT_REL of ``ref``'s mean."""
    return compare_runs(arms[ref], arms["vae_decoder"], measure, MIN_EFFECT_REL * cell(arms[ref], measure).mean)


def _control(arms: dict[str, pd.DataFrame], present: set[str], started: set[str], gaps: dict[str, str],
             ) -> dict[str, Any]:
    """ae_decoder_matched - vae_decoder at step 0 and at the end (``control_step0``, ``control_final``; minimum
    effect MIN_EFFECT_REL of vae_decoder's mean) and the cause of the gap each point's claim found (``causes``,
    then ``cause``). Not Holm-corrected: the correction would make "no difference" easier to reach, and "no
    difference" is what names the latent distribution."""
    out: dict[str, Any] = {"causes": {}}
    for point, (measure, gap_claim) in POINTS.items():
        have = started if measure == STEP0 else present
        c = None
        if {CONTROL, "vae_decoder"} <= have:
            c = compare_runs(arms[CONTROL], arms["vae_decoder"], measure,
                             MIN_EFFECT_REL * cell(arms["vae_decoder"], measure).mean)
            out[f"control_{point}"] = c
        out["causes"][point] = _cause(gaps[gap_claim], c)
    out["cause"] = overall_cause(out["causes"])
    return out


def _cause(gap: str, control: Comparison | None) -> str:
    """What a confirmed vae_decoder-over-ae_decoder gap came from: ``latent_distribution`` when the matched
    autoencoder decoder catches up (no difference larger than the minimum effect, with the power to see one, or
    better), ``decoder`` when it stays significantly behind, ``undetermined`` when the seeds cannot tell (or the
    gap itself was underpowered); ``no_advantage`` when there is no gap to explain; ``missing`` without the runs."""
    if control is None or gap == "missing":
        return "missing"
    if gap in ("no_significant_difference", "not_confirmed"):
        return "no_advantage"
    if gap != "confirmed":
        return "undetermined"
    return {"none": "latent_distribution", "less": "latent_distribution", "greater": "decoder",
            "underpowered": "undetermined"}[control.outcome]


def overall_cause(causes: dict[str, str]) -> str:
    """One cause for the question: the one every point with a gap names; ``no_advantage`` when no point has a
    gap; ``undetermined`` when the points disagree or one cannot tell; ``missing`` when a point lacks its runs."""
    values = set(causes.values())
    if "missing" in values:
        return "missing"
    named = values - {"no_advantage"}
    if not named:
        return "no_advantage"
    return next(iter(named)) if len(named) == 1 else "undetermined"


def figures(v: Verdict, labels: dict[str, str]) -> dict[str, Drawn]:
    from reports import figures as F

    history = v.frames.get("history", pd.DataFrame())
    return {"p2q1_curves": (F.curves(history, labels, "gan_fid_proxy", "title_fid_curves"), F.run_ids(history)),
            "p2q1_final": (F.final_values(v.rows, "final", "arm", labels, "final_fid_proxy"), v.run_ids)}


GALLERIES = {"p2q1_pictures": GallerySpec(
    tags.GAN, lambda r: ("arm", r.get(tags.column(tags.ARM), "")),
    lambda r: [("pic_step0", "pictures/samples_step0.png"), ("pic_final", "pictures/samples.png")])}

QUESTION = Question("p2q1", rule, figures, read, GALLERIES, {"min_effect_rel": MIN_EFFECT_REL},
                    deciding=(METRIC,), curves=(METRIC,))
