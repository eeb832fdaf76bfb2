"""Bad input: one line on stderr, exit 2, nothing written to the tracking store."""

import argparse
import dataclasses
import inspect
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from genlab import cli, configs
from genlab.entries import CONTEXT_FIELDS, ENTRIES, Context, Result

from .conftest import genlab_cmd, run_cli

BAD_TRAIN_VAE = [
    (["--latent-dim", "0"], "latent_dim"),
    (["--latent-dim", "-3"], "latent_dim"),
    (["--latent-dim", "2.5"], "--latent-dim"),
    (["--beta", "-1"], "beta"),
    (["--beta", "nan"], "beta"),
    (["--beta", "inf"], "beta"),
    (["--epochs", "0"], "epochs"),
    (["--batch-size", "0"], "batch_size"),
    (["--lr", "0"], "lr"),
    (["--lr", "-1e-3"], "lr"),
    (["--dataset", "cifar10"], "dataset"),
    (["--limit", "-1"], "limit"),
    (["--arch", "resnet"], "arch"),
    (["--estimator", "magic"], "estimator"),
    (["--kl-warmup-epochs", "-1"], "kl_warmup_epochs"),
    (["--device", "tpu"], "device"),
    (["--eval-samples", "-1"], "eval_samples"),
    (["--eval-samples", "100"], "eval_samples"),
    (["--dataset", "synthetic", "--batch-size", "100000"], "batch_size"),
    (["--resume", "0123456789abcdef"], "not found"),
]


@pytest.mark.parametrize("args,names", BAD_TRAIN_VAE, ids=[" ".join(a) for a, _ in BAD_TRAIN_VAE])
def test_train_vae_bad_input(store, capsys, args, names):
    code = run_cli(["train-vae", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and names in err and "Traceback" not in err
    assert all(not MlflowClient().search_runs([e.experiment_id]) for e in MlflowClient().search_experiments())


def test_usage_error_is_one_line_and_exit_2(capsys):
    assert run_cli(["train-vae", "--no-such-flag"]) == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_bad_input_in_a_real_process_has_no_traceback(store):
    result = subprocess.run(genlab_cmd("train-vae", "--beta", "-2"), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "genlab: error: beta must be a finite number >= 0, got -2.0"


def test_data_path_for_a_missing_set_is_one_line(tmp_path, monkeypatch, capsys):
    from genlab import data

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "DEBIAN_DIRS", {"fashion-mnist": "/none", "mnist": "/none"})
    monkeypatch.setattr(data, "PROJECT_ROOT", tmp_path)
    monkeypatch.delenv("GENLAB_DATA_DIR", raising=False)
    assert cli.main(["data", "path", "mnist"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---------------------------------------------------------------- --help: fast, and says what each flag is

HEAVY = ("torch", "mlflow", "optuna", "pandas", "sklearn", "matplotlib")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_help_imports_no_heavy_package():
    """--help must answer in well under a second on 2 cores: building the parser and formatting every
    sub-command's help may not import torch & co (a fresh process: this one has them loaded already)."""
    script = ("import sys\nfrom genlab import cli\nparser = cli.build_parser()\nparser.format_help()\n"
              "sub, = [a for a in parser._actions if a.__class__.__name__ == '_SubParsersAction']\n"
              "for p in sub.choices.values():\n    p.format_help()\n"
              f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"building the parser imported {result.stdout.strip()}"


def test_every_option_says_what_it_is_and_lists_its_choices():
    commands = subcommands(cli.build_parser())
    assert "sample" in commands and len(commands) >= 12
    for name, parser in commands.items():
        for action in parser._actions:
            where = f"genlab {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip() and action.help.strip() != f"(default: {action.default})", where
            flag = f"--{action.dest.replace('_', '-')}"
            field = fields_of(name).get(action.dest) if flag in action.option_strings else None  # not --quick
            for choice in (field.metadata.get("choices", ()) if field else ()):
                assert str(choice) in (action.metavar or ""), f"{where}: {choice} not listed"
    vae_help = commands["train-vae"].format_help()
    assert "--dtype {auto,fp32,bf16}" in vae_help and "--system-metrics {0,1}" in vae_help and "--precision" not in vae_help


def fields_of(command: str) -> dict[str, dataclasses.Field]:
    (entry,) = [e for e in ENTRIES if e.command == command] or [None]
    return {f.name: f for f in dataclasses.fields(entry.config)} if entry else {}


def test_every_entry_is_a_subcommand_with_a_flag_per_config_field_and_its_own_flags():
    commands = subcommands(cli.build_parser())
    assert set(commands) == {e.command for e in ENTRIES} | {"data"}
    for entry in ENTRIES:
        dests = {a.dest for a in commands[entry.command]._actions}
        for f in dataclasses.fields(entry.config):
            assert f.name in dests and f.metadata.get("help"), f"{entry.name}.{f.name}"
        options = {s for a in commands[entry.command]._actions for s in a.option_strings}
        assert {flag.name for flag in entry.flags} <= options, entry.name
        assert all(flag.dest in CONTEXT_FIELDS or flag.dest in dests for flag in entry.flags), entry.name


def test_every_entry_module_runs_its_config():
    """Each module defines validate() and run(config, context), and uses the config class of genlab.configs."""
    for entry in ENTRIES:
        module = entry.load()
        assert getattr(module, entry.config.__name__) is entry.config, entry.name
        assert list(inspect.signature(module.run).parameters) == ["cfg", "context"], entry.name
        assert callable(module.validate) and not hasattr(module, "main"), entry.name
    assert len({e.name for e in ENTRIES}) == len({e.command for e in ENTRIES}) == len(ENTRIES)
    with pytest.raises(TypeError, match="takes a VAEConfig"):
        ENTRIES[0].run(configs.GANConfig())


def test_cli_only_flags_land_in_the_context(monkeypatch, capsys):
    from genlab import study

    seen = []

    def fake_run(cfg, context):
        seen.append((cfg, context))
        return Result(lines=("one", "two"), exit_code=3)

    monkeypatch.setattr(study, "run", fake_run)
    assert cli.main(["study", "--dry-run", "--only", "p1q2"]) == 3
    assert capsys.readouterr().out.split() == ["one", "two"]
    assert seen == [(configs.StudyConfig(only="p1q2"), Context(dry_run=True))]
    assert cli.main(["study"]) == 3 and seen[1][1] == Context()


def test_sample_command_validates_then_prints_each_written_path(tmp_path, monkeypatch, capsys):
    from genlab import sample
    from genlab.models.vae import Decoder

    seen = []
    monkeypatch.setattr(sample, "load_decoder", lambda cfg: seen.append(cfg) or Decoder(4, "mlp"))
    written = [tmp_path / "grid.png", tmp_path / "grid_interpolation.png"]
    run_id = "0123456789abcdef0123456789abcdef"
    args = ["sample", "--run", run_id, "--n", "16", "--nrow", "4", "--out", str(written[0]), "--interpolate", "5",
            "--device", "cpu"]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.split() == [str(p) for p in written]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    assert seen == [configs.SampleConfig(run=run_id, n=16, nrow=4, out=str(written[0]), interpolate=5, device="cpu")]
    assert cli.main(["sample"]) == 2  # neither --run nor --model: validate() refuses before any decoder is loaded
    assert len(seen) == 1 and len(capsys.readouterr().err.strip().splitlines()) == 1
