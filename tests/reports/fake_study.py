"""A study store built by hand with known numbers (what `genlab study` would log, per the study/report contract),
in two versions: ``confirmed=True`` where every lab claim holds, ``confirmed=False`` where the data says otherwise.

Seeds differ by -0.2, 0, +0.2 so every condition has a known 95 % t-interval half-width:
t(0.975, 2) * 0.2 / sqrt(3) = 0.497 (printed 0.50). Every VAE and GAN run converged (``converged`` = 1; a
probe: both its networks) unless ``convergence`` names it (run name -> the ``converged`` value to log, None for a
run made before it was logged).
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from PIL import Image

NOISE = (-0.2, 0.0, 0.2)
XSS = "<script>alert(1)</script>"


class Store:
    def __init__(self, uri: str, study: str = "lab1", profile: str = "full",
                 convergence: dict[str, float | None] | None = None):
        self.client = MlflowClient(uri)
        self.convergence = convergence or {}
        self.exp = self.client.create_experiment(f"fake-{study}-{profile}")
        self.study, self.profile = study, profile
        self.ids: dict[str, list[str]] = {}  # the runs the report must use, per question
        self.ignored: list[str] = []  # the runs it must not use (unfinished, or superseded by a later run)
        self.named: dict[str, str] = {}  # run name -> run id
        self.clock = int(time.time() * 1000) - 10_000_000

    def run(self, question: str, kind: str, arm: str, seed: int | None, params: dict, metrics: dict,
            history: dict[str, list[tuple[int, float]]] | None = None, name: str | None = None,
            status: str = "FINISHED", texts: dict[str, str] | None = None, png: bytes | None = None,
            start_offset: int = 0) -> str:
        self.clock += 1000
        tags = {"genlab.study": self.study, "genlab.profile": self.profile, "genlab.question": question,
                "genlab.kind": kind, "genlab.arm": arm}
        run = self.client.create_run(self.exp, start_time=self.clock + start_offset, tags=tags,
                                     run_name=name or f"{kind} {arm} s{seed}")
        rid = run.info.run_id
        self.named[name or f"{kind} {arm} s{seed}"] = rid
        params = {**params, **({"seed": seed} if seed is not None else {})}
        if kind in ("vae", "gan", "probe", "gradvar"):  # a probe / gradvar: whether the networks it measures did
            converged = self.convergence.get(name or f"{kind} {arm} s{seed}", 1.0)
            tail = {} if converged is None else {"converged": converged}
            if kind in ("vae", "gan") and converged is not None:
                tail["val_rel_improvement_tail"] = 0.002 if converged else 0.05
            metrics = {**metrics, **tail}
        values = [Metric(k, float(v), self.clock, 0) for k, v in metrics.items()]
        for key, points in (history or {}).items():
            values += [Metric(key, float(v), self.clock + step, step) for step, v in points]
        self.client.log_batch(rid, metrics=values, params=[Param(k, str(v)) for k, v in params.items()],
                              tags=[RunTag("mlflow.runName", name or f"{kind} {arm} s{seed}")])
        for path, text in (texts or {}).items():
            self.client.log_text(rid, text, path)
        if png is not None:
            self.client.log_image(rid, np.asarray(Image.open(io.BytesIO(png))), "latent_scatter.png")
        self.client.set_terminated(rid, status)
        if status == "FINISHED" and start_offset == 0:
            self.ids.setdefault(question, []).append(rid)
        else:
            self.ignored.append(rid)
        return rid


def scatter_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[:, None] * 4, (1, 64))).save(buf, format="PNG")
    return buf.getvalue()


def p1q2_numbers(confirmed: bool) -> list[dict[str, float]]:
    """P1Q2's end-of-run metrics at beta 0, 0.5, 1, 4. Confirmed: interpolations even at beta 1 (1.3) and uneven at 0
    (2.0), their path length 40 at beta 1 against 60 at 0; codes far from the prior at 0 (MMD 0.5, prior fid_proxy 80
    against 20 from the codes); reconstruction 30 nats worse at 4 than at 1; neg-ELBO and fid_proxy lowest inside the
    sweep; kl_active_units 3 -> 1 from 1 to 4.
    Not confirmed: each of those sentences the other way round."""
    columns = ("test_kl", "test_recon", "test_neg_elbo", "kl_active_units", "interp_smoothness",
               "aggregate_posterior_mmd", "fid_proxy", "aggregate_fid_proxy", "interp_path_length")
    table = {  # metric -> values at beta 0, 0.5, 1, 4
        True: ((40, 20, 15, 6), (200, 205, 210, 240), (240, 225, 225, 246), (4, 4, 3, 1), (2.0, 1.6, 1.3, 1.25),
               (0.5, 0.1, 0.02, 0.01), (80, 40, 30, 45), (20, 30, 26, 44), (60, 50, 40, 35)),
        False: ((15, 25, 10, 20), (205, 200, 210, 203), (220, 225, 220, 223), (4, 4, 1, 4), (1.1, 1.2, 1.5, 1.2),
                (0.01, 0.1, 0.3, 0.01), (30, 40, 80, 25), (25, 30, 20, 24), (30, 35, 40, 35)),
    }[confirmed]
    return [{m: float(v[i]) for m, v in zip(columns, table, strict=True)} for i in range(4)]


def build(uri: str, confirmed: bool, study: str = "lab1", profile: str = "full",
          convergence: dict[str, float | None] | None = None, probe_seeds: int = 3,
          conv_check: bool | None = None) -> Store:
    """``conv_check``: also plant P1Q2's conv-architecture check, agreeing (True) or not (False) with the sweep."""
    s = Store(uri, study, profile, convergence)
    # P1Q1: confirmed: the detach VAE collapses (KL 0.02) while the trick's learns; not: detach learns, and better.
    # gradvar: the matched variance ratio 3 (ratios x10 for the other baselines) on the trained VAEs, 1.5 at init.
    for gv_arm, matched in (("gradvar", 3.0), ("gradvar_init", 1.5)):
        for seed in range(3):  # one measurement per seed, on that seed's reparameterised VAE (or initialisation)
            ratios = {}
            for name in ("no_baseline", "running_mean", "per_image", "matched"):
                r = matched if name == "matched" else 10 * matched
                ratios.update({f"grad_variance_ratio_{name}": r, f"grad_variance_ratio_{name}_ci_low": 0.8 * r,
                               f"grad_variance_ratio_{name}_ci_high": 1.2 * r})
            s.run("p1q1", "gradvar", gv_arm, seed, {"latent_dim": 4},
                  {**ratios, "encoder_grad_norm_no_trick": 0.0, "encoder_grad_norm_reparam": 1.3})
    detach = (330, 0.02, 0) if confirmed else (240, 24.0, 8)
    for arm, (recon, kl, units), curve in (("reparam", (250, 25.0, 8), (300, 280, 276)),
                                           ("score", (290, 12.0, 6), (330, 320, 303)),
                                           ("detach", detach, (340, 331, 331) if confirmed else (300, 280, 276))):
        for seed, e in enumerate(NOISE):
            s.run("p1q1", "vae", arm, seed, {"estimator": arm, "beta": 1.0, "latent_dim": 4},
                  {"val_neg_elbo": curve[-1] + e, "test_recon": recon + e, "test_kl": kl, "test_active_units": units,
                   "test_neg_elbo": recon + kl + e}, {"val_neg_elbo": [(i + 1, c + e) for i, c in enumerate(curve)]},
                  name=f"vae {arm} z4 b1.0 s{seed}")

    # P1Q2: beta sweep at latent_dim 4 (the conv check: beta 0, 1, 8, with the numbers of 0, 1, 4).
    betas = (0.0, 0.5, 1.0, 4.0)
    for b, values in zip(betas, p1q2_numbers(confirmed), strict=True):
        for seed, e in enumerate(NOISE):
            per_dim = [values["test_kl"] / 4 * w for w in (1.6, 1.2, 0.8, 0.4)]
            s.run("p1q2", "vae", f"beta={b:g}", seed, {"beta": b, "latent_dim": 4},
                  {**{m: v + e for m, v in values.items()}, "active_units": 4, "test_active_units": 4,
                   "latent_probe_accuracy": 0.7 + 0.02 * b},
                  texts={"kl_per_dim.json": json.dumps(per_dim)}, name=f"vae z4 b{b:g} s{seed}")
    if conv_check is not None:  # the conv VAE at three beta: the sweep's numbers (agreeing) or the other version's
        conv = p1q2_numbers(confirmed if conv_check else not confirmed)
        for b, values in zip((0.0, 1.0, 8.0), (conv[0], conv[2], conv[3]), strict=True):
            for seed, e in enumerate(NOISE):
                s.run("p1q2", "vae", f"conv beta={b:g}", seed, {"beta": b, "latent_dim": 4, "arch": "conv"},
                      {m: v + e for m, v in values.items()}, name=f"vae conv z4 b{b:g} s{seed}")
    s.run("p1q2", "vae", "beta=1 z=2", 0, {"beta": 1.0, "latent_dim": 2},
          {"test_recon": 260, "test_kl": 5, "test_neg_elbo": 265, "active_units": 2, "test_active_units": 2},
          png=scatter_png(),
          name="vae z2 b1.0 s0")

    # P1Q3: latent_dim sweep at beta 1 (+ autoencoders). The gap is test - train reconstruction. Confirmed: the gap
    # grows 1 -> 9 nats, the training reconstruction levels off at 8, so test recon is best at 8 and worse at 32;
    # not confirmed: the gap stays at 1 while training keeps improving, so test recon improves up to 32.
    # The -log p(x) bound is the reconstruction + 10 nats; its test - train gap is the reconstruction gap + 0.5.
    dims = (2, 8, 32)
    gap = (1.0, 3.0, 9.0) if confirmed else (1.0, 1.2, 1.1)
    trains = (250.0, 220.0, 220.5) if confirmed else (250.0, 220.0, 200.0)
    for d, g, train in zip(dims, gap, trains, strict=True):
        for seed, e in enumerate(NOISE):
            s.run("p1q3", "vae", f"z={d}", seed, {"beta": 1.0, "latent_dim": d},
                  {"train_eval_recon": train + e, "val_recon": train + g + 2 * e, "test_recon": train + g + 2 * e,
                   "train_nll_iw": train + 10 + e, "test_nll_iw": train + g + 10.5 + 2 * e, "train_nll_iw_se": 0.3,
                   "test_nll_iw_se": 0.3, "active_units": min(d, 12), "test_active_units": min(d, 11),
                   "fid_proxy": 40 - d / 4, "recon_fid_proxy": 10 - d / 8},
                  name=f"vae z{d} b1.0 s{seed}")
    for d, g in ((2, 2.0), (32, 15.0)):
        for seed, e in enumerate(NOISE):
            s.run("p1q3", "vae", f"ae z={d}", seed, {"beta": 0.0, "latent_dim": d},
                  {"train_eval_recon": 240 - d + e, "val_recon": 240 - d + g + e, "test_recon": 240 - d + g},
                  name=f"vae z{d} b0.0 s{seed}")
    # the positive control (300 images, many epochs): the autoencoder's gap grows 5 -> 40 in both stores
    for model, b, gaps in (("ae ", 0.0, (5.0, 40.0)), ("", 1.0, (3.0, 6.0))):
        for d, g in zip((2, 32), gaps, strict=True):
            for seed, e in enumerate(NOISE):
                s.run("p1q3", "vae", f"control {model}z={d}", seed, {"beta": b, "latent_dim": d, "limit": 300},
                      {"train_eval_recon": 200 - d + e, "val_recon": 200 - d + g + e, "test_recon": 200 - d + g},
                      name=f"vae z{d} b{b} s{seed} control")
    # ignored: an unfinished run, and an older duplicate of a condition (the latest run wins)
    s.run("p1q3", "vae", "z=32", 0, {"beta": 1.0, "latent_dim": 32},
          {"train_eval_recon": 0, "val_recon": 500, "test_recon": 900}, status="FAILED", name="vae z32 failed")
    s.run("p1q3", "vae", "z=32", 1, {"beta": 1.0, "latent_dim": 32},
          {"train_eval_recon": 0, "val_recon": 500, "test_recon": 900}, start_offset=-5_000_000, name="vae z32 old")

    # The Optuna search: 12 complete trials and 2 pruned. Confirmed: the best three (by val_neg_elbo) at beta 0.4 to
    # 0.7 and latent_dim 8 to 16, around the sweeps' best (beta 0.5, latent_dim 8); not: at beta 8 to 10 and
    # latent_dim 2 to 4, away from them.
    plant_search(s, SEARCH_TOP if confirmed else SEARCH_TOP_ELSEWHERE)

    # P2Q1: GAN inits. Confirmed: final fid vae_decoder 20 < ae_decoder 30 < random 40, and the autoencoder decoder
    # fed noise fitted to its codes catches up with the VAE decoder (60 at step 0, 20 at the end): the cause is the
    # latent distribution. Flipped: vae_decoder 40 > ae_decoder 30 at the end (no advantage to explain), and at step
    # 0 (60 < 120 in both versions) the matched decoder stays behind at 100: the cause is the decoder.
    finals = {"vae_decoder": 20.0, "random": 40.0, "ae_decoder": 30.0, "ae_decoder_matched": 20.0} if confirmed else \
             {"vae_decoder": 40.0, "random": 20.0, "ae_decoder": 30.0, "ae_decoder_matched": 35.0}
    starts = {"vae_decoder": 60.0, "random": 300.0, "ae_decoder": 120.0,
              "ae_decoder_matched": 60.0 if confirmed else 100.0}
    jitter = {"vae_decoder": (0.1, -0.1, 0.0), "random": (0.0, 0.1, -0.1), "ae_decoder": (-0.1, 0.0, 0.1),
              "ae_decoder_matched": (0.0, 0.1, -0.1)}
    for arm, final in finals.items():
        for seed, e in enumerate(NOISE):  # seed s of every arm shares its noise: the arms are paired on seeds
            curve = np.linspace(starts[arm], final, 5) + e + jitter[arm][seed]
            s.run("p2q1", "gan", arm, seed, {"init": arm, "latent_dim": 4}, {},
                  {"fid_proxy": [(step, v) for step, v in enumerate(curve)]}, name=f"gan z4 init={arm} s{seed}")

    # P2Q2: the probe. Confirmed: the encoder's layer reconstructs the images with 30 nats fewer than D's (untrained:
    # 1), D's separates real from generated with 0.15 more AUROC (untrained: 0.01); flipped: both the other way.
    # Class probes (supporting): encoder z_mean 0.80 > discriminator 0.70 (encoder trunk 0.68). Named to test HTML
    # escaping.
    recon = (250.0, 280.0) if confirmed else (290.0, 260.0)  # encoder, discriminator (penultimate layers)
    auroc = (0.80, 0.95) if confirmed else (0.95, 0.80)
    for seed, e in enumerate((0.0, -0.01, 0.01)[:probe_seeds]):
        own = (0.0, 0.3, -0.3)[seed]  # the discriminator's readouts move a little on their own: non-empty intervals
        s.run("p2q2", "probe", "probe", seed, {"vae_run": "x", "gan_run": "y"},
              {"encoder_probe_accuracy": (0.80 if confirmed else 0.60) + e,
               "discriminator_probe_accuracy": (0.70 if confirmed else 0.75) + e, "encoder_probe_accuracy_raw": 0.82,
               "encoder_trunk_probe_accuracy": (0.68 if confirmed else 0.78) + e,  # ranks the other way from z_mean
               "encoder_param_count": 120_000, "discriminator_param_count": 110_000,
               "encoder_recon_from_features": recon[0] + 100 * e,
               "discriminator_recon_from_features": recon[1] + 100 * e + own,
               "untrained_encoder_recon_from_features": 300.0 + 100 * e,
               "untrained_discriminator_recon_from_features": 301.0 + 100 * e,
               "encoder_realfake_centroid_auroc": auroc[0] + e,
               "discriminator_realfake_centroid_auroc": auroc[1] + e + own / 100,
               "untrained_encoder_realfake_centroid_auroc": 0.70 + e,
               "untrained_discriminator_realfake_centroid_auroc": 0.71 + e,
               "encoder_realfake_auroc": 1.0, "discriminator_realfake_auroc": 1.0,
               "untrained_encoder_realfake_auroc": 1.0, "untrained_discriminator_realfake_auroc": 1.0,
               "encoder_zmean_realfake_centroid_auroc": 0.58,
               "discriminator_output_auroc": 0.97, "encoder_zmean_recon_from_features": 270.0,
               "encoder_zmean_realfake_auroc": 0.60, "encoder_trunk_pca_probe_accuracy": 0.66 + e,
               "discriminator_pca_probe_accuracy": 0.62 + e, "untrained_encoder_trunk_probe_accuracy": 0.71,
               "untrained_discriminator_probe_accuracy": 0.72, "untrained_encoder_probe_accuracy": 0.35,
               "trunk_cka": 0.30, "trunk_cka_init": 0.85, "encoder_feature_dim": 16, "realfake_images_per_half": 1000},
              name=XSS if seed == 0 else None)
    return s


