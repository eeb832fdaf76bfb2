"""What every question's rule shares: Stat, Comparison and Verdict, the statistics, the run-frame helpers, and the
Question record that reports/questions/ fills in once per question.

Input of a rule: the DataFrame of ``genlab.tracking.search_runs`` (columns ``run_id``, ``experiment_id``, ``status``,
``start_time``, ``metrics.*``, ``params.*``, ``tags.*``), plus whatever its question's ``read`` fetched through a
Reader (metric histories ``run_id, key, step, value``; artifacts). No I/O here, no text: the templates turn a
Verdict into words in each language.

The protocol (issue 14): seeds of one condition -> mean and 95 % t-interval (half-width; none with one seed). Two
conditions are compared by ``compare_runs``: the paired t-interval of the seed-matched differences when both arms
ran the same seeds (seed s of one arm shares its data order and, for a GAN, its starting decoder with seed s of
the other), else Welch's. A difference counts ("greater" / "less") when it exceeds the rule's minimum effect, its
interval excludes 0, and it rests on at least MIN_SEEDS seeds. When it does not count and the design could not have
detected the minimum effect (too few seeds, no interval, or a minimum detectable effect above it), the outcome is
"underpowered", never "no difference". Several claims of one question are Holm-corrected (``holm_claims``). After
the rule, ``Question.judge`` makes the verdict inconclusive when a VAE or GAN run it rests on did not converge.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from scipy import stats

from genlab import tags
from reports import power

if TYPE_CHECKING:
    from reports.gallery import GallerySpec


@dataclass
class Stat:
    """Mean of one quantity over the seeds of one condition, with the 95 % t-interval half-width (NaN if n < 2)."""

    mean: float
    half: float
    n: int
    run_ids: list[str] = field(default_factory=list)

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


MIN_SEEDS = 3  # a difference rests on at least this many seeds (pairs when paired) or it is underpowered
OUTCOMES = ("greater", "less", "none", "underpowered")


@dataclass
class Comparison:
    """a - b with its 95 % interval (paired t on seed-matched runs, else Welch), two-sided p-value, and the minimum
    detectable effect (MDE, alpha 0.05, power 0.8) beside the rule's ``min_effect``. ``outcome``: ``greater`` or
    ``less`` (a significant difference larger than the minimum effect, on >= MIN_SEEDS seeds), ``none`` (the design
    could detect the minimum effect and found nothing larger) or ``underpowered`` (it could not). ``holm``: the
    significance is the Holm-corrected one of a family of claims."""

    a: Stat
    b: Stat
    diff: float
    low: float
    high: float
    min_effect: float
    outcome: str
    p_value: float = math.nan
    mde: float = math.nan
    paired: bool = False
    n: int = 0  # pairs when paired, else the smaller arm
    holm: bool = False

    @property
    def has_ci(self) -> bool:
        return not math.isnan(self.low)

    @property
    def too_few_seeds(self) -> bool:
        return self.n < MIN_SEEDS

    @property
    def detectable(self) -> bool:
        """Could the seeds have detected the rule's minimum effect (MDE <= min effect)? False without an MDE."""
        return self.mde <= self.min_effect

    @property
    def significant(self) -> bool:
        """The 95 % interval excludes 0 (before any Holm correction)."""
        return self.low > 0 or self.high < 0


@dataclass
class Verdict:
    """What the templates need: ``status`` is one of STATUSES; ``numbers`` the values quoted in the text; ``rows``
    the table; ``data`` tidy per-run values for the figures; ``missing`` what runs are lacking (dicts with a
    ``what`` key); ``frames`` the question's own tidy frames for its figures (metric histories, KL per dimension,
    ...); ``images`` PNGs that runs logged, shown as figures as they are (run id -> bytes); ``rests_on`` the runs
    the verdict rests on, when only some of ``run_ids`` (others are supporting evidence or contrast): the
    convergence gate looks at these."""

    question: str
    status: str
    numbers: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    data: pd.DataFrame = field(default_factory=pd.DataFrame)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)
    profile: str = ""
    rests_on: list[str] | None = None


STATUSES = ("confirmed", "not_confirmed", "no_significant_difference", "inconclusive_underpowered",
            "inconclusive_not_converged", "inconclusive_architecture", "inconclusive_control", "inconclusive_measure",
            "missing")


