"""The BIDS-App entry points: ``theramark run BIDS_DIR OUT_DIR {participant,group}`` and ``demo``.

The participant level runs one independent job per functional run (``theramark.imaging``). The
group level runs the stages in the order of the data flow — QC gathering, questionnaire scoring,
imaging group statistics, psychosocial analyses — each adding its tables to the shared
:class:`~theramark.context.GroupContext` and its sections to the report.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from theramark import __version__
from theramark._io import write_text
from theramark.config import load_config, section
from theramark.context import GroupContext
from theramark.errors import BadInputError
from theramark.report import Report, Section, Table, Text
from theramark.study import load_participants

GROUP_DEFAULTS = {"random_state": 0, "title": "theramark report"}


def _group_steps() -> list[tuple[str, Callable[[GroupContext], list[Section]]]]:
    from theramark.group.pipeline import group_step as statistics_group_step
    from theramark.imaging.participant import imaging_group_step, qc_group_step
    from theramark.psychosocial.pipeline import group_step as psychosocial_group_step
    from theramark.scales import group_step as scales_group_step

    return [
        ("quality control", qc_group_step),
        ("imaging summaries", imaging_group_step),
        ("questionnaires", scales_group_step),
        ("imaging group statistics", statistics_group_step),
        ("psychosocial analyses", psychosocial_group_step),
    ]


def study_summary(participants: pd.DataFrame, runs: pd.DataFrame | None) -> Section:
    """Participants by group × session × site, runs found and exclusions."""
    summary = Section("study", "Study summary", order=0)
    lines = [f"{len(participants)} participants."]
    if runs is not None and not runs.empty:
        counts = runs["status"].value_counts()
        lines.append(
            f"{len(runs)} functional runs found: "
            + ", ".join(f"{n} {status}" for status, n in counts.items()) + "."
        )
    summary.add(Text(" ".join(lines)))
    if runs is not None and not runs.empty and "participant_id" in runs:
        table = runs.merge(participants, on="participant_id", how="left")
        index = [c for c in ("group", "site") if c in table.columns]
        if index:
            per_run = (table.drop_duplicates(["participant_id", "session"])
                       .pivot_table(index=index, columns="session", values="participant_id",
                                    aggfunc="count", fill_value=0))
            summary.add(Table(per_run.reset_index(),
                              caption="Participants scanned, by group, site and session"))
        by_task = runs.pivot_table(index="task", columns="status", values="participant_id",
                                   aggfunc="count", fill_value=0)
        summary.add(Table(by_task.reset_index(), caption="Runs by task and status"))
    else:
        columns = [c for c in ("group", "site", "sex") if c in participants.columns]
        if columns:
            summary.add(Table(participants.groupby(columns).size().rename("n").reset_index(),
                              caption="Participants"))
    return summary


def run_group_level(
    bids_dir: str | Path, out_dir: str | Path, config: dict | None = None, verbose: bool = True
) -> Path:
    """Run every group-level stage and write ``OUT_DIR/report.html``; returns the report path."""
    bids_dir, out_dir = Path(bids_dir), Path(out_dir)
    config = config or {}
    options = section(config, "group", GROUP_DEFAULTS)
    participants = load_participants(bids_dir)
    from theramark.imaging.participant import RUNS_TABLE

    if not (out_dir / RUNS_TABLE).is_file():
        raise BadInputError(
            f"{out_dir}: no participant-level outputs ({RUNS_TABLE} is missing); run "
            f"'theramark run {bids_dir} {out_dir} participant' first")
    ctx = GroupContext(bids_dir=bids_dir, out_dir=out_dir, config=config,
                       participants=participants, random_state=int(options["random_state"]))
    report = Report(options["title"], subtitle=f"{bids_dir.resolve().name} — theramark {__version__}")
    for name, step in _group_steps():
        start = time.perf_counter()
        if verbose:
            print(f"[group] {name} ...", flush=True)
        report.add(*step(ctx))
        if verbose:
            print(f"[group] {name} done in {time.perf_counter() - start:.1f} s", flush=True)
    report.add(study_summary(participants, ctx.results.get("runs")))
    return report.write(out_dir / "report.html")


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.level == "participant":
        from theramark.imaging.participant import run_participant_level

        runs = run_participant_level(
            args.bids_dir, args.out_dir, fmriprep_dir=args.fmriprep_dir,
            participant_label=args.participant_label, config=config, n_jobs=args.n_jobs,
            scheduler=args.scheduler,
        )
        failed = runs[runs["status"] == "failed"]
        print(f"{len(runs)} runs: " + ", ".join(
            f"{n} {s}" for s, n in runs["status"].value_counts().items()))
        for row in failed.itertuples():
            print(f"  failed: {row.message}")
        return 0
    report = run_group_level(args.bids_dir, args.out_dir, config)
    print(f"Report: {report.resolve()}")
    return 0


#: The demo's study.toml. Its hypotheses are the findings the psychotherapy-fMRI literature
#: reports (dlPFC–precuneus dynamic-FC variability, amygdala–ACC coupling, nucleus-accumbens
#: response to reward anticipation); they are stated before the analysis, as a registered study
#: would, and are tested as their own family beside the exploratory whole-connectome family.
DEMO_CONFIG = """\
# theramark study configuration for the simulated demo study.
# Every table is optional; see the README for the keys and their defaults.