SEARCH_TOP = ((8, 0.4), (8, 0.5), (16, 0.7))  # (latent_dim, beta) of the best three trials
SEARCH_TOP_ELSEWHERE = ((2, 8.0), (4, 9.0), (2, 10.0))
SEARCH_REST = ((2, 0.1), (4, 0.2), (32, 0.3), (64, 1.0), (64, 2.0), (32, 3.0), (16, 5.0), (4, 6.0), (2, 7.0))


def plant_search(s: Store, top: tuple[tuple[int, float], ...]) -> None:
    """A search's parent run (as `genlab study` makes it) and its trials as child runs (tags as search.py sets
    them): ``top`` score val_neg_elbo 250-252, the others 260-268 and two pruned trials none. The trials' test
    reconstruction falls and their fid_proxy rises with val_neg_elbo's rank, so every complete trial is on the
    Pareto front but the two last."""
    parent = s.run("search", "search", "neg_elbo", 0, {"objective": "neg_elbo", "n_trials": 14},
                   {"trials_complete": 12, "trials_pruned": 2}, name="search lab1-search-full")
    s.ids.pop("search")  # no section of its own: its trials are cited in P1Q2's and P1Q3's
    trials = [(d, b, 250.0 + i) for i, (d, b) in enumerate(top)] + \
        [(d, b, 260.0 + i) for i, (d, b) in enumerate(SEARCH_REST)] + [(16, 1.5, None), (64, 0.2, None)]
    for number, (d, b, value) in enumerate(trials):
        state = "COMPLETE" if value is not None else "PRUNED"
        metrics = {} if value is None else {"val_neg_elbo": value, "test_neg_elbo": value + 1,
                                            "test_recon": 240.0 - number if number < 10 else 260.0,
                                            "fid_proxy": 30.0 + number}
        run = s.client.create_run(s.exp, tags={"mlflow.parentRunId": parent, "optuna.state": state,
                                               "optuna.trial_number": str(number), "genlab.kind": "vae"},
                                  run_name=f"vae mlp z{d} b{b:g} trial {number}")
        s.client.log_batch(run.info.run_id, metrics=[Metric(k, v, s.clock, 20) for k, v in metrics.items()],
                           params=[Param("latent_dim", str(d)), Param("beta", str(b))])
        s.client.set_terminated(run.info.run_id, "FINISHED")
