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


def main() -> None:
    from theramark.psychosocial.network import correlation_matrix, ebicglasso, lambda_path
    from theramark.psychosocial.network_stability import case_drop_stability

    data = _simulated_items()
    warnings.simplefilter("ignore", UserWarning)

    start = time.perf_counter()
    ebicglasso(data)
    single = time.perf_counter() - start

    start = time.perf_counter()
    _, summary = case_drop_stability(data, n_boot=1000, statistics=("strength", "edge"), n_jobs=2,
                                     random_state=0)
    casedrop = time.perf_counter() - start
    total = single + casedrop
    print(f"EBICglasso 20 nodes x 1000 rows (single fit, tol 1e-6): {single:.2f} s")
    print(f"case-dropping bootstrap, 1000 networks, 2 processes:      {casedrop:.2f} s")
    print(f"total: {total:.2f} s (goal < 60 s) -> {'OK' if total < 60 else 'SLOWER THAN GOAL'}")
    print(summary.groupby('statistic')['cs_coefficient'].first().to_string())

    try:
        from sklearn.covariance import graphical_lasso
    except ImportError:  # pragma: no cover
        return
    S = correlation_matrix(data).to_numpy()
    lambdas = lambda_path(S)
    start = time.perf_counter()
    for lam in lambdas:
        graphical_lasso(S, alpha=lam, tol=1e-4, max_iter=200)
    sk = time.perf_counter() - start
    per_network = casedrop / 1000 * 2  # core-seconds per network in our batched engine
    print(f"scikit-learn graphical_lasso, one 100-λ path: {sk:.2f} s; ours per network (core-s): "
          f"{per_network:.3f} s; ratio sklearn/ours = {sk / per_network:.1f}x")


if __name__ == "__main__":
    main()
