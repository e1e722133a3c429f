"""The ``theramark`` command.

Each stage that offers commands has a module with a ``register(subparsers)`` function, listed in
:data:`_COMMAND_MODULES` (every one must import: a missing module is an error, not a command quietly
left out). This module registers them, parses the command line and maps theramark's errors to exit
codes: 0 success, 1 analysis error, 2 bad input or usage. A user sees one clear message, never a
traceback, unless ``--debug`` is given.

An interrupted command (Ctrl-C: exit status 130; SIGTERM, which SLURM and Kubernetes send before
they kill a job: 143) stops its worker processes and says how to resume. SIGTERM is turned into
:class:`Terminated`, a :class:`KeyboardInterrupt`, so that the same clean-up paths run for both.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

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
    "theramark.realtime.commands",
    "theramark.predict.commands",
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


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM.

    A :class:`KeyboardInterrupt`, so that every path that stops workers on Ctrl-C (joblib's abort,
    the participant level's pool shutdown) runs for SIGTERM too.
    """

    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (once) in the main thread.

    A second SIGTERM while the first is being handled (workers being stopped) is ignored; SIGKILL,
    which schedulers send after their grace period, still ends the process. Outside the main thread
    (where Python cannot install handlers) the block runs unchanged. The previous handler is
    restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        if received:
            return
        received = True
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``theramark`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        with sigterm_as_exception():
            result = args.func(args)
    except TheramarkError as exc:
        if args.debug:
            raise
        print(f"theramark: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("theramark: terminated (SIGTERM); workers stopped; rerun the same command to resume",
              file=sys.stderr)
        return Terminated.exit_code
    except KeyboardInterrupt:
        print("theramark: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:
        # a path that changed under the command after its checks (theramark.paths): name it
        if args.debug or exc.filename is None:
            raise
        print(f"theramark: error: {exc.filename}: {exc.strerror or type(exc).__name__}",
              file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
