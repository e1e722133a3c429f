"""``theramark realtime run|simulate-scanner|summarize``: parse, check, call."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from theramark.errors import BadInputError


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise BadInputError(f"{what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5005")
    return host, int(port)


def _simulate_scanner(args: argparse.Namespace) -> int:
    from theramark import paths
    from theramark.realtime.scanner import simulate_scanner

    paths.input_file(args.run, "4D run")
    paths.output_dir(args.export_dir, "export folder")
    if args.tr <= 0:
        raise BadInputError(f"--tr {args.tr}: expected a positive number of seconds")
    table = simulate_scanner(args.run, args.export_dir, args.tr, format=args.format, shuffle=args.shuffle,
                             partial_writes=args.partial_writes, drop=args.drop, speed=args.speed,
                             jitter_s=args.jitter, gzip=args.gzip, random_state=args.seed)
    print(f"{len(table)} volume(s) delivered to {args.export_dir}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from theramark import paths
    from theramark.config import load_config, section
    from theramark.realtime import engine as rt
    from theramark.realtime.protocol import read_protocol

    # every input is checked before the run starts (exit 2)
    if args.config is not None:
        paths.input_file(args.config, "config file")
    settings = section(load_config(args.config), "realtime")
    if args.tr <= 0 or args.n_volumes < 1:
        raise BadInputError(f"--tr {args.tr} --n-volumes {args.n_volumes}: expected a positive TR (s) and "
                            "at least one volume")
    protocol = read_protocol(args.protocol, settings["trial_types"], run_duration=args.n_volumes * args.tr)
    rois = rt.mask_rois(args.roi)
    base = Path(args.config).parent if args.config is not None else Path.cwd()
    roiset = args.roiset or settings["roiset"]
    mni_to_native = None
    if roiset:
        rois += rt.library_rois(roiset, args.regions or settings["regions"])
        affine_file = args.mni_to_native
        if affine_file is None and settings["mni_to_native"]:
            affine_file = base / settings["mni_to_native"]
        if affine_file is None:
            raise BadInputError(f"ROI set {roiset}: give the MNI-to-native affine (--mni-to-native FILE or "
                                "[realtime] mni_to_native)")
        mni_to_native = rt.read_affine(affine_file)
    if not rois:
        raise BadInputError("no ROI: give --roi MASK.nii.gz (repeatable) or --roiset NAME")
    reference = None
    if settings["reference"] != "first":
        import nibabel as nib
        import numpy as np

        ref_path = paths.input_file(base / settings["reference"], "reference volume")
        image = nib.load(str(ref_path))
        reference = (np.asarray(image.dataobj, dtype=np.float32).reshape(image.shape[:3]), image.affine)
    paths.output_dir(args.out, "log folder")
    if args.display:
        settings["display"] = True
    if args.port is not None:
        settings["port"] = args.port
    udp = _host_port(settings["udp_out"], "[realtime] udp_out") if settings["udp_out"] else None
    tcp = _host_port(settings["tcp_out"], "[realtime] tcp_out") if settings["tcp_out"] else None
    # the engine checks the feedback settings against the ROIs: build it once now
    rt.RealtimeEngine(rois, protocol, args.tr, args.n_volumes, settings, mni_to_native=mni_to_native)
    start = _resume_point(args.out)
    if args.socket:
        from theramark.realtime.ingest import SocketSource

        host, port = _host_port(args.socket, "--socket")
        source = SocketSource(host, port, args.n_volumes, args.tr, start=start,
                              missing_after_s=settings["missing_after_s"])
    else:
        from theramark.realtime.ingest import FolderSource

        series = int(args.series) if args.series is not None and args.series.isdigit() else args.series
        source = FolderSource(args.watch, args.n_volumes, args.tr, series=series, start=start,
                              missing_after_s=settings["missing_after_s"])
    display = sender = None
    try:
        if settings["display"]:
            from theramark.realtime.display import DisplayServer

            display = DisplayServer(host=args.host, port=settings["port"])
            display.start()
            print(f"theramark: feedback display at {display.url}", file=sys.stderr)
        if udp or tcp:
            from theramark.realtime.display import FeedbackSender

            sender = FeedbackSender(udp=udp, tcp=tcp)
        log = rt.run_realtime(source, rois, protocol, args.tr, args.n_volumes, args.out, settings,
                              display=display, sender=sender, mni_to_native=mni_to_native,
                              reference=reference)
    finally:
        for thing in (source, sender, display):
            closer = getattr(thing, "close", None) or getattr(thing, "stop", None)
            if thing is not None and closer is not None:
                closer()
    status = log["status"].value_counts()
    print(f"{len(log)} volume(s): {int(status.get('ok', 0))} ok, {int(status.get('missing', 0))} missing, "
          f"{int(status.get('error', 0))} error; median latency {log['latency_ms'].median():.1f} ms; "
          f"log: {Path(args.out) / 'feedback.tsv'}", file=sys.stderr)
    return 0


def _resume_point(out: Path) -> int:
    """First volume to read: one after the last row already logged in ``out``."""
    from theramark.realtime.log import LOG_NAME

    path = Path(out) / LOG_NAME
    if not path.is_file():
        return 1
    lines = [line for line in path.read_text(encoding="utf-8").split("\n")[1:] if line.strip()]
    complete = path.read_text(encoding="utf-8").endswith("\n")
    n = len(lines) - (0 if complete or not lines else 1)
    return n + 1


def _summarize(args: argparse.Namespace) -> int:
    from theramark import paths
    from theramark.realtime.summary import summarize

    paths.input_dir(args.log_dir, "log folder")
    result = summarize(args.log_dir, lag_s=args.lag, column=args.column)
    columns = ["run", "n_pairs", "difference", "t", "p", "d_z", "glm_psc", "n_missing"]
    print(result["runs"][columns].to_string(index=False))
    learning = result["learning"].iloc[0]
    if learning["n_runs"] >= 2:
        print(f"learning: slope {learning['slope']:.3g} per run (p = {learning['p']:.3g})")
    print(f"tables: {Path(args.log_dir) / 'summary'}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``theramark realtime`` and its subcommands."""
    parser = subparsers.add_parser(
        "realtime", help="real-time fMRI neurofeedback: run, simulate a scanner, summarize",
        description="Real-time neurofeedback: per-volume realignment, ROI signals, cumulative GLM, "
        "Kalman spike removal and percent signal change or connectivity feedback, logged per volume.")
    sub = parser.add_subparsers(dest="realtime_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    sim = sub.add_parser("simulate-scanner", help="replay a 4D run into a folder as a scanner exports it",
                         description="Write one file per volume of RUN into EXPORT_DIR every TR, with "
                         "optional faults; returns when every volume is delivered.")
    sim.add_argument("run", type=Path, help="4D NIfTI run")
    sim.add_argument("export_dir", type=Path, help="folder to write into")
    sim.add_argument("--tr", type=float, required=True, help="seconds between volumes")
    sim.add_argument("--format", choices=("nifti", "nifti-4d", "dicom"), default="nifti")
    sim.add_argument("--shuffle", action="store_true", help="deliver volumes slightly out of order")
    sim.add_argument("--partial-writes", action="store_true", help="write each file in pieces")
    sim.add_argument("--drop", type=int, nargs="+", default=[], metavar="VOL", help="volumes never delivered")
    sim.add_argument("--speed", type=float, default=1.0, help="replay this many times faster than real time")
    sim.add_argument("--jitter", type=float, default=0.0, metavar="SECONDS", help="random delay per volume")
    sim.add_argument("--gzip", action="store_true", help="write .nii.gz")
    sim.add_argument("--seed", type=int, default=0, help="random_state of the faults")
    sim.set_defaults(func=_simulate_scanner)

    run = sub.add_parser("run", help="neurofeedback on volumes as they arrive",
                         description="Process each volume as it arrives (realign, ROI means, GLM, Kalman "
                         "filter, feedback), append it to OUT/feedback.tsv and send it to the display. "
                         "Returns after volume N (or its timeout). Rerun the same command to resume.")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--watch", type=Path, metavar="EXPORT_DIR", help="folder the scanner exports into")
    where.add_argument("--socket", metavar="HOST:PORT", help="listen for volumes on a TCP socket")
    run.add_argument("--roi", type=Path, action="append", default=[], metavar="MASK",
                     help="ROI mask in the run's native space (repeatable; the first gives the feedback)")
    run.add_argument("--roiset", default="", help="library ROI set (MNI spheres), e.g. literature")
    run.add_argument("--regions", nargs="+", default=[], help="regions of --roiset to use")
    run.add_argument("--mni-to-native", type=Path, default=None, metavar="FILE",
                     help="4x4 affine (text) from MNI mm to the run's native mm, for --roiset")
    run.add_argument("--protocol", type=Path, required=True, help="PROTOCOL.tsv: onset, duration, trial_type")
    run.add_argument("--tr", type=float, required=True, help="repetition time (s)")
    run.add_argument("--n-volumes", type=int, required=True, help="volumes in the run")
    run.add_argument("--out", type=Path, required=True, metavar="LOG_DIR", help="log folder")
    run.add_argument("--config", type=Path, default=None, help="study.toml ([realtime] table)")
    run.add_argument("--series", default=None, help="series to read from the export folder")
    run.add_argument("--display", action="store_true", help="serve the feedback display in a browser")
    run.add_argument("--host", default="127.0.0.1", help="interface of the display")
    run.add_argument("--port", type=int, default=None, help="port of the display (default: [realtime] port)")
    run.set_defaults(func=_run)

    summ = sub.add_parser("summarize", help="regulation per run and learning across runs",
                          description="Regulate vs baseline blocks per run (paired t-test of each "
                          "regulate block's mean against the baseline block before it; d_z) and the slope "
                          "of regulation over runs; writes LOG_DIR/summary/.")
    summ.add_argument("log_dir", type=Path, help="a run's log folder, or a folder of run folders")
    summ.add_argument("--lag", type=float, default=4.0, metavar="SECONDS", help="haemodynamic lag")
    summ.add_argument("--column", default="roi",
                      help="logged column measured: roi, roi_<name> (as % of the run mean) or signal (as is)")
    summ.set_defaults(func=_summarize)
