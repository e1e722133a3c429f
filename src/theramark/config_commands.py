"""``theramark config init BIDS_DIR`` and ``theramark config show [FILE]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from theramark.config import format_toml, load_config, resolve


def _init(args: argparse.Namespace) -> int:
    from theramark import paths
    from theramark.configure import find_tasks, write_study_config

    paths.input_dir(args.bids_dir, "BIDS folder")
    if args.fmriprep_dir is not None:
        paths.input_dir(args.fmriprep_dir, "fMRIPrep folder")
    paths.output_file(args.output, "config file")
    path = write_study_config(args.bids_dir, args.output, force=args.force,
                              fmriprep_dir=args.fmriprep_dir)
    level = "participant" if find_tasks(args.bids_dir, args.fmriprep_dir) else "group"
    print(f"Wrote {path}: check the inferred values (marked 'inferred' or 'found'), then run "
          f"'theramark run {args.bids_dir} OUT_DIR {level} --config {path}'"
          + ("" if level == "participant" else " (the dataset has no BOLD runs: the group level "
             "alone analyses its questionnaires)"))
    return 0


def _show(args: argparse.Namespace) -> int:
    if args.file is not None:
        from theramark.paths import input_file

        input_file(args.file, "config file")
    config = load_config(args.file)
    header = (f"{args.file}, resolved: every key, defaults filled in" if args.file
              else "the defaults of every key")
    print(format_toml(resolve(config), comments=not args.no_comments, header=header), end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``config init`` and ``config show`` to the ``theramark`` parser."""
    parser = subparsers.add_parser(
        "config", help="write a study.toml for a dataset, or show a resolved one",
        description="study.toml holds every setting of a study. 'init' writes one for a BIDS "
        "dataset with every key, its default and what it means, the values it can infer from the "
        "data filled in; 'show' prints a config with every default filled in.",
    )
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)
    commands = parser.add_subparsers(dest="config_command", metavar="COMMAND")

    init = commands.add_parser(
        "init", help="write a commented study.toml inferred from a BIDS dataset",
        description="Infer groups, sessions, the reference and control groups, sites, tasks and "
        "instrument totals from a BIDS dataset and write a study.toml listing every key.",
    )
    init.add_argument("bids_dir", type=Path, help="BIDS dataset root")
    init.add_argument("-o", "--output", type=Path, default=Path("study.toml"),
                      help="file to write (default: study.toml)")
    init.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    init.add_argument("--fmriprep-dir", type=Path, default=None,
                      help="fMRIPrep derivatives (default: BIDS_DIR/derivatives/fmriprep)")
    init.set_defaults(func=_init)

    show = commands.add_parser(
        "show", help="print a study.toml with every default filled in",
        description="Check a study.toml and print it resolved, as TOML: every key with its value "
        "and description. Without FILE, print the defaults.",
    )
    show.add_argument("file", type=Path, nargs="?", default=None, help="the study.toml")
    show.add_argument("--no-comments", action="store_true", help="leave out the descriptions")
    show.set_defaults(func=_show)
