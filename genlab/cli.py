"""The ``genlab`` command: argument parsing, validation, exit codes and one-line errors.

Exit codes: 0 ok; 1 a runtime failure after the run started (the run is marked FAILED); 2 bad input (nothing is
created); 130 interrupted (the run is marked KILLED). Errors are one line on stderr, never a traceback
(set GENLAB_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from genlab import logs  # standard library only: building the parser imports no torch
from genlab.entries import CONTEXT_FIELDS, ENTRIES, EXIT_RUNTIME, Context, Entry, Flag

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


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

def entry_command(entry: Entry, args: argparse.Namespace) -> int:
    """Every entry's sub-command: its config from the flags, its CLI-only flags in the Context, its lines out."""
    config = config_from_args(args, entry.config)
    options = {flag.dest: getattr(args, flag.dest) for flag in entry.flags if flag.dest in CONTEXT_FIELDS}
    result = entry.run(config, Context(**{k: v for k, v in options.items() if v is not None}))
    for line in result.lines:
        print(line)
    return result.exit_code


def data_command(args: argparse.Namespace) -> int:
    """``genlab data``: a utility, not an entry point (it makes no run and has no MLproject entry)."""
    from genlab import data

    print(data.download(args.name, args.dest) if args.action == "download" else data.find_dataset_dir(args.name))
    return 0


def add_flag(parser: argparse.ArgumentParser, flag: Flag) -> None:
    if flag.const is not None:
        parser.add_argument(flag.name, dest=flag.dest, action="store_const", const=flag.const, help=flag.help)
    else:
        parser.add_argument(flag.name, dest=flag.dest, metavar=flag.metavar, type=flag.type, default=None,
                            help=flag.help)


def build_parser() -> Parser:
    """The whole command line, from genlab.entries.ENTRIES (standard library only: --help imports no torch)."""
    parser = Parser(prog="genlab", description="Tracked VAE/GAN study of the lab 'VAE and GAN'.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for entry in ENTRIES:
        formatting = {"description": entry.description,
                      "formatter_class": argparse.RawDescriptionHelpFormatter} if entry.description else {}
        p = sub.add_parser(entry.command, help=entry.help, **formatting)
        add_config_arguments(p, entry.config)
        for flag in entry.flags:
            add_flag(p, flag)
        p.set_defaults(func=functools.partial(entry_command, entry))

    p = sub.add_parser("data", help="locate or download a data set")
    p.add_argument("action", choices=("download", "path"), help="download: fetch and check the files; path: print "
                   "where the set is found")
    p.add_argument("name", choices=("fashion-mnist", "mnist"), help="the data set")
    p.add_argument("--dest", default=None, help="target folder for download (default ./data/NAME)")
    p.set_defaults(func=data_command)
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
    from genlab.checks import ConfigError
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
