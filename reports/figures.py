"""The report's figure kinds (seaborn on matplotlib's Agg backend): tidy data in, a Figure out (None when there is
nothing to draw). Each question's ``figures`` (reports/questions/) picks its data and kinds, and draws the figures
no other question shares. ``labels`` holds the axis words of one language (build.labels_of). Error bars and bands
are 95 % t-intervals over seeds, like the tables.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import stats  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
Labels = dict[str, str]


def t_interval(values: pd.Series) -> tuple[float, float]:
    """95 % t-interval of the mean (a point for one value): seaborn's ``errorbar`` callable."""
    v = np.asarray(values, float)
    m = float(v.mean())
    if len(v) < 2:
        return m, m
    h = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m - h, m + h


def label(labels: Labels, key: Any) -> str:
    # mathtext would interpret "$…$" in text that comes from runs
    return str(labels.get(str(key), key)).replace("$", r"\$")


def _named(df: pd.DataFrame, col: str, labels: Labels) -> pd.DataFrame:
    return df.assign(**{col: df[col].map(lambda v: label(labels, v))})


def panels(n: int, width: float = 4.2, height: float = 3.4) -> tuple[Figure, list[Any]]:
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def curves(history: pd.DataFrame, labels: Labels, ylabel: str, title: str) -> Figure | None:
    """A metric over epochs, one line per arm (mean over seeds, 95 % band)."""
    if history is None or history.empty:
        return None
    fig, (ax,) = panels(1, 6.0, 3.8)
    sns.lineplot(data=_named(history, "arm", labels), x="step", y="value", hue="arm", marker="o",
                 errorbar=t_interval, ax=ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    ax.set_xlabel(label(labels, "epoch"))
    ax.set_ylabel(label(labels, ylabel))
    ax.set_title(label(labels, title))
    ax.legend(title=None)
    fig.tight_layout()
    return fig


def sweep(data: pd.DataFrame, x: str, metrics: tuple[str, ...], labels: Labels, hue: str | None = None,
          log_x: str = "") -> Figure | None:
    """One panel per metric against a swept parameter: seeds as dots, the mean with its 95 % interval as a line."""
    metrics = tuple(m for m in metrics if not data.empty and (data["metric"] == m).any())
    if not metrics:
        return None
    fig, axes = panels(len(metrics), 4.2 if len(metrics) > 1 else 6.0)
    df = _named(data, hue, labels) if hue else data
    order = list(dict.fromkeys(df[hue])) if hue else None  # same colour per model in every panel
    for ax, m in zip(axes, metrics, strict=True):
        d = df[df["metric"] == m]
        sns.lineplot(data=d, x=x, y="value", hue=hue, hue_order=order, marker="o", errorbar=t_interval,
                     err_style="bars", ax=ax, legend=ax is axes[0] and hue is not None)
        sns.scatterplot(data=d, x=x, y="value", hue=hue, hue_order=order, alpha=0.35, s=18, ax=ax, legend=False)
        _x_axis(ax, sorted(d[x].unique()), log_x)
        ax.set_xlabel(label(labels, x))
        ax.set_ylabel("")
        ax.set_title(label(labels, m))
        if ax is axes[0] and hue is not None and ax.get_legend() is not None:
            ax.legend(title=None)
    fig.tight_layout()
    return fig


def lines(data: pd.DataFrame, x: str, metrics: tuple[str, ...], labels: Labels, ylabel: str, log_x: str = "",
          ) -> Figure | None:
    """Several metrics of the same unit against a swept parameter, in one panel (hue = metric)."""
    d = data[data["metric"].isin(metrics)] if not data.empty else data
    if d.empty:
        return None
    fig, (ax,) = panels(1, 6.0, 3.8)
    sns.lineplot(data=_named(d, "metric", labels), x=x, y="value", hue="metric", marker="o", errorbar=t_interval,
                 err_style="bars", ax=ax)
    _x_axis(ax, sorted(d[x].unique()), log_x)
    ax.set_xlabel(label(labels, x))
    ax.set_ylabel(label(labels, ylabel))
    ax.legend(title=None)
    fig.tight_layout()
    return fig


def _x_axis(ax: Any, values: list[float], log_x: str) -> None:
    """Log-type x axes with ticks at the swept values, as plain numbers (mathtext tick labels are slow to lay out)."""
    if log_x == "symlog":
        ax.set_xscale("symlog", linthresh=0.1)
    elif log_x == "log2":
        ax.set_xscale("log", base=2)
    if log_x:
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()


def final_values(rows: list[dict[str, Any]], key: str, by: str, labels: Labels, ylabel: str,
                 log_y: bool = False) -> Figure | None:
    """Mean ± 95 % interval of one Stat column of a table, one point per row."""
    rows = [r for r in rows if r.get(key) is not None and r[key].n]
    if not rows:
        return None
    fig, (ax,) = panels(1, 6.0, 0.55 * len(rows) + 1.2)
    names = [textwrap.fill(label(labels, r[by]), 24) for r in rows]
    means = [r[key].mean for r in rows]
    errs = [0.0 if math.isnan(r[key].half) else r[key].half for r in rows]
    ax.barh(names, means, xerr=errs if any(errs) else None, capsize=4, color=sns.color_palette()[:len(rows)])
    ax.invert_yaxis()  # first row on top, as in the table
    if log_y:
        ax.set_xscale("log")
    ax.set_xlabel(label(labels, ylabel))
    fig.tight_layout()
    return fig


def run_ids(frame: pd.DataFrame | None) -> list[str]:
    """The runs a tidy frame's figure draws from."""
    return sorted(set(frame["run_id"])) if frame is not None and len(frame) else []


def save(fig: Figure, path: Any) -> None:
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)
