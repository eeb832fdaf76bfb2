"""P2Q2: differences between a VAE's encoder and a GAN's discriminator.

Runs: the ``probe`` runs, one per seed (genlab/probe.py): what each network's frozen penultimate layer keeps of the
image (a linear decoder's reconstruction), how it separates real from generated images (a linear probe's AUROC),
the same on untrained networks of the same architectures, and the class-probe accuracies (on the encoder's z_mean,
on both penultimate layers and on raw pixels; parameter counts). Text: templates/<lang>/questions/p2q2.md.j2.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from genlab import tags
from reports.verdicts import (
    Drawn,
    Question,
    Verdict,
    cell,
    claim,
    compare_runs,
    holm_claims,
    ids,
    of_kind,
    run_values,
    with_metrics,
)

ACCURACY_MIN_DIFF = 0.02  # probe accuracy, encoder - discriminator (supporting evidence, not the verdict)
# The verdict's two claims. 5 nats per image is about 2 % of what a Fashion-MNIST test image costs the linear
# decoder (225-255 nats from the layers of a conv pair trained 2 epochs on 10,000 images, trained or not); 0.02 of
# AUROC is two points of ranking accuracy, as ACCURACY_MIN_DIFF is two points of class accuracy.
RECON_MIN_EFFECT = 5.0  # nats per image: gap D - encoder in reconstruction, beyond the untrained networks' gap
AUROC_MIN_EFFECT = 0.02  # gap D - encoder in real/fake AUROC, beyond the untrained networks' gap

REQUIRED = ("encoder_probe_accuracy", "discriminator_probe_accuracy")
# claim -> (trained encoder, trained discriminator, untrained encoder, untrained discriminator) metrics
CLAIMS = {
    "keeps_image": ("encoder_recon_from_features", "discriminator_recon_from_features",
                    "untrained_encoder_recon_from_features", "untrained_discriminator_recon_from_features"),
    # read along the two sets' mean difference (no fitted weights): a logistic probe on a whole layer separated the
    # earlier GANs' samples from real images at AUROC 1.000 on untrained networks too, leaving training no room
    "separates_real": ("encoder_realfake_centroid_auroc", "discriminator_realfake_centroid_auroc",
                       "untrained_encoder_realfake_centroid_auroc", "untrained_discriminator_realfake_centroid_auroc"),
}
MIN_EFFECTS = {"keeps_image": RECON_MIN_EFFECT, "separates_real": AUROC_MIN_EFFECT}
# the rows of the readouts table: representation -> its metric prefix (class-probe accuracy, reconstruction, both
# real/fake AUROCs: ``<prefix>_recon_from_features``, ``<prefix>_realfake_auroc``, ``<prefix>_realfake_centroid_auroc``)
READOUTS = {
    "encoder_trunk": ("encoder_trunk_probe_accuracy", "encoder"),
    "discriminator": ("discriminator_probe_accuracy", "discriminator"),
    "untrained_encoder_trunk": ("untrained_encoder_trunk_probe_accuracy", "untrained_encoder"),
    "untrained_discriminator": ("untrained_discriminator_probe_accuracy", "untrained_discriminator"),
    "encoder": ("encoder_probe_accuracy", "encoder_zmean"),
}


def _gaps(probe: pd.DataFrame) -> pd.DataFrame:
    """Each run's gap D - encoder per claim, between the trained networks (``_keeps_image``, ``_separates_real``)
    and between the untrained ones (``..._untrained``, the control). The same sign means the same thing in both:
    for reconstruction (nats, lower keeps more) a positive gap is the encoder keeping more of the image, for the
    real/fake AUROC it is D separating better."""
    gaps = {}
    for name, (enc, disc, enc0, disc0) in CLAIMS.items():
        gaps[f"_{name}"] = run_values(probe, disc) - run_values(probe, enc)
        gaps[f"_{name}_untrained"] = run_values(probe, disc0) - run_values(probe, enc0)
    return probe.assign(**gaps)


def _status(claims: dict[str, str]) -> str:
    """The lab's answer holds when both of its sentences do; one refuted sentence refutes it."""
    found = set(claims.values())
    for status in ("not_confirmed", "inconclusive_control", "inconclusive_underpowered", "no_significant_difference"):
        if status in found:
            return status
    return "confirmed"


