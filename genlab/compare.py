"""Two studies side by side, run by run: ``python -m genlab.compare STORE_A STORE_B [--study lab1] [--profile quick]``.

The same plans run twice (before and after a refactoring, at two precisions, on two machines) should give the same
runs. Each study's runs are matched by question and plan name (tags ``genlab.question``, ``genlab.ref``) and
compared: status, logged params (a run id compares equal to a run id: the stores number their runs apart) and final
metrics (timings aside: they measure the machine, not the result), within ``--rtol``. ``--verdicts A B`` also
compares two reports' ``verdicts.json`` (status and sub-claims of each question). Prints one line per difference
and a summary; exit 1 when anything differs, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from genlab import tags

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
TIMING = re.compile(r"(seconds|per_second|_ms$|^system/)")  # what a run measured of its machine


def study_runs(store: str, study: str, profile: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(question, ref) -> status, params and final metrics of the study's runs in ``store`` (a tracking URI)."""
    from genlab import tracking

    os.environ["MLFLOW_TRACKING_URI"] = store
    tracking.open_existing_store()  # a reader: a missing store is an error, not an empty one created
    frame = tracking.search_runs(filter_string=f"{tags.where(tags.STUDY, study)} and "
                                               f"{tags.where(tags.PROFILE, profile)}")
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for _, row in frame.iterrows():
        ref = row.get(tags.column(tags.REF))
        if not isinstance(ref, str):
            continue  # the study's own parent run
        runs[(row[tags.column(tags.QUESTION)], ref)] = {
            "status": row["status"],
            "params": {k[7:]: v for k, v in row.items() if k.startswith("params.") and isinstance(v, str)},
            "metrics": {k[8:]: float(v) for k, v in row.items()
                        if k.startswith("metrics.") and not TIMING.search(k[8:]) and v == v},
        }
    return runs


def _same_param(a: str | None, b: str | None) -> bool:
    return a == b or bool(a and b and RUN_ID.match(a) and RUN_ID.match(b))


def differences(a: dict, b: dict, rtol: float) -> list[str]:
    """One line per difference between two studies' runs (study_runs)."""
    out = [f"{q}/{ref}: only in {side}" for side, mine, theirs in (("A", a, b), ("B", b, a))
           for q, ref in sorted(set(mine) - set(theirs))]
    for key in sorted(set(a) & set(b)):
        ra, rb, name = a[key], b[key], "/".join(key)
        if ra["status"] != rb["status"]:
            out.append(f"{name}: status {ra['status']} vs {rb['status']}")
        for p in sorted(set(ra["params"]) | set(rb["params"])):
            if not _same_param(ra["params"].get(p), rb["params"].get(p)):
                out.append(f"{name}: param {p} {ra['params'].get(p)} vs {rb['params'].get(p)}")
        for m in sorted(set(ra["metrics"]) | set(rb["metrics"])):
            va, vb = ra["metrics"].get(m), rb["metrics"].get(m)
            if va is None or vb is None or not math.isclose(va, vb, rel_tol=rtol, abs_tol=1e-12):
                out.append(f"{name}: metric {m} {va} vs {vb}")
    return out


def verdict_differences(path_a: Path, path_b: Path) -> list[str]:
    """Status and sub-claims of each question of two reports' verdicts.json."""
    va, vb = (json.loads(Path(p).read_text()) for p in (path_a, path_b))
    out = []
    for q in sorted(set(va) | set(vb)):
        a, b = va.get(q, {}), vb.get(q, {})
        for what in ("status", "claims"):
            if a.get(what) != b.get(what):
                out.append(f"verdict {q}: {what} {a.get(what)} vs {b.get(what)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genlab.compare", description=__doc__.split("\n\n")[1])
    parser.add_argument("store_a")
    parser.add_argument("store_b")
    parser.add_argument("--study", default="lab1")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance of the metrics")
    parser.add_argument("--verdicts", nargs=2, metavar=("A_JSON", "B_JSON"), help="two reports' verdicts.json")
    args = parser.parse_args(argv)
    missing = [p for p in (args.verdicts or []) if not Path(p).is_file()]
    if missing:
        print(f"genlab.compare: no file {missing[0]}", file=sys.stderr)
        return 2
    from genlab import tracking

    try:
        a, b = (study_runs(s, args.study, args.profile) for s in (args.store_a, args.store_b))
    except tracking.TrackingError as e:
        print(f"genlab.compare: {e}", file=sys.stderr)
        return 2
    if not a or not b:
        print(f"genlab.compare: no runs of study {args.study} ({args.profile}) in "
              f"{args.store_a if not a else args.store_b}", file=sys.stderr)
        return 2
    found = differences(a, b, args.rtol) + (verdict_differences(*args.verdicts) if args.verdicts else [])
    print("\n".join(found))
    compared = sum(len(r["params"]) + len(r["metrics"]) + 1 for k, r in a.items() if k in b)
    print(f"{len(set(a) & set(b))} runs matched ({len(a)} in A, {len(b)} in B), {compared} values compared, "
          f"{len(found)} differences{' (verdicts too)' if args.verdicts else ''}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
