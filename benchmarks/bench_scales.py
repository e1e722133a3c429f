"""Benchmark: memory and time of ``theramark scales score`` on a 1-million-row PHQ-9 file.

Goal: the scoring command's peak memory stays within 3× the size of the input file (it reads,
scores and writes 25,000 rows at a time); its time is reported against the anchor, pandas
``read_csv`` of the same file. Each measurement runs in a fresh subprocess, whose peak resident
memory (``VmHWM``) is reported in full and as the increase over the same interpreter just
after importing theramark's scoring and pandas (what any Python tool reading the file would pay
anyway). For comparison, scoring the whole table at once (``read_tsv`` + ``score`` +
``write_tsv``, what the command did before) is measured the same way.

Run: ``.venv/bin/python benchmarks/bench_scales.py`` (``--quick``: 200,000 rows)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Runs in the subprocess: prints {"base": KiB after imports, "peak": KiB at exit, "seconds": s}.
_CHILD = """
import json, sys, time
import pandas as pd
import theramark.cli, theramark.scales.engine, theramark._io
theramark.cli.build_parser()  # imports every subcommand, as the command does first

def peak_kib():  # this process's peak resident memory (VmHWM: unlike ru_maxrss, not the parent's)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

base = peak_kib()
what, items, out = sys.argv[1:4]
start = time.perf_counter()
if what == "command":
    code = theramark.cli.main(["scales", "score", "phq9", items, "-o", out, "--errors", "flag"])
    assert code == 0, code
elif what == "whole":
    table = theramark._io.read_tsv(items, dtype={"participant_id": str, "session": str})
    theramark._io.write_tsv(out, theramark.scales.engine.score("phq9", table, errors="flag"))
else:
    pd.read_csv(items, sep="\\t")
seconds = time.perf_counter() - start
print(json.dumps({"base": base, "peak": peak_kib(), "seconds": seconds}))
"""


def write_items(path: Path, n_rows: int, seed: int = 0) -> Path:
    """A wide PHQ-9 table: ``n_rows // 2`` participants × sessions pre and post, 1% answers missing."""
    rng = np.random.default_rng(seed)
    n_participants = n_rows // 2
    width = len(str(n_participants))
    block = 25_000
    with path.open("w", encoding="utf-8") as handle:
        handle.write("participant_id\tsession\t" + "\t".join(f"phq9_{i}" for i in range(1, 10)) + "\n")
        for start in range(0, n_participants, block):
            stop = min(start + block, n_participants)
            answers = rng.integers(0, 4, size=(2 * (stop - start), 9)).astype(str).astype(object)
            answers[rng.random(answers.shape) < 0.01] = "n/a"
            lines = [f"sub-{p + 1:0{width}d}\t{session}\t" + "\t".join(answers[2 * (p - start) + s])
                     for p in range(start, stop) for s, session in enumerate(("pre", "post"))]
            handle.write("\n".join(lines) + "\n")
    return path


def _measure(what: str, items: Path, out: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _CHILD, what, str(items), str(out)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None, n_rows: int = 1_000_000) -> dict[str, float]:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200,000 rows instead of 1,000,000")
    if parser.parse_args(argv).quick:
        n_rows = 200_000
    with tempfile.TemporaryDirectory() as folder:
        items = write_items(Path(folder) / "phq9.tsv", n_rows)
        size = items.stat().st_size / 2**20
        anchor = _measure("read_csv", items, Path(folder) / "unused.tsv")
        ours = _measure("command", items, Path(folder) / "scores.tsv")
        whole = _measure("whole", items, Path(folder) / "whole.tsv")
        identical = (Path(folder) / "scores.tsv").read_bytes() == (Path(folder) / "whole.tsv").read_bytes()
    mib = {name: {key: r[key] / 1024 for key in ("base", "peak")}
           for name, r in (("ours", ours), ("whole", whole), ("anchor", anchor))}
    added = mib["ours"]["peak"] - mib["ours"]["base"]
    ratio = ours["seconds"] / anchor["seconds"]
    print(f"scales score phq9, {n_rows:,} rows, input {size:.1f} MiB (output identical to whole-table "
          f"scoring: {identical})")
    for label, key, r in (("theramark scales score (blocks)", "ours", ours),
                          ("whole table (read_tsv + score)  ", "whole", whole),
                          ("pandas.read_csv (anchor)        ", "anchor", anchor)):
        print(f"  {label}: {r['seconds']:6.2f} s, peak RSS {mib[key]['peak']:6.0f} MiB "
              f"({mib[key]['peak'] - mib[key]['base']:5.0f} MiB over the imports, "
              f"{mib[key]['peak'] / size:4.1f}x the input)")
    print(f"  time: {ratio:.1f}x read_csv; memory over the imports: {added / size:.2f}x the input "
          f"(goal <= 3x) -> {'OK' if added <= 3 * size else 'ABOVE GOAL'}")
    return {"input_mib": size, "peak_mib": mib["ours"]["peak"], "added_mib": added,
            "whole_peak_mib": mib["whole"]["peak"], "seconds": ours["seconds"],
            "read_csv_s": anchor["seconds"], "ratio": ratio, "identical": float(identical)}


if __name__ == "__main__":
    main()