def _supporting(probe: pd.DataFrame) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Described beside the verdict, not part of its rule: the class-probe accuracies (the table and figure this
    question had before its claims were measured), the dimension-matched probes, the trunks' CKA, D's own output,
    and each layer's three readouts trained and untrained."""
    c = compare_runs(probe, probe, "encoder_probe_accuracy", ACCURACY_MIN_DIFF, "discriminator_probe_accuracy")
    numbers: dict[str, Any] = {
        "encoder": c.a, "discriminator": c.b, "raw": cell(probe, "encoder_probe_accuracy_raw"),
        "encoder_trunk": cell(probe, "encoder_trunk_probe_accuracy"), "difference": c,
        "encoder_params": cell(probe, "encoder_param_count"),
        "discriminator_params": cell(probe, "discriminator_param_count"),
        "same_width": compare_runs(probe, probe, "encoder_trunk_probe_accuracy", ACCURACY_MIN_DIFF,
                                   "discriminator_probe_accuracy"),
        "pca_width": compare_runs(probe, probe, "encoder_trunk_pca_probe_accuracy", ACCURACY_MIN_DIFF,
                                  "discriminator_pca_probe_accuracy"),
        "latent_dim": cell(probe, "encoder_feature_dim"), "cka": cell(probe, "trunk_cka"),
        "cka_init": cell(probe, "trunk_cka_init"), "d_output_auroc": cell(probe, "discriminator_output_auroc"),
        "realfake_half": cell(probe, "realfake_images_per_half"),
        "readouts": [{"features": rep, "accuracy": cell(probe, a), "recon": cell(probe, f"{m}_recon_from_features"),
                      "auroc": cell(probe, f"{m}_realfake_auroc"),
                      "centroid_auroc": cell(probe, f"{m}_realfake_centroid_auroc"), "run_ids": ids(probe)}
                     for rep, (a, m) in READOUTS.items()]}
    numbers["readouts"].append({"features": "raw", "accuracy": numbers["raw"], "recon": None, "auroc": None,
                                "centroid_auroc": None, "run_ids": ids(probe)})
    rows = [{"features": "encoder", "accuracy": c.a, "params": numbers["encoder_params"], "run_ids": ids(probe)},
            {"features": "encoder_trunk", "accuracy": numbers["encoder_trunk"], "params": None,
             "run_ids": ids(probe)},
            {"features": "discriminator", "accuracy": c.b, "params": numbers["discriminator_params"],
             "run_ids": ids(probe)},
            {"features": "raw", "accuracy": numbers["raw"], "params": None, "run_ids": ids(probe)}]
    return numbers, rows


def rule(runs: pd.DataFrame) -> Verdict:
    """The lab's answer as two claims on the probe runs' frozen features, each paired run by run (both numbers of
    a run come from the same pair of networks) and Holm-corrected over the two:

    - keeps_image (the encoder projects the image into a code its decoder rebuilds it from): the encoder's
      penultimate layer keeps more of the image than the discriminator's, i.e. a linear decoder reconstructs the
      test images from it with fewer nats (``*_recon_from_features``), beyond the same comparison between the
      untrained networks: (D - encoder) - (untrained D - untrained encoder) > RECON_MIN_EFFECT nats per image;
    - separates_real (the discriminator learns to tell real from generated): real test images and the GAN's
      samples are told apart better on D's layer than on the encoder's, read along the difference of their mean
      features (``*_realfake_centroid_auroc``), beyond the untrained networks: (D - encoder) - (untrained D -
      untrained encoder) > AUROC_MIN_EFFECT.

    Each claim: confirmed, not_confirmed (significantly the other way), no_significant_difference or
    inconclusive_underpowered (the seeds could not have shown the minimum effect); separates_real is
    inconclusive_control instead of no_significant_difference when both untrained layers already reach an AUROC
    above 1 - AUROC_MIN_EFFECT (no room left to show what training adds). The verdict: confirmed when both claims
    are; else not_confirmed when either is refuted; else the weaker of the two. The class-probe accuracies are
    supporting evidence (``_supporting``)."""
    missing: list[dict] = []
    probe = of_kind(runs, tags.PROBE)
    if probe.empty:
        missing.append({"what": "kind", "kind": tags.PROBE})
    probe = with_metrics(probe, REQUIRED + tuple(m for ms in CLAIMS.values() for m in ms), missing)
    if probe.empty:
        return Verdict("p2q2", "missing", {}, [], [], missing)
    probe = _gaps(probe)
    # the trained gap against the untrained one, run by run: what training made of two identical architectures
    tested = holm_claims({name: compare_runs(probe, probe, f"_{name}", MIN_EFFECTS[name], f"_{name}_untrained")
                          for name in CLAIMS})
    numbers, rows = _supporting(probe)
    numbers.update(tested)
    numbers["claims"] = {name: claim(c) for name, c in tested.items()}
    # untrained layers that already separate real from generated images leave no room for training to add
    # AUROC_MIN_EFFECT: "no effect" would be the measurement's ceiling, not a finding about the networks
    numbers["realfake_ceiling"] = min(cell(probe, m).mean for m in CLAIMS["separates_real"][2:]) > 1 - AUROC_MIN_EFFECT
    if numbers["realfake_ceiling"] and numbers["claims"]["separates_real"] == "no_significant_difference":
        numbers["claims"]["separates_real"] = "inconclusive_control"
    return Verdict("p2q2", _status(numbers["claims"]), numbers, rows, ids(probe), missing, rests_on=ids(probe))


def figures(v: Verdict, labels: dict[str, str]) -> dict[str, Drawn]:
    from reports import figures as F

    readouts = v.numbers.get("readouts", [])
    return {"p2q2_recon": (F.final_values(readouts, "recon", "features", labels, "recon_from_features"), v.run_ids),
            "p2q2_realfake": (F.final_values(readouts, "centroid_auroc", "features", labels, "realfake_auroc"),
                              v.run_ids),
            "p2q2_probe": (F.final_values(v.rows, "accuracy", "features", labels, "probe_accuracy"), v.run_ids)}


QUESTION = Question("p2q2", rule, figures, thresholds={"accuracy_min_diff": ACCURACY_MIN_DIFF,
                                                       "recon_min_effect": RECON_MIN_EFFECT,
                                                       "auroc_min_effect": AUROC_MIN_EFFECT},
                    deciding=(*(m for metrics in CLAIMS.values() for m in metrics), *REQUIRED))
