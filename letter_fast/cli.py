"""``letter-fast``: the command line. Each subcommand lives in letter_fast/commands/<name>.py.

Every command that reads a data set takes the same common flags (letter_fast/commands/common.py): the data set
as a positional argument, ``--out-dir``, ``--resume/--no-resume``, ``--seed``, ``--device``, ``--config`` and
``--print-config``; its settings dataclass gives the other flags (letter_fast/config.py).

Errors a user can fix (missing files, malformed data, bad options) print one line and exit 2;
``--traceback`` shows the full stack instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import letter_fast

# Subcommand modules, in the order --help lists them.
COMMANDS = ["quantize", "embed", "train-cf", "tokenize", "inspect_codes", "add-items", "train-tiger", "train-lcrec",
            "evaluate", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="letter-fast", description=letter_fast.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"letter_fast {letter_fast.__version__}")
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="what was built and which backends run here")
    info.set_defaults(run=lambda args: (importlib.import_module("letter_fast.info").main([]), 0)[1])
    for name in COMMANDS:
        importlib.import_module(f"letter_fast.commands.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "print_config", False):
            from letter_fast.config import config_from_args, render_toml

            print(render_toml(config_from_args(args.config_cls, args),
                              f"letter-fast {args.command}: {args.config_cls.__name__}"), end="")
            return 0
        return int(args.run(args) or 0)
    except (FileNotFoundError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        if args.traceback:
            raise
        print(f"letter-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