class Reader(Protocol):
    """What a question may fetch from the store besides the runs frame (build.py reads it through genlab.tracking)."""

    def history(self, run_ids: list[str], key: str) -> pd.DataFrame:
        """Every logged value of metric ``key`` of those runs: columns run_id, key, step, value."""
        ...

    def json(self, artifact_uri: str, path: str) -> Any:
        """A JSON artifact of a run, None when absent or unreadable."""
        ...

    def png(self, artifact_uri: str, path: str) -> bytes | None:
        """An image artifact of a run re-encoded as checked PNG bytes, None when absent or not an image."""
        ...


Drawn = tuple[Any, list[str]]  # a matplotlib Figure, PNG bytes a run logged (copied as is) or None; its run ids


def _read_nothing(runs: pd.DataFrame, reader: Reader) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Question:
    """One question of the study, the whole of it: ``read`` fetches what its rule needs besides the runs frame,
    ``rule(runs, **read(runs, reader))`` gives the Verdict, ``figures`` draws it (name -> Drawn; None when there is
    nothing to draw), ``galleries`` picks the runs' pictures, ``thresholds`` are the constants its text quotes
    (``th.<name>`` in its template partial, templates/<lang>/questions/<name>.md.j2)."""

    name: str  # the genlab.question tag of its runs
    rule: Callable[..., Verdict]
    figures: Callable[[Verdict, dict[str, str]], dict[str, Drawn]]
    read: Callable[[pd.DataFrame, Reader], dict[str, Any]] = _read_nothing
    galleries: dict[str, GallerySpec] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    # the metrics its rule decides on, first in its MLflow view (reports/build.py: share_views); ``curves``: those
    # of them read over steps (a line per arm), the others by their final value
    deciding: tuple[str, ...] = ()
    curves: tuple[str, ...] = ()
    # its "balance" sentence also reads the Optuna search (reports/search_trials.py): rule(..., search=...)
    reads_search: bool = False

    def verdict(self, runs: pd.DataFrame, reader: Reader) -> Verdict:
        return self.judge(runs, self.read(runs, reader))

    def judge(self, runs: pd.DataFrame, inputs: dict[str, Any]) -> Verdict:
        """The rule's verdict on ``runs`` and what ``read`` fetched, through the convergence gate."""
        return convergence_gate(self.rule(runs, **inputs), runs)


# ---------------------------------------------------------------- statistics

