"""Bad input: one line on stderr, exit 2, nothing written to the tracking store."""

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from genlab import cli, configs

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
    assert "--dtype {fp32,bf16}" in vae_help and "--system-metrics {0,1}" in vae_help and "--precision" not in vae_help


def fields_of(command: str) -> dict[str, dataclasses.Field]:
    config = configs.ENTRY_CONFIGS.get(command.replace("-", "_"))
    return {f.name: f for f in dataclasses.fields(config)} if config else {}


def test_every_config_field_is_a_flag_with_help():
    commands = subcommands(cli.build_parser())
    for entry, config in configs.ENTRY_CONFIGS.items():
        dests = {a.dest for a in commands[entry.replace("_", "-")]._actions}
        for f in dataclasses.fields(config):
            assert f.name in dests and f.metadata.get("help"), f"{entry}.{f.name}"


def test_mlproject_has_an_entry_per_config_with_its_parameters():
    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "MLproject").read_text())["entry_points"]
    assert set(spec) == set(configs.ENTRY_CONFIGS)
    for entry, config in configs.ENTRY_CONFIGS.items():
        assert list(spec[entry]["parameters"]) == [f.name for f in dataclasses.fields(config)], entry


def test_configs_are_the_modules_configs():
    """Existing code imports the configs from their modules: those must be the very classes of genlab.configs."""
    from genlab import bench, calibrate, probe, search, study
    from genlab.train import classifier, gan, gradvar, vae
    from reports import build

    pairs = [(vae.VAEConfig, configs.VAEConfig), (gan.GANConfig, configs.GANConfig),
             (probe.ProbeConfig, configs.ProbeConfig), (classifier.ClassifierConfig, configs.ClassifierConfig),
             (gradvar.GradVarConfig, configs.GradVarConfig), (study.StudyConfig, configs.StudyConfig),
             (calibrate.CalibrationConfig, configs.CalibrationConfig), (search.SearchConfig, configs.SearchConfig),
             (bench.BenchConfig, configs.BenchConfig), (build.ReportConfig, configs.ReportConfig)]
    assert all(a is b for a, b in pairs)
    assert all(study.load_entry(e).config_class is configs.ENTRY_CONFIGS[e] for e in study.ENTRIES)


def test_sample_command_validates_then_prints_each_written_path(tmp_path, monkeypatch, capsys):
    from genlab import sample

    written = [tmp_path / "grid.png", tmp_path / "grid_interpolation.png"]
    seen = []
    monkeypatch.setattr(sample, "main", lambda cfg: seen.append(cfg) or written)
    run_id = "0123456789abcdef0123456789abcdef"
    args = ["sample", "--run", run_id, "--n", "16", "--nrow", "4", "--out", str(written[0]), "--interpolate", "5"]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.split() == [str(p) for p in written]
    assert seen == [configs.SampleConfig(run=run_id, n=16, nrow=4, out=str(written[0]), interpolate=5)]
    assert cli.main(["sample"]) == 2  # neither --run nor --model: validate() refuses before main()
    assert len(seen) == 1 and len(capsys.readouterr().err.strip().splitlines()) == 1
