"""Bad input at every entry point: one table of cases, each checked the same way.

Every case must: exit with its code (2 = bad input, nothing created; 1 = runtime failure after the run started,
the run marked FAILED), print exactly one line on stderr that names the problem, never a traceback, leave no run
RUNNING and no partial output file. Most cases run in-process (same code path as the CLI, no start-up cost);
those marked ``process=True`` run as a real ``genlab`` process with the data look-up cut off from installed copies.

To extend: add ``Case``s to the entry point's list in ``TABLE`` (or a new list for a new entry point).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from genlab import cli, data
from genlab.configs import VAEConfig
from genlab.entries import ENTRIES
from genlab.runs import vae as vae_entry
from genlab.train import vae

from .conftest import PRELUDE, all_runs, child_env, isolate_data, running

Setup = Callable[[Path, str], dict[str, str]]  # (case folder, store URI) -> placeholders for args, "$NAME" = env var


@dataclass
class Case:
    id: str
    args: list[str]  # after the subcommand; "{tmp}" = the case's folder, "{run}" = a run made by setup
    names: str  # the one stderr line must contain this (the parameter, the file, the problem)
    code: int = 2
    setup: Setup | None = None
    process: bool = False
    absent: list[str] = field(default_factory=list)  # globs under the case folder that must match nothing after


# ---------------------------------------------------------------- setups

def idx_files(corruption: str | None = None) -> Setup:
    """A tiny Fashion-MNIST folder in $GENLAB_DATA_DIR, its training images optionally corrupted."""
    def setup(tmp: Path, uri: str) -> dict[str, str]:
        folder = tmp / "data-dir" / "fashion-mnist"
        folder.mkdir(parents=True)
        for key, (name, _) in data.FILES["fashion-mnist"].items():
            n = 20 if key.startswith("train") else 10
            array = np.zeros((n, 28, 28), np.uint8) if key.endswith("images") else np.arange(n, dtype=np.uint8) % 10
            data.write_idx(folder / name.removesuffix(".gz"), array)
        target = folder / "train-images-idx3-ubyte"
        raw = target.read_bytes()
        if corruption == "truncated":
            target.write_bytes(raw[:-100])
        elif corruption == "magic":
            target.write_bytes(b"\x12\x34" + raw[2:])
        return {}
    return setup


def earlier_run(checkpoint: str | None, kind: str = "vae") -> Setup:
    """A crashed run (FAILED) in the store, with a checkpoint artifact that is 'corrupt' (a real checkpoint cut
    in half), 'foreign' (a valid torch file that is not a genlab checkpoint) or absent (None)."""
    def setup(tmp: Path, uri: str) -> dict[str, str]:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("reliability")
        experiment_id = experiment.experiment_id if experiment else client.create_experiment("reliability")
        run = client.create_run(experiment_id, tags={"genlab.kind": kind})
        for k, v in vae_entry.params_of(VAEConfig(dataset="synthetic", epochs=2, limit=200)).items():
            client.log_param(run.info.run_id, k, v)
        if checkpoint:
            path = tmp / "last.pt"
            if checkpoint == "corrupt":
                torch.save({"model": vae.VAE(4).state_dict(), "epoch": 1}, path)
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            else:
                torch.save({"weights": torch.zeros(3)}, path)
            client.log_artifact(run.info.run_id, str(path), "checkpoint")
        client.set_terminated(run.info.run_id, "FAILED")
        return {"run": run.info.run_id}
    return setup


def finished_vae(latent_dim: int) -> Setup:
    """A FINISHED VAE run (params only: the checks on kind, status and params come before any weights load)."""
    def setup(tmp: Path, uri: str) -> dict[str, str]:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("reliability")
        experiment_id = experiment.experiment_id if experiment else client.create_experiment("reliability")
        run = client.create_run(experiment_id, tags={"genlab.kind": "vae"})
        for k, v in vae_entry.params_of(VAEConfig(dataset="synthetic", latent_dim=latent_dim)).items():
            client.log_param(run.info.run_id, k, v)
        client.set_terminated(run.info.run_id, "FINISHED")
        return {"run": run.info.run_id}
    return setup


def missing_store(tmp: Path, uri: str) -> dict[str, str]:
    return {"$MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'nope.db'}"}


def a_file(tmp: Path, uri: str) -> dict[str, str]:
    (tmp / "afile").write_text("not a folder")
    return {}


def bogus_store(tmp: Path, uri: str) -> dict[str, str]:
    return {"$MLFLOW_TRACKING_URI": "bogus://nowhere"}


# ---------------------------------------------------------------- the table

SYN = ["--dataset", "synthetic"]
TINY = [*SYN, "--epochs", "1", "--limit", "128", "--batch-size", "64", "--latent-dim", "2"]
UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"
STORAGE = ["--storage", "sqlite:///{tmp}/optuna.db"]  # search cases: a bad input must not create it

TABLE: dict[str, list[Case]] = {
    "train-vae": [
        Case("latent_dim zero", ["--latent-dim", "0"], "latent_dim"),
        Case("latent_dim not an integer", ["--latent-dim", "2.5"], "--latent-dim"),
        Case("beta NaN", ["--beta", "nan"], "beta"),
        Case("beta negative", ["--beta", "-1"], "beta"),
        Case("lr negative", ["--lr", "-1e-3"], "lr"),
        Case("epochs zero", ["--epochs", "0"], "epochs"),
        Case("batch_size zero", ["--batch-size", "0"], "batch_size"),
        Case("limit negative", ["--limit", "-5"], "limit"),
        Case("kl_warmup_epochs negative", ["--kl-warmup-epochs", "-1"], "kl_warmup_epochs"),
        Case("unknown dataset", ["--dataset", "cifar10"], "dataset"),
        Case("unknown arch", ["--arch", "resnet"], "arch"),
        Case("unknown dtype", ["--dtype", "fp8"], "dtype"),
        Case("system_metrics not 0/1", ["--system-metrics", "2"], "system_metrics"),
        Case("unknown lr_schedule", ["--lr-schedule", "linear"], "lr_schedule"),
        Case("unknown estimator", ["--estimator", "magic"], "estimator"),
        Case("unknown device", ["--device", "tpu"], "device"),
        Case("empty experiment", ["--experiment", " "], "experiment"),
        Case("unknown flag", ["--no-such-flag"], "unrecognized arguments"),
        Case("batch larger than the data set", [*SYN, "--batch-size", "100000"], "batch_size"),
        Case("val_images beyond the validation slice", [*SYN, "--val-images", "100000"], "val_images"),
        Case("val_images negative", ["--val-images", "-1"], "val_images"),
        Case("data files missing offline", ["--dataset", "fashion-mnist"], "fashion-mnist not found",
             process=True),
        Case("truncated IDX", ["--dataset", "fashion-mnist"], "truncated", setup=idx_files("truncated")),
        Case("wrong IDX magic", ["--dataset", "fashion-mnist"], "not an IDX file", setup=idx_files("magic")),
        Case("resume unknown run", ["--resume", "0123456789abcdef0123456789abcdef"], "not found"),
        Case("resume corrupted checkpoint", ["--resume", "{run}"], "unreadable", setup=earlier_run("corrupt")),
        Case("resume foreign checkpoint", ["--resume", "{run}"], "not a genlab VAE checkpoint",
             setup=earlier_run("foreign")),
        Case("resume run without checkpoint", ["--resume", "{run}"], "has no artifact", setup=earlier_run(None)),
        Case("resume a non-VAE run", ["--resume", "{run}"], "is a bench run, not a vae run",
             setup=earlier_run("corrupt", kind="bench")),
        Case("malformed tracking URL", TINY, "tracking store", setup=bogus_store),
        # runtime failure (exit 1): the loss turns NaN/inf; the run is FAILED with the reason (the NaN test)
        Case("absurd learning rate", [*SYN, "--lr", "1e12", "--epochs", "1", "--limit", "300", "--batch-size", "64",
                                      "--latent-dim", "4"], "NonFiniteLoss", code=1, process=True),
    ],
    "data": [
        Case("path of a missing set offline", ["path", "mnist"], "mnist not found"),
        Case("download offline", ["download", "mnist", "--dest", "{tmp}/dl"], "could not download",
             absent=["dl/*.gz", "dl/*.part"]),
        Case("download into a file", ["download", "mnist", "--dest", "{tmp}/afile/sub"], "cannot create",
             setup=a_file),
        Case("unknown data set", ["path", "cifar10"], "invalid choice"),
    ],
    "train-gan": [
        Case("latent_dim zero", ["--latent-dim", "0"], "latent_dim"),
        Case("lr_d negative", ["--lr-d", "-0.0002"], "lr_d"),
        Case("beta1 one", ["--beta1", "1.0"], "beta1"),
        Case("unknown loss", ["--loss", "wasserstein"], "loss"),
        Case("eval_samples too few for a covariance", ["--eval-samples", "5"], "eval_samples"),
        Case("malformed init_from", ["--init-from", "last-vae"], "init_from"),
        Case("unknown init_from run", [*SYN, "--init-from", UNKNOWN_RUN], "not found"),
        Case("non-VAE init_from", [*SYN, "--init-from", "{run}"], "is a bench run, not a vae run",
             setup=earlier_run(None, kind="bench")),
        Case("unfinished init_from VAE", [*SYN, "--init-from", "{run}"], "is FAILED, not FINISHED",
             setup=earlier_run(None)),
        Case("latent_dim mismatch with init_from", [*SYN, "--latent-dim", "8", "--init-from", "{run}"],
             "latent_dim=4", setup=finished_vae(4)),
        Case("encoder init without init_from", ["--init-discriminator", "encoder"], "init_discriminator"),
        Case("fitted latent without init_from", ["--latent-fit", "codes"], "latent_fit"),
        Case("system_metrics not 0/1", ["--system-metrics", "-1"], "system_metrics"),
        Case("batch larger than the data set", [*SYN, "--batch-size", "100000"], "batch_size"),
    ],
    "search": [
        Case("malformed storage URL", ["--storage", "optuna.db"], "storage"),
        Case("storage URL without host", ["--storage", "postgresql://"], "storage"),
        Case("beta_min above beta_max", [*STORAGE, "--beta-min", "5", "--beta-max", "1"], "beta_min",
             absent=["optuna.db"]),
        Case("empty latent_dims", [*STORAGE, "--latent-dims", ""], "latent_dims", absent=["optuna.db"]),
        Case("n_trials zero", [*STORAGE, "--n-trials", "0"], "n_trials", absent=["optuna.db"]),
        Case("unknown sampler", [*STORAGE, "--sampler", "cmaes"], "sampler", absent=["optuna.db"]),
        Case("fid objective without samples", [*STORAGE, "--objective", "fid", "--eval-samples", "0"],
             "eval_samples", absent=["optuna.db"]),
        Case("workers zero", [*STORAGE, "--workers", "0"], "workers", absent=["optuna.db"]),
        Case("batch larger than the data set", [*STORAGE, *SYN, "--limit", "50"], "batch_size",
             absent=["optuna.db"]),
    ],
    "probe": [
        Case("no VAE run", [], "vae_run"),
        Case("unknown VAE run", [*SYN, "--vae-run", UNKNOWN_RUN, "--gan-run", UNKNOWN_RUN], "not found"),
        Case("max_iter zero", ["--vae-run", UNKNOWN_RUN, "--gan-run", UNKNOWN_RUN, "--max-iter", "0"], "max_iter"),
    ],
    "report": [
        Case("store that does not exist", ["--out", "{tmp}/out"], "does not exist", setup=missing_store,
             absent=["nope.db", "out"]),
        Case("no runs of the study", ["--out", "{tmp}/out"], "no runs of study", absent=["out"]),
        Case("unwritable output dir", ["--out", "{tmp}/afile/sub"], "out", setup=a_file),
        Case("unknown profile", ["--profile", "best"], "profile"),
        Case("script in ui_url", ["--ui-url", "javascript:alert(1)"], "ui_url"),
    ],
    "calibrate": [
        Case("samples zero", ["--samples", "0"], "samples"),
        Case("class out of range", ["--single-class", "12"], "single_class"),
    ],
    "gradvar": [
        Case("one sample", ["--n-samples", "1"], "n_samples"),
        Case("unknown VAE run", [*SYN, "--vae-run", UNKNOWN_RUN], "not found"),
    ],
    "study": [
        Case("unknown profile", ["--profile", "medium"], "profile"),
        Case("unknown question", ["--only", "p9q9"], "only"),
        Case("plans folder missing", ["--plans", "{tmp}/nope"], "plans"),
        Case("seed_offset negative", ["--seed-offset", "-1"], "seed_offset"),
    ],
    "train-classifier": [
        Case("epochs zero", ["--epochs", "0"], "epochs"),
        Case("lr NaN", ["--lr", "nan"], "lr"),
    ],
    "bench": [
        Case("unknown profile", ["--profile", "medium"], "profile"),
        Case("missing output dir", ["--output-dir", "{tmp}/missing"], "output_dir"),
        Case("output dir is a file", ["--output-dir", "{tmp}/afile"], "output_dir", setup=a_file),
        Case("repeats negative", ["--repeats", "-1"], "repeats"),
        Case("batch larger than the data set", [*SYN, "--batch-size", "100000", "--output-dir", "{tmp}"],
             "batch_size", absent=["bench.json", "bench.md"]),
        Case("malformed tracking URL", [*SYN, "--output-dir", "{tmp}"], "tracking store", setup=bogus_store,
             absent=["bench.json", "bench.md"]),
    ],
    "sample": [  # makes no run of its own: a bad input must write no picture
        Case("neither run nor model", ["--out", "{tmp}/s.png"], "run/model", absent=["*.png"]),
        Case("both run and model", ["--run", UNKNOWN_RUN, "--model", "models:/genlab-vae@best"], "run/model"),
        Case("malformed run id", ["--run", "last-vae"], "run must be"),
        Case("malformed model URI", ["--model", "genlab-vae"], "model must be"),
        Case("n zero", ["--run", UNKNOWN_RUN, "--n", "0"], "n must be"),
        Case("interpolate one", ["--run", UNKNOWN_RUN, "--interpolate", "1"], "interpolate"),
        Case("out not a PNG", ["--run", UNKNOWN_RUN, "--out", "{tmp}/s.jpg"], "out", absent=["s.jpg"]),
        Case("unknown run", ["--run", UNKNOWN_RUN, "--out", "{tmp}/s.png"], "not found", absent=["*.png"]),
        Case("non-decoder run", ["--run", "{run}", "--out", "{tmp}/s.png"], "is a bench run, not a vae or gan run",
             setup=earlier_run(None, kind="bench"), absent=["*.png"]),
    ],
}
CASES = [(entry, case) for entry, cases in TABLE.items() for case in cases]


def prepare(entry: str, case: Case, tmp: Path, uri: str) -> tuple[list[str], dict[str, str]]:
    """Run the case's setup; return the command line and the environment it needs."""
    (tmp / "data-dir").mkdir(exist_ok=True)  # $GENLAB_DATA_DIR: empty unless the setup fills it
    made = case.setup(tmp, uri) if case.setup else {}
    env = {"GENLAB_DATA_DIR": str(tmp / "data-dir"), **{k[1:]: v for k, v in made.items() if k.startswith("$")}}
    subs = {"tmp": str(tmp), **{k: v for k, v in made.items() if not k.startswith("$")}}
    return [entry, *(a.format(**subs) for a in case.args)], env