def stat(values: Any, run_ids: Any = ()) -> Stat:
    v = np.asarray(pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna(), dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return Stat(mean, half, n, list(run_ids))


def compare(a: Stat, b: Stat, a_values: Any, b_values: Any, min_effect: float, paired: bool = False) -> Comparison:
    """a - b against the rule's ``min_effect`` (see Comparison); ``paired``: ``a_values[i]`` and ``b_values[i]``
    come from the same seed (same length, NaN pairs dropped), else the arms are independent (Welch)."""
    d = power.difference(list(a_values), list(b_values), paired=paired)
    c = Comparison(a, b, d.diff, d.low, d.high, min_effect, "", d.p_value, d.mde, d.paired, d.n)
    return _decided(c, c.significant)


def _decided(c: Comparison, significant: bool, holm: bool = False) -> Comparison:
    """``c`` with the outcome its numbers give when its difference is (or is not) ``significant``."""
    if not c.too_few_seeds and significant and abs(c.diff) > c.min_effect:
        outcome = "greater" if c.diff > 0 else "less"
    elif c.too_few_seeds or not c.detectable:
        outcome = "underpowered"
    else:
        outcome = "none"
    return dataclasses.replace(c, outcome=outcome, holm=holm)


def run_values(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Each run's value of ``metric`` (``metrics.<metric>``), or of the frame's own column ``metric`` when a rule
    derived one (a name starting with ``_``, e.g. a gap between two metrics)."""
    return numeric(runs, metric if metric.startswith("_") else f"metrics.{metric}")


def shared_seeds(a_runs: pd.DataFrame, b_runs: pd.DataFrame) -> list[str]:
    """The seeds both arms ran, each once in each arm, when the two arms ran exactly the same seeds; else []."""
    a_seeds, b_seeds = column(a_runs, "params.seed"), column(b_runs, "params.seed")
    usable = (a_seeds.notna().all() and b_seeds.notna().all() and a_seeds.is_unique and b_seeds.is_unique)
    if not usable or len(a_seeds) == 0 or set(map(str, a_seeds)) != set(map(str, b_seeds)):
        return []
    return sorted(map(str, a_seeds))


def compare_runs(a_runs: pd.DataFrame, b_runs: pd.DataFrame, metric: str, min_effect: float,
                 b_metric: str | None = None) -> Comparison:
    """mean(a) - mean(b) of ``metric`` (of ``b_metric`` for b, when the two sides are two measures of the same
    runs) against the rule's ``min_effect``: paired on ``params.seed`` when both arms ran the same seeds, else
    Welch; two measures of the same runs are paired run by run. ``metric`` is a metric name, or a column the rule
    derived (see run_values)."""
    a_values, b_values = run_values(a_runs, metric), run_values(b_runs, b_metric or metric)
    a, b = stat(a_values, ids(a_runs)), stat(b_values, ids(b_runs))
    if b_metric is not None and len(a_runs) and ids(a_runs) == ids(b_runs):
        return compare(a, b, a_values, b_values, min_effect, paired=True)
    seeds = shared_seeds(a_runs, b_runs)
    if not seeds:
        return compare(a, b, a_values, b_values, min_effect)
    by_seed = [pd.Series(list(v), index=list(map(str, column(r, "params.seed")))).reindex(seeds)
               for v, r in ((a_values, a_runs), (b_values, b_runs))]
    return compare(a, b, by_seed[0], by_seed[1], min_effect, paired=True)


def holm_claims(comparisons: dict[str, Comparison]) -> dict[str, Comparison]:
    """The comparisons of one question's several claims, each outcome decided by Holm's correction of their
    p-values (family-wise alpha 0.05) instead of its own interval. One comparison alone is left as it is."""
    if len(comparisons) < 2:
        return dict(comparisons)
    rejected = power.holm([c.p_value for c in comparisons.values()])
    return {name: _decided(c, r, holm=True) for (name, c), r in zip(comparisons.items(), rejected, strict=True)}


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation, NaN when undefined (fewer than 3 points or a constant series)."""
    x, y = list(x), list(y)
    if len(x) < 3:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(x, y).statistic
    return float(rho) if rho is not None and np.isfinite(rho) else math.nan


# ---------------------------------------------------------------- selecting the runs

def column(runs: pd.DataFrame, name: str) -> pd.Series:
    """A column of the runs frame, or NaN/None everywhere when no run has it."""
    if name in runs.columns:
        return runs[name]
    return pd.Series([None] * len(runs), index=runs.index, dtype=object)


def numeric(runs: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(column(runs, name), errors="coerce")


THOROUGHNESS = ("paper", "full", "quick")  # study profiles, most thorough first; quick is a pipeline check


def select_runs(runs: pd.DataFrame, profile: str, questions: tuple[str, ...],
                ) -> tuple[dict[str, pd.DataFrame], dict[str, str], int]:
    """The FINISHED runs of each question for ``profile`` (``any``: per question the runs of the most thorough
    profile that has any, paper then full then quick, never a mix), the latest run per (kind, arm, seed) when a
    condition was run twice.

    Returns (runs per question, profile used per question, number of unfinished runs ignored).
    """
    question_of = tags.column(tags.QUESTION)
    if runs.empty or question_of not in runs.columns:
        fallback = "quick" if profile == "any" else profile
        return {q: runs.iloc[0:0] for q in questions}, {q: fallback for q in questions}, 0
    study = runs[column(runs, question_of).isin(questions)]
    finished = study[column(study, "status") == "FINISHED"]
    ignored = len(study) - len(finished)
    per_question, used = {}, {}
    for q in questions:
        rows = finished[column(finished, question_of) == q]
        profiles = column(rows, tags.column(tags.PROFILE))
        if profile == "any":
            chosen = next((p for p in THOROUGHNESS if (profiles == p).any()), "quick")
        else:
            chosen = profile
        rows = rows[profiles == chosen]
        rows = rows.assign(_kind=column(rows, tags.column(tags.KIND)).fillna(""),
                           _arm=column(rows, tags.column(tags.ARM)).fillna(""),
                           _seed=column(rows, "params.seed").fillna(""))
        rows = rows.sort_values("start_time").drop_duplicates(["_kind", "_arm", "_seed"], keep="last")
        per_question[q] = rows.drop(columns=["_kind", "_arm", "_seed"]).reset_index(drop=True)
        used[q] = chosen
    return per_question, used, ignored


def of_kind(runs: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The runs tagged ``genlab.kind=<kind>``."""
    return runs[column(runs, tags.column(tags.KIND)) == kind]


def arm(runs: pd.DataFrame) -> pd.Series:
    """Each run's ``genlab.arm`` tag (None where it has none)."""
    return column(runs, tags.column(tags.ARM))


def with_metrics(runs: pd.DataFrame, metrics: tuple[str, ...], missing: list[dict]) -> pd.DataFrame:
    """Keep runs that have every metric; record the others as missing (a run without a number is no number)."""
    ok = pd.Series(True, index=runs.index)
    for m in metrics:
        has = numeric(runs, f"metrics.{m}").notna()
        lacking = runs.loc[~has, "run_id"].tolist() if len(runs) else []
        if lacking:
            missing.append({"what": "metric", "metric": m, "run_ids": lacking})
        ok &= has
    return runs[ok]


def ids(runs: pd.DataFrame) -> list[str]:
    return runs["run_id"].tolist() if len(runs) else []


def cell(runs: pd.DataFrame, metric: str) -> Stat:
    """The Stat of one metric (or derived column, see run_values) over those runs (one per seed)."""
    return stat(run_values(runs, metric), ids(runs))


def tidy(runs: pd.DataFrame, x: str, x_values: pd.Series, metrics: tuple[str, ...], hue: str | None = None,
         hue_values: Any = None) -> pd.DataFrame:
    """One row per run and metric: run_id, <x>, [<hue>], metric, value (for the figures)."""
    frames = []
    for m in metrics:
        f = pd.DataFrame({"run_id": ids(runs), x: list(x_values), "metric": m,
                          "value": list(numeric(runs, f"metrics.{m}"))})
        if hue:
            f[hue] = list(hue_values)
        frames.append(f)
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"]) if frames and len(runs) else pd.DataFrame()


def claim(c: Comparison) -> str:
    """A comparison's outcome as a claim's status: a greater first term confirms it."""
    return {"greater": "confirmed", "less": "not_confirmed", "underpowered": "inconclusive_underpowered",
            "none": "no_significant_difference"}[c.outcome]


# the run kinds that log ``converged`` (a probe: both its networks did; gradvar: the VAE it measured did)
TRAINED = (tags.VAE, tags.GAN, tags.PROBE, tags.GRADVAR)


def convergence_gate(v: Verdict, runs: pd.DataFrame) -> Verdict:
    """``v``, or, when a VAE or GAN run it rests on did not converge (``converged`` != 1; a run without the metric,
    made before it was logged, counts as not converged), the status ``inconclusive_not_converged`` with
    numbers ``not_converged`` (those runs), ``not_measured`` (those without the metric), ``rule_status`` (what the
    rule said) and, for a question with claims, ``rule_claims``."""
    if v.status == "missing" or runs.empty:
        return v
    rests_on = v.run_ids if v.rests_on is None else v.rests_on
    trained = runs[runs["run_id"].isin(rests_on) & column(runs, tags.column(tags.KIND)).isin(TRAINED)]
    converged = numeric(trained, "metrics.converged")
    failed = trained[converged != 1]  # NaN (not measured) is not 1
    if failed.empty:
        return v
    v.numbers.update(rule_status=v.status, not_converged=ids(failed),
                     not_measured=ids(failed[numeric(failed, "metrics.converged").isna()]))
    if "claims" in v.numbers:
        v.numbers["rule_claims"] = v.numbers["claims"]
        v.numbers["claims"] = {k: c if c == "missing" else "inconclusive_not_converged"
                               for k, c in v.numbers["claims"].items()}
    v.status = "inconclusive_not_converged"
    return v


def with_arm(history: pd.DataFrame, runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """The history of metric ``key`` of those runs, each row labelled with its run's arm (for the curves)."""
    hist = history[history["run_id"].isin(ids(runs)) & (history["key"] == key)] if len(history) else history
    if len(hist):
        hist = hist.assign(arm=hist["run_id"].map(dict(zip(runs["run_id"], arm(runs), strict=True))))
    return hist
