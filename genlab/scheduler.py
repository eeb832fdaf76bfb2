"""Where a study's runs execute: here, one after the other (``--workers 1``); on a local Dask cluster of
single-threaded worker processes (``--workers N``); or on a running Dask cluster (``--cluster ADDRESS``).

The study (genlab/study.py, on the runs genlab/plans.py expands) decides *what* runs and *when* (a run is submitted
once the runs it refers to are FINISHED); a backend only executes. A task is plain data (the entry's name, its
config, tags, the tracking store), so any worker process with genlab installed can run it. Dask rather than Ray:
its local cluster starts faster, in fewer processes and with less memory (docs/results.md, Benchmark).
"""

from __future__ import annotations

import collections
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from genlab import logs, tags

_SPLITS: dict = {}  # (dataset, limit) -> splits loaded by this process, reused by the next runs it executes


class WorkerDied(RuntimeError):
    """The worker process running a task died (killed, out of memory, ...): its run is marked FAILED."""


@dataclass
class Task:
    """Everything a worker needs to execute one planned run (picklable: no modules, no open stores)."""

    name: str  # the plan's name of the run
    entry: str  # entry point (train_vae, train_gan, ...)
    config: Any  # the entry's config dataclass, references resolved
    tags: dict[str, str]
    tracking_uri: str
    threads: int = 0  # torch intra-op threads (0 = leave torch's default)


def execute(task: Task) -> tuple[str, float]:
    """Run one planned run in this process through its entry point; returns the run id and its seconds."""
    start = time.perf_counter()
    os.environ["MLFLOW_TRACKING_URI"] = task.tracking_uri
    os.environ.pop("MLFLOW_RUN_ID", None)  # a worker started under `mlflow run` must not adopt that run
    logs.quiet_libraries()
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    from genlab.entries import BY_NAME, Context

    run_tags = {**task.tags, tags.WORKER: f"{socket.gethostname()}:{os.getpid()}"}  # to find its logs or kill it
    result = BY_NAME[task.entry].run(task.config, Context(tags=run_tags, splits=_SPLITS))
    return result.run_id, time.perf_counter() - start


class InProcess:
    """The default (``--workers 1``): each task runs here, at once, in plan order."""

    capacity = 1

    def __init__(self) -> None:
        self._done: collections.deque[tuple[str, tuple[str, float] | BaseException]] = collections.deque()

    def submit(self, task: Task) -> None:
        try:
            self._done.append((task.name, execute(task)))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # the entry marked its run FAILED; the study goes on without what needs it
            self._done.append((task.name, e))

    def running(self) -> int:
        return len(self._done)

    def next_done(self, timeout: float | None = None) -> tuple[str, tuple[str, float] | BaseException] | None:
        return self._done.popleft()  # a task here is done when submit returns

    def close(self, interrupted: bool = False) -> None:
        pass


class DaskBackend:
    """Tasks on Dask workers: a LocalCluster of ``workers`` single-threaded processes, or the cluster at
    ``address``. ``gpus_per_run`` > 0: each task asks for that much of the worker resource ``GPU``."""


    def __init__(self, workers: int, address: str = "", gpus_per_run: float = 0.0) -> None:
        import dask
        from distributed import Client, LocalCluster

        logs.quiet_libraries()
        self.resources = {"GPU": gpus_per_run} if gpus_per_run else None
        self.cluster = None
        if address:
            try:
                self.client = Client(address, timeout="20s")
            except (OSError, TimeoutError) as e:  # nothing has run yet: bad input, one line, exit 2
                from genlab.checks import ConfigError

                raise ConfigError(f"cluster: no Dask scheduler answers at {address} ({type(e).__name__})") from None
        else:
            # The settings of cluster/dask.yaml (what users start their own workers with): a task whose worker dies
            # is not retried on another worker (its run is already FAILED, the next `genlab study` retries it), and
            # the nanny leaves glibc's memory trimming alone (its threshold of 65536 slows torch training down:
            # docs/results.md, Benchmark).
            with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                                  "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            host="127.0.0.1", dashboard_address=None, resources=self.resources,
                                            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
            try:
                self.client = Client(self.cluster)
            except BaseException:
                self.cluster.close()
                raise
        self._futures: dict[Any, str] = {}

    @property
    def capacity(self) -> int:
        """Tasks to hold at once: one per worker thread of the cluster now. Dask would send every submitted run to
        a worker at once (each is its own task group, so none is queued at the scheduler), where it waits behind a
        run of minutes instead of going to the next free worker in the study's order, and dies with its worker."""
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, task: Task) -> None:
        future = self.client.submit(execute, task, key=f"{task.name}-{uuid.uuid4().hex[:8]}", pure=False,
                                    resources=self.resources)
        self._futures[future] = task.name

    def running(self) -> int:
        return len(self._futures)

    def next_done(self, timeout: float | None = None) -> tuple[str, tuple[str, float] | BaseException] | None:
        """The next task to end and its result (the exception it raised), or None when none ends in ``timeout``."""
        from distributed import KilledWorker, wait

        try:
            done, _ = wait(list(self._futures), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return None
        future = next(iter(done))
        name = self._futures.pop(future)
        if future.status == "finished":
            return name, future.result()
        error = future.exception()
        if isinstance(error, KilledWorker):
            return name, WorkerDied("its worker process died")
        return name, error

    def close(self, interrupted: bool = False) -> None:
        if interrupted and self._futures:
            self.client.cancel(list(self._futures))
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()  # stops the worker processes, and any run still going in them


def start(workers: int, address: str, gpus_per_run: float) -> InProcess | DaskBackend:
    if workers == 1 and not address:
        return InProcess()
    return DaskBackend(workers, address, gpus_per_run)
