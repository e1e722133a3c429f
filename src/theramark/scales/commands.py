"""``theramark scales ...``: list, show, score and outcomes."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from theramark._io import atomic_path, provenance, read_tsv, write_json, write_tsv
from theramark.errors import BadInputError
from theramark.paths import input_file, output_file

if TYPE_CHECKING:
    from theramark.scales.definitions import Instrument, InstrumentLibrary


def read_item_map(path: str | Path) -> dict[str, str]:
    """An item map: JSON object or two-column TSV (``source``, ``item``), source name → ``<id>_<n>``."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise BadInputError(f"{path}: file not found")
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(mapping, dict):
            raise BadInputError(f"{path}: expected a JSON object mapping column names to items")
        return {str(k): str(v) for k, v in mapping.items()}
    table = read_tsv(path, dtype=str)
    if table.shape[1] != 2:
        raise BadInputError(
            f"{path}: expected two columns (source column, item column), got {table.shape[1]}"
        )
    return dict(zip(table.iloc[:, 0], table.iloc[:, 1], strict=True))


def _library(args: argparse.Namespace) -> InstrumentLibrary:
    """The packaged instruments plus those of ``--instruments`` (paths relative to the working directory)."""
    from theramark.scales.definitions import instrument_library

    return instrument_library(paths=args.instruments)


def _list(args: argparse.Namespace) -> int:
    from theramark.scales.describe import catalogue

    with pd.option_context("display.width", 250, "display.max_colwidth", 60):
        print(catalogue(_library(args)).to_string(index=False))
    return 0


def _show(args: argparse.Namespace) -> int:
    from theramark.scales.describe import describe

    print(describe(_library(args).get(args.instrument, args.scoring)))
    return 0


def _score(args: argparse.Namespace) -> int:
    input_file(args.items_tsv, "items table")
    if args.items:
        input_file(args.items, "item map")
    output_file(args.output)
    output_file(Path(args.output).with_suffix(".json"), "sidecar file")
    library = _library(args)
    instrument = library.get(args.instrument, args.scoring)
    mapping = read_item_map(args.items) if args.items else None
    out = Path(args.output)
    source = str(args.items_tsv)
    keys: list[str] = []
    n_rows = n_scored = n_flagged = 0
    # Flagged rows are listed after the summary line; spooled to disk so that memory stays bounded.
    with tempfile.TemporaryFile("w+", encoding="utf-8") as flagged:
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
            for scores in _score_blocks(instrument, args.items_tsv, args.errors, mapping, source):
                keys = [k for k in ("participant_id", "session") if k in scores.columns]
                scores.to_csv(handle, sep="\t", index=False, na_rep="n/a", lineterminator="\n",
                              header=handle.tell() == 0)
                n_rows += len(scores)
                n_scored += int(scores["scored"].sum())
                rows = scores[scores["flags"] != ""]
                n_flagged += len(rows)
                for row in rows[[*keys, "flags"]].itertuples(index=False):
                    flagged.write("  " + ", ".join(str(v) for v in row[:-1]) + ": " + row[-1] + "\n")
            handle.close()  # before atomic_path renames the file
        parameters = {"instrument": instrument.id, "scoring": instrument.scoring,
                      "errors": args.errors, "items": mapping}
        inputs = {"items": args.items_tsv}
        definition = library.path(instrument.id)
        if definition is not None:  # a study's own instrument: record (and hash) its definition
            parameters["instrument_file"] = str(definition)
            inputs["instrument"] = definition
        write_json(out.with_suffix(".json"), provenance(parameters, inputs=inputs))
        print(f"scored {n_scored} of {n_rows} rows -> {out}")
        if n_flagged:
            print(f"{n_flagged} row(s) with problems:")
            sys.stdout.flush()
            flagged.seek(0)
            shutil.copyfileobj(flagged, sys.stdout)
    return 0


#: rows read, scored and written at a time: about 1.2 kB of memory a row (25,000 rows: ~30 MB)
_BLOCK_ROWS = 25_000


def _score_blocks(instrument: Instrument, path: str | Path, errors: str, mapping: dict[str, str] | None,
                  source: str, block_rows: int | None = None) -> Iterator[pd.DataFrame]:
    """The scores of an items table, read and scored ``block_rows`` rows at a time.

    Only the id and item columns are read, as text, so that every block is parsed alike whatever
    the others hold (an answer is shown as written). Long input, whose rows of one participant may
    span two blocks, and a table without ``participant_id`` (the error lists every column) are
    read whole. Problems that span rows are raised after the last block
    (:func:`theramark.scales.engine.score_blocks`).
    """
    from theramark.scales.engine import is_long, score, score_blocks

    header = read_tsv(path, nrows=0, dtype=str)  # also checks that every row has the header's length
    renamed = [mapping.get(str(c), str(c)) if mapping else str(c) for c in header.columns]
    if "participant_id" not in renamed or is_long(renamed, instrument):
        table = read_tsv(path, dtype={"participant_id": str, "session": str})
        yield score(instrument, table, errors=errors, items=mapping, source=source)
        return
    pattern = re.compile(rf"^{re.escape(instrument.id)}_\d+$")
    wanted = {"participant_id", "session", "session_id", *(mapping or {})}
    usecols = [c for c, name in zip(header.columns, renamed, strict=True)
               if c in wanted or pattern.match(name)]
    reader = pd.read_csv(path, sep="\t", na_values=["n/a", "N/A", "NaN", "nan", ""], keep_default_na=False,
                         usecols=usecols, dtype=object, chunksize=block_rows or _BLOCK_ROWS)

    def blocks() -> Iterator[pd.DataFrame]:
        with reader:
            try:
                yield from reader
            except (pd.errors.ParserError, UnicodeDecodeError) as exc:
                reason = " ".join(str(exc).split())
                raise BadInputError(f"{path}: not a readable tab-separated table ({reason})") from None

    yield from score_blocks(instrument, blocks(), errors=errors, items=mapping, source=source)


