"""Replay a finished study's runs on N workers in two orders, from their measured durations: plan order (what
`genlab study` did before it ordered by critical path) and the critical-path order it uses now.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python docs/scripts/study_schedule.py STUDY PROFILE [WORKERS]

A run starts when its references are done and a worker is free; the worker-less overhead between runs is ignored.
Behind experiments/README.md, "Wall time (measured)".
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable
from typing import Any

from genlab import tags, tracking
from genlab.configs import StudyConfig
from genlab.plans import PlannedRun, critical_path_costs, dependencies, load_plans, select


def durations(study: str, profile: str) -> dict[str, float]:
    """Seconds of each FINISHED run of the study and profile, by plan name (the latest run of a name)."""
    runs = tracking.search_runs(filter_string=f"{tags.where(tags.STUDY, study)} and {tags.where(tags.PROFILE, profile)}"
                                              " and attributes.status = 'FINISHED'")
    runs = runs.sort_values("start_time")
    return {r[f"tags.{tags.REF}"]: (r.end_time - r.start_time).total_seconds() for _, r in runs.iterrows()
            if isinstance(r.get(f"tags.{tags.REF}"), str)}


def replay(runs: list[PlannedRun], seconds: dict[str, float], workers: int, key: Callable[[PlannedRun], Any]) -> float:
    """The wall time of list scheduling ``runs`` on ``workers``, ready runs taken in the order of ``key``."""
    deps, done, clock = dependencies(runs), set(), 0.0
    waiting, busy = sorted(runs, key=key), []  # busy: (end time, name)
    while waiting or busy:
        ready = [r for r in waiting if deps[r.name] <= done]
        while ready and len(busy) < workers:
            run = ready.pop(0)
            waiting.remove(run)
            heapq.heappush(busy, (clock + seconds.get(run.name, 0.0), run.name))
        clock, name = heapq.heappop(busy)
        done.add(name)
    return clock


if __name__ == "__main__":
    study, profile = sys.argv[1], sys.argv[2]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    runs = select(load_plans(StudyConfig(profile=profile)), "all")
    seconds = durations(study, profile)
    chain = critical_path_costs(runs)
    plan = replay(runs, seconds, workers, runs.index)
    critical = replay(runs, seconds, workers, lambda r: (-chain[r.name], runs.index(r)))
    print(f"{len(seconds)} measured runs, {sum(seconds.values()):.0f} run-seconds; {workers} workers: plan order "
          f"{plan:.0f} s, critical-path order {critical:.0f} s (lower bound {sum(seconds.values()) / workers:.0f} s)")
