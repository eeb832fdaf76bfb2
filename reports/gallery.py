"""The report's pictures: what the models of each question draw, read from their runs' ``pictures/`` artifacts
(``genlab/runs/vae.py:log_pictures``, the GAN's step-0 and final grids). Every run of a data set draws from the
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

from reports.verdicts import numeric, of_kind


@dataclass
class Cell:
    path: str  # relative to the report's folder: figures/<name>.png
    run_id: str
    png: bytes


@dataclass
class Row:
    key: str  # what the rows vary: "beta", "latent_dim", "arm" (a label key: build.labels_of)
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


@dataclass(frozen=True)
class GallerySpec:
    """Which runs of a question a gallery shows and how: runs of ``kind``; ``row_of`` places a run in a row,
    ``cells_of`` names its pictures (column label key, artifact path)."""

    kind: str
    row_of: RowOf
    cells_of: CellsOf


def beta(run: pd.Series) -> float:
    return float(run.get("params.beta", "nan"))


def latent_dim(run: pd.Series) -> int:
    return int(run.get("params.latent_dim", 0))


def collect(runs: pd.DataFrame, specs: dict[str, GallerySpec], read_png: Callable[[str, str], bytes | None],
            ) -> dict[str, Gallery]:
    """Every gallery of one question that its runs allow. ``read_png(artifact_uri, path)`` returns checked PNG bytes
    or None (an absent picture leaves its cell empty; a gallery with no picture at all is left out)."""
    galleries = {}
    for name, spec in specs.items():
        gallery = _gallery(name, spec, of_kind(runs, spec.kind) if len(runs) else runs, read_png)
        if gallery is not None:
            galleries[name] = gallery
    return galleries


def _gallery(name: str, spec: GallerySpec, runs: pd.DataFrame, read_png: Callable[[str, str], bytes | None],
             ) -> Gallery | None:
    if len(runs):
        runs = runs.assign(_seed=numeric(runs, "params.seed")).sort_values("_seed", kind="stable")
    rows: dict[tuple[str, Any], Row] = {}
    for _, run in runs.iterrows():
        where = spec.row_of(run)
        if where is None:
            continue
        row = rows.setdefault(where, Row(*where))
        for col, path in spec.cells_of(run):
            if col in row.cells:  # a higher seed of a condition already shown
                continue
            png = read_png(str(run["artifact_uri"]), path)
            if png is not None:
                row.cells[col] = Cell(f"figures/{name}_{_slug(row.value)}_{col}.png", str(run["run_id"]), png)
    kept = sorted((r for r in rows.values() if r.cells), key=lambda r: _order(r.value))
    columns = list(dict.fromkeys(col for _, run in runs.iterrows() if spec.row_of(run) for col, _ in spec.cells_of(run)))
    return Gallery([c for c in columns if any(c in r.cells for r in kept)], kept) if kept else None


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
