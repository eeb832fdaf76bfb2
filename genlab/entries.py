"""Every runnable thing of genlab declares one contract here: its MLproject name, its ``genlab`` sub-command, the
run kind it makes, its config dataclass and its module. The CLI, the MLproject test and the plans (genlab.plans)
read ``ENTRIES``.

Each entry module defines ``validate(config)`` (a ConfigError before anything is created) and
``run(config, context) -> Result``. Standard library only, like genlab.configs: ``genlab --help`` builds its
parser from this list without importing torch, mlflow or optuna; ``Entry.run`` imports the module when called.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from genlab import configs, tags

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class Context:
    """What a caller adds to a config: the study's tags and shared data, the search's nesting and pruning
    callback, the CLI-only options. The defaults are a plain command-line run."""

    tags: Mapping[str, str] = field(default_factory=dict)  # extra MLflow tags of the run made
    parent_run_id: str | None = None  # nest the run under this one (search trials)
    resume_run_id: str | None = None  # train_vae, train_gan: continue this run from its last checkpoint
    # (dataset, limit) -> data.Splits: one dict shared by the runs of a process loads each data set once
    splits: dict[tuple[str, int], Any] = field(default_factory=dict)
    on_epoch: EpochCallback | None = None  # called after each training epoch (search pruning, tests)
    log_models: bool = True  # False: no MLflow models (search trials: only the best trial's is logged)
    dry_run: bool = False  # study: list the runs, run nothing
    worker: int | None = None  # search: run trials only, as this worker index of an existing study

    def data(self, dataset: str, limit: int = 0) -> Any:
        """The data set's splits (genlab.data.Splits), loaded on first use and kept in ``splits``."""
        key = (dataset, limit)
        if key not in self.splits:
            from genlab import data

            self.splits[key] = data.load(dataset, limit)
        return self.splits[key]


EXIT_RUNTIME = 1  # a Result's exit code when part of the work failed after runs were made (genlab.cli)


@dataclass(frozen=True)
class Result:
    """What a run gives back: the CLI prints ``lines`` and exits with ``exit_code``; the study keeps ``run_id``."""

    run_id: str | None = None  # the MLflow run made (search: its parent run); None when it makes none
    metrics: Mapping[str, float] = field(default_factory=dict)  # its final metrics
    lines: tuple[str, ...] = ()  # what the command prints on stdout
    exit_code: int = 0


@dataclass(frozen=True)
class Flag:
    """A command-line-only option (not an MLproject parameter). Its value lands in the Context field ``dest``;
    a ``dest`` that is a config field instead makes the flag a shorthand for that field (bench --quick)."""

    name: str  # --resume
    dest: str
    help: str
    metavar: str | None = None
    type: Callable[[str], Any] | None = None
    const: Any = None  # not None: a switch that stores this value


CONTEXT_FIELDS = frozenset(f.name for f in dataclasses.fields(Context))


@dataclass(frozen=True)
class Entry:
    """One entry point. ``module`` is imported only when the entry is validated or run."""

    name: str  # the MLproject entry point (train_vae)
    command: str  # the genlab sub-command (train-vae)
    kind: str | None  # the genlab.kind tag of the run it makes (genlab.tags); None: it makes no run
    config: type  # its config dataclass (genlab.configs)
    module: str  # the module defining validate() and run(), dotted, within ``package``
    help: str  # one line, in `genlab --help`
    description: str = ""  # the sub-command's --help text, printed as written
    flags: tuple[Flag, ...] = ()
    package: str = "genlab"

    def load(self) -> ModuleType:
        return importlib.import_module(f"{self.package}.{self.module}")

    def fields(self) -> dict[str, str]:
        """Config field name -> its type name ("int", "float", "str")."""
        return {f.name: f.type for f in dataclasses.fields(self.config)}

    def validate(self, config: Any) -> None:
        self.load().validate(config)

    def run(self, config: Any, context: Context | None = None) -> Result:
        if not isinstance(config, self.config):
            raise TypeError(f"{self.name} takes a {self.config.__name__}, got {type(config).__name__}")
        return self.load().run(config, context or Context())


RESUME = Flag("--resume", "resume_run_id", "continue this run from its last checkpoint (its logged params are used)",
              metavar="RUN_ID")

ENTRIES: tuple[Entry, ...] = (
    Entry("train_vae", "train-vae", tags.VAE, configs.VAEConfig, "runs.vae",
          "train a VAE as one MLflow run", flags=(RESUME,)),
    Entry("train_gan", "train-gan", tags.GAN, configs.GANConfig, "runs.gan",
          "train a DCGAN (generator = the VAE decoder) as one MLflow run", flags=(RESUME,)),
    Entry("probe", "probe", tags.PROBE, configs.ProbeConfig, "probe",
          "encoder vs discriminator: linear probes, output semantics (one run)"),
    Entry("report", "report", tags.REPORT, configs.ReportConfig, "build",
          "write the study's report (French and English) from the tracked runs", package="reports"),
    Entry("search", "search", tags.SEARCH, configs.SearchConfig, "search",
          "Optuna search over latent_dim x beta (nested MLflow runs)", description=configs.SEARCH_HELP,
          flags=(Flag("--worker", "worker", "run trials only, as worker INDEX of an existing study (started by "
                      "--workers N, or by hand on another machine with a distinct INDEX: it seeds the sampler)",
                      metavar="INDEX", type=int),)),
    Entry("train_classifier", "train-classifier", tags.CLASSIFIER, configs.ClassifierConfig,
          "runs.classifier", "train the feature classifier of the sample-quality metrics"),
    Entry("gradvar", "gradvar", tags.GRADVAR, configs.GradVarConfig, "runs.gradvar",
          "P1Q1: gradient variance of the reparameterisation vs score-function estimator at fixed VAE parameters "
          "(one MLflow run)"),
    Entry("study", "study", tags.STUDY_RUN, configs.StudyConfig, "study",
          "run the lab's experiment plans (experiments/*.yaml); finished runs with the same parameters, profile "
          "and code version are reused",
          flags=(Flag("--dry-run", "dry_run", "list the runs (and which would be reused); run nothing", const=True),)),
    Entry("calibrate", "calibrate", tags.CALIBRATION, configs.CalibrationConfig, "calibrate",
          "sample-quality metrics of reference image sets (train vs test, noise, ...)"),
    Entry("bench", "bench", tags.BENCH, configs.BenchConfig, "bench",
          "measure genlab's speed side by side with the common alternatives",
          flags=(Flag("--quick", "profile", "same as --profile quick (under 2 minutes on 2 cores)", const="quick"),)),
    Entry("sample", "sample", None, configs.SampleConfig, "sample",
          "write a PNG grid of images from a trained VAE decoder or GAN generator (a run id or a registered model)"),
)

BY_NAME: dict[str, Entry] = {entry.name: entry for entry in ENTRIES}
