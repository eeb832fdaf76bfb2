"""``genlab study``: run the lab's experiment plans (``experiments/*.yaml``) as tracked runs, idempotently.

A plan is plain data (see experiments/README.md): a question, shared ``defaults``, ``seeds`` and a list of ``runs``
items, each naming an entry point, an ``arm`` (the condition, a template like ``beta={beta}``), fixed ``params``
and a ``sweep`` (cartesian). Any value may be ``{quick: ..., full: ..., paper: ...}`` to differ per profile. A string
parameter ``@name`` refers to the run an earlier item named ``name`` produced (its run id is substituted);
``@pattern*:min(metric)`` / ``:max(metric)`` picks, among the runs whose names match the pattern, the one with the
smallest / largest final ``metric``.

Read top to bottom: load and validate the plans (all errors before any run) -> expand them into a list of runs
-> select (``--only`` plus what the selection refers to) -> run each through its entry point
(``Entry.run(config, Context(tags=..., splits=...))``, as its own command does), reusing a FINISHED run with the
same parameters, profile, question and code version.

Several invocations on one store (two terminals, two machines on one MLflow server) train each run once: a run
claims its key in the store as it starts (``genlab.tracking``, "claims"), and an invocation that finds the key
claimed by another's live run waits for that run and reuses it, or trains it itself if that run ends unfinished or
its heartbeat stops (its process is gone).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import itertools
import json
import os
import re
import string
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlab import tags
from genlab.config import ConfigError, check, check_choice, check_declared
from genlab.configs import PROJECT_ROOT, StudyConfig
from genlab.configs import STUDY_PROFILES as PROFILES
from genlab.entries import BY_NAME, ENTRIES, EXIT_RUNTIME, Context, Entry, Result

DEFAULT_PLANS = PROJECT_ROOT / "experiments"

RUNNER_PARAMS = ("experiment",)  # set by the study (``<study>-<question>``) unless a plan sets it
PLAN_KEYS = {"question", "title", "default", "defaults", "seeds", "runs"}
ITEM_KEYS = {"name", "entry", "arm", "params", "sweep", "seeds"}
REFERENCE = re.compile(r"^@(?P<pattern>[A-Za-z0-9_.*?=-]+)(?::(?P<mode>min|max)\((?P<metric>[A-Za-z0-9_]+)\))?$")
NAME = re.compile(r"^[A-Za-z0-9_.=-]+$")
FASHION_TRAIN_IMAGES = 55000  # for the ETA's cost estimate only
# what a plan item may run: every entry point that makes a run of its own, but a study
PLANNABLE = tuple(entry.name for entry in ENTRIES if entry.kind not in (None, tags.STUDY_RUN))
GAN_MODEL_NAME = "genlab-gan"  # models:/genlab-gan@best: the study's GAN generator with the lowest fid_proxy


# ---------------------------------------------------------------- plans

@dataclass
class PlannedRun:
    """One run of the study: what to call, with what, and how to tag it."""

    question: str
    entry: Entry
    name: str  # symbolic name other items refer to with @name
    arm: str
    params: dict[str, Any]  # typed config values; strings starting with @ are references
    cost: float = 0.0  # rough image passes, for the ETA
    refs: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        seed = f" s{self.params['seed']}" if "seed" in self.params else ""
        return f"{self.question} {self.arm}{seed} ({self.entry.name})"


@dataclass
class Plan:
    question: str
    title: str
    default: bool
    runs: list[PlannedRun]


def _pick(value: Any, profile: str, where: str) -> Any:
    """A ``{quick: a, full: b, paper: c}`` mapping gives the profile's value; anything else is the value itself."""
    if isinstance(value, dict) and set(value) & set(PROFILES):
        unknown = set(value) - set(PROFILES)
        if unknown:
            raise ConfigError(f"{where}: unknown profile '{sorted(map(str, unknown))[0]}' (profiles: "
                              f"{', '.join(PROFILES)})")
        if profile not in value:
            raise ConfigError(f"{where} gives no value for profile {profile} (it gives {', '.join(map(str, value))})")
        return value[profile]
    return value


