"""``theramark scales ...``: list, show, score and outcomes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from theramark._io import provenance, read_tsv, write_json, write_tsv
from theramark.errors import BadInputError

if TYPE_CHECKING:
    from theramark.scales.definitions import InstrumentLibrary


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
    from theramark.scales.engine import score

    library = _library(args)
    instrument = library.get(args.instrument, args.scoring)
    table = read_tsv(args.items_tsv, dtype={"participant_id": str, "session": str})
    mapping = read_item_map(args.items) if args.items else None
    scores = score(instrument, table, errors=args.errors, items=mapping, source=str(args.items_tsv))
    out = Path(args.output)
    write_tsv(out, scores)
    parameters = {"instrument": scores.attrs["instrument"], "scoring": scores.attrs["scoring"],
                  "errors": args.errors, "items": mapping}
    inputs = {"items": args.items_tsv}
    definition = library.path(instrument.id)
    if definition is not None:  # a study's own instrument: record (and hash) its definition
        parameters["instrument_file"] = str(definition)
        inputs["instrument"] = definition
    write_json(out.with_suffix(".json"), provenance(parameters, inputs=inputs))
    flagged = scores[scores["flags"] != ""]
    keys = ["participant_id", "session"] if "session" in scores.columns else ["participant_id"]
    print(f"scored {int(scores['scored'].sum())} of {len(scores)} rows -> {out}")
    if len(flagged):
        print(f"{len(flagged)} row(s) with problems:")
        for row in flagged[[*keys, "flags"]].itertuples(index=False):
            print("  " + ", ".join(str(v) for v in row[:-1]) + ": " + row[-1])
    return 0


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
