"""Bad input: one line on stderr, exit 2, nothing written to the tracking store."""

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from genlab import cli

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