def _cast(value: Any, type_name: str, where: str) -> Any:
    """A plan value as the config field's type (YAML gives int for 1, float for 1.0); strict otherwise."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise ConfigError(f"{where} must be a single {type_name} value, got {value!r}")
    if type_name == "int":
        check(isinstance(value, int), where, value, "an integer")
    elif type_name == "float":
        check(isinstance(value, (int, float)), where, value, "a number")
        value = float(value)
    elif type_name == "str":
        check(isinstance(value, str), where, value, "a string")
    return value


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _template(text: Any, values: dict[str, Any], where: str) -> str:
    check(isinstance(text, str) and bool(text.strip()), where, text, "a non-empty string template")
    names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    missing = names - set(values)
    if missing:
        raise ConfigError(f"{where} uses {{{sorted(missing)[0]}}}, which is not a parameter of the run")
    return text.format(**{k: _fmt(v) for k, v in values.items()})


def load_plan(path: Path, profile: str) -> Plan:
    """Read and check one plan file; expand its items for ``profile``. ConfigError names the file and key."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path.name}: cannot read the plan ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: a plan must be a mapping with keys {', '.join(sorted(PLAN_KEYS))}")
    unknown = set(raw) - PLAN_KEYS
    if unknown:
        raise ConfigError(f"{path.name}: unknown key '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(PLAN_KEYS))})")
    question = raw.get("question")
    check(question == path.stem, f"{path.name}: question", question, f"'{path.stem}' (the file name)")
    defaults = raw.get("defaults") or {}
    check(isinstance(defaults, dict), f"{path.name}: defaults", defaults, "a mapping of parameter: value")
    items = raw.get("runs")
    check(isinstance(items, list) and bool(items), f"{path.name}: runs", items, "a non-empty list")
    plan = Plan(question, str(raw.get("title", "")), bool(raw.get("default", True)), [])

    for i, item in enumerate(items, 1):
        where = f"{path.name}: runs[{i}]"
        check(isinstance(item, dict), where, item, "a mapping")
        unknown = set(item) - ITEM_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(ITEM_KEYS))})")
        check_choice(f"{where}: entry", item.get("entry"), PLANNABLE)
        entry = BY_NAME[item["entry"]]
        seeds = _pick(item.get("seeds", raw.get("seeds", [0])), profile, f"{where}: seeds")
        check(isinstance(seeds, list) and bool(seeds) and all(isinstance(s, int) and not isinstance(s, bool)
                                                              and s >= 0 for s in seeds),
              f"{where}: seeds", seeds, "a non-empty list of integers >= 0")
        if "seed" not in entry.fields():
            if "seeds" in item or "seeds" in raw:
                raise ConfigError(f"{where}: seeds are given but {entry.name} has no seed parameter")
            seeds = [None]
        sweep = {k: _pick(v, profile, f"{where}: sweep.{k}") for k, v in (item.get("sweep") or {}).items()}
        for k, v in sweep.items():
            check(isinstance(v, list) and bool(v), f"{where}: sweep.{k}", v, "a non-empty list")
        fixed = {**defaults, **(item.get("params") or {})}
        overlap = set(sweep) & (set(item.get("params") or {}) | {"seed"})
        if overlap:
            raise ConfigError(f"{where}: '{sorted(overlap)[0]}' is both swept and fixed")
        for combo in itertools.product(*sweep.values()):
            for seed in seeds:
                values = {k: _pick(v, profile, f"{where}: {k}") for k, v in fixed.items()}
                values.update(zip(sweep, combo, strict=True))
                if seed is not None:
                    values["seed"] = seed
                run = PlannedRun(question, entry, "", "", {})
                run.params = _typed_params(entry, values, where)
                shown = dict(run.params)
                run.arm = _template(item.get("arm"), shown, f"{where}: arm")
                default_name = re.sub(r"[^A-Za-z0-9_.=-]", "_", f"{question}_{item.get('arm')}_s{{seed}}")
                run.name = _template(item.get("name", default_name), shown, f"{where}: name")
                check(bool(NAME.match(run.name)), f"{where}: name", run.name, "letters, digits and _ . = - only")
                # "@p1q2_beta1_s{seed}": a reference may name the run of the same seed (paired replication)
                run.params = {k: _template(v, shown, f"{where}: {k}") if _is_reference(v) else v
                              for k, v in run.params.items()}
                run.refs = [v for v in run.params.values() if _is_reference(v)]
                for ref in run.refs:
                    check(bool(REFERENCE.match(ref)), f"{where}: reference", ref, "@name or @pattern*:min(metric)")
                run.cost = estimate_cost(entry.name, run.params)
                plan.runs.append(run)
    return plan


