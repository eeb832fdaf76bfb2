"""The lab's experiment plans (``experiments/*.yaml``): read, checked and expanded into runs; executed by
``genlab.study``.

A plan is plain data (see experiments/README.md): a question, shared ``defaults``, ``seeds`` and a list of ``runs``
items, each naming an entry point, an ``arm`` (the condition, a template like ``beta={beta}``), fixed ``params``
and a ``sweep`` (cartesian). Any value may be ``{quick: ..., full: ..., paper: ...}`` to differ per profile. A string
parameter ``@name`` refers to the run an earlier item named ``name`` produced (its run id is substituted);
``@pattern*:min(metric)`` / ``:max(metric)`` picks, among the runs whose names match the pattern, the one with the
smallest / largest final ``metric``. Such a parameter is parsed once, here, into a ``Reference``.

Read top to bottom: one plan file (``load_plan``) -> every plan, checked together (``load_plans``: all errors before
any run) -> the runs ``--only`` selects plus what they refer to (``select``) -> the graph of references
(``dependencies``).
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from genlab import tags
from genlab.checks import ConfigError, check, check_choice
from genlab.configs import PROJECT_ROOT, StudyConfig
from genlab.configs import STUDY_PROFILES as PROFILES
from genlab.entries import BY_NAME, ENTRIES, Entry

DEFAULT_PLANS = PROJECT_ROOT / "experiments"

RUNNER_PARAMS = ("experiment",)  # set by the study (``<study>-<question>``) unless a plan sets it
PLAN_KEYS = {"question", "title", "default", "defaults", "seeds", "runs"}
ITEM_KEYS = {"name", "entry", "arm", "params", "sweep", "seeds"}
_REFERENCE = re.compile(r"^@(?P<pattern>[A-Za-z0-9_.*?=-]+)(?::(?P<pick>min|max)\((?P<metric>[A-Za-z0-9_]+)\))?$")
NAME = re.compile(r"^[A-Za-z0-9_.=-]+$")
FASHION_TRAIN_IMAGES = 55000  # for the ETA's cost estimate only
# what a plan item may run: every entry point that makes a run of its own, but a study
PLANNABLE = tuple(entry.name for entry in ENTRIES if entry.kind not in (None, tags.STUDY_RUN))


@dataclass(frozen=True)
class Reference:
    """A parameter that names other runs of the plans: ``@name`` (exactly one run), ``@pattern*:min(metric)`` /
    ``:max(metric)`` (of the runs matching the pattern, the one with the smallest / largest final metric)."""

    pattern: str  # a run name, or an fnmatch pattern over run names
    pick: Literal["min", "max"] | None = None
    metric: str = ""

    @classmethod
    def parse(cls, text: str, where: str) -> Reference:
        match = _REFERENCE.match(text)
        check(match is not None, f"{where}: reference", text, "@name or @pattern*:min(metric)")
        return cls(match["pattern"], match["pick"], match["metric"] or "")

    def matches(self, names: Iterable[str]) -> list[str]:
        """The names the reference matches, in the order given."""
        return [name for name in names if fnmatch.fnmatchcase(name, self.pattern)]

    def __str__(self) -> str:  # as the plan wrote it: error messages and listings quote it
        return f"@{self.pattern}" + (f":{self.pick}({self.metric})" if self.pick else "")


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("@")


@dataclass
class PlannedRun:
    """One run of the study: what to call, with what, and how to tag it."""

    question: str
    entry: Entry
    name: str  # symbolic name other items refer to with @name
    arm: str
    params: dict[str, Any]  # typed config values; a reference stays the text the plan gives (listings, twins)
    cost: float = 0.0  # rough image passes, for the ETA
    refs: dict[str, Reference] = field(default_factory=dict)  # parameter -> the reference it holds, in plan order

    @property
    def label(self) -> str:
        seed = f" s{self.params['seed']}" if "seed" in self.params else ""
        return f"{self.question} {self.arm}{seed} ({self.entry.name})"

    def config(self, study: str, params: dict[str, Any] | None = None) -> Any:
        """The entry's config of this run in ``study``, from ``params`` (its references resolved) or its own."""
        values = dict(self.params if params is None else params)
        if "experiment" in self.entry.fields() and "experiment" not in values:
            values["experiment"] = f"{study}-{self.question}"
        return self.entry.config(**values)


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


def fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _template(text: Any, values: dict[str, Any], where: str) -> str:
    check(isinstance(text, str) and bool(text.strip()), where, text, "a non-empty string template")
    names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    missing = names - set(values)
    if missing:
        raise ConfigError(f"{where} uses {{{sorted(missing)[0]}}}, which is not a parameter of the run")
    return text.format(**{k: fmt(v) for k, v in values.items()})


def load_plan(path: Path, profile: str, seed_offset: int = 0) -> Plan:
    """Read and check one plan file; expand its items for ``profile``, every seed shifted by ``seed_offset``.
    ConfigError names the file and key."""
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
        plan.runs += _expand(item, raw, defaults, question, profile, f"{path.name}: runs[{i}]", seed_offset)
    return plan


def _expand(item: Any, raw: dict[str, Any], defaults: dict[str, Any], question: str, profile: str,
            where: str, seed_offset: int = 0) -> list[PlannedRun]:
    """The runs of one ``runs`` item: its sweep's combinations times its seeds (each plus ``seed_offset``)."""
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
    runs = []
    for combo in itertools.product(*sweep.values()):
        for seed in seeds:
            values = {k: _pick(v, profile, f"{where}: {k}") for k, v in fixed.items()}
            values.update(zip(sweep, combo, strict=True))
            if seed is not None:
                values["seed"] = seed + seed_offset
            runs.append(_planned_run(item, entry, question, values, where))
    return runs


