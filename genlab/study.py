"""``genlab study``: run the lab's experiment plans (``experiments/*.yaml``) as tracked runs, idempotently.

The plans are read, checked, expanded and selected by ``genlab.plans`` (their format: its docstring and
experiments/README.md); this module runs the selected runs. Each goes through its entry point
(``Entry.run(config, Context(tags=..., splits=...))``, as its own command does) once the runs it refers to are
FINISHED (its ``Reference``s resolved into their run ids), unless a FINISHED run with the same parameters, profile,
question and code version is reused.

Several invocations on one store (two terminals, two machines on one MLflow server) train each run once: a run
claims its key in the store as it starts (``genlab.tracking``, "claims"), and an invocation that finds the key
claimed by another's live run waits for that run and reuses it, or trains it itself if that run ends unfinished or
its heartbeat stops (its process is gone).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from genlab import tags
from genlab.checks import ConfigError, check, check_declared
from genlab.configs import StudyConfig
from genlab.entries import EXIT_RUNTIME, Context, Result
from genlab.plans import PlannedRun, critical_path_costs, dependencies, fmt, load_plans, select

GAN_MODEL_NAME = "genlab-gan"  # models:/genlab-gan@best: the study's GAN generator with the lowest fid_proxy


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
    for key, ref in run.refs.items():
        candidates = [run_ids[name] for name in ref.matches(run_ids)]
        if not candidates:
            raise RuntimeError(f"{ref} names no finished run")
        if ref.pick is None:
            params[key] = candidates[0]
            continue
        scored = []
        for rid in candidates:
            metrics = tracking.get_run(rid).data.metrics
            if ref.metric not in metrics:
                raise RuntimeError(f"{ref}: run {rid} has no metric {ref.metric}")
            scored.append((metrics[ref.metric], rid))
        params[key] = (min if ref.pick == "min" else max)(scored)[1]
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
                tags.ARM: run.arm, tags.REF: run.name, tags.SEED_OFFSET: str(self.cfg.seed_offset),
                tags.INVOCATION: self.invocation,
                tags.NOTE: run_note(run, self.titles.get(run.question, ""), self.cfg)}


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
    Of the runs ready at once, the one with the costliest chain behind it goes first (plans.critical_path_costs);
    plan order breaks ties."""
    deps, chain = dependencies(state.runs), critical_path_costs(state.runs)

    def order(run: PlannedRun) -> tuple[float, int]:
        return -chain[run.name], state.runs.index(run)

    waiting = sorted(state.runs, key=order)
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
        waiting = sorted(waiting + follow_claims(state, finished), key=order)


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
        config = run.config(state.cfg.study, resolve(run, state.outcome.run_ids))
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
            tags.SEED_OFFSET: str(cfg.seed_offset),
            tags.SUMMARY: f"{outcome.trained} trained, {outcome.reused} reused, {len(outcome.failed)} failed "
                              f"in {outcome.seconds:.0f}s"})


RUN_OVERHEAD_S = 8.0  # per run: start, end-of-run pictures, models and the store's writes (wall-time estimate only)


def wall_time_estimate(runs: list[PlannedRun], speed: dict[str, float]) -> float:
    """Seconds to train ``runs`` one after the other at ``speed`` (training_speed), plus RUN_OVERHEAD_S each."""
    return sum(r.cost / speed.get(str(r.params.get("arch", "conv")), speed["conv"]) + RUN_OVERHEAD_S for r in runs)


def dry_run_listing(state: Study, version: str) -> list[str]:
    """What would be reused or trained, in plan order (references to runs not yet trained stay unresolved), and
    the estimated wall time of the runs to train at this machine's measured training speed."""
    from genlab.bench import training_speed  # bench imports torch and, lazily, this module

    runs, outcome = state.runs, state.outcome
    speed = training_speed()
    lines = [f"{len(runs)} runs, about {sum(r.cost for r in runs) / 1e6:.2f}M image passes (code {version}); "
             f"all of them on this machine, one at a time: about {_clock(wall_time_estimate(runs, speed))} "
             f"(training measured now: " + ", ".join(f"{a} {s:,.0f} images/s" for a, s in speed.items()) + ")"]
    for i, run in enumerate(runs, 1):
        if any(not ref.matches(outcome.run_ids) for ref in run.refs.values()):
            after = ", ".join(map(str, run.refs.values()))
            lines.append(f"{i:3d}/{len(runs)} {run.label}: would train (after {after}) [{run.name}] "
                         + " ".join(f"{k}={fmt(v)}" for k, v in run.params.items()))
            continue
        config = run.config(state.cfg.study, resolve(run, outcome.run_ids))
        reuse = find_reusable(state.done, run, config)
        lines.append(f"{i:3d}/{len(runs)} {run.label}: " + (f"reuse {reuse}" if reuse else "would train")
                     + f" [{run.name}] " + " ".join(f"{k}={fmt(v)}" for k, v in run.params.items()))
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

