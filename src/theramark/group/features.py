"""The features table: every participant-level measure × participant × session in one tidy table.

:func:`build_features` takes the long participant-level outputs
(``theramark.imaging.outputs.read_participant_outputs``: ``participant_id, session, task, run,
measure, feature, value``), averages the runs (``run-``) of the same task, drops runs flagged
``excluded`` by QC,
and joins the participants table (age, sex, site, group...) and the scored scales (one column per
score: ``<instrument>_total``, ``<instrument>_<subscale>``). The result is long (one row per
participant × session × task × measure × feature), which Parquet stores compactly; analyses pivot
it with :func:`wide_features` (one row per participant × session, one column per feature key
``measure|task|feature``) and :func:`session_table` (the covariates and scores per participant ×
session).

Runs that differ by another entity than ``run-`` (two acquisitions ``acq-``, echoes, resolutions)
are not averaged: the reader gives them the task ``rest_acq-b``
(:func:`theramark.study.entities.task_key`), so they are separate features
(``pearsoncorrelation|rest_acq-b|amygdala_L__dacc`` beside ``pearsoncorrelation|rest|...``). A
study without such entities keeps plain task labels (``rest``, ``mid``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from theramark._io import atomic_path, provenance, write_json, write_tsv
from theramark.errors import BadInputError
from theramark.registry import MEASURES as _REGISTRY
from theramark.study.entities import with_sub_prefix, without_ses_prefix

__all__ = [
    "FEATURE_KEY_SEPARATOR",
    "build_features",
    "feature_key",
    "session_table",
    "split_feature_key",
    "wide_features",
    "write_features",
]

LONG_COLUMNS = ("participant_id", "session", "task", "run", "measure", "feature", "value")
MEASURES = tuple(_REGISTRY)
FEATURE_KEY_SEPARATOR = "|"
# a study this small also gets a TSV copy of the features table (rows of the long table)
TSV_MAX_ROWS = 200_000


def _normalize_ids(table: pd.DataFrame, what: str) -> pd.DataFrame:
    table = table.copy()
    if "participant_id" not in table:
        raise BadInputError(f"{what}: no participant_id column (columns: {list(table.columns)})")
    table["participant_id"] = with_sub_prefix(table["participant_id"].astype("string"))
    if "session" in table:
        table["session"] = without_ses_prefix(table["session"].astype("string"))
    return table


def feature_key(measure: str, task: str, feature: str) -> str:
    """Column name of one feature in the wide tables: ``measure|task|feature``."""
    return FEATURE_KEY_SEPARATOR.join((str(measure), str(task), str(feature)))


def split_feature_key(key: str) -> tuple[str, str, str]:
    """Inverse of :func:`feature_key`."""
    parts = key.split(FEATURE_KEY_SEPARATOR, 2)
    if len(parts) != 3:
        raise BadInputError(f"'{key}' is not a feature key (measure|task|feature)")
    return parts[0], parts[1], parts[2]


def _check_long(long_outputs: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in LONG_COLUMNS if c not in long_outputs.columns]
    if missing:
        raise BadInputError(
            f"participant outputs: column(s) {missing} missing; expected {list(LONG_COLUMNS)} "
            "(docs/contracts.md, tidy features)"
        )
    table = _normalize_ids(long_outputs[list(LONG_COLUMNS)], "participant outputs")
    if table["session"].isna().any():
        table["session"] = table["session"].fillna("1")
    unknown = sorted(set(table["measure"].dropna()) - set(MEASURES))
    if unknown:
        raise BadInputError(f"participant outputs: unknown measure(s) {unknown}; "
                            f"expected one of {list(MEASURES)}")
    values = pd.to_numeric(table["value"], errors="coerce")
    bad = values.isna() & table["value"].notna()
    if bad.any():
        example = table.loc[bad].iloc[0]
        raise BadInputError(
            f"participant outputs: non-numeric value {example['value']!r} for "
            f"{example['participant_id']} ses-{example['session']} {example['measure']} "
            f"{example['feature']}"
        )
    table["value"] = values.astype(float)
    table["run"] = table["run"].astype("string").fillna("")
    table["task"] = table["task"].astype("string").fillna("")
    keys = ["participant_id", "session", "task", "run", "measure", "feature"]
    dup = table.duplicated(keys)
    if dup.any():
        example = table.loc[dup, keys].iloc[0].tolist()
        raise BadInputError(f"participant outputs: duplicated row for {example}")
    return table


def _drop_excluded(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    run_keys = ["participant_id", "session", "task", "run"]
    flags = table[(table["measure"] == "qc") & (table["feature"] == "excluded")]
    excluded = flags.loc[flags["value"] > 0, run_keys]
    if excluded.empty:
        return table, excluded
    marker = table[run_keys].merge(excluded.assign(_x=1), on=run_keys, how="left")["_x"]
    keep = marker.isna().to_numpy() | (table["measure"] == "qc").to_numpy()
    return table[keep], excluded


def _scores_wide(scores: Mapping[str, pd.DataFrame]) -> pd.DataFrame | None:
    frames = []
    for instrument, frame in scores.items():
        if not isinstance(frame, pd.DataFrame):
            raise BadInputError(f"scores['{instrument}'] is not a table")
        frame = _normalize_ids(frame, f"scores['{instrument}']")
        if "session" not in frame:
            raise BadInputError(f"scores['{instrument}']: no session column")
        value_columns = [c for c in frame.columns
                         if c not in ("participant_id", "session")
                         and pd.api.types.is_numeric_dtype(frame[c])]
        renamed = frame[["participant_id", "session", *value_columns]].rename(
            columns={c: f"{instrument}_{c}" for c in value_columns})
        if renamed.duplicated(["participant_id", "session"]).any():
            raise BadInputError(f"scores['{instrument}']: more than one row per participant × "
                                "session")
        frames.append(renamed.set_index(["participant_id", "session"]))
    if not frames:
        return None
    return pd.concat(frames, axis=1).reset_index()


def build_features(
    long_outputs: pd.DataFrame,
    participants: pd.DataFrame,
    scores: Mapping[str, pd.DataFrame] | None = None,
    drop_excluded: bool = True,
) -> pd.DataFrame:
    """One tidy table of every feature × participant × session, with participants and scores.

    Parameters
    ----------
    long_outputs : DataFrame
        ``participant_id, session, task, run, measure, feature, value`` (docs/contracts.md).
    participants : DataFrame
        ``participants.tsv`` (``participant_id`` plus age, sex, site, group...).
    scores : mapping of str to DataFrame, optional
        Scored scales by instrument id (``participant_id, session, total, <subscales>``).
    drop_excluded : bool
        Leave out every non-QC feature of a run whose QC ``excluded`` flag is set.

    Returns
    -------
    DataFrame
        Columns ``participant_id, session, task, measure, feature, value, n_runs`` followed by the
        participants' columns and one column per score. Runs of the same task are averaged
        (``n_runs`` counts them); a ``task`` that carries other entities (``rest_acq-b``) is a task
        of its own, never averaged with ``rest``. Rows are sorted by participant, session,
        measure, task, feature.

    Raises
    ------
    BadInputError
        Missing columns, unknown measures, non-numeric values, duplicated rows, or participants in
        the outputs that are not in ``participants``.
    """
    table = _check_long(long_outputs)
    if drop_excluded:
        table, _ = _drop_excluded(table)
    participants = _normalize_ids(participants, "participants")
    if participants["participant_id"].duplicated().any():
        dup = participants.loc[participants["participant_id"].duplicated(), "participant_id"]
        raise BadInputError(f"participants: duplicated participant_id {list(dup)[:5]}")
    unknown = sorted(set(table["participant_id"]) - set(participants["participant_id"]))
    if unknown:
        raise BadInputError(f"participant outputs: participant(s) {unknown[:5]} not in "
                            "participants.tsv")
    keys = ["participant_id", "session", "task", "measure", "feature"]
    grouped = table.groupby(keys, sort=True, observed=True)["value"]
    features = grouped.mean().to_frame("value")
    features["n_runs"] = grouped.count().astype(int)
    features = features.reset_index()
    participant_columns = [c for c in participants.columns if c != "session"]
    clash = [c for c in participant_columns if c in features.columns and c != "participant_id"]
    if clash:
        raise BadInputError(f"participants: column(s) {clash} clash with the features table")
    features = features.merge(participants[participant_columns], on="participant_id", how="left")
    if scores:
        wide_scores = _scores_wide(scores)
        if wide_scores is not None:
            features = features.merge(wide_scores, on=["participant_id", "session"], how="left")
    for column in ("participant_id", "session", "task", "measure", "feature"):
        features[column] = features[column].astype(str)
    return features.sort_values(["participant_id", "session", "measure", "task", "feature"]
                                ).reset_index(drop=True)


def wide_features(
    features: pd.DataFrame,
    measures: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Pivot the features table to one row per participant × session, one column per feature.

    Parameters
    ----------
    features : DataFrame
        Output of :func:`build_features`.
    measures, tasks : sequence of str, optional
        Keep only these measures / tasks.

    Returns
    -------
    DataFrame
        Index ``(participant_id, session)``; columns are feature keys ``measure|task|feature``
        (:func:`feature_key`), in the order of the features table. Missing values are NaN.
    """
    subset = features
    if measures is not None:
        subset = subset[subset["measure"].isin(list(measures))]
    if tasks is not None:
        subset = subset[subset["task"].isin(list(tasks))]
    if subset.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_arrays([[], []],
                                                            names=["participant_id", "session"]))
    keys = (subset["measure"].astype(str) + FEATURE_KEY_SEPARATOR + subset["task"].astype(str)
            + FEATURE_KEY_SEPARATOR + subset["feature"].astype(str))
    order = list(dict.fromkeys(keys))
    wide = pd.DataFrame({"participant_id": subset["participant_id"].to_numpy(),
                         "session": subset["session"].to_numpy(), "key": keys.to_numpy(),
                         "value": subset["value"].to_numpy()})
    wide = wide.pivot(index=["participant_id", "session"], columns="key", values="value")
    wide.columns.name = None
    return wide[order]


