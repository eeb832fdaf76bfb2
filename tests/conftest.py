"""Shared fixtures: a throw-away MLflow store per test, and the real data set when it is installed."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core: one torch thread each (and in their child processes), else
    # the workers' threads wait for each other (2.7-5x slower measured on 2 busy cores).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)


@contextlib.contextmanager
def store_in(folder: Path, template: Path | None = None) -> Iterator[str]:
    """Work in ``folder`` with MLflow pointed at ``folder/mlflow.db`` (a copy of ``template`` if given, else created)
    and no active run; yields the store URI. Restores the working directory and environment after."""
    if template is not None:
        shutil.copy(template, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        from genlab import tracking

        tracking.init_store()
        yield uri


@pytest.fixture(scope="session")
def empty_store_file(tmp_path_factory) -> Path:
    """An empty SQLite tracking store, made once per session (creating the schema costs seconds)."""
    root = tmp_path_factory.mktemp("template-store")
    with store_in(root):
        pass
    return root / "mlflow.db"


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store_file) -> str:
    """A fresh SQLite tracking store (a copy of the empty one) in a temporary working directory; returns its URI.
    Experiments the test creates keep their artifacts under the test's folder. Uses the test's own monkeypatch,
    so whatever the test patches too is undone in one place."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(empty_store_file, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    from genlab import tracking

    tracking.init_store()
    return uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres() -> str:
    """``postgresql://postgres@127.0.0.1:PORT`` of a throw-away server with databases ``optuna`` and ``mlflow``."""
    if not PG_BINS:
        pytest.skip("PostgreSQL server binaries absent (/usr/lib/postgresql/*/bin/initdb): apt install postgresql")
    bin_dir = PG_BINS[0].parent
    as_user: list[str] = []
    data_dir = Path(tempfile.mkdtemp(prefix="genlab-pg-"))
    if os.geteuid() == 0:  # initdb and pg_ctl refuse root: run them as the postgres user, on a dir it owns
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(data_dir, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data_dir / "db")]
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data_dir / "db"), "-A", "trust", "-U", "postgres",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    subprocess.run([*pg_ctl, "-l", str(data_dir / "server.log"), "-w", "-t", "60", "start", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {data_dir} -c fsync=off"],
                   check=True, capture_output=True)
    try:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE optuna")
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def fashion_mnist_dir() -> Path:
    from genlab import data

    try:
        return data.find_dataset_dir("fashion-mnist")
    except data.DataError as e:
        pytest.skip(f"Fashion-MNIST files absent: {e}")


def ran(result) -> tuple[str, dict[str, float]]:
    """The run id and final metrics of an entry's run (a genlab.entries.Result)."""
    return result.run_id, dict(result.metrics)


def run_cli(argv: list[str]) -> int:
    """genlab.cli.main's exit code, whether it returns it or argparse raises SystemExit (in this process)."""
    from genlab import cli

    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


def genlab_cmd(*args: str) -> list[str]:
    """The command line of the genlab CLI run by this interpreter (for subprocess tests)."""
    return [sys.executable, "-m", "genlab", *args]


def image_steps(client, run_id: str, key: str) -> list[int]:
    """The steps of a run's image series ``key`` (``mlflow.log_image(key=..., step=...)``: images/<key>+step+<n>+...)."""
    names = [f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(run_id, "images")]
    return sorted({int(n.split("+")[2]) for n in names if n.startswith(f"{key}+step+") and n.endswith(".png")})


def wait_for(condition, timeout: float, what: str):
    """``condition()``'s first truthy value, polled until ``timeout`` seconds; AssertionError naming ``what`` after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def assert_timed(logged: dict[str, float], phases: set[str]) -> None:
    """A training run's where-the-time-went metrics (genlab.timing): each of ``phases`` timed, nothing unknown,
    and the phases, with seconds_other, adding up to seconds_total."""
    from genlab import timing

    timed = {k.removeprefix("seconds_") for k in logged if k.startswith("seconds_")} - {"total", "other"}
    assert phases <= timed <= set(timing.PHASES), timed
    assert all(logged[f"seconds_{p}"] >= 0 for p in timed) and logged["seconds_train"] > 0
    phases_sum = sum(logged[f"seconds_{p}"] for p in timed)
    # phases never overlap: together they fit in the total, and what is left is seconds_other
    assert 0 < phases_sum <= logged["seconds_total"] and logged["seconds_other"] >= 0, (phases_sum, logged)
    assert abs(phases_sum + logged["seconds_other"] - logged["seconds_total"]) < 1e-6 * logged["seconds_total"]


@pytest.fixture(autouse=True)
def default_sigint_handler():
    """Each test starts with Python's own SIGINT handler: the Ctrl-C tests need it, and a handler left behind by an
    earlier test in the same worker (found 2026-12-07, not yet traced) would make their interrupt a no-op."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
