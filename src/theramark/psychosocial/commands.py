"""``theramark psychosocial {mediate,moderate,breakpoint,network,ema} DATA.tsv ...``.

Each command reads one TSV (``n/a`` is missing), runs one analysis and writes the tidy result to
``-o OUT.tsv`` atomically, with a JSON sidecar (parameters, versions, input hash) and the note on
listwise deletion; without ``-o`` the table is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from theramark._io import provenance, read_tsv, write_json, write_tsv


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA.tsv", help="input table (tab separated, n/a missing)")
    parser.add_argument("-o", "--output", metavar="OUT.tsv", help="write the result here")


def _emit(args: argparse.Namespace, table: pd.DataFrame, parameters: dict, index: bool,
          extra: dict[str, pd.DataFrame] | None = None) -> int:
    note = table.attrs.get("note", "")
    if args.output:
        out = Path(args.output)
        write_tsv(out, table, index=index)
        for suffix, frame in (extra or {}).items():
            write_tsv(out.with_name(f"{out.stem}_{suffix}.tsv"), frame)
        write_json(out.with_suffix(".json"), {
            **provenance(parameters, inputs={"data": args.data}),
            "Description": f"theramark psychosocial {args.psychosocial_command}",
            "Note": note,
        })
        print(f"wrote {out}")
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(table.to_string(index=index))
            for suffix, frame in (extra or {}).items():
                print(f"\n{suffix}:\n{frame.to_string(index=False)}")
    if note:
        print(f"note: {note}")
    return 0


#: The tables each analysis writes beside ``-o OUT.tsv`` (``OUT_<name>.tsv``), see :func:`_emit`.
_EXTRA_TABLES = {"mediate": ("coefficients",), "moderate": ("curve", "johnson_neyman"),
                 "breakpoint": (), "network": ("centrality",), "ema": ("compliance",)}


def _check_paths(args: argparse.Namespace) -> None:
    """Check the input table and every file ``-o`` will write before the analysis runs."""
    from theramark.paths import input_file, output_file

    input_file(args.data, "data table")
    if args.output:
        out = output_file(args.output)
        output_file(out.with_suffix(".json"), "sidecar file")
        for suffix in _EXTRA_TABLES.get(args.psychosocial_command, ()):
            output_file(out.with_name(f"{out.stem}_{suffix}.tsv"))


def _read(args: argparse.Namespace) -> pd.DataFrame:
    _check_paths(args)
    return read_tsv(args.data, dtype={"participant_id": str})


def _mediate(args: argparse.Namespace) -> int:
    from theramark.psychosocial.mediation import mediation

    params = {"x": args.x, "m": args.m, "y": args.y, "w": args.w, "model": args.model,
              "covariates": args.covariates, "n_boot": args.n_boot, "seed": args.seed,
              "ci_method": args.ci_method}
    result = mediation(_read(args), args.x, args.m, args.y, w=args.w, model=args.model,
                       covariates=args.covariates, n_boot=args.n_boot, random_state=args.seed,
                       ci_method=args.ci_method)
    return _emit(args, result, params, index=True,
                 extra={"coefficients": result.attrs["coefficients"]})


def _moderate(args: argparse.Namespace) -> int:
    from theramark.psychosocial.moderation import moderation

    params = {"x": args.x, "w": args.w, "y": args.y, "covariates": args.covariates}
    result = moderation(_read(args), args.x, args.w, args.y, covariates=args.covariates)
    extra = {"curve": result.attrs["curve"]}
    if "johnson_neyman" in result.attrs:
        extra["johnson_neyman"] = result.attrs["johnson_neyman"]
    return _emit(args, result, params, index=True, extra=extra)


def _breakpoint(args: argparse.Namespace) -> int:
    from theramark.psychosocial.breakpoint import breakpoint

    params = {"x": args.x, "y": args.y, "covariates": args.covariates, "davies_k": args.davies_k}
    result = breakpoint(_read(args), args.x, args.y, covariates=args.covariates,
                        davies_k=args.davies_k)
    return _emit(args, result, params, index=False)


def _network(args: argparse.Namespace) -> int:
    from theramark.errors import BadInputError
    from theramark.psychosocial.network import centrality, ebicglasso

    data = _read(args)
    columns = args.columns or [c for c in data.columns
                               if c not in ("participant_id", "session")]
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise BadInputError(f"{args.data}: column(s) not found: {', '.join(missing)}")
    network = ebicglasso(data[columns], gamma=args.gamma, corr=args.corr)
    params = {"columns": columns, "gamma": args.gamma, "corr": args.corr}
    table = network.copy()
    table.index.name = "node"
    table.attrs = {"note": f"EBICglasso on {network.attrs.get('n_obs', '?')} complete rows"}
    return _emit(args, table, params, index=True,
                 extra={"centrality": centrality(network)})


def _ema(args: argparse.Namespace) -> int:
    from theramark.psychosocial.ema import ema_compliance, ema_multilevel

    data = _read(args)
    params = {"x": args.x, "y": args.y, "moderator": args.moderator, "lag": args.lag,
              "random_slope": not args.no_random_slope}
    result = ema_multilevel(data, args.y, args.x, moderator=args.moderator,
                            covariates=args.covariates, lag=args.lag,
                            random_slope=not args.no_random_slope)
    compliance = ema_compliance(data, [args.y, args.x], prompts_per_day=args.prompts_per_day)
    return _emit(args, result, params, index=False, extra={"compliance": compliance})


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``theramark psychosocial ...`` to the CLI."""
    parser = subparsers.add_parser(
        "psychosocial", help="mediation, moderation, breakpoints, networks and EMA models",
        description="Psychosocial analyses on one tidy table (one row per participant, or per "
                    "prompt for ema). Incomplete rows are dropped and the count is reported.",
    )
    sub = parser.add_subparsers(dest="psychosocial_command", metavar="ANALYSIS")

    def _usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_usage)

    p = sub.add_parser("mediate", help="(moderated) mediation, PROCESS models 4, 6, 7, 14, 58")
    _common(p)
    p.add_argument("--x", required=True, help="predictor column")
    p.add_argument("--m", required=True, nargs="+", help="mediator column(s)")
    p.add_argument("--y", required=True, help="outcome column")
    p.add_argument("--w", help="moderator column (models 7, 14, 58)")
    p.add_argument("--model", type=int, default=4, choices=[4, 6, 7, 14, 58])
    p.add_argument("--covariates", nargs="+", default=None)
    p.add_argument("--n-boot", type=int, default=5000, help="bootstrap resamples (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--ci-method", default="percentile", choices=["percentile", "bias-corrected"])
    p.set_defaults(func=_mediate)

    p = sub.add_parser("moderate", help="moderation (PROCESS model 1), simple slopes, "
                                        "Johnson-Neyman")
    _common(p)
    p.add_argument("--x", required=True)
    p.add_argument("--w", required=True)
    p.add_argument("--y", required=True)
    p.add_argument("--covariates", nargs="+", default=None)
    p.set_defaults(func=_moderate)

    p = sub.add_parser("breakpoint", help="segmented regression with Davies' test")
    _common(p)
    p.add_argument("--x", required=True)
    p.add_argument("--y", required=True)
    p.add_argument("--covariates", nargs="+", default=None)
    p.add_argument("--davies-k", type=int, default=10)
    p.set_defaults(func=_breakpoint)

    p = sub.add_parser("network", help="EBICglasso partial-correlation network and centrality")
    _common(p)
    p.add_argument("--columns", nargs="+", help="node columns (default: all but identifiers)")
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--corr", default="pearson", choices=["pearson", "spearman", "polychoric"])
    p.set_defaults(func=_network)

    p = sub.add_parser("ema", help="multilevel model of EMA prompts (within/between effects)")
    _common(p)
    p.add_argument("--x", required=True, help="momentary predictor (e.g. social_contact)")
    p.add_argument("--y", required=True, help="momentary outcome (e.g. positive_affect)")
    p.add_argument("--moderator", help="between-person moderator column")
    p.add_argument("--covariates", nargs="+", default=None)
    p.add_argument("--lag", action="store_true", help="x at the previous prompt of the same day")
    p.add_argument("--no-random-slope", action="store_true")
    p.add_argument("--prompts-per-day", type=int, default=None)
    p.set_defaults(func=_ema)
