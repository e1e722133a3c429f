"""``theramark simulate``: write a synthetic study with planted effects."""

from __future__ import annotations

import argparse
from pathlib import Path

from theramark.simulate.presets import get_preset


def _simulate(args: argparse.Namespace) -> int:
    from theramark.paths import output_dir
    from theramark.simulate import simulate_study

    output_dir(args.out_dir, "study folder")
    if args.neurofeedback:
        from theramark.simulate.neurofeedback import simulate_neurofeedback_run

        regulation = 0.0 if args.preset == "null" else args.regulation
        paths = simulate_neurofeedback_run(args.out_dir, n_volumes=args.n_volumes, tr=args.tr,
                                           regulation=regulation, random_state=args.seed)
        for name, path in paths.items():
            print(f"{name}: {path.resolve()}")
        print(f"replay it: theramark realtime simulate-scanner {paths['bold']} EXPORT_DIR "
              f"--tr {args.tr}")
        return 0
    if args.features:
        from theramark.simulate.features import simulate_features

        study = simulate_features(args.out_dir, n_per_group=args.n_per_group or 100,
                                  n_nodes=args.n_nodes, null=args.preset == "null", seed=args.seed)
        print(f"{study.root.resolve()} ({study.n_participants} participants x {study.n_sessions} "
              f"sessions x {study.n_edges} edges; planted effects in ground_truth.json)")
        return 0
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
    parser.add_argument("--features", action="store_true",
                        help="feature level only (fast, no BOLD): a features table of "
                        "participants x sessions x edges in partitioned float32 Parquet with a "
                        "planted therapy x time effect and site effects, for group-level scale "
                        "tests (--preset null plants nothing; --n-per-group default 100)")
    parser.add_argument("--neurofeedback", action="store_true",
                        help="one real-time neurofeedback run in native space (64x64x36, 3 mm) "
                        "with ACC up-regulation planted in the regulate blocks (--preset null: "
                        "none), its ACC and amygdala masks, the protocol (BIDS events) and the "
                        "true head motion, for `theramark realtime`")
    parser.add_argument("--n-volumes", type=int, default=120,
                        help="with --neurofeedback: volumes of the run")
    parser.add_argument("--tr", type=float, default=1.0,
                        help="with --neurofeedback: repetition time (s)")
    parser.add_argument("--regulation", type=float, default=0.01,
                        help="with --neurofeedback: fractional ACC signal increase in regulate "
                        "blocks (0.01: 1%%)")
    parser.add_argument("--n-nodes", type=int, default=100,
                        help="with --features: connectome nodes (400: Schaefer-400, 79,800 edges)")
    parser.set_defaults(func=_simulate)
