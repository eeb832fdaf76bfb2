"""Every entry point's config dataclass, with its choices and the help text of each parameter, in one place.

Standard library only: ``genlab --help`` builds its parser from these classes, and must not pay for importing
torch, mlflow or optuna (seconds of imports). The modules that run an entry point import their config from here
(``genlab.train.vae.VAEConfig`` is this module's ``VAEConfig``) and keep their own ``validate()``.

Each field carries ``metadata={"help": ..., "choices": ...}``: the CLI turns it into the flag's help line, so the
meaning of a parameter is written once. Field types stay the strings "int", "float", "str" (``from __future__
import annotations``): the CLI and ``genlab.checks.config_from_params`` cast by them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]

RUN_ID = re.compile(r"^[0-9a-f]{32}$")  # an MLflow run id, as parameters that name a run take it
MODEL_URI = re.compile(r"^models:/[^/@\s]+(/[0-9]+|@[A-Za-z0-9_\-]+)$")  # a registered model version or alias
DATASETS = ("fashion-mnist", "mnist", "synthetic")
ARCHS = ("conv", "mlp")
DEVICES = ("auto", "cpu", "cuda")
SWITCH = (0, 1)
ESTIMATORS = ("reparam", "score", "detach")
DTYPES = ("auto", "fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine")
LOSSES = ("ns", "hinge")
INIT_DISCRIMINATORS = ("none", "encoder")
STUDY_PROFILES = ("quick", "full", "paper")
BENCH_PROFILES = ("quick", "full")
REPORT_PROFILES = ("quick", "full", "paper", "any")
OBJECTIVES = ("neg_elbo", "fid", "pareto")
SAMPLERS = ("tpe", "random", "grid")


BOUNDS = ("at_least", "above", "below", "at_most")  # the bounds a field may declare, checked by check_declared


def redacted(url: str) -> str:
    """``url`` without its secret, safe to print or log: ``postgresql://user:***@host/db``; a credential without a
    user name (``https://TOKEN@host``) becomes ``***``."""
    def hide(m: re.Match) -> str:
        return f"//{m[1]}:***@" if m[2] is not None else "//***@"

    return re.sub(r"//([^/@\s:]*)(:[^/@\s]*)?@", hide, url)


def param(default: Any, help: str, choices: tuple = (), *, at_least: float | None = None,
          above: float | None = None, below: float | None = None, at_most: float | None = None) -> Any:
    """A dataclass field with its help text, and what it allows: ``choices`` (shown by ``--help``) or bounds
    (``at_least`` <= value <= ``at_most``, ``above`` < value < ``below``; an "int" field must be an integer, a
    "float" one a finite number). ``genlab.checks.check_declared`` checks both for every entry point."""
    bounds = {"at_least": at_least, "above": above, "below": below, "at_most": at_most}
    return field(default=default, metadata={"help": help, "choices": choices,
                                            **{k: v for k, v in bounds.items() if v is not None}})


DATASET_HELP = "data set (synthetic: a small in-memory set of 10 shape classes, for tests)"
DEVICE_HELP = "where to compute: auto = cuda when available, else cpu"
SEED_HELP = "seeds initialisation, shuffling and the noise draws"
LIMIT_HELP = "use only the first N training images (0 = all)"
DTYPE_HELP = ("compute dtype of the training steps: auto (bf16 autocast where the device has native bf16 units: a CPU "
              "with AMX-BF16 or AVX512-BF16, a CUDA GPU with bf16; fp32 elsewhere), fp32, or bf16 (autocast; slow on "
              "CPUs without native bf16). Losses, KL and evaluations stay fp32; the param compute_dtype says which ran")
SYSTEM_METRICS_HELP = "1: log CPU, memory (and GPU) usage as MLflow system metrics during the run; 0: off"


@dataclass
class VAEConfig:
    dataset: str = param("fashion-mnist", DATASET_HELP, DATASETS)
    latent_dim: int = param(16, "size of z (integer >= 1)", at_least=1)
    beta: float = param(1.0, "weight of the KL term (>= 0; 0 = plain autoencoder)", at_least=0)
    arch: str = param("conv", "conv: two stride-2 convolutions + 256 units, the decoder mirrors it with twice the "
                      "channels; mlp: the classic 784-400-z", ARCHS)
    epochs: int = param(10, "passes over the training split (integer >= 1)", at_least=1)
    batch_size: int = param(128, "images per step", at_least=1)
    lr: float = param(1e-3, "Adam learning rate (> 0)", above=0)
    lr_schedule: str = param("constant", "constant, or cosine: the learning rate decays from lr to 0 over the "
                             "run's steps", LR_SCHEDULES)
    kl_warmup_epochs: int = param(0, "beta ramps linearly from 0 over this many epochs (0 = no warm-up)", at_least=0)
    estimator: str = param("reparam", "gradient estimator: reparam (the reparameterisation trick), score "
                           "(REINFORCE with a running-mean baseline) or detach (plain backpropagation through a sample "
                           "drawn without the trick: the encoder learns from the KL term only); score and detach are "
                           "question P1Q1's arms", ESTIMATORS)
    dtype: str = param("auto", DTYPE_HELP, DTYPES)
    limit: int = param(0, LIMIT_HELP, at_least=0)
    seed: int = param(0, "seeds initialisation, shuffling and the posterior noise", at_least=0)
    device: str = param("auto", DEVICE_HELP, DEVICES)
    experiment: str = param("genlab-vae", "MLflow experiment of the run")
    eval_samples: int = param(10000, "prior samples scored at the end of the run (fid_proxy, ...); 0 = skip the "
                              "sample-quality metrics, else >= 129")
    nll_k: int = param(16, "posterior samples per image of the importance-weighted bound on -log p(x) "
                       "(test_nll_iw, train_nll_iw; integer >= 1)", at_least=1)
    nll_images: int = param(500, "test images, and as many training images, the bound is computed on (0 = skip)",
                            at_least=0)
    val_images: int = param(0, "validation images evaluated after each epoch: the first N of the held-out "
                            "validation slice (0 = all of it); the val_* curves and the convergence gate use them",
                            at_least=0)
    system_metrics: int = param(1, SYSTEM_METRICS_HELP, SWITCH)


@dataclass
class GANConfig:
    dataset: str = param("fashion-mnist", DATASET_HELP, DATASETS)
    latent_dim: int = param(16, "size of the generator's input noise z (integer >= 1; must equal the init_from VAE's)",
                            at_least=1)
    arch: str = param("conv", "generator = the VAE decoder of this architecture, discriminator = its encoder "
                      "trunk + one logit (must equal the init_from VAE's)", ARCHS)
    epochs: int = param(10, "passes over the training split (integer >= 1)", at_least=1)
    batch_size: int = param(128, "real images per step", at_least=1)
    lr_g: float = param(1e-4, "Adam learning rate of the generator (> 0)", above=0)
    lr_d: float = param(4e-4, "Adam learning rate of the discriminator (> 0; four times lr_g by default: two "
                        "time-scale updates, Heusel et al. 2017, at SAGAN's 1e-4 / 4e-4, Zhang et al. 2019)", above=0)
    beta1: float = param(0.5, "Adam's first-moment decay, both networks (in [0, 1); 0.5 as in DCGAN)", at_least=0,
                         below=1)
    loss: str = param("hinge", "GAN loss: hinge (Miyato et al. 2018) or ns (non-saturating BCE)", LOSSES)
    spectral_norm: int = param(1, "1: spectral normalisation of every discriminator layer (Miyato et al. 2018); 0: "
                               "plain weights", SWITCH)
    ema_decay: float = param(0.999, "decay of the exponential moving average of the generator's weights that is "
                             "evaluated, sampled and logged (Yazici et al. 2019; in [0, 1); 0 = the last weights)",
                             at_least=0, below=1)
    init_from: str = param("none", "initial generator weights: none (random), a VAE run id (its decoder), "
                           "models:/NAME/VERSION or models:/NAME@ALIAS")
    init_discriminator: str = param("none", "none, or encoder: start the discriminator from the trunk of the "
                                    "init_from VAE's encoder", INIT_DISCRIMINATORS)
    latent_fit: str = param("none", "none (the noise N(0, I) goes straight into the generator), or codes: a fixed "
                            "map z = mean + L·noise in front of it, with mean and L (Cholesky factor of the "
                            "covariance) fitted to the z_mean the init_from run's encoder gives the training images, "
                            "so the noise reaches the decoder distributed like its own codes (P2Q1's control "
                            "ae_decoder_matched; needs init_from)", ("none", "codes"))
    eval_every: int = param(1, "epochs between sample-quality evaluations (also at step 0 and at the end)",
                            at_least=1)
    eval_samples: int = param(10000, "generated images scored per evaluation (fid_proxy, ...); 0 = skip the "
                              "sample-quality metrics, else >= 129")
    limit: int = param(0, LIMIT_HELP, at_least=0)
    seed: int = param(0, SEED_HELP, at_least=0)
    device: str = param("auto", DEVICE_HELP, DEVICES)
    experiment: str = param("genlab-gan", "MLflow experiment of the run")
    dtype: str = param("auto", DTYPE_HELP, DTYPES)
    system_metrics: int = param(1, SYSTEM_METRICS_HELP, SWITCH)


@dataclass
class ProbeConfig:
    vae_run: str = param("", "the FINISHED train_vae run (32 hex digits) whose encoder is probed")
    gan_run: str = param("", "the FINISHED train_gan run (32 hex digits) whose discriminator is probed")
    dataset: str = param("fashion-mnist", DATASET_HELP, DATASETS)
    limit: int = param(0, "first N training images to fit the probes on (0 = all)", at_least=0)
    seed: int = param(0, "seeds the untrained control networks, which images the real/fake probes use, and the "
                         "probes' solver (the generated images come from the GAN's fixed evaluation noise)", at_least=0)
    max_iter: int = param(200, "lbfgs iterations of each linear probe (class and real/fake), the same budget for "
                               "every probe", at_least=1)
    device: str = param("auto", DEVICE_HELP, DEVICES)
    experiment: str = param("genlab-probe", "MLflow experiment of the run")


@dataclass
class ClassifierConfig:
    dataset: str = param("fashion-mnist", DATASET_HELP, DATASETS)
    # 8 epochs of one-cycle Adam: most of the accuracy for a one-off cost of minutes on CPU (docs/results.md,
    # "Feature classifier"); fp32 because bf16 autocast is much slower on CPUs without native bf16 arithmetic.
    epochs: int = param(8, "passes over the training split (integer >= 1)", at_least=1)
    batch_size: int = param(128, "images per step", at_least=1)
    lr: float = param(3e-3, "peak learning rate of the one-cycle Adam schedule (> 0)", above=0)
    limit: int = param(0, LIMIT_HELP, at_least=0)
    seed: int = param(0, SEED_HELP, at_least=0)
    device: str = param("auto", DEVICE_HELP, DEVICES)
    experiment: str = param("genlab-classifier", "MLflow experiment of the run")


@dataclass
class GradVarConfig:
    dataset: str = param("fashion-mnist", DATASET_HELP, DATASETS)
    latent_dim: int = param(16, "size of z of the VAE (integer >= 1)", at_least=1)
    beta: float = param(1.0, "KL weight of the VAE trained here (epochs > 0) or of the vae_run (must match)",
                        at_least=0)
    arch: str = param("conv", "VAE architecture (that of vae_run when given)", ARCHS)
    vae_run: str = param("none", "a VAE run id whose final checkpoint gives the parameters; none = train here "
                         "(epochs > 0) or the random initialisation")
    epochs: int = param(0, "with vae_run none: train a VAE this many epochs first (0 = the random "
                        "initialisation)", at_least=0)
    limit: int = param(0, "training images when training here (0 = all)", at_least=0)
    n_samples: int = param(200, "noise draws per estimator, spread over the batches (at least 2 per block of "
                           "draws in each batch)")
    n_batches: int = param(3, "batches of validation images the draws are spread over (the variance is "
                           "conditional on a batch; the ratio's interval is a bootstrap over blocks of draws)",
                           at_least=1)
    batch_size: int = param(64, "fixed validation images each gradient is averaged over", at_least=1)
    seed: int = param(0, SEED_HELP, at_least=0)
    device: str = param("auto", DEVICE_HELP, DEVICES)
    experiment: str = param("genlab-gradvar", "MLflow experiment of the run")


@dataclass
class StudyConfig:
    profile: str = param("quick", "quick: a pipeline check (every question end to end, minutes); full: the "
                         "evidence this machine can produce (3 or more seeds, epochs chosen so that runs converge, convergence "
                         "measured; about 62 min on 2 cores with --workers 2, see experiments/README.md); "
                         "paper: full scale, for a GPU or a cluster (--dry-run estimates its wall time)",
                         STUDY_PROFILES)
    only: str = param("all", "comma list of questions (p1q1,p1q2,p1q3,p2q1,p2q2,search); all = every plan "
                      "marked default")
    study: str = param("lab1", "study name: tag genlab.study, and the prefix of the experiments <study>-<question>")
    plans: str = param("experiments", "folder of plan files, relative to the project root unless absolute")
    workers: int = param(1, "runs side by side: 1 = one after the other in this process; N > 1 = a local Dask "
                         "cluster of N single-threaded worker processes", at_least=1)
    cluster: str = param("", "address of a running Dask scheduler (tcp://HOST:8786) to run on instead of local "
                         "workers; needs an MLflow tracking server as the store (README, Scale out)")
    gpus_per_run: float = param(0.0, "fraction of a GPU each run asks for (0.25: four runs share one GPU); 0 = "
                                "none (CPU, or whatever device=auto finds)", at_least=0, at_most=1)
    seed_offset: int = param(0, "added to every seed of the plans: the same study on other seeds (5: full's "
                             "seeds 0-4 become 5-9, disjoint from the default's); use its own --study name",
                             at_least=0)


@dataclass
class CalibrationConfig:
    dataset: str = param("fashion-mnist", DATASET_HELP, DATASETS)
    samples: int = param(10000, "images per reference set, at most (capped by what the split holds; >= 129)",
                         at_least=129)
    single_class: int = param(0, "the class (0..9) of the single_class reference set", at_least=0, at_most=9)
    seed: int = param(0, "seeds the noise of the noise_* and uniform_noise sets", at_least=0)
    device: str = param("auto", DEVICE_HELP, DEVICES)
    experiment: str = param("genlab-calibration", "MLflow experiment of the run")


@dataclass
class SearchConfig:
    study_name: str = param("genlab-vae-search", "Optuna study, and tag optuna.study_name of its parent run")
    storage: str = param(f"sqlite:///{PROJECT_ROOT / 'optuna.db'}", "any Optuna RDB URL (sqlite:///PATH, "
                         "postgresql://USER:PASSWORD@HOST:PORT/DB, mysql://...)")
    n_trials: int = param(20, "COMPLETE + PRUNED trials wanted in the study (a rerun continues up to it)",
                          at_least=1)
    objective: str = param("neg_elbo", "neg_elbo (validation neg-ELBO, median pruning per epoch), fid "
                           "(prior-sample fid_proxy) or pareto (validation recon and fid_proxy)", OBJECTIVES)
    latent_dims: str = param("2,4,8,16,32,64", "choices of latent_dim (comma list of distinct integers >= 1)")
    beta_min: float = param(0.1, "lower end of the log-uniform range of beta (> 0)", above=0)
    beta_max: float = param(10.0, "upper end of the log-uniform range of beta (>= beta_min)", above=0)
    sampler: str = param("tpe", "tpe, random, or grid (latent_dims x 5 log-spaced betas, plus 1.0)", SAMPLERS)
    arch: str = param("conv", "the trials' VAE architecture, as for train_vae (the study's search uses mlp, as its "
                      "beta and latent_dim sweeps do)", ARCHS)
    epochs: int = param(10, "epochs per trial, as for train_vae")
    limit: int = param(0, LIMIT_HELP + ", every trial")
    eval_samples: int = param(10000, "prior samples scored per trial (fid_proxy, ...); 0 = skip (objective "
                              "neg_elbo only), else >= 129")
    dataset: str = param("fashion-mnist", DATASET_HELP, DATASETS)
    seed: int = param(0, "seed of every trial's training, and of the sampler (+ the worker index)")
    workers: int = param(1, "local worker processes sharing the study", at_least=1)
    timeout: float = param(0.0, "seconds after which no new trial starts (0 = no limit)", at_least=0)
    heartbeat_seconds: int = param(10, "seconds between trial heartbeats: a trial silent for 3x this is declared "
                                   "dead (FAIL) and queued again", at_least=1)
    experiment: str = param("genlab-search", "MLflow experiment of the parent and the trial runs")


SEARCH_HELP = """Optuna search over latent_dim x beta; each trial is a train-vae run nested under the study's parent run.

objectives: neg_elbo  minimise the validation neg-ELBO (nats/image); a median pruner stops trials whose
                      per-epoch val_neg_elbo is worse than the median of earlier trials at that epoch.
            fid       minimise the prior-sample fid_proxy (computed at the end of a trial: no pruning).
            pareto    two objectives, validation recon and fid_proxy; the Pareto front is reported.
                      Cannot prune: Optuna does not prune multi-objective studies.
n_trials counts COMPLETE + PRUNED trials in the study: running the same command again resumes it.
--storage takes any Optuna RDB URL; postgresql://... lets workers on several machines share one study."""


@dataclass
class BenchConfig:
    profile: str = param("full", "quick (under 2 min on 2 cores) or full (under 10 min): rounds and the seconds "
                         "each timed epoch lasts", BENCH_PROFILES)
    dataset: str = param("fashion-mnist", DATASET_HELP, DATASETS)
    batch_size: int = param(128, "batch size of every side", at_least=1)
    repeats: int = param(0, "rounds per comparison; 0 = the profile's (3 quick, 5 full)", at_least=0)
    device: str = param("auto", DEVICE_HELP, DEVICES)
    output_dir: str = param(".", "existing, writable folder where bench.json and bench.md are written")
    experiment: str = param("genlab-bench", "MLflow experiment of the bench run")
    seed: int = param(0, "seed of every model and shuffle", at_least=0)


@dataclass
class ReportConfig:
    study: str = param("lab1", "the study whose runs are reported (tag genlab.study)")
    profile: str = param("any", "runs of this profile; any = per question, the runs of the largest profile "
                         "that has any (paper, then full, then quick)", REPORT_PROFILES)
    out: str = param("reports/build", "output folder (one subfolder per language)")
    ui_url: str = param("auto", "MLflow UI base of the run links; auto = the tracking server if it is http(s), "
                        "else http://127.0.0.1:5000")
    experiment: str = param("genlab-report", "MLflow experiment of the report run")


@dataclass
class SampleConfig:
    run: str = param("", "a train_vae or train_gan run id (give run or model, not both)")
    model: str = param("", "models:/NAME@ALIAS or models:/NAME/VERSION of a VAE decoder or GAN generator "
                       "(give run or model, not both)")
    n: int = param(64, "images in the grid (1 to 10000)", at_least=1, at_most=10000)
    nrow: int = param(8, "images per row of the grid", at_least=1)
    seed: int = param(0, "seeds the latent draws", at_least=0)
    out: str = param("samples.png", "output PNG path")
    interpolate: int = param(0, "if > 0: also write <out stem>_interpolation.png, rows of this many images "
                             "decoded along straight lines between pairs of latent draws (0 = none, else 2 to 64)")
    device: str = param("auto", DEVICE_HELP, DEVICES)

