"""Benchmark: EBICglasso on 20 nodes × 1,000 rows plus 1,000 case-dropping bootstraps.

Speed goal (issue 6): under 60 s on 2 cores. The anchor is R's qgraph/bootnet, which cannot run in
this process; the reference point printed is scikit-learn's ``graphical_lasso`` fitted along the same
100-λ path for one network (a different diagonal penalty, so a speed anchor only), and the ratio of
our per-network cost inside the batched engine to it.

Run: ``python benchmarks/bench_network.py``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd


def _simulated_items(n_rows: int = 1000, n_nodes: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    precision = np.eye(n_nodes)
    for i in range(n_nodes - 1):
        precision[i, i + 1] = precision[i + 1, i] = -0.35
    precision[0, 5] = precision[5, 0] = 0.2
    cov = np.linalg.inv(precision)
    values = rng.multivariate_normal(np.zeros(n_nodes), cov, size=n_rows)
    return pd.DataFrame(values, columns=[f"item{i + 1:02d}" for i in range(n_nodes)])


def main(argv: list[str] | None = None) -> None:
    import argparse
    import os

    argparse.ArgumentParser(description=__doc__).parse_args(argv)

    from theramark.psychosocial.network import correlation_matrix, ebicglasso, lambda_path
    from theramark.psychosocial.network_stability import case_drop_stability

    data = _simulated_items()
    warnings.simplefilter("ignore", UserWarning)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at start: {load:.1f} (wall times are only meaningful on an idle machine)")

    wall, cpu = time.perf_counter(), time.process_time()
    ebicglasso(data)
    single_wall, single_cpu = time.perf_counter() - wall, time.process_time() - cpu

    # serial run: its CPU time is what two processes share
    wall, cpu = time.perf_counter(), time.process_time()
    _, summary = case_drop_stability(data, n_boot=1000, statistics=("strength", "edge"), n_jobs=1,
                                     random_state=0)
    drop_wall, drop_cpu = time.perf_counter() - wall, time.process_time() - cpu

    wall = time.perf_counter()
    case_drop_stability(data, n_boot=1000, statistics=("strength", "edge"), n_jobs=2, random_state=0)
    drop_wall_2 = time.perf_counter() - wall

    estimate = single_cpu + drop_cpu / 2
    print(f"EBICglasso 20 nodes x 1000 rows, single fit:    {single_cpu:6.2f} CPU s "
          f"({single_wall:.2f} s wall)")
    print(f"case-dropping, 1000 networks, 1 process:       {drop_cpu:6.2f} CPU s ({drop_wall:.2f} s wall)")
    print(f"case-dropping, 1000 networks, 2 processes:     {drop_wall_2:6.2f} s wall")
    print(f"2-core estimate (single + serial CPU / 2):     {estimate:6.2f} s (goal < 60 s) -> "
          f"{'OK' if estimate < 60 else 'SLOWER THAN GOAL'}")
    print(summary.groupby("statistic")["cs_coefficient"].first().to_string())

    try:
        from sklearn.covariance import graphical_lasso
    except ImportError:  # pragma: no cover
        return
    S = correlation_matrix(data).to_numpy()
    cpu = time.process_time()
    for lam in lambda_path(S):
        graphical_lasso(S, alpha=lam, tol=1e-4, max_iter=200)
    sk_cpu = time.process_time() - cpu
    per_network = drop_cpu / 1000
    print(f"scikit-learn graphical_lasso along one 100-λ path: {sk_cpu:.2f} CPU s; ours per network in "
          f"the batched engine: {per_network:.3f} CPU s; ratio sklearn/ours = {sk_cpu / per_network:.1f}x")


if __name__ == "__main__":
    main()
