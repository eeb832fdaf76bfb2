"""The ``genlab`` command: argument parsing, validation, exit codes and one-line errors.

Exit codes: 0 ok; 1 a runtime failure after the run started (the run is marked FAILED); 2 bad input (nothing is
created); 130 interrupted (the run is marked KILLED). Errors are one line on stderr, never a traceback
(set GENLAB_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from genlab import configs, logs  # standard library only: building the parser imports no torch

EXIT_RUNTIME, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def add_config_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One ``--flag-name`` per config field (dashes on the command line, underscores in MLflow params), its help
    line from the field's metadata (genlab.configs)."""
    casts = {"int": int, "float": float, "str": str}
    for f in dataclasses.fields(config_class):
        choices = f.metadata.get("choices", ())
        # choices are shown, not enforced: validate() rejects a bad value with the one-line error naming the param
        metavar = "{" + ",".join(map(str, choices)) + "}" if choices else f.type.upper()
        default = '""' if f.default == "" else f.default  # an empty default would read as a missing one
        text = f"{f.metadata.get('help', '')} (default: {default})".strip()
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=casts[f.type], default=f.default,
                            metavar=metavar, help=text.replace("%", "%%"))


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


def cmd_train_gan(args: argparse.Namespace) -> int:
    from genlab.train import gan

    cfg = config_from_args(args, gan.GANConfig)
    if not args.resume:
        gan.validate(cfg)  # before any import of the tracking store or data
    run_id, final = gan.main(cfg, resume_run_id=args.resume)
    quality = f", fid_proxy {final['fid_proxy']:.2f}" if "fid_proxy" in final else ""
    print(f"run {run_id} finished: d_loss {final['d_loss']:.3f}, g_loss {final['g_loss']:.3f}, "
          f"d_real {final['d_real']:.3f}, d_fake {final['d_fake']:.3f}{quality}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from genlab import probe

    cfg = config_from_args(args, probe.ProbeConfig)
    probe.validate(cfg)
    run_id, result = probe.main(cfg)
    print(f"run {run_id} finished: linear probe accuracy encoder {result['encoder_probe_accuracy']:.3f}, "
          f"discriminator {result['discriminator_probe_accuracy']:.3f}, raw pixels {result['encoder_probe_accuracy_raw']:.3f}")
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


def cmd_gradvar(args: argparse.Namespace) -> int:
    from genlab.train import gradvar

    cfg = config_from_args(args, gradvar.GradVarConfig)
    gradvar.validate(cfg)
    run_id, m = gradvar.main(cfg)
    print(f"run {run_id} finished: grad_variance_ratio {m['grad_variance_ratio']:.3g} (score / reparam), "
          f"encoder_grad_norm_no_trick {m['encoder_grad_norm_no_trick']}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from genlab import study

    cfg = config_from_args(args, study.StudyConfig)
    outcome = study.run_study(cfg, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    skipped = f"; skipped {', '.join(outcome.skipped)}" if outcome.skipped else ""
    failed = f"; FAILED: {', '.join(outcome.failed)}" if outcome.failed else ""
    print(f"study {cfg.study} ({cfg.profile}): {outcome.trained} runs trained, {outcome.reused} reused in "
          f"{outcome.seconds:.0f}s{skipped}{failed}")
    return EXIT_RUNTIME if outcome.failed else 0


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


def cmd_report(args: argparse.Namespace) -> int:
    from reports import build

    cfg = config_from_args(args, build.ReportConfig)
    build.validate(cfg)  # before the store is opened
    run_id, folders, verdicts = build.main(cfg)
    for q, v in verdicts.items():
        claims = "".join(f" {k}={c}" for k, c in v.numbers.get("claims", {}).items())
        print(f"{q}: {v.status}{claims} ({len(set(v.run_ids))} runs, profile {v.profile})")
    for lang, folder in folders.items():
        print(f"report ({lang}): {folder / 'report.md'}  {folder / 'report.html'}")
    print(f"logged as run {run_id} (genlab.kind=report)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from genlab import search

    cfg = config_from_args(args, search.SearchConfig)
    search.validate(cfg)  # before any storage, store or run is created
    if args.worker is not None:
        search.worker_main(cfg, args.worker)
        return 0
    summary = search.main(cfg)
    best = (f"best {cfg.objective} {summary['best_value']:.2f}" if "best_value" in summary else
            f"{summary['pareto_trials']:.0f} Pareto trials" if "pareto_trials" in summary else "no complete trial")
    best += (f" (trial {summary['best_trial_number']:.0f}: latent_dim {summary['best_latent_dim']:.0f}, "
             f"beta {summary['best_beta']:.3g})" if "best_trial_number" in summary else "")
    print(f"search {cfg.study_name}: {summary['trials_complete']:.0f} complete, {summary['trials_pruned']:.0f} "
          f"pruned, {summary['trials_failed']:.0f} failed; {best}; parent run {summary['parent_run_id']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from genlab import bench

    cfg = config_from_args(args, bench.BenchConfig)
    bench.validate(cfg)  # before reading data or touching the tracking store
    run_id, report = bench.main(cfg)
    print(f"bench run {run_id} ({report['total_seconds']:.0f} s): wrote {' and '.join(report['files'])}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from genlab import sample

    cfg = config_from_args(args, configs.SampleConfig)
    sample.validate(cfg)  # before the store is opened or a file written
    for path in sample.main(cfg):
        print(path)
    return 0


def build_parser() -> Parser:
    """The whole command line. Configs come from genlab.configs (standard library only): --help imports no torch."""
    parser = Parser(prog="genlab", description="Tracked VAE/GAN study of the lab 'VAE and GAN'.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train-vae", help="train a VAE as one MLflow run")
    add_config_arguments(p, configs.VAEConfig)
    p.add_argument("--resume", metavar="RUN_ID", help="continue this run from its last checkpoint "
                   "(its logged params are used)")
    p.set_defaults(func=cmd_train_vae)

    p = sub.add_parser("train-gan", help="train a DCGAN (generator = the VAE decoder) as one MLflow run")
    add_config_arguments(p, configs.GANConfig)
    p.add_argument("--resume", metavar="RUN_ID", help="continue this run from its last checkpoint "
                   "(its logged params are used)")
    p.set_defaults(func=cmd_train_gan)

    p = sub.add_parser("probe", help="encoder vs discriminator: linear probes, output semantics (one run)")
    add_config_arguments(p, configs.ProbeConfig)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("report", help="write the study's report (French and English) from the tracked runs")
    add_config_arguments(p, configs.ReportConfig)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("search", help="Optuna search over latent_dim x beta (nested MLflow runs)",
                       description=configs.SEARCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, configs.SearchConfig)
    p.add_argument("--worker", metavar="INDEX", type=int, default=None,
                   help="run trials only, as worker INDEX of an existing study (started by --workers N, or by hand "
                   "on another machine with a distinct INDEX: it seeds the sampler)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("train-classifier", help="train the feature classifier of the sample-quality metrics")
    add_config_arguments(p, configs.ClassifierConfig)
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser("gradvar", help="P1Q1: gradient variance of the reparameterisation vs score-function "
                       "estimator at fixed VAE parameters (one MLflow run)")
    add_config_arguments(p, configs.GradVarConfig)
    p.set_defaults(func=cmd_gradvar)

    p = sub.add_parser("study", help="run the lab's experiment plans (experiments/*.yaml); finished runs with the "
                       "same parameters, profile and code version are reused")
    add_config_arguments(p, configs.StudyConfig)
    p.add_argument("--dry-run", action="store_true", help="list the runs (and which would be reused); run nothing")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("calibrate", help="sample-quality metrics of reference image sets (train vs test, noise, ...)")
    add_config_arguments(p, configs.CalibrationConfig)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("data", help="locate or download a data set")
    p.add_argument("action", choices=("download", "path"), help="download: fetch and check the files; path: print "
                   "where the set is found")
    p.add_argument("name", choices=("fashion-mnist", "mnist"), help="the data set")
    p.add_argument("--dest", default=None, help="target folder for download (default ./data/NAME)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("bench", help="measure genlab's speed side by side with the common alternatives")
    add_config_arguments(p, configs.BenchConfig)
    p.add_argument("--quick", dest="profile", action="store_const", const="quick",
                   help="same as --profile quick (under 2 minutes on 2 cores)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("sample", help="write a PNG grid of images from a trained VAE decoder or GAN generator "
                       "(a run id or a registered model)")
    add_config_arguments(p, configs.SampleConfig)
    p.set_defaults(func=cmd_sample)
    return parser


# ---------------------------------------------------------------- entry point

def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so a terminated run is marked KILLED, like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    logs.quiet_libraries()
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    return run_command(args.func, args, logs.debug())


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
