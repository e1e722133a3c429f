"""``theramark simulate``: write a synthetic study with planted effects."""

from __future__ import annotations

import argparse
from pathlib import Path

from theramark.simulate.presets import get_preset


def _simulate(args: argparse.Namespace) -> int:
    from theramark.paths import output_dir
    from theramark.simulate import simulate_study

    output_dir(args.out_dir, "study folder")
    root = simulate_study(args.out_dir, preset=args.preset, n_per_group=args.n_per_group,
                          resolution=args.resolution, seed=args.seed, n_jobs=args.n_jobs)
    print(root.resolve())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` command."""
    parser = subparsers.add_parser(
        "simulate", help="simulate a psychotherapy fMRI study (BIDS + fMRIPrep derivatives)",
        description="Write a synthetic depression-psychotherapy study (CBT, MBCT, waitlist and "
        "healthy controls; rest and MID runs at three sessions; questionnaire items, EMA) as BIDS "
        "with fMRIPrep-style derivatives. The planted effects are listed in "
        "sourcedata/ground_truth.json.",
    )
    parser.add_argument("out_dir", type=Path, help="BIDS root to create")
    parser.add_argument("--preset", default="demo", choices=["demo", "null", "large"],
                        help="demo: small, large planted effects; null: no planted effects; "
                        "large: realistic effects, --n-per-group participants per group")
    parser.add_argument("--n-per-group", type=int, default=None,
                        help="participants per group (default: the preset's, "
                        + ", ".join(f"{name} {get_preset(name).n_per_group}"
                                    for name in ("demo", "null", "large")) + ")")
    parser.add_argument("--resolution", type=int, default=4, choices=[4, 2],
                        help="voxel size (mm) of the MNI-space derivatives")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="parallel processes over runs (-1: all cores)")
    parser.set_defaults(func=_simulate)
