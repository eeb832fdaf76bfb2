"""P2Q2: differences between a VAE's encoder and a GAN's discriminator.

Runs: the ``probe`` run (linear-probe accuracy on the encoder's z_mean, on its penultimate layer, on the
discriminator's penultimate layer and on raw pixels; parameter counts). Text: templates/<lang>/questions/p2q2.md.j2.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from genlab import tags
from reports.verdicts import Drawn, Question, Verdict, cell, claim, compare_runs, ids, of_kind, with_metrics

ACCURACY_MIN_DIFF = 0.02  # probe accuracy, encoder - discriminator

REQUIRED = ("encoder_probe_accuracy", "discriminator_probe_accuracy")


def rule(runs: pd.DataFrame) -> Verdict:
    """Our reading of the lab: the encoder keeps the image's content (a latent code), the discriminator only what
    separates real from generated. Confirmed iff the linear-probe accuracy on the encoder's z_mean exceeds the one
    on the discriminator's penultimate features by more than ACCURACY_MIN_DIFF (beyond the paired interval over the
    probe runs' seeds); not_confirmed if the discriminator wins by as much; inconclusive_underpowered when the seeds
    could not have detected ACCURACY_MIN_DIFF; else no_significant_difference."""
    missing: list[dict] = []
    probe = of_kind(runs, tags.PROBE)
    if probe.empty:
        missing.append({"what": "kind", "kind": tags.PROBE})
    probe = with_metrics(probe, REQUIRED, missing)
    if probe.empty:
        return Verdict("p2q2", "missing", {}, [], [], missing)
    c = compare_runs(probe, probe, "encoder_probe_accuracy", ACCURACY_MIN_DIFF, "discriminator_probe_accuracy")
    enc, disc = c.a, c.b
    trunk = cell(probe, "encoder_trunk_probe_accuracy")  # absent from probe runs made before it was measured
    numbers: dict[str, Any] = {
        "encoder": enc, "discriminator": disc, "raw": cell(probe, "encoder_probe_accuracy_raw"),
        "encoder_trunk": trunk, "encoder_params": cell(probe, "encoder_param_count"),
        "discriminator_params": cell(probe, "discriminator_param_count"), "difference": c}
    rows = [{"features": "encoder", "accuracy": enc, "params": numbers["encoder_params"], "run_ids": ids(probe)},
            {"features": "discriminator", "accuracy": disc, "params": numbers["discriminator_params"],
             "run_ids": ids(probe)},
            {"features": "raw", "accuracy": numbers["raw"], "params": None, "run_ids": ids(probe)}]
    if trunk.n:  # same width as the discriminator's layer: described beside the verdict, not part of its rule
        numbers["same_width"] = compare_runs(probe, probe, "encoder_trunk_probe_accuracy", ACCURACY_MIN_DIFF,
                                             "discriminator_probe_accuracy")
        rows.insert(1, {"features": "encoder_trunk", "accuracy": trunk, "params": None, "run_ids": ids(probe)})
    return Verdict("p2q2", claim(c), numbers, rows, ids(probe), missing)


def figures(v: Verdict, labels: dict[str, str]) -> dict[str, Drawn]:
    from reports import figures as F

    return {"p2q2_probe": (F.final_values(v.rows, "accuracy", "features", labels, "probe_accuracy"), v.run_ids)}


QUESTION = Question("p2q2", rule, figures, thresholds={"accuracy_min_diff": ACCURACY_MIN_DIFF})
