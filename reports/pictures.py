"""The report's pictures: what the models of each question draw, read from their runs' ``pictures/`` artifacts
(``genlab/train/vae.py:log_pictures``, the GAN's step-0 and final grids). Every run of a data set draws from the
same latent draws and reconstructs the same test images, so the cells of a gallery compare one to one.

A gallery is a table: one row per condition (β, latent_dim, initialisation, ...), one column per picture kind.
Each condition shows its lowest seed: pictures illustrate, the numbers beside them carry the evidence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reports.verdicts import column, numeric


@dataclass
class Cell:
    path: str  # relative to the report's folder: figures/<name>.png
    run_id: str
    png: bytes


@dataclass
class Row:
    key: str  # what the rows vary: "beta", "latent_dim", "arm" (a label key of labels.yaml)
    value: Any  # the condition, a number or a label key
    cells: dict[str, Cell] = field(default_factory=dict)  # column -> picture


@dataclass
class Gallery:
    columns: list[str]  # label keys of the picture kinds, in order
    rows: list[Row]

    @property
    def run_ids(self) -> list[str]:
        return list(dict.fromkeys(c.run_id for r in self.rows for c in r.cells.values()))


RowOf = Callable[[pd.Series], tuple[str, Any] | None]  # a run -> (row key, value), or None to leave it out
CellsOf = Callable[[pd.Series], list[tuple[str, str]]]  # a run -> [(column, artifact path)]


def _kind(runs: pd.DataFrame, kind: str) -> pd.DataFrame:
    return runs[column(runs, "tags.genlab.kind") == kind] if len(runs) else runs


def _beta(run: pd.Series) -> float:
    return float(run.get("params.beta", "nan"))


def _latent_dim(run: pd.Series) -> int:
    return int(run.get("params.latent_dim", 0))


def specs() -> dict[str, tuple[str, str, RowOf, CellsOf]]:
    """Gallery name -> (question, run kind, row of a run, cells of a run)."""
    samples, interpolation = ("pic_samples", "pictures/samples.png"), ("pic_interpolation", "pictures/interpolation.png")
    return {
        "p1q1_pictures": ("p1q1", "vae", lambda r: ("arm", r.get("params.estimator", "")), lambda r: [samples]),
        "p1q2_pictures": ("p1q2", "vae", lambda r: ("beta", _beta(r)) if _latent_dim(r) != 2 else None,
                          lambda r: [samples, interpolation]),
        "p1q2_manifold": ("p1q2", "vae", lambda r: ("beta", _beta(r)) if _latent_dim(r) == 2 else None,
                          lambda r: [("pic_manifold", "pictures/manifold.png")]),
        "p1q3_pictures": ("p1q3", "vae", lambda r: ("latent_dim", _latent_dim(r)),
                          lambda r: [("ae" if _beta(r) == 0 else "vae", "pictures/reconstructions.png")]),
        "p2q1_pictures": ("p2q1", "gan", lambda r: ("arm", r.get("tags.genlab.arm", "")),
                          lambda r: [("pic_step0", "pictures/samples_step0.png"), ("pic_final", "pictures/samples.png")]),
    }


def collect(per_question: dict[str, pd.DataFrame], read_png: Callable[[str, str], bytes | None],
            ) -> dict[str, Gallery]:
    """Every gallery the runs allow. ``read_png(artifact_uri, path)`` returns checked PNG bytes or None (an absent
    picture leaves its cell empty; a gallery with no picture at all is left out)."""
    galleries = {}
    for name, (question, kind, row_of, cells_of) in specs().items():
        runs = _kind(per_question.get(question, pd.DataFrame()), kind)
        if len(runs):
            runs = runs.assign(_seed=numeric(runs, "params.seed")).sort_values("_seed", kind="stable")
        rows: dict[tuple[str, Any], Row] = {}
        for _, run in runs.iterrows():
            where = row_of(run)
            if where is None:
                continue
            row = rows.setdefault(where, Row(*where))
            for col, path in cells_of(run):
                if col in row.cells:  # a higher seed of a condition already shown
                    continue
                png = read_png(str(run["artifact_uri"]), path)
                if png is not None:
                    row.cells[col] = Cell(f"figures/{name}_{_slug(row.value)}_{col}.png", str(run["run_id"]), png)
        kept = sorted((r for r in rows.values() if r.cells), key=lambda r: _order(r.value))
        columns = list(dict.fromkeys(col for _, run in runs.iterrows() if row_of(run) for col, _ in cells_of(run)))
        if kept:
            galleries[name] = Gallery([c for c in columns if any(c in r.cells for r in kept)], kept)
    return galleries


def save(galleries: dict[str, Gallery], report_folder: Path) -> None:
    """Write every picture of the galleries under the report's folder (one copy per language folder)."""
    for gallery in galleries.values():
        for row in gallery.rows:
            for cell in row.cells.values():
                file = report_folder / cell.path
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(cell.png)


def _order(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{value:g}" if isinstance(value, float) else str(value)).strip("-") or "x"
