"""The report's links in MLflow's own UI, in Chromium: `mlflow server` on a small planted store (fake_study), the
report built on it, then its P2Q1 link opened. The UI must be in its Model training mode, on the P2Q1 runs grouped
by arm (seeds averaged: one line per arm), with fid_proxy over steps the first chart; a run link of the report
opens in Model training mode too. The screenshot is saved as tests/artifacts/mlflow-ui-p2q1.png."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..conftest import free_port, run_cli, store_in
from . import fake_study
from .browser import artifacts_dir, chromium_driver

ARMS = ("vae_decoder", "random", "ae_decoder", "ae_decoder_matched")
BOOT_SECONDS = 90  # `mlflow server` on two busy cores: 12-25 s measured


@contextlib.contextmanager
def mlflow_server(uri: str, port: int, folder: Path) -> Iterator[subprocess.Popen]:
    """`mlflow server` on the store, in its own process group (its uvicorn worker is a child): ended with it."""
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                             "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=folder, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        yield proc
    finally:  # killed outright: it holds nothing but a throw-away store, and a graceful stop costs seconds
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def wait_healthy(base: str, proc: subprocess.Popen, folder: Path) -> None:
    deadline = time.monotonic() + BOOT_SECONDS
    while time.monotonic() < deadline:
        assert proc.poll() is None, (folder / "server.log").read_text()[-2000:]
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer in {BOOT_SECONDS} s: {(folder / 'server.log').read_text()[-2000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory, empty_store_file):
    """The server boots while the store is planted and the report built (both take seconds on busy cores)."""
    tmp = tmp_path_factory.mktemp("mlflow-ui")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with store_in(tmp, empty_store_file) as uri, mlflow_server(uri, port, tmp) as proc:
        store = fake_study.build(uri, confirmed=True)
        with contextlib.redirect_stdout(io.StringIO()):
            assert run_cli(["report", "--study", "lab1", "--ui-url", base, "--out", str(tmp / "report")]) == 0
        wait_healthy(base, proc, tmp)
        yield {"base": base, "dir": tmp, "store": store, "md": (tmp / "report" / "en" / "report.md").read_text(),
               "verdicts": json.loads((tmp / "report" / "verdicts.json").read_text())}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium_driver(tmp_path_factory.mktemp("chromium"), "1600,1000")
    yield driver
    driver.quit()


def p2q1_links(md: str) -> tuple[str, str]:
    """The P2Q1 section's link to its view, and its first run link, as the report prints them."""
    section = md[md.index("## P2Q1"):]
    section = section[:section.find("\n## ", 1)]
    view = re.search(r"\*\*In the MLflow UI\*\* \(`make ui`\): \[[^\]]+\]\((http[^)\s]+)\)", section)
    run = re.search(r"\]\((http[^)\s]+/runs/[0-9a-f]{32}\?[^)\s]+)\)", section)
    assert view and run, section[-1500:]
    return view.group(1), run.group(1)


def side_nav(driver) -> str:
    """The UI's side bar: its items are Runs / Models / Model registry in Model training mode, Overview / Sessions /
    Evaluation runs / AI Gateway in GenAI mode."""
    return driver.execute_script("const a = document.querySelector('aside'); return a ? a.innerText : '';")


def texts(driver, test_id: str) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(`[data-testid='${arguments[0]}']`)).map(e => e.innerText);",
        test_id)


def first_chart(driver) -> dict | None:
    """The first chart card: its title, legend entries ('<line> (<metric>)': a group's name for a line that
    averages the group's runs, a run's name for a run's own line) and x axis title."""
    return driver.execute_script("""
        const c = document.querySelector("[data-testid='experiment-view-compare-runs-card']");
        if (!c) return null;
        const lines = c.innerText.split("\\n").map(l => l.trim());
        return {title: lines[0], legend: lines.filter(l => /^\\S+ \\(\\w+\\)$/.test(l)).sort(),
                x: Array.from(c.querySelectorAll(".xtitle")).map(e => e.textContent)};""")


def test_the_reports_p2q1_link_opens_its_runs_grouped_by_arm_with_fid_proxy_first(served, browser):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    view, _ = p2q1_links(served["md"])
    assert view == served["verdicts"]["p2q1"]["mlflow_view"]
    browser.get(view)
    # the P2Q1 chart drawn over steps, one averaged line per arm (not one line per run)
    expected = {"title": "fid_proxy", "legend": sorted(f"{arm} (fid_proxy)" for arm in ARMS), "x": ["Step"]}
    with contextlib.suppress(TimeoutException):
        WebDriverWait(browser, 45, poll_frequency=0.5).until(lambda d: first_chart(d) == expected)
    assert first_chart(browser) == expected
    nav = side_nav(browser)
    assert "Model registry" in nav and "Evaluation runs" not in nav, nav  # Model training mode
    assert texts(browser, "saved-views-trigger") == ["P2Q1 by arm (lab1, full)"]
    assert texts(browser, "column-selection-dropdown") == ["Group by: genlab.arm"]
    sections = texts(browser, "experiment-view-compare-runs-section-header")
    assert sections[0].startswith("P2Q1: the deciding metrics"), sections
    page = browser.execute_script("return document.body.innerText")
    assert "12 matching runs" in page  # P2Q1's GANs, none of the other questions' runs in the experiment
    assert {f"Group: {arm}" for arm in ARMS} <= {line.strip() for line in page.splitlines()}
    shot = artifacts_dir() / "mlflow-ui-p2q1.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as image:
        assert image.width >= 1500 and len(np.unique(np.asarray(image.convert("L")))) > 10


def test_a_run_link_of_the_report_opens_in_model_training_mode(served, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    _, run = p2q1_links(served["md"])
    browser.get(run)
    WebDriverWait(browser, 30, poll_frequency=0.5).until(
        lambda d: "gan z4 init=" in d.execute_script("return document.body.innerText"))  # the run's name
    nav = side_nav(browser)
    assert "Model registry" in nav and "Evaluation runs" not in nav, nav