def _planned_run(item: dict[str, Any], entry: Entry, question: str, values: dict[str, Any],
                 where: str) -> PlannedRun:
    """One run of an item with these parameter values: typed, named, its references parsed."""
    run = PlannedRun(question, entry, "", "", _typed_params(entry, values, where))
    shown = dict(run.params)
    run.arm = _template(item.get("arm"), shown, f"{where}: arm")
    default_name = re.sub(r"[^A-Za-z0-9_.=-]", "_", f"{question}_{item.get('arm')}_s{{seed}}")
    run.name = _template(item.get("name", default_name), shown, f"{where}: name")
    check(bool(NAME.match(run.name)), f"{where}: name", run.name, "letters, digits and _ . = - only")
    # a text parameter may use the run's parameters: "@p1q2_beta1_s{seed}" names the run of the same seed (paired
    # replication), the search's study_name its seed (a replication on other seeds gets its own Optuna study)
    run.params = {k: _template(v, shown, f"{where}: {k}") if isinstance(v, str) and "{" in v else v
                  for k, v in run.params.items()}
    run.refs = {k: Reference.parse(v, where) for k, v in run.params.items() if _is_reference(v)}
    run.cost = estimate_cost(entry.name, run.params)
    return run


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


def estimate_cost(entry: str, params: dict[str, Any]) -> float:
    """Rough image passes of one run (training dominates; evaluations ~20k images), for the ETA only."""
    n_train = params.get("limit") or (1750 if params.get("dataset") == "synthetic" else FASHION_TRAIN_IMAGES)
    epochs = params.get("epochs", 1) if isinstance(params.get("epochs", 1), int) else 1
    if entry == "train_vae":  # + a validation pass per epoch and the IW bound: forward only, about 1/3 of a step
        bound = 2 * params.get("nll_k", 16) * params.get("nll_images", 500)
        return epochs * (n_train + (params.get("val_images") or 5000) / 3) + 20000 + bound / 3
    if entry == "train_gan":
        return 3 * epochs * n_train + 20000
    if entry == "gradvar":  # per draw 19 decoder passes (17 of them the matched estimator), about half a step each
        return 10 * params.get("n_samples", 200) * params.get("batch_size", 64) + epochs * n_train
    if entry == "search":  # n_trials VAEs of that length (pruned ones stop early: an upper bound)
        return params.get("n_trials", 20) * estimate_cost("train_vae", {**params, "epochs": epochs})
    return 30000


def load_plans(cfg: StudyConfig) -> list[Plan]:
    """Every plan in the folder, in question order, checked; ConfigError before anything runs."""
    check_choice("profile", cfg.profile, PROFILES)
    check(bool(NAME.match(cfg.study)), "study", cfg.study, "a name of letters, digits and _ . = -")
    folder = Path(cfg.plans) if Path(cfg.plans).is_absolute() else PROJECT_ROOT / cfg.plans
    paths = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    check(bool(paths), "plans", cfg.plans, "a folder with plan files (*.yaml)")
    plans = [load_plan(p, cfg.profile, cfg.seed_offset) for p in paths]
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
            for ref in run.refs.values():
                matched = ref.matches(names)
                if not matched:
                    raise ConfigError(f"{plan.question}.yaml: '{run.name}' refers to {ref}, which no earlier run "
                                      f"defines")
                if ref.pick is None and len(matched) != 1:
                    raise ConfigError(f"{plan.question}.yaml: {ref} matches several runs; add :min(metric) or "
                                      f":max(metric)")
            names[run.name] = run
            if not run.refs:
                try:
                    run.entry.validate(run.config(cfg.study))
                except ConfigError as e:
                    raise ConfigError(f"{plan.question}.yaml: {run.name}: {e}") from None
    return plans


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
    earlier: set[str] = set()
    deps: dict[str, set[str]] = {}
    for run in everything:  # references point backwards: a run's dependencies are among the earlier runs
        deps[run.name] = {name for ref in run.refs.values() for name in ref.matches(earlier)}
        earlier.add(run.name)
    wanted = {run.name for q in chosen for run in by_question[q].runs}
    for run in reversed(everything):  # close the selection over what it refers to
        if run.name in wanted:
            wanted |= deps[run.name]
    return [run for run in everything if run.name in wanted]


# What an image pass costs on each architecture, relative to the MLP's: `genlab study --dry-run` measured 1,389 conv
# and 19,468 MLP training images/s on the 2-core development VM. Only the order of the runs depends on it.
ARCH_PASS_COST = {"mlp": 1.0, "conv": 14.0}


def critical_path_costs(runs: list[PlannedRun]) -> dict[str, float]:
    """For each run, its cost (image passes weighted by ARCH_PASS_COST) plus the costliest chain of runs that wait
    for it: the work that cannot start before it ends. Started longest first, the runs of a parallel study leave no
    lone long run (the search, a VAE -> GAN -> probe chain) to finish after the others (list scheduling by critical
    path, Hu 1961)."""
    deps = dependencies(runs)
    waiting_on = {run.name: [r for r in runs if run.name in deps[r.name]] for run in runs}
    memo: dict[str, float] = {}

    def chain(run: PlannedRun) -> float:
        if run.name not in memo:
            own = run.cost * ARCH_PASS_COST.get(str(run.params.get("arch", "conv")), 1.0)
            memo[run.name] = own + max((chain(r) for r in waiting_on[run.name]), default=0.0)
        return memo[run.name]

    return {run.name: chain(run) for run in runs}


def dependencies(runs: list[PlannedRun]) -> dict[str, set[str]]:
    """The graph's edges: for each run, the names of the planned runs its references match."""
    names = [run.name for run in runs]
    return {run.name: {name for ref in run.refs.values() for name in ref.matches(names) if name != run.name}
            for run in runs}
