"""What every question's rule shares: Stat, Comparison and Verdict, the statistics, the run-frame helpers, and the
Question record that reports/questions/ fills in once per question.

Input of a rule: the DataFrame of ``genlab.tracking.search_runs`` (columns ``run_id``, ``experiment_id``, ``status``,
``start_time``, ``metrics.*``, ``params.*``, ``tags.*``), plus whatever its question's ``read`` fetched through a
Reader (metric histories ``run_id, key, step, value``; artifacts). No I/O here, no text: the templates turn a
Verdict into words in each language.

Statistics: seeds of one condition -> mean and 95 % t-interval (half-width; none with one seed). Two conditions
are "different" when the difference of means exceeds the question's minimum effect AND, when both have at least
two seeds, the 95 % Welch interval of the difference excludes 0. With one seed per condition there is no
interval: the rule falls back on the minimum effect alone, and the report says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from scipy import stats

from genlab import tags

if TYPE_CHECKING:
    from reports.pictures import GallerySpec


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


@dataclass
class Comparison:
    """a - b with its 95 % Welch interval; ``outcome`` is ``greater``, ``less`` or ``none`` (no significant difference)."""

    a: Stat
    b: Stat
    diff: float
    low: float
    high: float
    min_effect: float
    outcome: str

    @property
    def has_ci(self) -> bool:
        return not math.isnan(self.low)


@dataclass
class Verdict:
    """What the templates need: ``status`` is ``confirmed``, ``not_confirmed``, ``no_significant_difference`` or
    ``missing``; ``numbers`` the values quoted in the text; ``rows`` the table; ``data`` tidy per-run values for
    the figures; ``missing`` what runs are lacking (dicts with a ``what`` key); ``frames`` the question's own
    tidy frames for its figures (metric histories, KL per dimension, ...); ``images`` PNGs that runs logged,
    shown as figures as they are (run id -> bytes)."""

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

    def verdict(self, runs: pd.DataFrame, reader: Reader) -> Verdict:
        return self.rule(runs, **self.read(runs, reader))


# ---------------------------------------------------------------- statistics

def stat(values: Any, run_ids: Any = ()) -> Stat:
    v = np.asarray(pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna(), dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return Stat(mean, half, n, list(run_ids))


def compare(a: Stat, b: Stat, a_values: Any, b_values: Any, min_effect: float) -> Comparison:
    """Is a greater or less than b by more than ``min_effect``, beyond the 95 % Welch interval when seeds allow?"""
    diff = a.mean - b.mean
    low = high = math.nan
    if a.n >= 2 and b.n >= 2:
        va = float(np.var(np.asarray(list(a_values), float), ddof=1)) / a.n
        vb = float(np.var(np.asarray(list(b_values), float), ddof=1)) / b.n
        se2 = va + vb
        if se2 == 0:  # identical seeds: no noise at all
            low = high = diff
        else:
            dof = se2 ** 2 / ((va ** 2 / (a.n - 1) if va else 0.0) + (vb ** 2 / (b.n - 1) if vb else 0.0))
            h = float(stats.t.ppf(0.975, dof)) * math.sqrt(se2)
            low, high = diff - h, diff + h
    has_ci = not math.isnan(low)
    if math.isnan(diff):
        outcome = "none"
    elif diff > min_effect and (not has_ci or low > 0):
        outcome = "greater"
    elif diff < -min_effect and (not has_ci or high < 0):
        outcome = "less"
    else:
        outcome = "none"
    return Comparison(a, b, diff, low, high, min_effect, outcome)


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


def select_runs(runs: pd.DataFrame, profile: str, questions: tuple[str, ...],
                ) -> tuple[dict[str, pd.DataFrame], dict[str, str], int]:
    """The FINISHED runs of each question for ``profile`` (``any``: per question the full-profile runs if there are
    any, else the quick ones, never a mix), the latest run per (kind, arm, seed) when a condition was run twice.

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
            chosen = "full" if (profiles == "full").any() else "quick"
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
    """The Stat of one metric over those runs (one per seed)."""
    return stat(numeric(runs, f"metrics.{metric}"), ids(runs))


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
    return {"greater": "confirmed", "less": "not_confirmed"}.get(c.outcome, "no_significant_difference")


def with_arm(history: pd.DataFrame, runs: pd.DataFrame, key: str) -> pd.DataFrame:
    """The history of metric ``key`` of those runs, each row labelled with its run's arm (for the curves)."""
    hist = history[history["run_id"].isin(ids(runs)) & (history["key"] == key)] if len(history) else history
    if len(hist):
        hist = hist.assign(arm=hist["run_id"].map(dict(zip(runs["run_id"], arm(runs), strict=True))))
    return hist