def session_table(features: pd.DataFrame) -> pd.DataFrame:
    """Participant and score columns, one row per participant × session (index as wide tables)."""
    skip = {"task", "measure", "feature", "value", "n_runs"}
    columns = [c for c in features.columns if c not in skip]
    table = features[columns].drop_duplicates(["participant_id", "session"])
    return table.set_index(["participant_id", "session"]).sort_index()


def write_features(features: pd.DataFrame, group_dir: str | os.PathLike,
                   tsv_max_rows: int = TSV_MAX_ROWS, parameters: Mapping | None = None
                   ) -> list[Path]:
    """Write ``features.parquet`` (+ ``features.tsv`` when small) and a JSON sidecar, atomically."""
    group_dir = Path(group_dir)
    written = []
    target = group_dir / "features.parquet"
    with atomic_path(target) as tmp:
        features.to_parquet(tmp, index=False)
    written.append(target)
    if len(features) <= tsv_max_rows:
        written.append(write_tsv(group_dir / "features.tsv", features))
    sidecar = provenance({
        "n_rows": len(features), "n_participants": int(features["participant_id"].nunique()),
        "measures": sorted(features["measure"].unique()) if len(features) else [],
        "runs": "averaged within participant × session × task (runs that differ by another "
                "entity than run-, e.g. acq-, have their own task label, e.g. rest_acq-b)",
        **dict(parameters or {}),
    })
    sidecar["Columns"] = {c: str(features[c].dtype) for c in features.columns}
    written.append(write_json(group_dir / "features.json", sidecar))
    return written
