"""Speed of theramark's dynamic-FC states against their anchors, measured in one process.

Run ``python benchmarks/bench_dynamics.py`` (``--quick`` for a smoke run). Full size: 200 participants
× 400 volumes × 100 ROIs, windows of 30 volumes at step 1 (74,200 windows × 4,950 edges).

Rows: theramark's wall time, the anchor's, their ratio (anchor / theramark: > 1 means theramark is
faster), an agreement column (inertia ratio, |cos| of eigenvectors, or max |Δ|) and theramark's CPU
time (all threads; CPU / wall > 1 means several cores worked). ``--cases`` runs a subset.

- k-means states: :func:`fit_features` (exemplar clustering, then one k-means of all windows) for
  k = 2–10 against scikit-learn ``KMeans(k, n_init=1)`` (k-means++) on the same window vectors;
  agreement = anchor inertia / theramark inertia (≥ 1: theramark's partition is as tight).
- the whole selection (features + k = 2–10 + silhouette + split-half reproducibility on the exemplar
  windows, Allen et al. 2014), then the final fit of all windows at one k, no anchor.
- LEiDA eigenvectors against ``numpy.linalg.eigh`` of every volume's coherence matrix (anchor on a
  subset of participants, scaled to the full set), and LEiDA states (features + k-means, k = 5).
- state metrics of 10,000 sequences against a per-sequence numpy loop (on 500, scaled).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

_CPU: list[float] = []


def _time(func: Callable[[], object]) -> tuple[float, object]:
    """Wall seconds and result; the CPU seconds (process, all threads) go to ``_CPU``."""
    start, cpu = time.perf_counter(), time.process_time()
    result = func()
    _CPU.append(time.process_time() - cpu)
    return time.perf_counter() - start, result


def _data(n_subjects: int, n_volumes: int, n_rois: int, seed: int = 0) -> list[np.ndarray]:
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((4, n_rois, n_rois)) / np.sqrt(n_rois)
    out = []
    for _ in range(n_subjects):
        # Blocks of 40 volumes with one of four covariance structures, and AR(1) noise (φ = 0.6)
        # for BOLD-like autocorrelation (white noise would make the FC-variance course jagged).
        states = np.repeat(rng.integers(0, 4, size=n_volumes // 40 + 1), 40)[:n_volumes]
        z = lfilter([np.sqrt(1 - 0.36)], [1.0, -0.6], rng.standard_normal((n_volumes, n_rois)), axis=0)
        out.append(np.einsum("tij,tj->ti", mixing[states], z) + 0.5 * z)
    return out


def bench_kmeans(series: list[np.ndarray], window: int, ks: list[int]) -> list[dict]:
    from sklearn.cluster import KMeans

    from theramark.dynamics.states import fit_features, state_features

    t_feat, (vectors, lengths) = _time(lambda: state_features(series, "kmeans", window, 1))
    shape = f"{len(series)} × {series[0].shape[1]} ROIs × {series[0].shape[0]} vol"
    rows = [{"case": f"window vectors {shape}, w={window}: {vectors.shape[0]} × {vectors.shape[1]}",
             "anchor": "-", "t_anchor": np.nan, "t_ours": t_feat, "agreement": np.nan, "cpu": _CPU[-1]}]
    t_ours = t_ref = cpu = 0.0
    worst = np.inf
    for k in ks:
        t, fit = _time(lambda k=k: fit_features(vectors, lengths, k, "kmeans", window=window))
        t_ours += t
        cpu += _CPU[-1]
        t, ref = _time(lambda k=k: KMeans(k, n_init=1, random_state=0).fit(vectors))
        t_ref += t
        worst = min(worst, ref.inertia_ / fit.inertia)
    rows.append({"case": f"k-means states k={ks[0]}–{ks[-1]} (exemplar start), {vectors.shape[0]} windows",
                 "anchor": "sklearn KMeans(n_init=1)", "t_anchor": t_ref, "t_ours": t_ours,
                 "agreement": worst, "cpu": cpu})
    return rows


def bench_selection(series: list[np.ndarray], window: int, ks: list[int], k_final: int = 4) -> list[dict]:
    from theramark.dynamics.selection import select_n_states
    from theramark.dynamics.states import fit_states

    t, table = _time(lambda: select_n_states(series, ks, window=window))
    cpu_sel = _CPU[-1]
    print(table.to_string(index=False), flush=True)
    t_fit, fit = _time(lambda: fit_states(series, k_final, window=window))
    cpu_fit = _CPU[-1]
    n_windows = sum(len(lab) for lab in fit.labels)
    case = f"select_n_states k={ks[0]}–{ks[-1]} + silhouette + split-half (exemplars, features incl.)"
    return [{"case": case,
             "anchor": "-", "t_anchor": np.nan, "t_ours": t, "agreement": np.nan, "cpu": cpu_sel},
            {"case": f"fit_states k={k_final}, all {n_windows} windows ({fit.n_iter} iter, features incl.)",
             "anchor": "-", "t_anchor": np.nan, "t_ours": t_fit, "agreement": np.nan, "cpu": cpu_fit}]


def bench_leida(series: list[np.ndarray], n_anchor: int) -> list[dict]:
    from scipy.signal import hilbert

    from theramark.dynamics.states import fit_states, leading_eigenvectors

    t_ours, vecs = _time(lambda: [leading_eigenvectors(x) for x in series])
    cpu_vec = _CPU[-1]

    def anchor():
        out = []
        for x in series[:n_anchor]:
            theta = np.angle(hilbert((x - x.mean(0)) / x.std(0), axis=0))
            coherence = np.cos(theta[:, :, None] - theta[:, None, :])
            out.append(np.linalg.eigh(coherence)[1][:, :, -1])
        return out

    t_ref, ref = _time(anchor)
    t_ref *= len(series) / n_anchor
    agreement = min(float(np.abs(np.einsum("tr,tr->t", a, b)).min()) for a, b in zip(ref, vecs, strict=False))
    shape = f"{len(series)} × {series[0].shape[1]} ROIs × {series[0].shape[0]} vol"
    rows = [{"case": f"LEiDA leading eigenvectors {shape}",
             "anchor": f"np.linalg.eigh per volume ({n_anchor} subj, scaled)",
             "t_anchor": t_ref, "t_ours": t_ours, "agreement": agreement, "cpu": cpu_vec}]
    t_fit, _ = _time(lambda: fit_states(series, 5, method="leida"))
    rows.append({"case": "LEiDA states k=5 (eigenvectors + k-means)", "anchor": "-",
                 "t_anchor": np.nan, "t_ours": t_fit, "agreement": np.nan, "cpu": _CPU[-1]})
    return rows


def bench_metrics(n_sequences: int, n_windows: int) -> dict:
    from theramark.dynamics.metrics import state_metrics

    rng = np.random.default_rng(3)
    runs = rng.integers(0, 5, size=(n_sequences, n_windows // 8 + 1))
    seqs = list(np.repeat(runs, 8, axis=1)[:, :n_windows])
    t_ours, frame = _time(lambda: state_metrics(seqs, 5, 2.0))
    cpu = _CPU[-1]

    def loop(sub):
        rows = []
        for s in sub:
            change = np.flatnonzero(np.diff(s)) + 1
            bounds = np.r_[0, change, s.size]
            run_state, run_len = s[bounds[:-1]], np.diff(bounds)
            counts = np.zeros((5, 5))
            np.add.at(counts, (s[:-1], s[1:]), 1)
            rows.append((np.bincount(s, minlength=5) / s.size,
                         [run_len[run_state == j].mean() * 2.0 if (run_state == j).any() else np.nan
                          for j in range(5)],
                         counts / counts.sum(1, keepdims=True)))
        return rows

    n_loop = min(500, n_sequences)
    t_ref, ref = _time(lambda: loop(seqs[:n_loop]))
    t_ref *= n_sequences / n_loop
    diff = max(float(np.nanmax(np.abs(frame.filter(like="occupancy").to_numpy()[i] - r[0]))) for i, r in
               enumerate(ref))
    return {"case": f"state_metrics {n_sequences} sequences × {n_windows} windows, k=5",
            "anchor": f"numpy loop per sequence ({n_loop}, scaled)", "t_anchor": t_ref, "t_ours": t_ours,
            "agreement": diff, "cpu": cpu}


CASES = ("kmeans", "selection", "leida", "metrics")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--subjects", type=int, help="participants (default 200, 20 with --quick)")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of {', '.join(CASES)}")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}; expected some of {', '.join(CASES)}")
    n_subjects = args.subjects or (20 if args.quick else 200)
    print(
        f"{'case':<92} {'anchor':<44} {'anchor s':>9} {'ours s':>8} {'ratio':>7} {'agree':>9} {'CPU s':>8}",
        flush=True,
    )
    rows: list[dict] = []

    def report(new_rows: list[dict]) -> None:
        for row in new_rows:
            rows.append(row)
            print(
                f"{row['case']:<92} {row['anchor']:<44} {row['t_anchor']:9.3f} "
                f"{row['t_ours']:8.3f} {row['t_anchor'] / row['t_ours']:7.1f} {row['agreement']:9.3g} "
                f"{row.get('cpu', np.nan):8.1f}",
                flush=True,
            )

    series = _data(n_subjects, 400, 100) if {"kmeans", "selection", "leida"} & set(cases) else []
    ks = list(range(2, 11))
    if "kmeans" in cases:
        report(bench_kmeans(series, 30, ks))
    if "selection" in cases:
        report(bench_selection(series, 30, ks))
    if "leida" in cases:
        report(bench_leida(series, n_anchor=2 if args.quick else 5))
    if "metrics" in cases:
        report([bench_metrics(10_000, 371)])
    return rows


if __name__ == "__main__":
    main()