[longitudinal]
reference_group = "waitlist"
control_group = "HC"
baseline = "pre"
endpoint = "post"
n_permutations = 5000
hypotheses = [
  "dfc_variability|rest|dlpfc_L__precuneus",
  "fc|rest|amygdala_L__dacc",
  "fc|rest|amygdala_R__dacc",
  "psc|mid|nacc_L:gain_anticipation-neutral_anticipation",
  "psc|mid|nacc_R:gain_anticipation-neutral_anticipation",
]

[scales]
primary = "hamd17"

[psychosocial]
# EBIC's gamma: 0.5 is qgraph's default for samples of hundreds; with the demo's 40 participants
# gamma = 0 (BIC) gives the sensitivity Epskamp & Fried (2018) recommend for small samples.
network = { gamma = 0.0 }
"""


def run_demo(out_dir: str | Path, preset: str = "demo", seed: int = 0, n_jobs: int | None = None,
             n_per_group: int | None = None) -> Path:
    """Simulate a study, run the participant and group levels, return the report path.

    The study configuration is ``OUT/study.toml`` (written with :data:`DEMO_CONFIG` on the first
    run; edit it and rerun to change the analysis).
    """
    from theramark.imaging.participant import run_participant_level
    from theramark.simulate import simulate_study

    out_dir = Path(out_dir)
    bids_dir = out_dir / "bids"
    results = out_dir / "derivatives"
    start = time.perf_counter()
    if (bids_dir / "dataset_description.json").is_file():
        print(f"[demo] reusing the simulated study in {bids_dir}", flush=True)
    else:
        print(f"[demo] simulating a {preset} study in {bids_dir} ...", flush=True)
        simulate_study(bids_dir, preset=preset, seed=seed, n_jobs=n_jobs or -1,
                       n_per_group=n_per_group)
    config_path = out_dir / "study.toml"
    if not config_path.is_file():
        write_text(config_path, DEMO_CONFIG)
    config = load_config(config_path)
    print("[demo] participant level ...", flush=True)
    runs = run_participant_level(bids_dir, results, config=config, n_jobs=n_jobs)
    print(f"[demo] {len(runs)} runs processed", flush=True)
    report = run_group_level(bids_dir, results, config)
    print(f"[demo] finished in {time.perf_counter() - start:.0f} s", flush=True)
    return report


def _demo(args: argparse.Namespace) -> int:
    report = run_demo(args.out_dir, preset=args.preset, seed=args.seed, n_jobs=args.n_jobs,
                      n_per_group=args.n_per_group)
    print(f"\nReport: {report.resolve()}\nOpen it in a browser, e.g. file://{report.resolve()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="simulate a psychotherapy study and analyse it end to end",
        description="Simulate a depression-psychotherapy study (CBT, MBCT, waitlist, controls), "
        "run the participant and group levels, and write an HTML report. A rerun reuses what exists.",
    )
    demo.add_argument("out_dir", nargs="?", type=Path, default=Path("theramark-demo"),
                      help="output folder (default: ./theramark-demo)")
    demo.add_argument("--preset", default="demo", choices=["demo", "null"],
                      help="simulation preset (null: no planted effects)")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the simulation")
    demo.add_argument("--n-per-group", type=int, default=None,
                      help="participants per group (default: the preset's 10)")
    demo.add_argument("--n-jobs", type=int, default=None, help="parallel jobs (default: all cores)")
    demo.set_defaults(func=_demo)

    run = subparsers.add_parser(
        "run", help="BIDS-App entry point: participant or group level",
        description="Analyse a BIDS dataset with fMRIPrep derivatives. The participant level "
        "processes every functional run; the group level scores questionnaires, builds the "
        "features table, runs the statistics and writes OUT_DIR/report.html.",
    )
    run.add_argument("bids_dir", type=Path, help="BIDS dataset root")
    run.add_argument("out_dir", type=Path, help="output folder")
    run.add_argument("level", choices=["participant", "group"], help="analysis level")
    run.add_argument("--fmriprep-dir", type=Path, default=None,
                     help="fMRIPrep derivatives (default: BIDS_DIR/derivatives/fmriprep)")
    run.add_argument("--participant-label", nargs="+", default=None,
                     help="participants to process (with or without sub-)")
    run.add_argument("--config", type=Path, default=None, help="study.toml")
    run.add_argument("--n-jobs", type=int, default=None, help="parallel jobs (default: all cores)")
    run.add_argument("--scheduler", default=None,
                     help="address of a Dask distributed scheduler (tcp://HOST:PORT)")
    run.set_defaults(func=_run)

