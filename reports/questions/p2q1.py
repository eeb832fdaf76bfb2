"""P2Q1: how can a VAE decoder be used as the generator of a GAN?

Runs: GANs whose generator starts from a beta = 1 VAE decoder, from random weights and from a beta = 0 autoencoder
decoder (arms ``vae_decoder``, ``random``, ``ae_decoder``), with their fid_proxy from step 0 on.
Text: templates/<lang>/questions/p2q1.md.j2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from genlab import tags
from reports.pictures import GallerySpec
from reports.verdicts import (
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
    stat,
    with_arm,
    with_metrics,
)

MIN_EFFECT_REL = 0.05  # fraction of the reference arm's mean fid_proxy

ARMS = ("vae_decoder", "random", "ae_decoder")
CLAIMS = (("decoder_init", "random"), ("normal_latent", "ae_decoder"))  # claim -> the arm vae_decoder must beat
METRIC = "fid_proxy"  # lower is better


def read(runs: pd.DataFrame, reader: Reader) -> dict[str, Any]:
    return {"history": reader.history(ids(runs), METRIC)}


def _arm_rows(arms: dict[str, pd.DataFrame], hist: pd.DataFrame, step0: pd.Series, threshold: float,
              ) -> list[dict[str, Any]]:
    """One row per arm: fid_proxy at step 0 and at the end, epochs until the random arm's final mean."""
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
                     "n": len(r), "run_ids": ids(r)})
    return rows


def rule(runs: pd.DataFrame, history: pd.DataFrame) -> Verdict:
    """Two claims on the final fid_proxy (lower is better), each "better" meaning lower by more than
    MIN_EFFECT_REL of the other arm's mean, paired on seeds (all arms of seed s share the GAN's seed: discriminator
    initialisation, data order, noise; the vae_decoder and ae_decoder GANs of seed s start from the seed-s VAE and
    autoencoder) and Holm-corrected over the two claims: decoder_init: vae_decoder better than random;
    normal_latent (the lab's reason): vae_decoder better than ae_decoder. Per claim: confirmed / not_confirmed
    (significantly worse) / no_significant_difference / inconclusive_underpowered; the verdict is normal_latent's."""
    missing: list[dict] = []
    gan = with_metrics(of_kind(runs, tags.GAN), (METRIC,), missing)
    hist = with_arm(history, gan, METRIC)
    step0 = hist[hist["step"] == 0].set_index("run_id")["value"] if len(hist) else pd.Series(dtype=float)
    gan = gan.assign(_step0=list(step0.reindex(ids(gan)))) if len(gan) else gan.assign(_step0=[])
    arms = {a: gan[arm(gan) == a] for a in ARMS}
    for a, r in arms.items():
        if r.empty:
            missing.append({"what": "arm", "arm": a})

    numbers: dict[str, Any] = {}
    threshold = cell(arms["random"], METRIC).mean if len(arms["random"]) else math.nan
    numbers["threshold"] = threshold
    rows = _arm_rows(arms, hist, step0, threshold)
    present = {r["arm"] for r in rows}
    tested = {name: compare_runs(arms[ref], arms["vae_decoder"], METRIC,
                                 MIN_EFFECT_REL * cell(arms[ref], METRIC).mean)
              for name, ref in CLAIMS if {ref, "vae_decoder"} <= present}
    numbers.update(holm_claims(tested))
    numbers["claims"] = {name: claim(numbers[name]) if name in numbers else "missing" for name, _ in CLAIMS}
    if {"vae_decoder", "random"} <= present and gan["_step0"].notna().any():
        numbers["head_start"] = compare_runs(arms["random"], arms["vae_decoder"], "_step0",
                                             MIN_EFFECT_REL * cell(arms["random"], "_step0").mean)
    return Verdict("p2q1", numbers["claims"]["normal_latent"], numbers, rows, ids(gan), missing,
                   frames={"history": hist})


def figures(v: Verdict, labels: dict[str, str]) -> dict[str, Drawn]:
    from reports import figures as F

    history = v.frames.get("history", pd.DataFrame())
    return {"p2q1_curves": (F.curves(history, labels, "gan_fid_proxy", "title_fid_curves"), F.run_ids(history)),
            "p2q1_final": (F.final_values(v.rows, "final", "arm", labels, "final_fid_proxy"), v.run_ids)}


GALLERIES = {"p2q1_pictures": GallerySpec(
    tags.GAN, lambda r: ("arm", r.get(tags.column(tags.ARM), "")),
    lambda r: [("pic_step0", "pictures/samples_step0.png"), ("pic_final", "pictures/samples.png")])}

QUESTION = Question("p2q1", rule, figures, read, GALLERIES, {"min_effect_rel": MIN_EFFECT_REL})
