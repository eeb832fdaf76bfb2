"""The names genlab gives to MLflow tags and run kinds: defined here once, imported everywhere else.

Standard library only (the CLI and the report read it without torch or mlflow).
"""

from __future__ import annotations

PREFIX = "genlab."

# what a run is
KIND = "genlab.kind"  # one of KINDS below
DATASET = "genlab.dataset"
DEVICE = "genlab.device"  # the device a run computed on (cpu, cuda), as resolved from device=auto
INIT = "genlab.init"  # a GAN's generator initialisation: vae-decoder, ae-decoder, random
CODE_VERSION = "genlab.code_version"  # the git commit, "-dirty" with local changes
FAILURE = "genlab.failure"  # the one-line reason of a FAILED or KILLED run
CLASSIFIER_KEY = "genlab.classifier_key"  # the config hash of a feature classifier (one per data set and config)
MACHINE = "genlab.machine"  # bench: the CPU it measured

# where a run sits in a study (experiments/*.yaml)
STUDY = "genlab.study"
PROFILE = "genlab.profile"
QUESTION = "genlab.question"
ARM = "genlab.arm"  # the condition within the question
REF = "genlab.ref"  # the run's name in its plan
SEED_OFFSET = "genlab.seed_offset"  # what `genlab study --seed-offset` added to the plans' seeds ("0": none)
INVOCATION = "genlab.invocation"  # one id per `genlab study` call: what it may end when its workers are gone
WORKER = "genlab.worker"  # host:pid of the process that ran the run
CLAIM = "genlab.claim"  # a study run's key (study, profile, question, ref, code version, config): one run trains it
HEARTBEAT = "genlab.heartbeat"  # epoch seconds, refreshed while a claimed run lives (genlab.tracking.Heartbeat)
SUMMARY = "genlab.summary"  # a study parent's one-line outcome
ONLY = "genlab.only"  # the questions a study invocation was limited to

# Optuna search: study user attributes (not MLflow tags, but genlab's names all the same)
SEARCH_SETTINGS = "genlab.settings"
SEARCH_PARENT_RUN = "genlab.mlflow_parent_run_id"
# Optuna search: the tags of its parent run and its trials' runs (named like optuna's own MLflowCallback's)
OPTUNA_STUDY = "optuna.study_name"  # the parent and every trial run
OPTUNA_STORAGE = "optuna.storage"  # the parent: the storage URL, password redacted
OPTUNA_TRIAL = "optuna.trial_number"
OPTUNA_STATE = "optuna.state"  # RUNNING, then COMPLETE | PRUNED | FAIL
OPTUNA_REASON = "optuna.reason"  # why a trial was pruned or failed

# MLflow's own tags that genlab sets
NOTE = "mlflow.note.content"  # the description shown on an experiment's and a run's page
GIT_COMMIT = "mlflow.source.git.commit"
PARENT_RUN = "mlflow.parentRunId"  # a nested run's parent (a search trial's: the search's parent run)
EXPERIMENT_KIND = "mlflow.experimentKind"
# + a key: a view of an experiment's runs page, stored as its UI stores one (genlab/ui.py)
SHARED_VIEW = "mlflow.sharedViewState."

# run kinds (values of KIND)
VAE, GAN, PROBE, GRADVAR, SEARCH, CLASSIFIER = "vae", "gan", "probe", "gradvar", "search", "classifier"
CALIBRATION, BENCH, BENCH_TRIAL, REPORT, STUDY_RUN = "calibration", "bench", "bench-trial", "report", "study"
KINDS = (VAE, GAN, PROBE, GRADVAR, SEARCH, CLASSIFIER, CALIBRATION, BENCH, BENCH_TRIAL, REPORT, STUDY_RUN)


def column(tag: str) -> str:
    """The column of a tag in ``mlflow.search_runs``'s data frame: ``tags.genlab.kind``."""
    return f"tags.{tag}"


def where(tag: str, value: str) -> str:
    """An MLflow search filter clause: tags.`genlab.kind` = 'vae'."""
    return f"tags.`{tag}` = '{value}'"
