"""``theramark predict``: leakage-safe response prediction on any features table.

The table is wide (one row per participant: an id column, the outcome column, feature columns)
or theramark's long features table (``participant_id, session, task, measure, feature, value``
plus participant and score columns; ``--session`` picks the session). It writes the tables of the
group-level ``predict`` analysis under ``DIR/group/predict/`` and a one-section report
``DIR/report.html``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from theramark.errors import BadInputError

_LONG = {"participant_id", "session", "measure", "feature", "value"}


def read_table(path: Path) -> pd.DataFrame:
    """A TSV, CSV or Parquet table."""
    if not path.is_file():
        raise BadInputError(f"{path}: features table not found")
    suffix = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    sep = "," if suffix.endswith(".csv") else "\t"
    return pd.read_csv(path, sep=sep, na_values=["n/a"])


def wide_table(table: pd.DataFrame, id_column: str, session: str | None, source: str) -> pd.DataFrame:
    """One row per participant: the table itself (wide) or the long features table at ``session``."""
    from theramark.group.features import session_table, wide_features

    if _LONG <= set(table.columns):
        table = table.astype({"session": str, "participant_id": str})
        sessions = sorted(table["session"].str.removeprefix("ses-").unique())
        if session is None:
            if len(sessions) > 1:
                raise BadInputError(f"{source}: a long features table with sessions {', '.join(sessions)}: "
                                    "choose one with --session")
            session = sessions[0]
        session = session.removeprefix("ses-")
        table = table.assign(session=table["session"].str.removeprefix("ses-"))
        if session not in sessions:
            raise BadInputError(f"{source}: no rows for session {session!r}; sessions: {', '.join(sessions)}")
        at = table[table["session"] == session]
        features = wide_features(at[at["measure"] != "qc"])
        extra = session_table(at)
        wide = extra.join(features).reset_index(level="session", drop=True).reset_index()
        return wide.rename(columns={"participant_id": id_column}) if id_column != "participant_id" else wide
    if id_column not in table:
        raise BadInputError(f"{source}: no id column {id_column!r} (columns: "
                            f"{', '.join(map(str, table.columns[:20]))}); set --id-column")
    repeated = table[id_column].astype(str).duplicated()
    if repeated.any():
        raise BadInputError(f"{source}: one row per participant expected; repeated ids "
                            f"{', '.join(table.loc[repeated, id_column].astype(str).unique()[:10])} "
                            "(a long table needs the columns participant_id, session, measure, feature, "
                            "value)")
    return table


def _settings(args: argparse.Namespace) -> dict:
    from theramark.config import load_config, section

    settings = section(load_config(args.config) if args.config else None, "predict")
    for key in ("n_permutations", "n_splits", "n_repeats", "inner_splits", "n_boot", "cv"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if args.model:
        settings["models"] = list(args.model)
    if args.no_tune:
        settings["tune"] = False
    return settings


def run_predict(args: argparse.Namespace) -> int:
    from theramark.predict.pipeline import (
        NAME,
        SITE_COLUMN,
        PredictionSpec,
        complete_rows,
        describe_sample,
        dropped_table,
        encode_columns,
        predict_table,
        select_features,
    )
    from theramark.results import AnalysisResult

    source = str(args.features_table)
    settings = _settings(args)
    table = wide_table(read_table(args.features_table), args.id_column, args.session, source)
    if args.outcome not in table:
        raise BadInputError(f"{source}: no outcome column {args.outcome!r}; columns: "
                            f"{', '.join(map(str, table.columns[:30]))}")
    if args.site_column and args.site_column not in table:
        raise BadInputError(f"{source}: no site column {args.site_column!r}")
    reserved = {args.id_column, args.outcome, args.site_column}
    clinical = list(args.clinical or [])
    for name in clinical:
        if name not in table:
            raise BadInputError(f"{source}: no clinical column {name!r}")
    numeric = [c for c in table.columns if c not in reserved and c not in clinical
               and pd.api.types.is_numeric_dtype(table[c])]
    imaging = (select_features([c for c in table.columns if c not in reserved and c not in clinical],
                               args.features, f"{source}: --features") if args.features else numeric)
    text = [c for c in imaging if not pd.api.types.is_numeric_dtype(table[c])]
    if text:
        raise BadInputError(f"{source}: non-numeric feature column(s) {text[:10]}")
    if not imaging and not clinical:
        raise BadInputError(f"{source}: no numeric feature columns besides the id and the outcome")
    y = table[args.outcome]
    task = args.task or ("classification" if y.dropna().nunique() == 2 else "regression")
    data = pd.DataFrame({"participant_id": table[args.id_column].astype(str)})
    if task == "classification":
        labels = sorted(y.dropna().unique().tolist(), key=str)
        if len(labels) != 2:
            raise BadInputError(f"{source}: --task classification needs two outcome classes in "
                                f"{args.outcome!r}, got {len(labels)}: {labels[:10]}")
        data["y"] = np.where(y.isna(), np.nan, (y == labels[1]).astype(float))
    else:
        values = pd.to_numeric(y, errors="coerce")
        if (values.isna() & y.notna()).any():
            raise BadInputError(f"{source}: outcome {args.outcome!r} is not numeric")
        data["y"] = values
    encoded, clinical_cols = encode_columns(table, clinical)
    data = pd.concat([data, table[imaging].astype(float), encoded], axis=1)
    if args.site_column:
        data[SITE_COLUMN] = table[args.site_column].astype(str).where(table[args.site_column].notna())
    data, dropped = complete_rows(data, ["y", *imaging, *clinical_cols, SITE_COLUMN], "input",
                                  {"y": f"outcome {args.outcome}", SITE_COLUMN: f"site {args.site_column}"})
    spec = PredictionSpec(
        task=task, imaging=imaging, clinical=clinical_cols, models=list(settings["models"]),
        cv=settings["cv"], n_splits=settings["n_splits"], n_repeats=settings["n_repeats"],
        inner_splits=settings["inner_splits"], tune=settings["tune"],
        n_permutations=settings["n_permutations"], n_boot=settings["n_boot"],
        harmonize=settings["harmonize"] and not args.no_harmonize, harmonize_covariates=[],
        unseen_site=settings["unseen_site"], random_state=args.seed,
        min_arm_size=settings["min_arm_size"])
    result = AnalysisResult(NAME)
    result.parameters.update({
        "predict": {**settings, "enabled": True, "imaging": list(args.features or ["all numeric"])},
        "task": task, "instrument": args.outcome, "outcome": "change" if task == "regression" else "response",
        "outcome_column": args.outcome, "source": source, "baseline": args.session or "",
        "endpoint": "", "groups": [], "imaging_features": imaging, "clinical_predictors": clinical_cols,
        "random_state": args.seed})
    describe_sample(data, spec, result)
    result.add("sample", data[["participant_id", *([SITE_COLUMN] if args.site_column else []), "y"]]
               .rename(columns={SITE_COLUMN: "site", "y": args.outcome}))
    predict_table(data, spec, result)
    result.add("dropped", dropped_table([dropped]))
    result.summary["n_dropped"] = int(len(result.tables["dropped"]))
    out = Path(args.out)
    path = _write(out, result, source, args.config)
    primary = result.summary["primary"]
    line = (f"{primary['model']} ({primary['feature_set']}): {primary['metric']} "
            f"{primary['estimate']:.3f} [{primary['ci_low']:.3f}, {primary['ci_high']:.3f}]")
    if "p_value" in primary:
        line += f", permutation p = {primary['p_value']:.4f}"
    print(f"{line}; n = {result.summary['n']}, {len(result.tables['dropped'])} dropped")
    for warning in result.summary["warnings"]:
        print(warning)
    print(f"tables: {out / 'group' / NAME}; report: {path}")
    return 0


def _write(out: Path, result, source: str, config: Path | None) -> Path:
    """The tables under ``out/group/predict/``, then ``out/report.html`` built from them alone."""
    import datetime as _dt

    from theramark import __version__, paths
    from theramark._io import write_json
    from theramark.registry import resolve
    from theramark.results import write_analysis, write_skipped

    paths.output_subdirs(out, ["group"])
    write_analysis(out / "group", result)
    write_skipped(out / "group", [result])
    write_json(out / "group" / "run.json", {
        "title": "theramark predict", "dataset": Path(source).name,
        "software": f"theramark {__version__}",
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "config": str(config) if config else None, "analyses": [result.name]})
    # reached by name, as the group level reaches every report builder through the registry: an
    # analysis package never imports the report
    return resolve("theramark.report:build_report")(out)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command."""
    parser = subparsers.add_parser(
        "predict", help="cross-validated response prediction on a features table",
        description="Nested, leakage-safe cross-validation (ComBat, scaling, selection and tuning "
        "inside the folds), a permutation test of the whole procedure, bootstrap CIs, feature "
        "stability and a report, on any features table (TSV, CSV or Parquet; one row per "
        "participant, or theramark's long features table with --session).")
    parser.add_argument("features_table", type=Path, help="features table (TSV, CSV or Parquet)")
    parser.add_argument("--outcome", required=True, help="column to predict (two classes: "
                        "classification; numbers: regression)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--id-column", default="participant_id", help="participant id column")
    parser.add_argument("--session", default=None, help="session of a long features table")
    parser.add_argument("--features", nargs="+", default=None, metavar="PATTERN",
                        help="feature columns: names, prefixes (measure|task) or globs; default: "
                        "every numeric column")
    parser.add_argument("--clinical", nargs="+", default=None, metavar="COLUMN",
                        help="clinical predictor columns (text columns are dummy coded; never "
                        "harmonized); with --features, both feature sets are compared")
    parser.add_argument("--model", nargs="+", choices=["elasticnet", "svm", "cpm"], default=None,
                        help="model(s) (default: [predict] models of --config, else elasticnet)")
    parser.add_argument("--task", choices=["classification", "regression"], default=None,
                        help="default: classification for a two-valued outcome, else regression")
    parser.add_argument("--site-column", default=None,
                        help="site column: ComBat inside the folds, permutations within sites")
    parser.add_argument("--no-harmonize", action="store_true", help="no ComBat even with sites")
    parser.add_argument("--cv", choices=["stratified", "kfold", "site"], default=None)
    parser.add_argument("--n-splits", type=int, default=None)
    parser.add_argument("--n-repeats", type=int, default=None)
    parser.add_argument("--inner-splits", type=int, default=None)
    parser.add_argument("--no-tune", action="store_true",
                        help="fixed hyperparameters (no inner loop): much faster permutations")
    parser.add_argument("--n-permutations", type=int, default=None,
                        help="permutations of the whole procedure (default: [predict] of --config, 200)")
    parser.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples of the CIs")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--config", type=Path, default=None,
                        help="study.toml whose [predict] settings are the defaults")
    parser.set_defaults(func=run_predict)
