"""The BIDS-App entry points: ``theramark run BIDS_DIR OUT_DIR {participant,group}``, ``report``
and ``demo``.

The participant level runs one independent job per functional run (``theramark.imaging``). The
group level runs the analyses of :data:`theramark.registry.ANALYSES` in their order; each writes
result tables and a sidecar under ``OUT_DIR/group/<analysis>/`` and hands in-memory tables on
through the :class:`~theramark.context.GroupContext`. The report is then built from the files
alone, which is also what ``theramark report OUT_DIR`` does.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path

import pandas as pd

from theramark import __version__
from theramark._dask import dask_client
from theramark._io import write_json, write_text
from theramark.config import load_config, section
from theramark.context import GroupContext
from theramark.errors import BadInputError
from theramark.registry import ANALYSES, resolve
from theramark.results import AnalysisResult, write_analysis, write_skipped
from theramark.study import load_participants
from theramark.study.design import infer_design


def study_sessions(bids_dir: Path, participants: pd.DataFrame) -> list[str]:
    """Session labels a study has: ``ses-*`` folders, phenotype ``session`` values, wide columns."""
    from theramark.study.entities import without_ses_prefix
    from theramark.study.participants import read_phenotype_table

    found: list[str] = []
    for subject in sorted(bids_dir.glob("sub-*")):
        found += [p.name.removeprefix("ses-") for p in sorted(subject.glob("ses-*")) if p.is_dir()]
    phenotype = bids_dir / "phenotype"
    for path in sorted(phenotype.glob("*.tsv")) if phenotype.is_dir() else []:
        with path.open(encoding="utf-8-sig") as handle:
            header = handle.readline().rstrip("\r\n").split("\t")
        if "session" in header:
            table = read_phenotype_table(path)
            found += [str(s) for s in without_ses_prefix(table["session"].dropna()).unique()]
    found += [str(c).rsplit("_ses-", 1)[1] for c in participants.columns if "_ses-" in str(c)]
    return list(dict.fromkeys(found))


def has_functional_data(bids_dir: Path) -> bool:
    """Whether the dataset has any BOLD run (raw or fMRIPrep), so imaging is expected."""
    patterns = ("sub-*/func/*_bold.nii*", "sub-*/ses-*/func/*_bold.nii*")
    roots = [bids_dir, bids_dir / "derivatives" / "fmriprep"]
    return any(next(root.glob(p), None) is not None for root in roots for p in patterns)


def group_context(bids_dir: Path, out_dir: Path, config: dict) -> GroupContext:
    """The context of a group-level run: participants, the study design and the seed."""
    participants = load_participants(bids_dir)
    study = section(config, "study")
    design = infer_design(participants, study_sessions(bids_dir, participants), study,
                          source=(config or {}).get("_path", {}).get("path", "study.toml"))
    return GroupContext(bids_dir=bids_dir, out_dir=out_dir, config=config,
                        participants=participants, design=design,
                        random_state=int(study["random_state"]))


def run_analysis(ctx: GroupContext, name: str) -> AnalysisResult:
    """Run one registered group-level analysis and write its results; returns them."""
    by_name = {a.name: a for a in ANALYSES}
    if name not in by_name:
        raise BadInputError(f"unknown analysis {name!r}; analyses are {', '.join(by_name)}")
    result = resolve(by_name[name].run)(ctx)
    write_analysis(ctx.group_dir, result)
    return result


def run_group_level(
    bids_dir: str | Path, out_dir: str | Path, config: dict | None = None, verbose: bool = True,
    scheduler: str | None = None,
) -> Path:
    """Run every group-level analysis of the registry, then build ``OUT_DIR/report.html``.

    With ``scheduler`` (``tcp://host:port`` of a Dask distributed scheduler) the permutation tests
    (max-T, NBS) spread their permutations over its workers; the results are the same as in one
    process (:mod:`theramark.group.inference`).

    Each analysis writes its tables and a sidecar of the parameters it used under
    ``OUT_DIR/group/<analysis>/``; steps that could not run are listed in
    ``OUT_DIR/group/skipped.tsv``. The report is built from those files alone
    (:func:`theramark.report.build_report`). Returns the report path.
    """
    from theramark.imaging.group import has_participant_outputs
    from theramark.report import build_report

    bids_dir, out_dir = Path(bids_dir), Path(out_dir)
    config = config or {}
    if not has_participant_outputs(out_dir) and has_functional_data(bids_dir):
        from theramark.imaging.participant import RUNS_TABLE

        raise BadInputError(
            f"{out_dir}: no participant-level outputs ({RUNS_TABLE} is missing); run "
            f"'theramark run {bids_dir} {out_dir} participant' first")
    ctx = group_context(bids_dir, out_dir, config)
    with dask_client(scheduler) as client:
        ctx.client = client  # read by the analyses that permute (group/pipeline.py)
        results = _run_analyses(ctx, verbose)
    write_skipped(ctx.group_dir, results)
    write_json(ctx.group_dir / "run.json", {
        "title": section(config, "study")["title"],
        "dataset": bids_dir.resolve().name,
        "software": f"theramark {__version__}",
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "config": str(config.get("_path", {}).get("path", "")) or None,
        "analyses": [a.name for a in ANALYSES],
    })
    return build_report(out_dir)


def _run_analyses(ctx: GroupContext, verbose: bool) -> list[AnalysisResult]:
    results = []
    for analysis in ANALYSES:
        start = time.perf_counter()
        if verbose:
            print(f"[group] {analysis.title} ...", flush=True)
        result = run_analysis(ctx, analysis.name)
        results.append(result)
        if verbose:
            print(f"[group] {analysis.title} done in {time.perf_counter() - start:.1f} s"
                  + (f" ({len(result.skipped)} step(s) skipped: see group/skipped.tsv)"
                     if result.skipped else ""), flush=True)
    return results




def _run(args: argparse.Namespace) -> int:
    from theramark import paths

    paths.input_dir(args.bids_dir, "BIDS folder")
    fmriprep = args.fmriprep_dir or Path(args.bids_dir) / "derivatives" / "fmriprep"
    if args.fmriprep_dir is not None or fmriprep.exists():
        paths.input_dir(fmriprep, "fMRIPrep folder")
    if args.config is not None:
        paths.input_file(args.config, "config file")
    if args.level == "participant":
        # every folder a run will write (OUT/sub-<label>[/ses-<label>]/func), checked before any
        # run starts: a file in the way would otherwise fail each run
        labels = {f"sub-{label.removeprefix('sub-')}" for label in args.participant_label or []}
        folders = []
        for source in (Path(args.bids_dir), fmriprep):
            for subject in sorted(source.glob("sub-*")) if source.is_dir() else []:
                if not subject.is_dir() or (labels and subject.name not in labels):
                    continue
                sessions = [s for s in sorted(subject.glob("ses-*")) if s.is_dir()]
                folders += [f"{subject.name}/{s.name}/func" for s in sessions
                            if (s / "func").is_dir()]
                if (subject / "func").is_dir():
                    folders.append(f"{subject.name}/func")
        paths.output_subdirs(args.out_dir, folders)
    else:
        paths.output_subdirs(args.out_dir, ["group"])
        paths.output_file(Path(args.out_dir) / "report.html", "report file")
    config = load_config(args.config)
    if args.level == "participant":
        from theramark.imaging.participant import run_participant_level

        runs = run_participant_level(
            args.bids_dir, args.out_dir, fmriprep_dir=args.fmriprep_dir,
            participant_label=args.participant_label, config=config, n_jobs=args.n_jobs,
            scheduler=args.scheduler,
        )
        from theramark.imaging.participant import RUNS_TABLE

        failed = runs[runs["status"] == "failed"]
        counts = runs["status"].value_counts()
        reused = int(runs["reused"].sum())
        print(f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
              + (f" ({reused} reused from an earlier attempt with the same parameters)"
                 if reused else ""))
        for row in failed.itertuples():
            print(f"  failed: {row.message}")
        if len(failed):
            # exit 1 (an analysis error) when any run failed; runs excluded by QC are a result
            print(f"theramark: error: {len(failed)} of {len(runs)} runs failed; see "
                  f"{Path(args.out_dir) / RUNS_TABLE}", file=sys.stderr)
            return 1
        return 0
    report = run_group_level(args.bids_dir, args.out_dir, config, scheduler=args.scheduler)
    print(f"Report: {report.resolve()}")
    return 0


#: The demo's study.toml. Its hypotheses are the findings the psychotherapy-fMRI literature
#: reports (dlPFC–precuneus dynamic-FC variability, amygdala–ACC coupling, nucleus-accumbens
#: response to reward anticipation); they are stated before the analysis, as a registered study
#: would, and are tested as their own family beside the exploratory whole-connectome family.
DEMO_CONFIG = """\
# theramark study configuration for the simulated demo study.
# Every key not written here takes its default: `theramark config show study.toml` prints them all.

[study]
# The simulator's arms and visits (theramark.simulate.design): CBT and MBCT against a waitlist,
# healthy controls for normalization; pre, mid (controls skip it) and post.
reference_group = "waitlist"
control_group = "HC"
groups = ["CBT", "MBCT", "waitlist", "HC"]
sessions = ["pre", "mid", "post"]

[longitudinal]
n_permutations = 5000
link_instruments = ["hamd17", "shaps", "bdi2"]
hypotheses = [
  "dfcvariability|rest|dlpfc_L__precuneus",
  "pearsoncorrelation|rest|amygdala_L__dacc",
  "pearsoncorrelation|rest|amygdala_R__dacc",
  "psc|mid|nacc_L:gain_anticipation-neutral_anticipation",
  "psc|mid|nacc_R:gain_anticipation-neutral_anticipation",
]

[dynamics]
# The simulator plants a thalamo-occipital connectivity state whose occupancy rises under CBT
# (theramark.simulate.presets: state_occupancy_cbt); two states, and k = 2-4 compared.
n_states = 2
k_range = [2, 3, 4]

[dynamics.precedence]
# ... and an mfg_R-amygdala_R coupling that tracks the next session's HAMD-17 improvement.
brain = "pearsoncorrelation|rest|amygdala_R__mfg_R"
symptom = "hamd17"

[scales]
primary = "hamd17"

[psychosocial]
# The simulator's psychosocial variables (theramark.simulate.phenotype) and the analyses of the
# pathways it plants: neglect -> stress -> anhedonia moderated by sex, social support buffering
# stress, a financial-strain threshold, and the symptom network.
[psychosocial.variables]
ctq_en = "ctq_sf.emotional_neglect"
pss10 = "pss10.total"
mspss = "mspss.total"
ucla3 = "ucla3.total"
neuroticism = "bfi_short.neuroticism"
extraversion = "bfi_short.extraversion"
financial_strain = "financial_strain.financial_strain"
shaps = "shaps.total"
hamd17 = "hamd17.total"
sex = "sex"

[psychosocial.mediation]
x = "ctq_en"
m = ["pss10"]
y = "shaps"
w = "sex"
models = [4, 7, 58]

[psychosocial.moderation]
x = "pss10"
w = "mspss"
y = "shaps"

[psychosocial.breakpoint]
x = "financial_strain"
y = "shaps"

[psychosocial.network]
nodes = ["ctq_en", "pss10", "mspss", "ucla3", "neuroticism", "extraversion", "financial_strain",
         "shaps", "hamd17"]
# EBIC's gamma: 0.5 is qgraph's default for samples of hundreds; with the demo's 40 participants
# gamma = 0 (BIC) gives the sensitivity Epskamp & Fried (2018) recommend for small samples.
gamma = 0.0

[psychosocial.ema]
file = "ema"
x = "social_contact"
y = "positive_affect"
moderator = "shaps"

[predict]
# Response prediction (theramark.predict.pipeline): does baseline sgACC-NAcc connectivity, which the
# simulator plants, predict HAMD-17 response beyond the baseline score? 30 patients are far too few
# for a usable model, and the report says so. Modest settings keep the demo fast; for a study keep
# tune = true, n_repeats = 10 and use n_permutations >= 1000.
enabled = true
outcome = "response"
imaging = ["pearsoncorrelation|rest|nacc_L__sgacc", "pearsoncorrelation|rest|nacc_R__sgacc"]
clinical = ["baseline_total"]
n_repeats = 2
tune = false
n_permutations = 40
n_boot = 1000
pai_n_boot = 500
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
    from theramark import paths

    out = Path(args.out_dir)
    paths.output_subdirs(out, ["bids", "derivatives/group"])
    paths.output_file(out / "study.toml", "config file")
    paths.output_file(out / "derivatives" / "report.html", "report file")
    report = run_demo(args.out_dir, preset=args.preset, seed=args.seed, n_jobs=args.n_jobs,
                      n_per_group=args.n_per_group)
    print(f"\nReport: {report.resolve()}\nOpen it in a browser, e.g. file://{report.resolve()}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from theramark import paths
    from theramark.report import build_report

    paths.input_dir(args.out_dir, "output folder")
    paths.output_file(Path(args.out_dir) / "report.html", "report file")
    report = build_report(args.out_dir)
    print(f"Report: {report.resolve()}")
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
                     help="address of a Dask distributed scheduler (tcp://HOST:PORT): participant runs, "
                     "or the group level's permutations, run on its workers")
    run.set_defaults(func=_run)

    report = subparsers.add_parser(
        "report", help="rebuild OUT_DIR/report.html from the group-level results",
        description="Rebuild the HTML report from the result tables and sidecars under "
        "OUT_DIR/group/ without recomputing anything (after 'theramark run ... group').",
    )
    report.add_argument("out_dir", type=Path, help="output folder of 'theramark run'")
    report.set_defaults(func=_report)

