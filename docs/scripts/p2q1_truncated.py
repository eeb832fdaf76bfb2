"""Re-judge P2Q1 as if its GANs had trained E epochs: each run's fid_proxy history cut at epoch E (a GAN run's
first epochs do not depend on its length), the plateau test recomputed on the cut curve, then P2Q1's rule.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python docs/scripts/p2q1_truncated.py STUDY EPOCHS [EPOCHS ...]

Behind docs/results.md, "The GAN's length in full".
"""

from __future__ import annotations

import sys

from genlab import convergence
from reports import build, questions


def judge_truncated(study: str, epochs: int) -> tuple[str, dict]:
    """P2Q1's verdict status on the study's full-profile runs cut at ``epochs``, and per arm: mean final
    fid_proxy and how many runs converged."""
    question = next(q for q in questions.QUESTIONS if q.name == "p2q1")
    collected = build.collect(study, "full")
    runs = collected["per_question"]["p2q1"].copy()
    history = collected["inputs"]["p2q1"]["history"]
    history = history[history.step <= epochs]
    for i, run in runs.iterrows():
        curve = history[history.run_id == run.run_id].sort_values("step").value.tolist()
        runs.loc[i, "metrics.fid_proxy"] = curve[-1]
        for key, value in convergence.plateau(curve[1:]).items():
            runs.loc[i, f"metrics.{key}"] = value
    verdict = question.judge(runs, {**collected["inputs"]["p2q1"], "history": history})
    arms = runs.groupby("tags.genlab.arm")
    return verdict.status, {"fid_proxy": arms["metrics.fid_proxy"].mean().round(1).to_dict(),
                            "converged": arms["metrics.converged"].sum().to_dict()}


if __name__ == "__main__":
    for e in map(int, sys.argv[2:]):
        print(sys.argv[1], e, *judge_truncated(sys.argv[1], e))