def _typed_params(entry: Entry, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Check names and types against the entry's config."""
    fields = entry.fields()
    typed = {}
    for k, v in values.items():
        if k not in fields:
            raise ConfigError(f"{where}: unknown parameter '{k}' for {entry.name} "
                              f"(allowed: {', '.join(f for f in fields if f not in RUNNER_PARAMS)})")
        typed[k] = _cast(v, fields[k], f"{where}: {k}")
    return typed


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("@")


def estimate_cost(entry: str, params: dict[str, Any]) -> float:
    """Rough image passes of one run (training dominates; evaluations ~20k images), for the ETA only."""
    n_train = params.get("limit") or (1750 if params.get("dataset") == "synthetic" else FASHION_TRAIN_IMAGES)
    epochs = params.get("epochs", 1) if isinstance(params.get("epochs", 1), int) else 1
    if entry == "train_vae":  # + a validation pass per epoch and the IW bound: forward only, about 1/3 of a step
        bound = 2 * params.get("nll_k", 16) * params.get("nll_images", 500)
        return epochs * (n_train + 5000 / 3) + 20000 + bound / 3
    if entry == "train_gan":
        return 3 * epochs * n_train + 20000
    if entry == "gradvar":  # per draw 19 decoder passes (17 of them the matched estimator), about half a step each
        return 10 * params.get("n_samples", 200) * params.get("batch_size", 64) + epochs * n_train
    return 30000


def load_plans(cfg: StudyConfig) -> list[Plan]:
    """Every plan in the folder, in question order, checked; ConfigError before anything runs."""
    check_choice("profile", cfg.profile, PROFILES)
    check(bool(NAME.match(cfg.study)), "study", cfg.study, "a name of letters, digits and _ . = -")
    folder = Path(cfg.plans) if Path(cfg.plans).is_absolute() else PROJECT_ROOT / cfg.plans
    paths = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    check(bool(paths), "plans", cfg.plans, "a folder with plan files (*.yaml)")
    plans = [load_plan(p, cfg.profile) for p in paths]
    names: dict[str, PlannedRun] = {}
    seen: dict[tuple, str] = {}
    for plan in plans:
        for run in plan.runs:
            if run.name in names:
                raise ConfigError(f"{plan.question}.yaml: run name '{run.name}' is used twice (names must be unique)")
            key = (run.question, run.entry.name, tuple(sorted((k, str(v)) for k, v in run.params.items())))
            if key in seen:
                raise ConfigError(f"{plan.question}.yaml: runs '{seen[key]}' and '{run.name}' have the same parameters")
            seen[key] = run.name
            for ref in run.refs:
                if not _matches(ref, names):
                    raise ConfigError(f"{plan.question}.yaml: '{run.name}' refers to {ref}, which no earlier run "
                                      f"defines")
                if REFERENCE.match(ref)["mode"] is None and len(_matches(ref, names)) != 1:
                    raise ConfigError(f"{plan.question}.yaml: {ref} matches several runs; add :min(metric) or "
                                      f":max(metric)")
            names[run.name] = run
            if not run.refs:
                try:
                    run.entry.validate(_config(run, run.params, cfg, plan.question))
                except ConfigError as e:
                    raise ConfigError(f"{plan.question}.yaml: {run.name}: {e}") from None
    return plans


def _matches(ref: str, names: dict[str, PlannedRun]) -> list[PlannedRun]:
    pattern = REFERENCE.match(ref)["pattern"]
    return [run for name, run in names.items() if fnmatch.fnmatchcase(name, pattern)]


def _config(run: PlannedRun, params: dict[str, Any], cfg: StudyConfig, question: str) -> Any:
    fields = run.entry.fields()
    values = dict(params)
    if "experiment" in fields and "experiment" not in values:
        values["experiment"] = f"{cfg.study}-{question}"
    return run.entry.config(**values)


def select(plans: list[Plan], only: str) -> list[PlannedRun]:
    """The runs of the chosen questions plus every run they refer to, in plan order."""
    by_question = {p.question: p for p in plans}
    if only.strip() == "all":
        chosen = [p.question for p in plans if p.default]
    else:
        chosen = [q.strip() for q in only.split(",") if q.strip()]
        unknown = [q for q in chosen if q not in by_question]
        if unknown or not chosen:
            raise ConfigError(f"only must be 'all' or a comma list of {', '.join(by_question)}, got {only!r}")
    everything = [run for plan in plans for run in plan.runs]
    earlier: dict[str, PlannedRun] = {}
    deps: dict[str, list[PlannedRun]] = {}
    for run in everything:  # references point backwards: a run's dependencies are among the earlier runs
        deps[run.name] = [dep for ref in run.refs for dep in _matches(ref, earlier)]
        earlier[run.name] = run
    wanted = {run.name for q in chosen for run in by_question[q].runs}
    for run in reversed(everything):  # close the selection over what it refers to
        if run.name in wanted:
            wanted |= {dep.name for dep in deps[run.name]}
    return [run for run in everything if run.name in wanted]


# ---------------------------------------------------------------- running

class Progress:
    """``run i of n`` lines on stderr with elapsed time and an ETA from the work done so far."""

    def __init__(self, runs: list[PlannedRun], profile: str, parallel: int = 1):
        self.total, self.profile, self.parallel = len(runs), profile, parallel
        self.remaining_cost = sum(r.cost for r in runs)
        self.start = time.perf_counter()
        self.work_seconds = self.work_cost = 0.0
        self.begun: dict[str, float] = {}  # plan name -> when it was handed to a worker

    def note(self, i: int, run: PlannedRun, text: str) -> None:
        print(f"[study {self.profile} {i}/{self.total}] {run.label}: {text}", file=sys.stderr, flush=True)

    def begin(self, i: int, run: PlannedRun) -> None:
        self.begun[run.name] = time.perf_counter()
        print(f"[study {self.profile} {i}/{self.total}] {run.label} ...", file=sys.stderr, flush=True)

    def end(self, i: int, run: PlannedRun, outcome: str, seconds: float, trained: bool) -> None:
        self.remaining_cost -= run.cost
        if trained:
            self.work_seconds += seconds
            self.work_cost += run.cost
        eta = (f"ETA {_clock(self.work_seconds / self.work_cost * self.remaining_cost / self.parallel)}" if self.work_cost
               else "ETA --")
        print(f"[study {self.profile} {i}/{self.total}] {run.label}: {outcome} · elapsed "
              f"{_clock(time.perf_counter() - self.start)} · {eta}", file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


@dataclass
class Outcome:
    trained: int = 0
    reused: int = 0
    awaited: int = 0  # of the reused: trained meanwhile by another invocation on the store (claims)
    failed: list[str] = field(default_factory=list)
    run_ids: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    listing: list[str] = field(default_factory=list)  # a dry run's lines: what would be reused or trained


def finished_runs(cfg: StudyConfig, version: str) -> Any:
    """The store's FINISHED runs of this study, profile and code version (a pandas DataFrame)."""
    from genlab import tracking

    return tracking.search_runs(filter_string=(
        f"{tags.where(tags.STUDY, cfg.study)} and {tags.where(tags.PROFILE, cfg.profile)} and "
        f"{tags.where(tags.CODE_VERSION, version)} and attributes.status = 'FINISHED'"))


def find_reusable(done: Any, run: PlannedRun, config: Any) -> str | None:
    """The newest finished run of the same question, kind and logged parameters, if any."""
    question, kind = tags.column(tags.QUESTION), tags.column(tags.KIND)
    if done is None or len(done) == 0 or not {question, kind} <= set(done.columns):
        return None
    rows = done[(done.get(question) == run.question) & (done.get(kind) == run.entry.kind)]
    for k, v in dataclasses.asdict(config).items():
        column = f"params.{k}"
        if column not in rows:
            return None
        rows = rows[rows[column] == str(v)]
    return None if len(rows) == 0 else str(rows.sort_values("start_time").iloc[-1]["run_id"])


def resolve(run: PlannedRun, run_ids: dict[str, str]) -> dict[str, Any]:
    """Replace each @reference by the run id it names (``:min/max(metric)`` reads the runs' final metrics)."""
    from genlab import tracking

    params = dict(run.params)
    for key, value in run.params.items():
        if not (isinstance(value, str) and value.startswith("@")):
            continue
        match = REFERENCE.match(value)
        candidates = [rid for name, rid in run_ids.items() if fnmatch.fnmatchcase(name, match["pattern"])]
        if not candidates:
            raise RuntimeError(f"{value} names no finished run")
        if match["mode"] is None:
            params[key] = candidates[0]
            continue
        scored = []
        for rid in candidates:
            metrics = tracking.get_run(rid).data.metrics
            if match["metric"] not in metrics:
                raise RuntimeError(f"{value}: run {rid} has no metric {match['metric']}")
            scored.append((metrics[match["metric"]], rid))
        params[key] = (min if match["mode"] == "min" else max)(scored)[1]
    return params


def validate(cfg: StudyConfig) -> None:
    """ConfigError (one line) for the execution options, before any plan is read or cluster started."""
    from genlab import tracking

    check_declared(cfg)
    check(cfg.cluster == "" or bool(re.fullmatch(r"(tcp://|tls://)?[A-Za-z0-9_.\-\[\]:]+:\d+", cfg.cluster)),
          "cluster", cfg.cluster, "a Dask scheduler address such as tcp://10.0.0.5:8786")
    if cfg.cluster and tracking.tracking_uri().startswith(("sqlite:", "file:")) or (
            cfg.cluster and "://" not in tracking.tracking_uri()):
        raise ConfigError("--cluster needs a tracking store that every worker reaches: set MLFLOW_TRACKING_URI to an "
                          "MLflow server (README, \"Scale out\"), not a local sqlite:// or file store")
    if cfg.gpus_per_run and not cfg.cluster:
        import torch

        check(torch.cuda.is_available(), "gpus_per_run", cfg.gpus_per_run, "0 here: this machine has no CUDA GPU")
        check(cfg.workers * cfg.gpus_per_run <= 1, "gpus_per_run", cfg.gpus_per_run,
              f"at most 1/{cfg.workers} with {cfg.workers} local workers sharing one GPU")


@dataclass
class Study:
    """What the loop of one invocation needs to know: the config, its runs and their state."""

    cfg: StudyConfig
    runs: list[PlannedRun]
    titles: dict[str, str]
    done: Any  # the store's FINISHED runs of this study, profile and code version (reuse)
    outcome: Outcome
    progress: Progress
    invocation: str = field(default_factory=lambda: uuid.uuid4().hex)  # tags this invocation's runs
    failed: set[str] = field(default_factory=set)
    described: set[str] = field(default_factory=set)  # experiments given their description by this invocation
    version: str = ""  # the code version this invocation runs (part of each claim key)
    keys: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # plan name -> (claim key, experiment)
    awaiting: dict[str, str] = field(default_factory=dict)  # plan name -> the run of another invocation holding it
    polled: float = 0.0  # when ``awaiting`` was last checked (time.monotonic)

    def index(self, run: PlannedRun) -> int:
        return self.runs.index(run) + 1

    def claim_key(self, run: PlannedRun, config: Any) -> str:
        """The run's key in the store, alike in every invocation that would make the same run: a hash of the study,
        profile, question, plan name, code version, entry and resolved config (the parts are tags of the run)."""
        parts = [self.cfg.study, self.cfg.profile, run.question, run.name, self.version, run.entry.name,
                 dataclasses.asdict(config)]
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def tags(self, run: PlannedRun) -> dict[str, str]:
        return {tags.STUDY: self.cfg.study, tags.PROFILE: self.cfg.profile, tags.QUESTION: run.question,
                tags.ARM: run.arm, tags.REF: run.name, tags.INVOCATION: self.invocation,
                tags.NOTE: run_note(run, self.titles.get(run.question, ""), self.cfg)}


def dependencies(runs: list[PlannedRun]) -> dict[str, set[str]]:
    """The graph's edges: for each run, the names of the planned runs its references match."""
    names = {run.name: run for run in runs}
    return {run.name: {dep.name for ref in run.refs for dep in _matches(ref, names) if dep.name != run.name}
            for run in runs}


def run(cfg: StudyConfig, context: Context) -> Result:
    """``genlab study``: its one-line outcome; exit code 1 when a planned run failed (the others still ran)."""
    outcome = run_study(cfg, dry_run=context.dry_run)
    if context.dry_run:
        return Result(lines=tuple(outcome.listing))
    failed = f"; FAILED: {', '.join(outcome.failed)}" if outcome.failed else ""
    counts = {"runs_trained": outcome.trained, "runs_reused": outcome.reused, "runs_awaited": outcome.awaited,
              "runs_failed": len(outcome.failed)}
    awaited = f" ({outcome.awaited} of them trained by another invocation)" if outcome.awaited else ""
    return Result(None, {**counts, "seconds": outcome.seconds},
                  (f"study {cfg.study} ({cfg.profile}): {outcome.trained} runs trained, {outcome.reused} reused"
                   f"{awaited} in {outcome.seconds:.0f}s{failed}",), EXIT_RUNTIME if outcome.failed else 0)


def run_study(cfg: StudyConfig, dry_run: bool = False) -> Outcome:
    """Load, check and select plans, then run (or reuse) each planned run once what it refers to is FINISHED,
    here or on Dask workers (``workers``, ``cluster``)."""
    from genlab import scheduler, tracking

    validate(cfg)
    plans = load_plans(cfg)
    runs = select(plans, cfg.only)
    # Under `mlflow run . -e study` that run is the study's own: the entry points must not adopt it as theirs.
    umbrella = os.environ.pop("MLFLOW_RUN_ID", None)
    version = tracking.code_version()
    done = finished_runs(cfg, version)
    print(f"genlab study: {cfg.study} {cfg.profile}: {len(runs)} runs planned; code {version}, "
          f"{len(done)} finished runs of this study and profile at this code version in the store"
          + (" (uncommitted changes: each edit is a new code version)" if version.endswith("-dirty") else ""),
          file=sys.stderr, flush=True)
    state = Study(cfg, runs, {plan.question: plan.title for plan in plans}, done, Outcome(),
                  Progress(runs, cfg.profile, cfg.workers), version=version)
    if dry_run:
        state.outcome.listing = dry_run_listing(state, version)
        return state.outcome
    start = time.perf_counter()
    if cfg.workers > 1 or cfg.cluster:
        train_classifiers_first(state)
    execute(state, scheduler.start(cfg.workers, cfg.cluster, cfg.gpus_per_run))
    state.outcome.seconds = time.perf_counter() - start
    finish(state, umbrella)
    return state.outcome


def execute(state: Study, backend: Any) -> None:
    """Run the graph on ``backend`` and always close it. Runs in worker processes that ended without ending their
    MLflow run (the process died, or Ctrl-C stopped the local workers) are marked FAILED / KILLED; a run in this
    process ends its own run. On a remote cluster the runs already going finish on their workers."""
    from genlab import scheduler

    local_workers = isinstance(backend, scheduler.DaskBackend) and backend.cluster is not None
    try:
        run_graph(state, backend)
    except KeyboardInterrupt:
        backend.close(interrupted=True)
        if local_workers:
            end_unfinished(state, "KILLED", "interrupted")
        elif state.cfg.cluster:
            print("genlab study: interrupted; the runs already started on the cluster finish there",
                  file=sys.stderr, flush=True)
        raise
    except BaseException:
        backend.close(interrupted=True)
        if local_workers:
            end_unfinished(state, "FAILED", "the study stopped on an error")
        raise
    backend.close()


def train_classifiers_first(state: Study) -> None:
    """Runs with sample-quality metrics need their data set's feature classifier at their end. Trained inside the
    first such run, it would take a worker's single thread while the other workers wait for it: train it here
    first, with every thread this machine gives, before the workers start."""
    from genlab.configs import ClassifierConfig
    from genlab.runs.classifier import ensure_classifier

    datasets = set()
    for run in state.runs:
        fields = {f.name: f.default for f in dataclasses.fields(run.entry.config)}
        if run.params.get("eval_samples", fields.get("eval_samples", 0)) and "dataset" in fields:
            datasets.add(run.params.get("dataset", fields["dataset"]))
    for dataset in sorted(datasets):
        ensure_classifier(ClassifierConfig(dataset=dataset))


def run_graph(state: Study, backend: Any) -> None:
    """Submit each run once the runs it refers to are FINISHED (reusing a finished twin instead, or awaiting the run
    of another invocation that claimed it first), collect each result; a run whose dependency failed is not run.
    Plan order breaks ties."""
    deps, waiting = dependencies(state.runs), list(state.runs)
    finished = set(state.outcome.run_ids)
    while waiting or backend.running() or state.awaiting:
        for run in list(waiting):
            if backend.running() >= backend.capacity:
                break
            if deps[run.name] & state.failed:
                waiting.remove(run)
                _failed(state, run, f"not run: needs {sorted(deps[run.name] & state.failed)[0]}, which failed")
            elif deps[run.name] <= finished:
                waiting.remove(run)
                if submit(state, run, backend):
                    finished.add(run.name)
        if backend.running():
            collect(state, backend, finished, _poll_seconds() if state.awaiting else None)
        elif state.awaiting:
            time.sleep(_poll_seconds())
        elif waiting and not any(deps[r.name] <= finished or deps[r.name] & state.failed for r in waiting):
            for run in waiting:  # references that can never be satisfied (a cycle): refuse rather than wait forever
                _failed(state, run, "not run: what it refers to never finishes (a reference cycle)")
            waiting.clear()
        waiting = sorted(waiting + follow_claims(state, finished), key=state.runs.index)


def _poll_seconds() -> float:
    """How often runs awaited from other invocations are checked."""
    from genlab import tracking

    return min(2.0, tracking.HEARTBEAT_SECONDS)


def collect(state: Study, backend: Any, finished: set[str], timeout: float | None = None) -> None:
    """Wait for the next run to end (at most ``timeout`` seconds) and record it."""
    from genlab import scheduler, tracking

    done = backend.next_done(timeout)
    if done is None:
        return
    name, result = done
    run = next(r for r in state.runs if r.name == name)
    queued = time.perf_counter() - state.progress.begun.pop(name, time.perf_counter())
    if isinstance(result, tracking.Claimed):  # another invocation's run claimed it first: its run made none
        _await(state, run, result.holder)
        return
    if isinstance(result, BaseException):
        message = str(result).splitlines()[0] if str(result) else ""
        if isinstance(result, scheduler.WorkerDied):
            end_unfinished(state, "FAILED", message, ref=name)
        _failed(state, run, f"FAILED: {type(result).__name__}: {message}", queued)
        return
    run_id, seconds = result
    state.outcome.run_ids[name] = run_id
    state.outcome.trained += 1
    finished.add(name)
    state.progress.end(state.index(run), run, f"run {run_id} in {seconds:.0f}s", seconds, True)


def submit(state: Study, run: PlannedRun, backend: Any) -> bool:
    """Resolve the run's references, then reuse a finished twin (True), await the run of another invocation that
    holds its claim key (False), or hand it to the backend (False) with the key as tag: its run claims it."""
    from genlab import scheduler, tracking

    try:
        config = _config(run, resolve(run, state.outcome.run_ids), state.cfg, run.question)
        reuse = find_reusable(state.done, run, config)
        key, experiment = state.claim_key(run, config), getattr(config, "experiment", None)
        state.keys[run.name] = (key, experiment)
        holder = None if reuse else tracking.holder_of(key, experiment)
        if reuse or (holder is not None and holder.status == "FINISHED"):
            _reused(state, run, reuse or holder.run_id, by_another=not reuse)
            return True
        if holder is not None:
            _await(state, run, holder.run_id)
            return False
        if hasattr(config, "experiment") and config.experiment not in state.described:
            tracking.describe_experiment(config.experiment, experiment_note(run.question, state.titles, state.cfg))
            state.described.add(config.experiment)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a reference that names no usable run: the run cannot start
        _failed(state, run, f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return False
    state.progress.begin(state.index(run), run)
    threads = 1 if isinstance(backend, scheduler.DaskBackend) else 0
    run_tags = {**state.tags(run), tags.CLAIM: key}
    backend.submit(scheduler.Task(run.name, run.entry.name, config, run_tags, tracking.tracking_uri(), threads))
    return False


def _reused(state: Study, run: PlannedRun, run_id: str, by_another: bool = False) -> None:
    state.outcome.run_ids[run.name] = run_id
    state.outcome.reused += 1
    state.outcome.awaited += by_another
    by = " (trained by another invocation)" if by_another else ""
    state.progress.end(state.index(run), run, f"reused run {run_id}{by}", 0.0, False)


def _await(state: Study, run: PlannedRun, holder: str) -> None:
    state.awaiting[run.name] = holder
    state.progress.note(state.index(run), run, f"run {holder} of another invocation claimed it first: waiting for it")


def follow_claims(state: Study, finished: set[str]) -> list[PlannedRun]:
    """Check the runs awaited from other invocations (every few seconds): one that FINISHED is reused; one whose key
    no run holds any more (its run failed or was stopped, or its heartbeat stopped: marked FAILED now) is returned,
    to be trained here; one still claimed by a live run stays awaited."""
    from genlab import tracking

    if not state.awaiting or time.monotonic() - state.polled < _poll_seconds():
        return []
    state.polled = time.monotonic()
    again = []
    for name, holder in list(state.awaiting.items()):
        run = next(r for r in state.runs if r.name == name)
        claim = tracking.holder_of(*state.keys[name])
        if claim is not None and claim.status == "RUNNING":
            state.awaiting[name] = claim.run_id
            continue
        del state.awaiting[name]
        if claim is None:
            state.progress.note(state.index(run), run, f"run {holder} of another invocation did not finish: "
                                "training it here")
            again.append(run)
        else:
            _reused(state, run, claim.run_id, by_another=True)
            finished.add(name)
    return again


def _failed(state: Study, run: PlannedRun, outcome: str, seconds: float = 0.0) -> None:
    state.failed.add(run.name)
    state.outcome.failed.append(run.label)
    state.progress.end(state.index(run), run, outcome, seconds, seconds > 0)


def end_unfinished(state: Study, status: str, reason: str, ref: str | None = None) -> None:
    """End the runs of this invocation still RUNNING (of one plan name, or all): their process is gone."""
    from genlab import tracking

    ref_filter = f" and {tags.where(tags.REF, ref)}" if ref else ""
    stale = tracking.search_runs(filter_string=(
        f"{tags.where(tags.INVOCATION, state.invocation)} and attributes.status = 'RUNNING'{ref_filter}"))
    for run_id in (stale["run_id"] if len(stale) else []):
        tracking.mark_run(run_id, status, reason)


def finish(state: Study, umbrella: str | None) -> None:
    """Register the study's best GAN generator; tag the `mlflow run . -e study` run with the summary."""
    from genlab import tracking

    outcome, cfg = state.outcome, state.cfg
    kinds = {run.name: run.entry.kind for run in state.runs}
    gan_runs = [rid for name, rid in outcome.run_ids.items() if kinds.get(name) == tags.GAN]
    if gan_runs:
        tracking.register_best(gan_runs, "generator", GAN_MODEL_NAME, "fid_proxy")
    if umbrella:
        tracking.Run(umbrella).set_tags({
            tags.KIND: tags.STUDY_RUN, tags.STUDY: cfg.study, tags.PROFILE: cfg.profile, tags.ONLY: cfg.only,
            tags.SUMMARY: f"{outcome.trained} trained, {outcome.reused} reused, {len(outcome.failed)} failed "
                              f"in {outcome.seconds:.0f}s"})


RUN_OVERHEAD_S = 8.0  # per run: start, end-of-run pictures, models and the store's writes (wall-time estimate only)


def training_speed(seconds: float = 1.0) -> dict[str, float]:
    """Training images per second of this machine for each VAE architecture: a short timed loop of Adam steps on
    random images with the default batch size (a GAN step costs about three of these; ``estimate_cost`` counts so)."""
    import time

    import torch

    from genlab import losses
    from genlab.configs import ARCHS
    from genlab.models.vae import VAE

    speed = {}
    x = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for arch in ARCHS:
        model = VAE(16, arch)
        optimizer = torch.optim.Adam(model.parameters())
        images, t0, warm = 0, 0.0, 2
        while images == 0 or time.perf_counter() - t0 < seconds:
            logits, _, z_mean, z_log_var = model(x)
            loss = losses.vae_terms(logits, x, z_mean, z_log_var, 1.0)["loss"].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            warm -= 1
            if warm == 0:
                t0 = time.perf_counter()
            elif warm < 0:
                images += len(x)
        speed[arch] = images / (time.perf_counter() - t0)
    return speed


def wall_time_estimate(runs: list[PlannedRun], speed: dict[str, float]) -> float:
    """Seconds to train ``runs`` one after the other at ``speed`` (training_speed), plus RUN_OVERHEAD_S each."""
    return sum(r.cost / speed.get(str(r.params.get("arch", "conv")), speed["conv"]) + RUN_OVERHEAD_S for r in runs)


def dry_run_listing(state: Study, version: str) -> list[str]:
    """What would be reused or trained, in plan order (references to runs not yet trained stay unresolved), and
    the estimated wall time of the runs to train at this machine's measured training speed."""
    runs, outcome = state.runs, state.outcome
    speed = training_speed()
    lines = [f"{len(runs)} runs, about {sum(r.cost for r in runs) / 1e6:.2f}M image passes (code {version}); "
             f"all of them on this machine, one at a time: about {_clock(wall_time_estimate(runs, speed))} "
             f"(training measured now: " + ", ".join(f"{a} {s:,.0f} images/s" for a, s in speed.items()) + ")"]
    for i, run in enumerate(runs, 1):
        if any(_unresolved(ref, outcome.run_ids) for ref in run.refs):
            lines.append(f"{i:3d}/{len(runs)} {run.label}: would train (after {', '.join(run.refs)}) [{run.name}] "
                         + " ".join(f"{k}={_fmt(v)}" for k, v in run.params.items()))
            continue
        config = _config(run, resolve(run, outcome.run_ids), state.cfg, run.question)
        reuse = find_reusable(state.done, run, config)
        lines.append(f"{i:3d}/{len(runs)} {run.label}: " + (f"reuse {reuse}" if reuse else "would train")
                     + f" [{run.name}] " + " ".join(f"{k}={_fmt(v)}" for k, v in run.params.items()))
        if reuse:
            outcome.run_ids[run.name] = reuse
    return lines


def experiment_note(question: str, titles: dict[str, str], cfg: StudyConfig) -> str:
    """The description of a study question's experiment in the MLflow UI."""
    return (f"**{question.upper()}: {titles.get(question) or question}** Runs of study `{cfg.study}` "
            f"(plan experiments/{question}.yaml), tagged `{tags.ARM}` by condition and `{tags.PROFILE}` "
            "(quick: a pipeline check, full: the evidence, paper: the evidence at full scale). The report "
            "(`genlab report`) answers the question from them.")


def run_note(run: PlannedRun, title: str, cfg: StudyConfig) -> str:
    """The description of one study run in the MLflow UI."""
    purpose = {"quick": "a pipeline check, not evidence", "paper": "evidence for the report, at full scale",
               }.get(cfg.profile, "evidence for the report")
    return (f"**{run.question.upper()}: {title or run.question}** Arm `{run.arm}` (plan run `{run.name}`) of study "
            f"`{cfg.study}`, {cfg.profile} profile: {purpose}.")


def _unresolved(ref: str, run_ids: dict[str, str]) -> bool:
    return not any(fnmatch.fnmatchcase(name, REFERENCE.match(ref)["pattern"]) for name in run_ids)
