"""The scoring engine: item answers → totals, subscales, severity and per-row flags.

One function, :func:`score`, works for every instrument from its definition. All arithmetic is on
(participants × items) arrays; the only Python loops run over the items and subscales of an
instrument, never over rows.

Missing items and proration
---------------------------
A unit (an item, or a domain for QIDS-SR16) is missing when it is unanswered or, with
``errors="flag"``, when its answer is not allowed. A score with more missing units than the
instrument's ``max_missing`` is not computed (n/a). Otherwise a ``mean`` score is the mean of the
answered units and a ``sum`` score is prorated over the answered units' possible range::

    score = T_min + (S - a_min) * (T_max - T_min) / (a_max - a_min)

with ``S`` the sum of the answered units, ``a_min``/``a_max`` the lowest/highest possible sum of the
answered units and ``T_min``/``T_max`` those of all units. When all units share one range this is the
usual "mean of answered items × number of items" rule (PHQ-9: sum × 9 / items answered), and it
can never leave the instrument's range, even when items have different ranges (HAMD-17).
Prorated scores are not rounded; the ``prorated`` flag marks them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from theramark.errors import BadInputError
from theramark.scales.definitions import Instrument, load_instrument
from theramark.study.entities import without_ses_prefix

ERROR_MODES = ("raise", "flag")
_MAX_LISTED = 1000

FLAG_COLUMNS = ["n_answered", "n_missing", "n_invalid", "prorated", "scored",
                "missing_items", "invalid_items", "flags"]


def _identifiers(table: pd.DataFrame, source: str) -> tuple[pd.DataFrame, np.ndarray]:
    """``participant_id`` (and ``session`` without ``ses-``) of every row, and which rows lack one."""
    if "participant_id" not in table.columns:
        columns = ", ".join(map(str, table.columns))
        raise BadInputError(f"{source}: no 'participant_id' column (columns: {columns})")
    if "session_id" in table.columns and "session" not in table.columns:
        table = table.rename(columns={"session_id": "session"})
    keys = [c for c in ("participant_id", "session") if c in table.columns]
    empty = table[keys].isna().any(axis=1).to_numpy()
    ids = pd.DataFrame({"participant_id": table["participant_id"].astype(str).str.strip()},
                       index=table.index)
    if "session" in table.columns:
        ids["session"] = without_ses_prefix(table["session"].astype(str).str.strip())
    empty = empty | (ids == "").any(axis=1).to_numpy()
    return ids, empty


def _empty_id_error(lines: np.ndarray, source: str) -> BadInputError:
    """The error for rows without a participant or session (``lines``: their line numbers)."""
    return BadInputError(
        f"{source}: empty participant_id or session", [f"data row at line {r}" for r in lines[:50]]
    )


def _duplicate_error(repeats: list[tuple[tuple[str, ...], int]], source: str) -> BadInputError:
    """The error for participant (and session) keys given on more than one row, sorted by key."""
    with_session = bool(repeats) and len(repeats[0][0]) > 1
    return BadInputError(
        f"{source}: the same participant{' and session' if with_session else ''} appears more than once",
        [f"{', '.join(map(str, key))}: {n} rows" for key, n in sorted(repeats)],
    )


def _duplicates(ids: pd.DataFrame) -> list[tuple[tuple[str, ...], int]]:
    """Keys given on more than one row of ``ids``, with their number of rows."""
    duplicated = ids.duplicated(keep=False)
    if not duplicated.any():
        return []
    return [(key if isinstance(key, tuple) else (key,), int(n))
            for key, n in ids[duplicated].value_counts().items()]


def _answers_error(problems: list[str], n_problems: int, inst: Instrument, source: str) -> BadInputError:
    """The raise-mode error listing (the first :data:`_MAX_LISTED` of) the disallowed answers."""
    shown = problems[:_MAX_LISTED]
    if n_problems > _MAX_LISTED:
        shown.append(f"... and {n_problems - _MAX_LISTED} more")
    return BadInputError(f"{source}: {n_problems} answer(s) not allowed for {inst.id} ({inst.name})", shown)


def _long_to_wide(table: pd.DataFrame, inst: Instrument, source: str) -> pd.DataFrame:
    """Long input (``participant_id, [session], item, value``) → one column per item."""
    keys = [c for c in ("participant_id", "session", "session_id") if c in table.columns]
    item = table["item"].astype("string").str.strip()
    numbered = item.str.fullmatch(r"\d+")
    item = item.where(~numbered.fillna(False), inst.id + "_" + item)
    frame = table[keys].copy()
    frame["item"] = item
    frame["value"] = table["value"]
    duplicated = frame.duplicated(subset=[*keys, "item"], keep=False)
    if duplicated.any():
        raise BadInputError(
            f"{source}: an item is given more than once for the same participant/session",
            [", ".join(str(v) for v in row) for row in
             frame.loc[duplicated, [*keys, "item"]].drop_duplicates().itertuples(index=False)],
        )
    wide = frame.pivot(index=keys, columns="item", values="value").reset_index()
    wide.columns.name = None
    return wide


def _apply_item_map(table: pd.DataFrame, items: Mapping[str, str], inst: Instrument,
                    source: str) -> pd.DataFrame:
    absent = [src for src in items if src not in table.columns]
    unknown = [dst for dst in items.values() if dst not in inst.item_columns]
    problems = [f"column '{c}' named in the item map is not in the table" for c in absent]
    problems += [f"'{c}' is not an item column of {inst.id} (expected {inst.id}_1 ... "
                 f"{inst.id}_{inst.n_items})" for c in unknown]
    if problems:
        raise BadInputError(f"{source}: the item map does not fit the table", problems)
    return table.rename(columns=dict(items))


def _read_answers(table: pd.DataFrame, inst: Instrument, ids: pd.DataFrame, errors: str,
                  source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Answers as floats (NaN = missing or invalid), plus the invalid mask and its texts.

    Returns
    -------
    answers : ndarray, shape (n_rows, n_items)
    invalid : ndarray of bool, shape (n_rows, n_items)
    invalid_text : ndarray of object, shape (n_rows,)
        ``"<item>=<value>, ..."`` for the row's disallowed answers.
    problems : list of str
        One line per disallowed answer (for the raise-mode error).
    """
    n = len(table)
    answers = np.full((n, inst.n_items), np.nan)
    invalid = np.zeros((n, inst.n_items), dtype=bool)
    invalid_text = np.full(n, "", dtype=object)
    problems: list[tuple[int, int, str]] = []
    absent = [c for c in inst.item_columns if c not in table.columns]
    if len(absent) == inst.n_items:
        raise BadInputError(
            f"{source}: no item column of {inst.id} found; expected {inst.id}_1 ... "
            f"{inst.id}_{inst.n_items} (use an item map, --items, for other names)",
        )
    if absent and errors == "raise":
        raise BadInputError(f"{source}: item columns missing for {inst.id}", absent)
    pattern = re.compile(rf"^{re.escape(inst.id)}_(\d+)$")
    extra = [str(c) for c in table.columns
             if pattern.match(str(c)) and str(c) not in inst.item_columns]
    if extra:
        # e.g. HAMD-21 items in a table scored as HAMD-17: never drop answers silently
        raise BadInputError(
            f"{source}: column(s) {', '.join(extra)} look like items of {inst.id}, which has "
            f"{inst.n_items} items; is this another version of the instrument? Remove or rename them.",
        )

    def who(rows: np.ndarray) -> np.ndarray:
        """The participant (and session) of some rows, for messages."""
        text = ids["participant_id"].to_numpy(dtype=object)[rows]
        if "session" in ids.columns:
            text = text + ", session " + ids["session"].to_numpy(dtype=object)[rows]
        return text

    for j, column in enumerate(inst.item_columns):
        if column not in table.columns:
            continue
        raw = table[column]
        given = raw.notna().to_numpy()
        if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
            # a column holds few distinct answers: convert each once (codes -1 are the missing ones)
            codes, distinct = pd.factorize(raw)
            stripped = pd.Series(distinct, dtype=object).astype("string").str.strip()
            text = (stripped != "").fillna(False).to_numpy()
            value = pd.to_numeric(stripped, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            given = given & np.append(text, False)[codes]
            numeric = np.append(value, np.nan)[codes]
        elif pd.api.types.is_bool_dtype(raw.dtype):
            numeric = np.full(n, np.nan)
        else:
            numeric = raw.to_numpy(dtype=float, na_value=np.nan)
        lo, hi = inst.item_min[j], inst.item_max[j]
        with np.errstate(invalid="ignore"):
            ok = (np.isfinite(numeric) & (numeric == np.round(numeric)) & (numeric >= lo)
                  & (numeric <= hi))
        bad = given & ~ok
        answers[:, j] = np.where(given & ok, numeric, np.nan)
        invalid[:, j] = bad
        if bad.any():
            shown = np.array([_show(v) for v in raw[bad]], dtype=object)
            entry = column + "=" + shown
            current = invalid_text[bad]
            invalid_text[bad] = np.where(current == "", entry, current + ", " + entry)
            allowed = inst.allowed_text(j + 1)
            problems.extend(
                (row, j, f"participant {w}, item {column}: value '{v}' not allowed (allowed: {allowed})")
                for row, w, v in zip(np.flatnonzero(bad), who(bad), shown, strict=True)
            )
    return answers, invalid, invalid_text, [text for _, _, text in sorted(problems)]


def _show(value: object) -> str:
    """An answer as the user wrote it (``7`` rather than ``7.0`` for float columns)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _keyed(answers: np.ndarray, inst: Instrument) -> np.ndarray:
    """Item scores: reverse-keyed items flipped within their range, then recoded if the rule says so."""
    scores = answers.copy()
    if inst.reverse:
        idx = np.asarray(inst.reverse) - 1
        scores[:, idx] = inst.item_min[idx] + inst.item_max[idx] - scores[:, idx]
    if inst.recode is not None:
        low = int(inst.item_min.min())
        lookup = np.full(int(inst.item_max.max()) - low + 1, np.nan)
        for answer, value in inst.recode.items():
            lookup[answer - low] = value
        finite = np.isfinite(scores)
        recoded = np.full_like(scores, np.nan)
        recoded[finite] = lookup[scores[finite].astype(int) - low]
        scores = recoded
    return scores


def combine(units: np.ndarray, low: np.ndarray, high: np.ndarray, rule: str,
            max_missing: int) -> tuple[np.ndarray, np.ndarray]:
    """A sum or mean of units with the missing-unit rule and range-proportional proration.

    Parameters
    ----------
    units : ndarray, shape (n_rows, n_units)
        Unit scores, NaN where missing.
    low, high : ndarray, shape (n_units,)
        Lowest and highest possible score of each unit.
    rule : {"sum", "mean"}
    max_missing : int
        Units that may be missing; with more the score is NaN.

    Returns
    -------
    score : ndarray, shape (n_rows,)
    n_missing : ndarray of int, shape (n_rows,)
    """
    answered = np.isfinite(units)
    n_missing = units.shape[1] - answered.sum(axis=1)
    usable = (n_missing <= max_missing) & answered.any(axis=1)
    filled = np.where(answered, units, 0.0)
    total = filled.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if rule == "mean":
            score = total / answered.sum(axis=1)
        elif rule == "sum":
            weights = answered.astype(np.float64)  # bool @ float has no BLAS path
            a_min, a_max = weights @ low, weights @ high
            t_min, t_max = low.sum(), high.sum()
            prorated = t_min + (total - a_min) * (t_max - t_min) / (a_max - a_min)
            score = np.where(n_missing == 0, total, prorated)
        else:
            raise BadInputError(f"unknown scoring rule '{rule}' (expected sum or mean)")
    return np.where(usable, score, np.nan), n_missing


def _domains(scores: np.ndarray, inst: Instrument, lo: np.ndarray, hi: np.ndarray):
    """Domain scores (highest answered item of each domain), with their ranges."""
    cols, d_lo, d_hi = [], [], []
    for domain in inst.domains:
        idx = np.asarray(domain.items) - 1
        block = scores[:, idx]
        present = np.isfinite(block).any(axis=1)
        best = np.where(np.isfinite(block), block, -np.inf).max(axis=1)
        cols.append(np.where(present, best, np.nan))
        d_lo.append(lo[idx].max())
        d_hi.append(hi[idx].max())
    return np.column_stack(cols), np.array(d_lo), np.array(d_hi)


def _joined(mask: np.ndarray, names: list[str]) -> np.ndarray:
    """``"a, b"``: the names whose column is set in each row of ``mask`` (n_rows, n_names).

    Rows share few distinct patterns, so the text is built once per pattern and broadcast.
    """
    text = np.full(mask.shape[0], "", dtype=object)
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return text
    if mask.shape[1] <= 62:
        keys = mask[rows].astype(np.int64) @ (np.int64(1) << np.arange(mask.shape[1], dtype=np.int64))
        unique, inverse = np.unique(keys, return_inverse=True)
        patterns = (unique[:, None] >> np.arange(mask.shape[1])) & 1
    else:
        patterns, inverse = np.unique(mask[rows], axis=0, return_inverse=True)
    labels = np.array([", ".join(n for n, hit in zip(names, row, strict=True) if hit)
                       for row in patterns.astype(bool)], dtype=object)
    text[rows] = labels[inverse.reshape(-1)]
    return text


def score(
    instrument: str | Instrument,
    table: pd.DataFrame,
    errors: str = "raise",
    items: Mapping[str, str] | None = None,
    scoring: str | None = None,
    source: str = "input table",
    max_missing: int | None = None,
) -> pd.DataFrame:
    """Score a questionnaire for every row of a table.

    Parameters
    ----------
    instrument : str or Instrument
        A packaged instrument's id (``"hamd17"``; see ``theramark scales list``) or an
        :class:`Instrument`: a study's own comes from ``instrument_library(...).get(id)`` (see
        :mod:`theramark.scales.definitions`).
    table : DataFrame
        Wide: ``participant_id``, optional ``session`` (``pre`` or ``ses-pre``), and item columns
        ``<id>_<n>``. Long: ``participant_id``, optional ``session``, ``item`` (``<id>_<n>`` or
        ``n``) and ``value``. ``NaN``/``n/a``/empty is a missing answer. An answer must be an
        allowed integer; numbers written as text (``"3"``) or as whole floats (``3.0``, what a
        column with missing values becomes) count, anything else (``"3a"``, ``2.5``, ``True``)
        is a disallowed answer. Other columns are ignored.
    errors : {"raise", "flag"}
        ``"raise"``: any answer outside the allowed values (or an absent item column) raises one
        :class:`BadInputError` listing every offending participant, session, item, value and the
        allowed values. ``"flag"``: such answers count as missing, the row is scored if the
        missing-item rule allows and the ``invalid_items``/``flags`` columns say what happened.
    items : mapping of str to str, optional
        Other column names → ``<id>_<n>`` item columns.
    scoring : str, optional
        A named alternative scoring of the instrument (``"continuous"`` for the SHAPS); ``None``
        keeps the scoring of an :class:`Instrument` given (the default scoring for an id).
    source : str
        What the table is (a file name), used in messages.
    max_missing : int, optional
        Replaces the instrument's limit on missing units of the total (``theramark scales show``
        states each instrument's rule and whether it is published or a theramark convention).

    Returns
    -------
    DataFrame
        One row per participant (× session): in input order for wide input, sorted for long
        input. Columns: ``participant_id``, ``session`` (when given),
        ``total`` (n/a for instruments without one, or when too many items are missing),
        ``index`` (Zung SDS), one column per subscale and count, ``severity`` and
        ``<subscale>_severity`` (where bands are defined), then the flags ``n_answered``,
        ``n_missing``, ``n_invalid`` (item counts), ``prorated``, ``scored`` (the total, or every
        subscale when there is no total, could be computed), ``missing_items``,
        ``invalid_items`` and a readable ``flags`` summary. ``attrs`` carries the instrument id
        and scoring.

    Raises
    ------
    BadInputError
        On disallowed answers (``errors="raise"``), unknown instruments, missing ids or
        duplicated participant/session rows.
    """
    inst = _instrument(instrument, errors, scoring, max_missing)
    table = _wide(table, inst, items, source)
    ids, empty = _identifiers(table, source)
    if empty.any():
        raise _empty_id_error(np.flatnonzero(empty) + 2, source)
    repeats = _duplicates(ids)
    if repeats:
        raise _duplicate_error(repeats, source)
    answers, invalid, invalid_text, problems = _read_answers(table, inst, ids, errors, source)
    if problems and errors == "raise":
        raise _answers_error(problems, len(problems), inst, source)
    return _scores(inst, ids, answers, invalid, invalid_text)


def _instrument(instrument: str | Instrument, errors: str, scoring: str | None,
                max_missing: int | None) -> Instrument:
    """The instrument to score with, after checking ``errors`` and ``max_missing``."""
    if errors not in ERROR_MODES:
        raise BadInputError(f"errors must be one of {', '.join(ERROR_MODES)}, got '{errors}'")
    inst = load_instrument(instrument, scoring)
    if max_missing is not None:
        if not isinstance(max_missing, int | np.integer) or max_missing < 0:
            raise BadInputError(f"max_missing must be a non-negative integer, got {max_missing!r}")
        inst = dataclasses.replace(inst, max_missing=int(max_missing))
    return inst


def _wide(table: pd.DataFrame, inst: Instrument, items: Mapping[str, str] | None,
          source: str) -> pd.DataFrame:
    """The table with a fresh index, the item map applied and long input made wide."""
    if not isinstance(table, pd.DataFrame):
        raise BadInputError(f"{source}: expected a pandas DataFrame, got {type(table).__name__}")
    table = table.reset_index(drop=True)
    if items:
        table = _apply_item_map(table, items, inst, source)
    if is_long(table.columns, inst):
        table = _long_to_wide(table, inst, source)
    return table


def is_long(columns: Iterable[object], inst: Instrument) -> bool:
    """Whether a table with these columns (after the item map) is long input (``item``, ``value``)."""
    columns = set(columns)
    return {"item", "value"} <= columns and not set(inst.item_columns) & columns


def score_blocks(
    instrument: str | Instrument,
    blocks: Iterable[pd.DataFrame],
    errors: str = "raise",
    items: Mapping[str, str] | None = None,
    scoring: str | None = None,
    source: str = "input table",
    max_missing: int | None = None,
) -> Iterator[pd.DataFrame]:
    """Score a wide table given as consecutive blocks of its rows (e.g. ``read_csv(chunksize=)``).

    Each block's scores are yielded as soon as it is read, so memory is bounded by the block,
    not the table; concatenated, they equal :func:`score` of the whole table. The checks that
    span rows see the whole table: a participant (and session) repeated in two blocks, rows
    without an id and, with ``errors="raise"``, the disallowed answers of every block are
    collected and raised, as by :func:`score`, after the last block (nothing is yielded once a
    problem is known, and what was yielded before must then be discarded: write to a temporary
    file). Problems of the header (no ``participant_id``, absent or extra item columns, an item
    map that does not fit) raise at the first block.

    Parameters
    ----------
    instrument, errors, items, scoring, source, max_missing
        As for :func:`score`.
    blocks : iterable of DataFrame
        Consecutive rows of one wide table, in file order, all with the same columns. Long
        input (``item``, ``value``) cannot be scored in blocks (a participant's items may span
        two); score it whole with :func:`score`.

    Yields
    ------
    DataFrame
        The scores of each block's rows (see :func:`score`), in input order.

    Raises
    ------
    BadInputError
        As :func:`score`. Repeated keys are found by a 64-bit hash of each row's key (8 bytes a
        row are kept), so a key could be reported as repeated by a hash collision, with a chance
        of about 1e-8 for a million rows; a repeat is never missed.
    """
    inst = _instrument(instrument, errors, scoring, max_missing)
    seen = np.empty(0, dtype=np.uint64)  # sorted hashes of the keys of the blocks so far
    repeated: dict[int, tuple[str, ...]] = {}
    empty_lines: list[int] = []
    problems: list[str] = []
    n_problems = 0
    first_line = 2
    for block in blocks:
        if not isinstance(block, pd.DataFrame):
            raise BadInputError(f"{source}: expected pandas DataFrames, got {type(block).__name__}")
        table = block.reset_index(drop=True)
        if items:
            table = _apply_item_map(table, items, inst, source)
        if is_long(table.columns, inst):
            raise BadInputError(f"{source}: long input (item, value) cannot be scored in blocks; "
                                "score the whole table")
        ids, empty = _identifiers(table, source)
        if len(empty_lines) < 50:
            empty_lines.extend((np.flatnonzero(empty) + first_line).tolist())
        first_line += len(table)
        hashes = pd.util.hash_pandas_object(ids, index=False).to_numpy()
        order = np.argsort(hashes)
        ordered = hashes[order]
        same = ordered[1:] == ordered[:-1]  # repeated within the block
        within = np.zeros(len(hashes), dtype=bool)
        within[1:] |= same
        within[:-1] |= same
        again = np.zeros(len(hashes), dtype=bool)
        again[order] = within
        if len(seen):
            where = np.minimum(np.searchsorted(seen, ordered), len(seen) - 1)
            again[order] |= seen[where] == ordered  # seen in an earlier block
        for h, key in zip(hashes[again], ids[again].itertuples(index=False, name=None), strict=True):
            repeated.setdefault(int(h), key)
        seen = np.concatenate([seen, ordered])
        seen.sort(kind="stable")  # two sorted runs: merged in linear time
        answers, invalid, invalid_text, found = _read_answers(table, inst, ids, errors, source)
        if errors == "raise":
            n_problems += len(found)
            problems.extend(found[:max(0, _MAX_LISTED - len(problems))])
        if not (empty_lines or repeated or n_problems):
            yield _scores(inst, ids, answers, invalid, invalid_text)
    if empty_lines:
        raise _empty_id_error(np.asarray(empty_lines), source)
    if repeated:
        every, counts = np.unique(seen, return_counts=True)
        chosen = np.isin(every, np.fromiter(repeated, dtype=np.uint64, count=len(repeated)))
        n_rows = dict(zip(every[chosen].tolist(), counts[chosen].tolist(), strict=True))
        raise _duplicate_error([(key, n_rows[h]) for h, key in repeated.items()], source)
    if n_problems:
        raise _answers_error(problems, n_problems, inst, source)


def _scores(inst: Instrument, ids: pd.DataFrame, answers: np.ndarray, invalid: np.ndarray,
            invalid_text: np.ndarray) -> pd.DataFrame:
    """Totals, subscales, severity and flags from the checked answers (see :func:`score`)."""
    item_scores = _keyed(answers, inst)
    lo, hi = inst.item_score_bounds()
    out = ids.reset_index(drop=True).copy()
    missing = ~np.isfinite(answers)

    if inst.total_rule is not None:
        if inst.domains:
            units, u_lo, u_hi = _domains(item_scores, inst, lo, hi)
        else:
            idx = np.asarray(inst.total_items) - 1
            units, u_lo, u_hi = item_scores[:, idx], lo[idx], hi[idx]
        total, units_missing = combine(units, u_lo, u_hi, inst.total_rule, inst.max_missing)
    else:
        total = np.full(len(out), np.nan)
        units_missing = np.zeros(len(out), dtype=int)
    out["total"] = total
    if inst.index_multiplier is not None:
        out["index"] = total * inst.index_multiplier

    subscale_ok = np.ones(len(out), dtype=bool)
    subscale_prorated = np.zeros(len(out), dtype=bool)
    for sub in inst.subscales:
        idx = np.asarray(sub.items) - 1
        values, n_miss = combine(item_scores[:, idx], lo[idx], hi[idx], sub.rule, sub.max_missing)
        out[sub.name] = values
        subscale_ok &= np.isfinite(values)
        subscale_prorated |= np.isfinite(values) & (n_miss > 0)
    for count in inst.counts:
        idx = np.asarray(count.items) - 1
        block = answers[:, idx]
        out[count.name] = np.where(np.isfinite(block).all(axis=1),
                                   (block == count.value).sum(axis=1), np.nan)

    if inst.bands:
        basis = out["index"] if inst.bands_on == "index" else out["total"]
        out["severity"] = inst.severity_of(basis.to_numpy())
    for sub in inst.subscales:
        if sub.bands:
            out[f"{sub.name}_severity"] = inst.severity_of(out[sub.name].to_numpy(), sub.bands)

    n_missing = missing.sum(axis=1) - invalid.sum(axis=1)
    out["n_answered"] = (~missing).sum(axis=1)
    out["n_missing"] = n_missing
    out["n_invalid"] = invalid.sum(axis=1)
    if inst.total_rule is not None:
        scored = np.isfinite(total)
        prorated = scored & (units_missing > 0)
        if inst.domains:  # a partly answered domain is scored from its answered items
            prorated |= scored & missing.any(axis=1)
    else:
        scored = subscale_ok
        prorated = subscale_prorated
    out["prorated"] = prorated
    out["scored"] = scored
    out["missing_items"] = _joined(missing & ~invalid, inst.item_columns)
    out["invalid_items"] = invalid_text
    out["flags"] = _flag_text(out, inst, scored, prorated)
    out.attrs.update({"instrument": inst.id, "scoring": inst.scoring})
    return out


def _flag_text(out: pd.DataFrame, inst: Instrument, scored: np.ndarray,
               prorated: np.ndarray) -> np.ndarray:
    """Readable summary per row: what was missing or invalid and what the engine did about it."""
    text = np.full(len(out), "", dtype=object)
    n_missing = out["n_missing"].to_numpy()
    n_invalid = out["n_invalid"].to_numpy()
    rows = np.flatnonzero((n_missing > 0) | (n_invalid > 0))
    if not len(rows):
        return text
    miss, inv = n_missing[rows], n_invalid[rows]
    missing_items = out["missing_items"].to_numpy(dtype=object)[rows]
    missing_part = np.where(miss > 0, miss.astype(str) + " missing (" + missing_items + ")", "")
    invalid_part = np.where(
        inv > 0, inv.astype(str) + " invalid (" + out["invalid_items"].to_numpy(dtype=object)[rows]
        + ") treated as missing", "")
    sep = np.where((miss > 0) & (inv > 0), "; ", "")
    limit = f"(at most {inst.max_missing} may be missing)"
    outcome = np.where(prorated[rows], f"; prorated {limit}", "")
    outcome = np.where(~scored[rows], f"; not scored {limit}", outcome)
    text[rows] = missing_part + sep + invalid_part + outcome
    return text
