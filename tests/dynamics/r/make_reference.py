"""Make tests/dynamics/data/lavaan_reference.json: lavaan's fits of the cases the tests compare against.

Run from the repository root (needs R with lavaan)::

    .venv/bin/python tests/dynamics/r/make_reference.py

It writes the simulated panel ``sim_lag.csv`` (generator and seed below), exports lavaan's
``Demo.growth`` to ``demo_growth.csv`` and ``demo_growth_missing.csv`` (the same with sessions
removed by a fixed rule), fits every case of :data:`CASES` with ``make_lavaan_reference.R`` and stores
lavaan's free parameters (estimate, SE) and fit measures. ``tests/dynamics/test_cross_lagged.py``
reuses :func:`run_lavaan` to rerun R live when it is available.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
SCRIPT = HERE / "make_lavaan_reference.R"
REFERENCE = DATA / "lavaan_reference.json"

SIM_SEED = 20261202
SESSIONS3 = ["pre", "mid", "post"]
SESSIONS4 = ["t1", "t2", "t3", "t4"]

CASES = [
    {"name": "sim_riclpm", "data": "sim_lag.csv", "x": "brain", "y": "symptom", "order": SESSIONS3,
     "random_intercepts": True},
    {"name": "sim_clpm", "data": "sim_lag.csv", "x": "brain", "y": "symptom", "order": SESSIONS3,
     "random_intercepts": False},
    {"name": "demo_growth_riclpm", "data": "demo_growth.csv", "x": "c", "y": "t", "order": SESSIONS4,
     "random_intercepts": True},
    {"name": "demo_growth_clpm", "data": "demo_growth.csv", "x": "c", "y": "t", "order": SESSIONS4,
     "random_intercepts": False},
    {"name": "demo_growth_missing_riclpm", "data": "demo_growth_missing.csv", "x": "c", "y": "t",
     "order": SESSIONS4, "random_intercepts": True},
]


def simulate_lag_panel(n: int = 300, seed: int = SIM_SEED, missing: float = 0.10) -> pd.DataFrame:
    """3-wave RI-CLPM data where the brain feature leads the symptom.

    Random intercepts (SD 1 and 4, correlation 0.4); within-person autoregression 0.5 (brain) and
    0.4 (symptom); cross-lag brain → symptom 1.2 (0.3 in within-SD units), symptom → brain 0;
    innovations SD 1 (brain) and 4 (symptom); each participant × session row missing with
    probability ``missing`` (a participant keeps at least one session).
    """
    rng = np.random.default_rng(seed)
    ri = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.4 * 4.0], [0.4 * 4.0, 16.0]], size=n)
    wx, wy = rng.normal(0.0, 1.0, n), rng.normal(0.0, 4.0, n)
    frames = []
    for t, s in enumerate(SESSIONS3):
        frames.append(pd.DataFrame({"participant_id": [f"sub-{i:03d}" for i in range(n)], "session": s,
                                    "brain": 0.5 + 0.1 * t + ri[:, 0] + wx,
                                    "symptom": 20.0 - 2.0 * t + ri[:, 1] + wy}))
        wx, wy = 0.5 * wx + rng.normal(0.0, 1.0, n), 0.4 * wy + 1.2 * wx + rng.normal(0.0, 4.0, n)
    long = pd.concat(frames, ignore_index=True)
    drop = rng.random(len(long)) < missing
    long = long[~drop]
    long = long.sort_values(["participant_id", "session"], key=lambda c: c.map(
        {s: i for i, s in enumerate(SESSIONS3)}) if c.name == "session" else c)
    return long.reset_index(drop=True)


def run_lavaan(cases: list[dict], data_dir: Path, work: Path) -> dict:
    """Fit ``cases`` with lavaan (Rscript) on the CSVs in ``data_dir``; ``{name: {parameters, fit}}``."""
    table = pd.DataFrame([{**c, "data": str(data_dir / c["data"]), "order": ";".join(c["order"]),
                           "random_intercepts": "TRUE" if c["random_intercepts"] else "FALSE"}
                          for c in cases])
    table.to_csv(work / "cases.csv", index=False)
    subprocess.run(["Rscript", str(SCRIPT), str(work / "cases.csv"), str(work)], check=True,
                   capture_output=True, text=True)
    out = {"lavaan_version": (work / "lavaan_version.txt").read_text().strip(), "cases": {}}
    for case in cases:
        params = pd.read_csv(work / f"{case['name']}_parameters.csv", keep_default_na=False)
        fit = pd.read_csv(work / f"{case['name']}_fit.csv")
        out["cases"][case["name"]] = {
            **case,
            "parameters": [{"lhs": r.lhs, "op": r.op, "rhs": r.rhs, "est": float(r.est), "se": float(r.se)}
                           for r in params.itertuples(index=False)],
            "fit": {m: float(v) for m, v in zip(fit["measure"], fit["value"], strict=True)},
            "warnings": [w for w in (work / f"{case['name']}_warnings.txt").read_text().splitlines() if w],
        }
    return out


def main() -> None:
    DATA.mkdir(exist_ok=True)
    simulate_lag_panel().to_csv(DATA / "sim_lag.csv", index=False, float_format="%.10g")
    subprocess.run(["Rscript", str(SCRIPT), "--export-demo-growth", str(DATA / "demo_growth.csv")],
                   check=True)
    growth = pd.read_csv(DATA / "demo_growth.csv")
    # a fixed, outcome-independent rule: every 7th participant misses t2, every 11th misses t4
    number = growth["participant_id"].str[2:].astype(int)
    session = growth["session"]
    gone = ((number % 7 == 0) & (session == "t2")) | ((number % 11 == 0) & (session == "t4"))
    growth[~gone].to_csv(DATA / "demo_growth_missing.csv", index=False)
    with tempfile.TemporaryDirectory() as tmp:
        reference = run_lavaan(CASES, DATA, Path(tmp))
    reference["source"] = ("tests/dynamics/r/make_reference.py + make_lavaan_reference.R; "
                           "lavaan(..., missing = 'ml', meanstructure = TRUE), observed information")
    REFERENCE.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    main()