def _instrument_from_sidecar(scores_path: Path) -> str:
    """The instrument recorded in the JSON sidecar that ``theramark scales score`` wrote."""
    sidecar = scores_path.with_suffix(".json")
    try:
        return str(json.loads(sidecar.read_text(encoding="utf-8"))["Parameters"]["instrument"])
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        raise BadInputError(
            f"{scores_path}: say which instrument the totals belong to (--instrument ID); "
            f"no readable sidecar {sidecar.name} records it"
        ) from None


def _outcomes(args: argparse.Namespace) -> int:
    from theramark.scales.outcomes import outcomes

    input_file(args.scores, "scores table")
    if args.participants:
        input_file(args.participants, "participants table")
    if args.output:
        output_file(args.output)
        output_file(Path(args.output).with_suffix(".json"), "sidecar file")
    scores = read_tsv(args.scores, dtype={"participant_id": str, "session": str})
    if args.participants:
        participants = read_tsv(args.participants, dtype={"participant_id": str})
        if "group" in participants.columns and "group" not in scores.columns:
            scores = scores.merge(participants[["participant_id", "group"]], on="participant_id",
                                  how="left")
    instrument = _library(args).get(args.instrument or _instrument_from_sidecar(Path(args.scores)))
    table = outcomes(scores, instrument, baseline=args.baseline, endpoint=args.endpoint,
                     reliability=args.reliability, source=str(args.scores))
    if args.output:
        write_tsv(args.output, table)
        write_json(Path(args.output).with_suffix(".json"),
                   provenance(dict(table.attrs), inputs={"scores": args.scores}))
        print(f"outcomes of {len(table)} participants -> {args.output}")
    else:
        with pd.option_context("display.width", 200, "display.max_columns", None):
            table.to_csv(sys.stdout, sep="\t", index=False, na_rep="n/a")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``theramark scales`` and its subcommands."""
    parser = subparsers.add_parser(
        "scales", help="score questionnaires and compute treatment outcomes",
        description="Questionnaire scoring from published rules, and outcomes (response, "
                    "remission, reliable change).")
    sub = parser.add_subparsers(dest="scales_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    def instruments_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--instruments", action="append", default=[], metavar="PATH",
                       help="a study's own instrument definition: a JSON file, or a folder of them "
                            "(e.g. BIDS_DIR/code/theramark/instruments); repeatable. Format: "
                            "docs/instruments.md")

    p = sub.add_parser("list", help="list the instruments theramark can score")
    instruments_option(p)
    p.set_defaults(func=_list)

    p = sub.add_parser("show", help="document one instrument: items, keys, rules, bands, sources")
    p.add_argument("instrument")
    p.add_argument("--scoring", default=None, help="alternative scoring (e.g. continuous for shaps)")
    instruments_option(p)
    p.set_defaults(func=_show)

    p = sub.add_parser("score", help="score item answers (wide or long TSV)")
    p.add_argument("instrument")
    p.add_argument("items_tsv", metavar="ITEMS.tsv")
    p.add_argument("-o", "--output", required=True, metavar="SCORES.tsv")
    p.add_argument("--items", metavar="MAP", help="JSON or two-column TSV: source column -> <id>_<n>")
    p.add_argument("--errors", choices=("raise", "flag"), default="raise",
                   help="raise: stop on any disallowed answer (default); flag: score the rest")
    p.add_argument("--scoring", default=None, help="alternative scoring (e.g. continuous for shaps)")
    instruments_option(p)
    p.set_defaults(func=_score)

    p = sub.add_parser("outcomes", help="response, remission and reliable change from scores")
    p.add_argument("scores", metavar="SCORES.tsv")
    p.add_argument("--instrument", help="instrument id (default: the one recorded in SCORES.json)")
    p.add_argument("--baseline", default="pre")
    p.add_argument("--endpoint", default="post")
    p.add_argument("--reliability", type=float, default=None)
    p.add_argument("--participants", metavar="participants.tsv", help="adds the group column")
    p.add_argument("-o", "--output", metavar="OUTCOMES.tsv")
    instruments_option(p)
    p.set_defaults(func=_outcomes)
