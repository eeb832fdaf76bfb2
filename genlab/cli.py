"""The ``genlab`` command: argument parsing, validation, exit codes and one-line errors.

Exit codes: 0 ok; 1 a runtime failure after the run started (the run is marked FAILED); 2 bad input (nothing is
created); 130 interrupted (the run is marked KILLED). Errors are one line on stderr, never a traceback
(set GENLAB_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

EXIT_RUNTIME, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One ``--flag-name`` per config field (dashes on the command line, underscores in MLflow params)."""
    casts = {"int": int, "float": float, "str": str}
    for f in dataclasses.fields(config_class):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=casts[f.type], default=f.default,
                            metavar=f.type.upper(), help=f"(default: {f.default})")


def config_from_args(args: argparse.Namespace, config_class: type) -> Any:
    return config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)})


# ---------------------------------------------------------------- commands

def cmd_train_vae(args: argparse.Namespace) -> int:
    from genlab.train import vae

    cfg = config_from_args(args, vae.VAEConfig)
    if not args.resume:
        vae.validate(cfg)  # before any import of the tracking store or data
    run_id, final = vae.main(cfg, resume_run_id=args.resume)
    print(f"run {run_id} finished: test_neg_elbo {final['test_neg_elbo']:.2f} nats/image "
          f"(recon {final['test_recon']:.2f}, kl {final['test_kl']:.2f})")
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from genlab.train import classifier

    cfg = config_from_args(args, classifier.ClassifierConfig)
    classifier.validate(cfg)
    existing = classifier.find_classifier(cfg)
    run_id, final = classifier.main(cfg)
    print(f"run {run_id} finished: test_accuracy {final['test_accuracy']:.4f}; registered as "
          f"{classifier.model_name(cfg.dataset)}")
    if existing:
        print(f"note: classifier run {existing} has the same config and stays the one the metrics use",
              file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from genlab import calibrate

    cfg = config_from_args(args, calibrate.CalibrationConfig)
    calibrate.validate(cfg)
    run_id, rows = calibrate.main(cfg)
    print(calibrate.format_table(rows))
    print(f"run {run_id} finished (artifacts calibration.csv, calibration.json)")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from genlab import data

    if args.action == "download":
        print(data.download(args.name, args.dest))
    else:
        print(data.find_dataset_dir(args.name))
    return 0


def build_parser() -> Parser:
    from genlab.train.vae import VAEConfig

    parser = Parser(prog="genlab", description="Tracked VAE/GAN study of the lab 'VAE and GAN'.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train-vae", help="train a VAE as one MLflow run")
    add_config_arguments(p, VAEConfig)
    p.add_argument("--resume", metavar="RUN_ID", help="continue this run from its last checkpoint "
                   "(its logged params are used)")
    p.set_defaults(func=cmd_train_vae)

    from genlab.calibrate import CalibrationConfig
    from genlab.train.classifier import ClassifierConfig

    p = sub.add_parser("train-classifier", help="train the feature classifier of the sample-quality metrics")
    add_config_arguments(p, ClassifierConfig)
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser("calibrate", help="sample-quality metrics of reference image sets (train vs test, noise, ...)")
    add_config_arguments(p, CalibrationConfig)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("data", help="locate or download a data set")
    p.add_argument("action", choices=("download", "path"))
    p.add_argument("name", choices=("fashion-mnist", "mnist"))
    p.add_argument("--dest", default=None, help="target folder for download (default ./data/NAME)")
    p.set_defaults(func=cmd_data)
    return parser


# ---------------------------------------------------------------- entry point

def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so a terminated run is marked KILLED, like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    debug = bool(os.environ.get("GENLAB_DEBUG"))
    if not debug:
        warnings.filterwarnings("ignore")
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    return run_command(args.func, args, debug)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, debug: bool = False) -> int:
    from genlab.config import ConfigError
    from genlab.data import DataError

    bad_input: tuple[type[BaseException], ...] = (ConfigError, DataError)
    try:
        from genlab.tracking import TrackingError
        bad_input += (TrackingError,)
    except ImportError:
        pass
    try:
        return func(args)
    except bad_input as e:
        if debug:
            raise
        print(f"genlab: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # one line, the run is already marked FAILED by tracking.start_run
        if debug:
            raise
        message = str(e).splitlines()[0] if str(e) else ""
        print(f"genlab: error: {type(e).__name__}: {message}", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
