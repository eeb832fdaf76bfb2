"""Several `genlab study` invocations on one store train each run once: a run claims its study key as it starts
(a RUNNING run with a heartbeat), a second invocation waits for a live claim and reuses its run, and takes over a
claim whose heartbeat stopped (its process was killed), marking that run FAILED."""

from __future__ import annotations

import _thread
import collections
import os
import re
import signal
import subprocess
import threading
import time

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from genlab import cli, study, tags, tracking

from .conftest import genlab_cmd, wait_for
from .test_scheduler import plans

# gradvar at a random VAE initialisation (nothing trained, no model logged): a run of about 2 s in a fresh process
CHEAP = """
question: q1
defaults: {dataset: synthetic, limit: 128, latent_dim: 4, beta: 1.0, n_samples: 12, batch_size: 8}
seeds: {quick: [0, 1, 2, 3]}
runs:
  - name: q1_gradvar_s{seed}
    entry: gradvar
    arm: random
"""
ONE = CHEAP.replace("[0, 1, 2, 3]", "[0]")
SLOW = CHEAP.replace("q1", "q3").replace("n_samples: 12", "n_samples: 30").replace("[0, 1, 2, 3]", "[0]")
FAST = {"GENLAB_HEARTBEAT_SECONDS": "0.5", "GENLAB_STALE_SECONDS": "3"}


def every_run(study_name: str) -> list:
    """Every run of the study, deleted ones too."""
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return client.search_runs(experiments, filter_string=tags.where(tags.STUDY, study_name),
                              run_view_type=ViewType.ALL)


def finished_per_ref(runs: list) -> dict[str, int]:
    return dict(collections.Counter(r.data.tags[tags.REF] for r in runs
                                    if r.info.status == "FINISHED" and r.info.lifecycle_stage == "active"))


def fast_claims(monkeypatch, stale: float = 3.0) -> None:
    monkeypatch.setattr(tracking, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(tracking, "STALE_SECONDS", stale)


def heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("genlab-heartbeat-") and t.is_alive()]


# ---------------------------------------------------------------- the rule

def claim(run_id: str, status: str = "RUNNING", start: int = 0, heartbeat: float = 100.0) -> tracking.Claim:
    return tracking.Claim(run_id, status, start, heartbeat)


def test_the_oldest_live_claim_holds_a_key_and_a_stale_one_is_passed_over():
    older, newer = claim("b", start=1), claim("a", start=2)
    assert tracking.claim_holder([newer, older], now=101, stale_seconds=10) == (older, [])
    tie = [claim("b", start=1), claim("a", start=1)]  # same millisecond: the smaller run id wins, for everyone
    assert tracking.claim_holder(tie, now=101, stale_seconds=10)[0].run_id == "a"
    dead = claim("dead", start=0, heartbeat=50.0)  # older, but no heartbeat for 51 s
    assert tracking.claim_holder([newer, dead, older], now=101, stale_seconds=10) == (older, [dead])
    assert tracking.claim_holder([dead], now=101, stale_seconds=10) == (None, [dead])
    assert tracking.claim_holder([], now=101) == (None, [])


def test_a_finished_run_holds_its_key_before_any_live_claim():
    done, later = claim("done", "FINISHED", start=5, heartbeat=0.0), claim("later", "FINISHED", start=9)
    live, failed = claim("live", start=1), claim("failed", "FAILED", start=0)
    assert tracking.claim_holder([live, done, failed], now=101, stale_seconds=10)[0] == done
    assert tracking.claim_holder([done, later, live], now=101, stale_seconds=10)[0] == later  # the newest
    assert tracking.claim_holder([failed], now=101, stale_seconds=10) == (None, [])  # ended: no claim


# ---------------------------------------------------------------- start_run: claim, yield, take over, heartbeat

def foreign_claim(experiment: str, key: str, heartbeat: float | None = None) -> str:
    """A RUNNING claim of ``key`` made by 'another process', its heartbeat at ``heartbeat`` (default now)."""
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    return client.create_run(experiment_id, tags={
        tags.CLAIM: key, tags.KIND: tags.VAE, tags.HEARTBEAT: str(time.time() if heartbeat is None else heartbeat),
    }).info.run_id


def test_a_new_claim_yields_to_a_live_one_and_takes_over_a_stale_one(store, monkeypatch):
    fast_claims(monkeypatch, stale=5.0)
    client = MlflowClient()
    holder = foreign_claim("claims", "k")
    with pytest.raises(tracking.Claimed) as claimed, tracking.start_run("claims", "r", {}, {tags.CLAIM: "k"}):
        raise AssertionError("a yielded claim must not run")
    assert claimed.value.holder == holder
    (yielded,) = [r for r in client.search_runs([client.get_experiment_by_name("claims").experiment_id],
                                                run_view_type=ViewType.DELETED_ONLY)]
    assert yielded.info.status == "KILLED" and yielded.data.tags[tags.FAILURE].startswith(f"yielded: run {holder}")
    assert not heartbeat_threads()

    client.set_tag(holder, tags.HEARTBEAT, str(time.time() - 60))  # its process died a minute ago
    with tracking.start_run("claims", "r", {"a": 1}, {tags.CLAIM: "k"}) as run:
        first = float(client.get_run(run.run_id).data.tags[tags.HEARTBEAT])
        time.sleep(0.7)
        assert float(client.get_run(run.run_id).data.tags[tags.HEARTBEAT]) > first  # it beats while it runs
        assert len(heartbeat_threads()) == 1
    stale = client.get_run(holder)
    assert stale.info.status == "FAILED" and stale.data.tags[tags.FAILURE].startswith("heartbeat stopped")
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert not heartbeat_threads()  # it stops with its run
    with pytest.raises(tracking.Claimed) as claimed, tracking.start_run("claims", "r", {}, {tags.CLAIM: "k"}):
        pass
    assert claimed.value.holder == run.run_id  # a FINISHED run of the key holds it: nothing trains it again


