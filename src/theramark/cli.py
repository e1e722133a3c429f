"""The ``theramark`` command.

Each stage that offers commands has a module with a ``register(subparsers)`` function, listed in
:data:`_COMMAND_MODULES` (every one must import: a missing module is an error, not a command quietly
left out). This module registers them, parses the command line and maps theramark's errors to exit
codes: 0 success, 1 analysis error, 2 bad input or usage. A user sees one clear message, never a
traceback, unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from theramark import __version__
from theramark.errors import TheramarkError

# Order in which command groups appear in ``theramark --help``.
_COMMAND_MODULES = (
    "theramark.workflow",
    "theramark.simulate.commands",
    "theramark.study.commands",
    "theramark.scales.commands",
    "theramark.psychosocial.commands",
    "theramark.config_commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="theramark",
        description=(
            "fMRI markers of psychotherapy response in depression: from a BIDS dataset with "
            "fMRIPrep derivatives and questionnaire items to scored scales, QC'd imaging features, "
            "group statistics and a report."
        ),
    )
    parser.add_argument("--version", action="version", version=f"theramark {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``theramark`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except TheramarkError as exc:
        if args.debug:
            raise
        print(f"theramark: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("theramark: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
