"""Calibration of the sample-quality metrics: score reference image sets whose ranking a person knows, so that a
FID-proxy of 3 or 300 can be read. One MLflow run (``genlab.kind=calibration``) with ``<case>_<metric>`` metrics
and the table as ``calibration.csv`` / ``calibration.json``.

Every set is scored against the cached statistics of the test split. The perturbed sets are perturbations of the
*train_vs_test* images (train-split images, noise drawn once and scaled), not of the test images themselves: the
test images compared with their own statistics have no sampling error at all, so "test + noise" would measure the
noise against a zero floor while train_vs_test carries the finite-sample bias of FID (large with 500 test images);
perturbing one sample keeps that floor in every row, and each row differs from train_vs_test by its perturbation only.

Expected ranking: train_vs_test (two samples of the same distribution) < noise_005 < noise_010, and
< single_class (one class only: precision high, recall low); uniform_noise is far away.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import sys
import time

import torch
import torch.nn.functional as F

from genlab import data, tags
from genlab.checks import check, check_declared, resolve_device
from genlab.configs import CalibrationConfig
from genlab.entries import Context, Result

METRICS = ("fid_proxy", "kid_proxy", "kid_proxy_std", "precision", "recall", "density", "coverage", "class_coverage",
           "is_proxy")
CASES = {
    "train_vs_test": "train-split images (the classifier saw them) vs the test split",
    "noise_005": "the same train images + Gaussian noise sigma 0.05, clipped to [0, 1]",
    "noise_010": "the same train images + Gaussian noise sigma 0.1 (the same draw x2), clipped to [0, 1]",
    "blur": "the same train images blurred (Gaussian, sigma 1 pixel)",
    "single_class": "train-split images of one class only (mode collapse)",
    "uniform_noise": "uniform noise images in [0, 1]",
}


def validate(cfg: CalibrationConfig) -> None:
    """Raise ConfigError (one line) for any invalid value; called before any run is created."""
    check_declared(cfg)  # samples >= 129: quality.MIN_SAMPLES (tests/test_calibrate.py checks they agree)
    check(bool(cfg.experiment.strip()), "experiment", cfg.experiment, "a non-empty name")


def gaussian_blur(images: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Blur (N, 1, H, W) images with a (2*ceil(2 sigma)+1)-tap Gaussian, zero padding (black borders)."""
    radius = max(1, int(2 * sigma + 0.999))
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    images = F.conv2d(images, taps.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(images, taps.view(1, 1, -1, 1), padding=(radius, 0))


def reference_sets(splits: data.Splits, cfg: CalibrationConfig) -> dict[str, torch.Tensor]:
    """The image sets of CASES, float (N, 1, 28, 28) in [0, 1], deterministic for a seed."""
    rng = torch.Generator().manual_seed(cfg.seed)
    train = data.to_float(splits.train_x[:cfg.samples])
    noise = torch.randn(train.shape, generator=rng)
    one_class = splits.train_x[splits.train_y == cfg.single_class][:cfg.samples]
    return {
        "train_vs_test": train,
        "noise_005": (train + 0.05 * noise).clamp_(0, 1),
        "noise_010": (train + 0.1 * noise).clamp_(0, 1),
        "blur": gaussian_blur(train),
        "single_class": data.to_float(one_class),
        "uniform_noise": torch.rand(train.shape, generator=rng),
    }


def calibrate(scorer, splits: data.Splits, cfg: CalibrationConfig) -> list[dict]:
    """Score every reference set: one row per case with n, the metrics, and a description."""
    rows = []
    for case, images in reference_sets(splits, cfg).items():
        t0 = time.perf_counter()
        row = {"case": case, "n": len(images), **scorer.score(images)}
        row["seconds"] = time.perf_counter() - t0
        row["description"] = CASES[case]
        print(f"{case:14s} fid_proxy {row['fid_proxy']:10.3f}  kid_proxy {row['kid_proxy']:9.4f}  "
              f"precision {row['precision']:.3f}  recall {row['recall']:.3f}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def format_table(rows: list[dict]) -> str:
    """A Markdown table of the rows (what the README shows)."""
    header = ["case", "n", *METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["case"], str(row["n"])] + [f"{row[m]:.4g}" for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(cfg: CalibrationConfig, context: Context) -> Result:
    """Validate, load data and the scorer (training the classifier once if the store has none), then one run."""
    from genlab import tracking
    from genlab.runs.classifier import get_scorer

    validate(cfg)
    device = resolve_device(cfg.device)
    splits = context.data(cfg.dataset)
    scorer = get_scorer(cfg.dataset, device, splits=splits)
    run_tags = {tags.KIND: tags.CALIBRATION, tags.DATASET: cfg.dataset, tags.DEVICE: str(device), **context.tags}
    params = {**dataclasses.asdict(cfg), "fid_classifier": scorer.run_id}
    note = (f"Sample-quality metrics of reference image sets against the {cfg.dataset} test split (train images, "
            "noise, blur, one class, uniform noise): what a fid_proxy value means. See calibration.csv.")
    with tracking.start_run(cfg.experiment, f"calibration {cfg.dataset} s{cfg.seed}", params, run_tags,
                            parent_run_id=context.parent_run_id, description=note) as run:
        rows = calibrate(scorer, splits, cfg)
        metrics = {f"{row['case']}_{m}": row[m] for row in rows for m in METRICS}
        run.log_metrics(metrics)
        run.log_text(to_csv(rows), "calibration.csv")
        tracking.log_json(run, rows, "calibration.json")
    return Result(run.run_id, metrics, (format_table(rows),
                                        f"run {run.run_id} finished (artifacts calibration.csv, calibration.json)"))
