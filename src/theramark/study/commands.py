"""``theramark validate BIDS_DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from theramark.study.validate import ERROR, format_problems, validate_study


def _validate(args: argparse.Namespace) -> int:
    from theramark import paths
    from theramark.config import load_config

    # the BIDS folder itself is the validator's first check (a row of its table, exit 2)
    if args.fmriprep_dir is not None:
        paths.input_dir(args.fmriprep_dir, "fMRIPrep folder")
    if args.config is not None:
        paths.input_file(args.config, "config file")
    if args.output is not None:
        paths.output_file(args.output)
    config = load_config(args.config)
    table = validate_study(args.bids_dir, args.fmriprep_dir, check_data=not args.quick,
                           deep=args.deep, config=config)
    print(format_problems(table, root=Path(args.bids_dir)))
    if args.output:
        from theramark._io import write_tsv

        write_tsv(args.output, table)
    return 2 if (table["severity"] == ERROR).any() else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate", help="check a BIDS + fMRIPrep study and list every problem",
        description="Check a BIDS dataset with fMRIPrep derivatives against what the participant "
        "level reads, and list every problem with its path, one per line. Exit status 2 when there "
        "are errors, 0 when there are only warnings.",
    )
    parser.add_argument("bids_dir", type=Path, help="BIDS dataset root")
    parser.add_argument("--fmriprep-dir", type=Path, default=None,
                        help="fMRIPrep derivatives (default: BIDS_DIR/derivatives/fmriprep)")
    parser.add_argument("--config", type=Path, default=None,
                        help="study.toml: the space, tasks, denoising strategies, QC rules and "
                        "participants.tsv columns to check against (default: the defaults)")
    depth = parser.add_mutually_exclusive_group()
    depth.add_argument("--quick", action="store_true",
                       help="read image headers only (skip the full-file integrity check)")
    depth.add_argument("--deep", action="store_true",
                       help="also read every BOLD inside its mask as the participant level does "
                       "(NaN or constant voxels, empty masks, regions outside the mask); slowest")
    parser.add_argument("-o", "--output", type=Path, default=None, help="also write the table as TSV")
    parser.set_defaults(func=_validate)