def execute(argv: list[str], env: dict[str, str], process: bool, tmp: Path, monkeypatch, capsys) -> tuple[int, str]:
    """Exit code and stderr of ``genlab ARGV``, in a subprocess or in this process."""
    if process:
        result = subprocess.run([sys.executable, "-c", PRELUDE, *argv], cwd=tmp, capture_output=True, text=True,
                                env=child_env(GENLAB_TEST_ROOT=str(tmp), **env), timeout=300)
        return result.returncode, result.stderr
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    isolate_data(monkeypatch, tmp)
    monkeypatch.chdir(tmp)
    monkeypatch.delenv("GENLAB_DEBUG", raising=False)
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("entry,case", CASES, ids=[f"{e}: {c.id}" for e, c in CASES])
def test_bad_input(entry, case, shared_store, tmp_path, monkeypatch, capsys):
    argv, env = prepare(entry, case, tmp_path, shared_store)
    before = {r.info.run_id for r in all_runs(shared_store)}
    code, err = execute(argv, env, case.process, tmp_path, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == case.code, err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert case.names in lines[0] and "Traceback" not in err, lines[0]
    assert not running(shared_store), "a run was left RUNNING"
    if case.code == 2:
        assert {r.info.run_id for r in all_runs(shared_store)} == before, "bad input created a run"
    else:  # a runtime failure: the run it started is FAILED, with the reason
        new = [r for r in all_runs(shared_store) if r.info.run_id not in before]
        assert new and all(r.info.status == "FAILED" and case.names in r.data.tags.get("genlab.failure", "")
                           for r in new), [(r.info.status, r.data.tags.get("genlab.failure")) for r in new]
    for pattern in case.absent:
        assert not list(tmp_path.glob(pattern)), f"partial output {pattern} left behind"


# search's trials are train-vae runs: a search case may name a VAEConfig field its trials check (batch_size)
TRIAL_CONFIG = {"search": VAEConfig}
MESSAGE_WORDS = {"truncated", "unreadable"}  # one-word `names` that are words of the message, not fields


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """genlab's sub-commands (every entry point of genlab.entries.ENTRIES, and ``data``) and their parsers."""
    parser = cli.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def table_problems(table: dict[str, list[Case]]) -> list[str]:
    """What keeps ``table`` from covering every entry point with well-formed cases: one line per problem."""
    parsers, problems = subcommands(), []
    configs = {entry.command: entry.config for entry in ENTRIES}
    problems += [f"{command}: no bad-input cases" for command in parsers if not table.get(command)]
    problems += [f"{command}: not a genlab sub-command" for command in table if command not in parsers]
    for command, cases in table.items():
        if command not in parsers:
            continue
        options = set(parsers[command]._option_string_actions)
        fields = {f.name for c in (configs.get(command), TRIAL_CONFIG.get(command)) if c for f in
                  dataclasses.fields(c)}
        ids = [case.id for case in cases]
        problems += [f"{command}: case {i!r} appears {ids.count(i)} times" for i in sorted(set(ids))
                     if ids.count(i) > 1]
        for case in cases:
            used = {a for a in case.args if a.startswith("--")}
            unknown = used - options
            if case.names == "unrecognized arguments":  # the unknown flag is the point: it must stay unknown
                problems += [f"{command}: {case.id!r} passes no unknown flag"] if not unknown else []
            elif unknown:
                problems.append(f"{command}: {case.id!r} passes {sorted(unknown)}, not options of {command}")
            if re.fullmatch(r"[a-z][a-z0-9_]*", case.names) and fields and case.names not in fields | MESSAGE_WORDS:
                problems.append(f"{command}: {case.id!r} names {case.names!r}, not a parameter of {command}")
            if case.names.startswith("--") and case.names not in options:
                problems.append(f"{command}: {case.id!r} names {case.names!r}, not an option of {command}")
            if "{run}" in " ".join(case.args) and case.setup is None:
                problems.append(f"{command}: {case.id!r} points at {{run}} but has no setup to make it")
            if case.code not in (1, 2):
                problems.append(f"{command}: {case.id!r} expects exit {case.code}, not 1 or 2")
        if command in configs and not any(c.names in fields for c in cases):
            problems.append(f"{command}: no case where validate() rejects one of its parameters")
    return problems


def test_table_size(capsys):
    """The table covers every sub-command (a new entry point without cases, or a removed one still listed,
    fails), and each case is one the run can trust: a unique id, only options its sub-command has, the field or
    option it names exists. Every declared bound of every field is checked by tests/test_config.py; here each
    entry point needs at least one case whose parameter its validate() rejects through the CLI."""
    counts = {entry: len(cases) for entry, cases in TABLE.items()}
    with capsys.disabled():
        print(f"\nbad-input table: {len(CASES)} cases ({', '.join(f'{k} {v}' for k, v in counts.items())}), "
              f"{sum(c.process for _, c in CASES)} in a subprocess")
    assert table_problems(TABLE) == []


@pytest.mark.parametrize("broken, problem", [
    ({"sample": []}, "sample: no bad-input cases"),
    ({"train-vqvae": [Case("x", [], "x")]}, "train-vqvae: not a genlab sub-command"),
    ({"train-vae": [*TABLE["train-vae"], TABLE["train-vae"][0]]}, "'latent_dim zero' appears 2 times"),
    ({"train-gan": [*TABLE["train-gan"], Case("lr_disc negative", ["--lr-disc", "-1"], "lr_disc")]},
     "passes ['--lr-disc']"),
    ({"probe": [*TABLE["probe"], Case("stale field", ["--max-iter", "0"], "max_iters")]}, "names 'max_iters'"),
    ({"train-vae": [*TABLE["train-vae"], Case("stale usage", ["--latent-dim", "x"], "--latent-dims")]},
     "names '--latent-dims'"),
    ({"bench": [Case("unknown flag", ["--profile", "x"], "unrecognized arguments")]}, "passes no unknown flag"),
    ({"train-classifier": [Case("only a runtime case", ["--dataset", "cifar10"], "not found")]},
     "train-classifier: no case where validate() rejects"),
], ids=["missing entry point", "stale entry point", "duplicate id", "stale flag", "stale field", "stale option",
        "known 'unknown' flag", "no validate case"])
def test_table_problems_are_seen(broken, problem):
    """The control of test_table_size: each kind of stale or missing case is reported."""
    problems = table_problems({**TABLE, **broken})
    assert any(problem in p for p in problems), problems