# ---------------------------------------------------------------- a study awaiting another invocation's run

@pytest.fixture
def one_run(store, tmp_path, monkeypatch) -> str:
    """A plan of one run whose claim key is 'key-<ref>' (the test makes the other invocation's claim)."""
    fast_claims(monkeypatch)
    monkeypatch.setattr(study.Study, "claim_key", lambda self, run, config: f"key-{run.name}")
    return plans(tmp_path / "plans", q1=ONE)


def later(seconds: float, action) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_a_study_waits_for_the_live_claim_of_another_invocation_and_reuses_its_run(one_run, capsys):
    other = foreign_claim("await-q1", "key-q1_gradvar_s0")
    beat = tracking.Heartbeat(other, interval=0.2)

    def finish() -> None:
        beat.stop()
        MlflowClient().set_terminated(other, "FINISHED")

    timer = later(1.5, finish)
    try:
        assert cli.main(["study", "--plans", one_run, "--study", "await"]) == 0
    finally:
        timer.cancel()
        beat.stop()
    out, err = capsys.readouterr()
    assert f"run {other} of another invocation claimed it first: waiting for it" in err
    assert "0 runs trained, 1 reused (1 of them trained by another invocation)" in out
    assert [r.info.run_id for r in every_run("await")] == []  # it made no run of its own


def test_a_study_takes_over_a_claim_whose_heartbeat_stopped(one_run, monkeypatch, capsys):
    monkeypatch.setattr(tracking, "STALE_SECONDS", 1.0)
    other = foreign_claim("takeover-q1", "key-q1_gradvar_s0")
    beat = tracking.Heartbeat(other, interval=0.2)
    timer = later(2.0, beat.stop)  # its process dies while this study waits for it
    try:
        assert cli.main(["study", "--plans", one_run, "--study", "takeover"]) == 0
    finally:
        timer.cancel()
        beat.stop()
    out, err = capsys.readouterr()
    assert "claimed it first: waiting for it" in err and "did not finish: training it here" in err
    assert "1 runs trained, 0 reused" in out
    dead = MlflowClient().get_run(other)
    assert dead.info.status == "FAILED" and dead.data.tags[tags.FAILURE].startswith("heartbeat stopped")
    (mine,) = every_run("takeover")
    assert mine.info.status == "FINISHED" and mine.data.tags[tags.CLAIM] == "key-q1_gradvar_s0"
    assert not heartbeat_threads()


def test_ctrl_c_while_waiting_leaves_nothing_of_this_invocation_running(one_run, capsys):
    other = foreign_claim("stop-q1", "key-q1_gradvar_s0")
    beat = tracking.Heartbeat(other, interval=0.2)
    timers = [later(2.0, _thread.interrupt_main), later(60.0, beat.stop)]  # the second: fail, not hang
    try:
        assert cli.main(["study", "--plans", one_run, "--study", "stop"]) == 130
    finally:
        for timer in timers:
            timer.cancel()
        beat.stop()
    assert "waiting for it" in capsys.readouterr().err
    assert every_run("stop") == [] and MlflowClient().get_run(other).info.status == "RUNNING"  # not its own


# ---------------------------------------------------------------- two processes

def study_process(folder: str, name: str) -> subprocess.Popen:
    env = {**os.environ, **FAST, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(genlab_cmd("study", "--plans", folder, "--study", name), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_studies_started_at_once_train_each_run_once(store, tmp_path):
    folder = plans(tmp_path / "plans", q1=CHEAP)
    processes = [study_process(folder, "twice") for _ in range(2)]  # the store exists (the fixture made it)
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    runs = every_run("twice")
    assert finished_per_ref(runs) == {f"q1_gradvar_s{seed}": 1 for seed in range(4)}
    assert not [r for r in runs if r.info.status == "RUNNING"]
    for r in runs:  # any other run is a claim that yielded: KILLED, deleted, never read
        assert r.info.status == "FINISHED" or (r.info.lifecycle_stage == "deleted" and r.info.status == "KILLED"
                                               and r.data.tags[tags.FAILURE].startswith("yielded: run "))
    trained = [int(re.search(r"(\d+) runs trained", out)[1]) for out, _ in outputs]
    assert sum(trained) == 4, [out for out, _ in outputs]
    assert any("trained by another invocation" in out for out, _ in outputs)  # they did overlap


@pytest.mark.slow
def test_a_killed_study_is_completed_by_the_next_invocation(store, tmp_path, monkeypatch, capsys):
    folder = plans(tmp_path / "plans", q3=SLOW)
    first = study_process(folder, "killed")
    try:
        def slow_running():  # RUNNING, and its heartbeat thread has beaten
            (run,) = every_run("killed") or [None]
            return run if run and run.info.status == "RUNNING" and float(
                run.data.tags[tags.HEARTBEAT]) > run.info.start_time / 1000 + 0.1 else None

        victim = wait_for(slow_running, 300, "the slow run")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        first.kill()
    assert victim.data.tags[tags.WORKER].endswith(f":{first.pid}")
    fast_claims(monkeypatch)
    assert cli.main(["study", "--plans", folder, "--study", "killed"]) == 0  # the second invocation, here
    assert "1 runs trained, 0 reused" in capsys.readouterr().out
    dead = MlflowClient().get_run(victim.info.run_id)
    assert dead.info.status == "FAILED" and dead.data.tags[tags.FAILURE].startswith("heartbeat stopped")
    runs = every_run("killed")
    assert finished_per_ref(runs) == {"q3_gradvar_s0": 1} and not [r for r in runs if r.info.status == "RUNNING"]
