"""Speed of theramark's denoising and connectivity against their anchors, measured in one process.

Run ``python benchmarks/bench_connectivity.py`` (``--quick`` for a smoke run). Every row reports
the anchor's time, theramark's time, their ratio (anchor / theramark: > 1 means theramark is faster)
and the largest absolute difference of the two results. Timings are the best of ``--repeat``
runs. Data are seeded random numbers with realistic shapes (the speed does not depend on values).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np


def _best(func: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_sliding_windows(n_subjects: int, repeat: int) -> list[dict]:
    """theramark on one thread and on its default threads, against the loop on the same data."""
    from theramark._blas import blas_threads
    from theramark.imaging.connectivity import sliding_window_fc

    rng = np.random.default_rng(0)
    data = rng.standard_normal((n_subjects, 600, 100)).cumsum(axis=1) * 0.1 + rng.standard_normal(
        (n_subjects, 600, 100)
    )
    window = 30
    default_threads = blas_threads()
    variants = {1: "theramark, 1 thread", None: f"theramark, default ({default_threads} threads)"}

    # Subject by subject, keeping only the largest difference: 100 subjects' windows would take
    # 9 GB if both results were kept.
    t_ref = 0.0
    t_ours = dict.fromkeys(variants, 0.0)
    diff = dict.fromkeys(variants, 0.0)
    for ts in data:
        start = time.perf_counter()
        ref = np.stack([np.corrcoef(ts[s : s + window].T) for s in range(600 - window + 1)])
        t_ref += time.perf_counter() - start
        for n_threads in variants:
            t_one, got = _best(lambda ts=ts, k=n_threads: sliding_window_fc(ts, window, n_threads=k),
                               repeat)
            t_ours[n_threads] += t_one
            diff[n_threads] = max(diff[n_threads], float(np.abs(ref - got).max()))
            del got
    return [
        {
            "case": f"sliding windows {n_subjects} × 100 ROIs × 600 vol, w=30: {label}",
            "anchor": "np.corrcoef per window",
            "t_anchor": t_ref, "t_ours": t_ours[n_threads], "max_abs_diff": diff[n_threads],
        }
        for n_threads, label in variants.items()
    ]


def bench_static_fc(n_subjects: int, repeat: int) -> list[dict]:
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import EmpiricalCovariance

    from theramark.imaging.connectivity import fc_matrix

    rng = np.random.default_rng(1)
    data = rng.standard_normal((n_subjects, 300, 400))
    rows = []
    t_ours, ours = _best(lambda: fc_matrix(data, fisher_z=False), repeat)
    for label, estimator in (
        ("EmpiricalCovariance(store_precision=False)", EmpiricalCovariance(store_precision=False)),
        ("EmpiricalCovariance()", EmpiricalCovariance()),
    ):
        measure = ConnectivityMeasure(kind="correlation", cov_estimator=estimator)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_ref, ref = _best(lambda m=measure: m.fit_transform(list(data)), 1)
        rows.append({
            "case": f"Pearson FC {n_subjects} × 400 ROIs × 300 vol",
            "anchor": f"ConnectivityMeasure + {label}",
            "t_anchor": t_ref, "t_ours": t_ours,
            "max_abs_diff": float(np.abs(np.asarray(ref) - ours).max()),
        })
    return rows


def bench_clean(n_voxels: int, repeat: int, band: bool) -> dict:
    from nilearn.signal import clean as nilearn_clean

    from theramark.imaging.denoise import clean

    rng = np.random.default_rng(2)
    n = 300
    confounds = rng.standard_normal((n, 36)).cumsum(axis=0)
    signals = (
        rng.standard_normal((n, n_voxels)) + confounds[:, :4] @ rng.standard_normal((4, n_voxels))
    ).astype(np.float32) + 1000.0
    mask = np.setdiff1d(np.arange(n), [0, 1, 2, 3, 40, 41, 120, 200, 201])
    kwargs = {"confounds": confounds, "sample_mask": mask}
    if band:
        kwargs.update({"high_pass": 0.01, "low_pass": 0.1, "t_r": 2.0})

    def anchor():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # float64 input so that the anchor is as accurate as theramark's float64 blocks
            return nilearn_clean(signals.astype(np.float64), **{**kwargs, "sample_mask": mask.copy()})

    t_ref, ref = _best(anchor, 1)
    t_ours, got = _best(lambda: clean(signals, **kwargs), repeat)
    what = "confounds + band-pass + censoring" if band else "confounds + censoring"
    return {
        "case": f"clean 300 × {n_voxels} float32, {what}",
        "anchor": "nilearn.signal.clean",
        "t_anchor": t_ref, "t_ours": t_ours, "max_abs_diff": float(np.abs(ref - got).max()),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of theramark's side")
    args = parser.parse_args(argv)
    quick = args.quick
    print(
        f"{'case':<80} {'anchor':<58} {'anchor s':>9} {'ours s':>8} {'ratio':>7} {'max|Δ|':>9}",
        flush=True,
    )
    rows: list[dict] = []

    def report(new_rows: list[dict]) -> None:
        for row in new_rows:
            rows.append(row)
            print(
                f"{row['case']:<80} {row['anchor']:<58} {row['t_anchor']:9.3f} "
                f"{row['t_ours']:8.3f} {row['t_anchor'] / row['t_ours']:7.1f} "
                f"{row['max_abs_diff']:9.1e}",
                flush=True,
            )

    report(bench_sliding_windows(5 if quick else 100, args.repeat))
    report(bench_static_fc(20 if quick else 200, args.repeat))
    for n_voxels in (5_000,) if quick else (30_000, 100_000):
        report([bench_clean(n_voxels, args.repeat, band=False)])
        report([bench_clean(n_voxels, args.repeat, band=True)])
    return rows


if __name__ == "__main__":
    main()
