"""Group level at consortium scale: time and peak memory of each step.

A feature-level study (``theramark.simulate.features``: no BOLD) of ``--participants``
participants x 2 sessions x the edges of ``--nodes`` nodes (400: Schaefer-400, 79,800 edges) goes
through the group level's steps, each timed with its peak resident memory (RSS sampled every
20 ms, above the process before the step) and the whole run's peak (``ru_maxrss``):

1. simulate and write the features table (float32 Parquet, partitioned by edges);
2. read it back (float32);
3. longitudinal ComBat across sites (a random intercept per participant);
4. change-score models (OLS of post - pre on arm + age + sex + site, every edge at once);
5. max-T, Freedman-Lane, single precision, ``--permutations`` (5,000), and the same at 1,000
   permutations on its own (goal: peak <= 3 GB at 2,000 x 79,800, about 4x the data);
6. NBS on the change scores (``--permutations``);
7. max-T in edge chunks (``--edge-chunk``), checked identical to 5.

Goals (issue 15): the whole group level at 2,000 participants within 16 GB on 2 cores; max-T at
2,000 x 79,800 x 1,000 permutations at most 3 GB. The full size needs about 15 minutes and 8 GB;
``--quick`` runs 300 participants x 100 nodes.

Run: ``python benchmarks/bench_scale.py [--quick] [--participants N] [--nodes N]``.
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

GIB = 2**30


@contextmanager
def measured(label: str, results: dict):
    """Wall time and peak RSS above the start of the block (sampled every 20 ms)."""
    gc.collect()
    process = psutil.Process()
    start_rss = process.memory_info().rss
    peak = [start_rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        stop.set()
        sampler.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        results[label] = {"s": elapsed, "peak_above_gib": (peak[0] - start_rss) / GIB,
                          "rss_gib": peak[0] / GIB}
        print(f"{label:<44} {elapsed:8.1f} s   peak +{(peak[0] - start_rss) / GIB:6.2f} GiB "
              f"(process {peak[0] / GIB:5.2f} GiB)", flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 participants x 100 nodes")
    parser.add_argument("--participants", type=int, default=None, help="participants (2 arms)")
    parser.add_argument("--nodes", type=int, default=None, help="nodes (400: 79,800 edges)")
    parser.add_argument("--permutations", type=int, default=None, help="max-T and NBS (5,000)")
    parser.add_argument("--edge-chunk", type=int, default=None, help="edges per chunk in step 7")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--combat", choices=["longitudinal", "cross-sectional"],
                        default="longitudinal",
                        help="ComBat of step 3 (longitudinal: REML random intercept per feature)")
    parser.add_argument("--max-t-only", action="store_true",
                        help="only step 5b on random change scores (participants x edges float32)")
    args = parser.parse_args(argv)
    participants = args.participants or (300 if args.quick else 2000)
    nodes = args.nodes or (100 if args.quick else 400)
    permutations = args.permutations or (1000 if args.quick else 5000)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="theramark_bench_scale_"))

    from theramark.group.harmonize import ComBat, LongitudinalComBat
    from theramark.group.inference import max_t_permutation, nbs
    from theramark.simulate.features import load_feature_matrix, simulate_features
    from theramark.stats import ols

    n_edges = nodes * (nodes - 1) // 2
    if args.max_t_only:
        return max_t_memory(participants, n_edges, args.permutations or 1000)
    edge_chunk = args.edge_chunk or max(1, n_edges // 4)
    print(f"{participants} participants x 2 sessions x {n_edges} edges ({nodes} nodes); "
          f"{permutations} permutations; {workdir}", flush=True)
    results: dict = {}
    with measured("1 simulate + write features (Parquet)", results):
        study = simulate_features(workdir / "study", n_per_group=participants // 2, n_nodes=nodes,
                                  n_sites=8, effect_size=0.5, n_effect_nodes=8, seed=0)
    size = sum(p.stat().st_size for p in study.edge_files) / GIB
    print(f"   features table: {len(study.edge_files)} files, {size:.2f} GiB on disk", flush=True)
    with measured("2 read features (float32)", results):
        sessions, values, names = load_feature_matrix(study.root)
    data_gib = values.nbytes / GIB
    print(f"   in memory: {values.shape} float32 = {data_gib:.2f} GiB", flush=True)
    with measured(f"3 {args.combat} ComBat (8 sites)", results):
        covariates = pd.get_dummies(sessions[["group", "session", "sex"]], drop_first=True,
                                    dtype=float).assign(age=sessions["age"].to_numpy())
        if args.combat == "longitudinal":
            harmonized = LongitudinalComBat().fit_transform(
                values, sessions["site"], covariates=covariates,
                participants=sessions["participant_id"])
        else:
            harmonized = ComBat().fit_transform(values, sessions["site"], covariates=covariates)
        harmonized = np.asarray(harmonized, dtype=np.float32)
    del values
    with measured("4 change scores + OLS models (every edge)", results):
        pre = (sessions["session"] == "pre").to_numpy()
        post = (sessions["session"] == "post").to_numpy()
        change = harmonized[post] - harmonized[pre]  # rows in participant order for both
        del harmonized
        people = sessions[pre].reset_index(drop=True)
        arm = (people["group"] == "therapy").to_numpy(float)
        nuisance = np.column_stack([people["age"], (people["sex"] == "F").astype(float),
                                    pd.get_dummies(people["site"], drop_first=True, dtype=float)])
        design = np.column_stack([arm, np.ones(arm.size)])
        fit = ols(np.column_stack([design, nuisance]), change.astype(np.float64))
        effect = fit.contrast(np.r_[1.0, 0.0, np.zeros(nuisance.shape[1])])
        del fit
    print(f"   change scores {change.shape} float32 = {change.nbytes / GIB:.2f} GiB; "
          f"max |t| {np.abs(effect.t).max():.1f}", flush=True)
    with measured(f"5a max-T, {permutations} permutations (single)", results):
        whole = max_t_permutation(change, design, [1, 0], n_permutations=permutations,
                                  nuisance=nuisance, random_state=0, precision="single")
    if permutations == 1000:
        results["5b max-T, 1,000 permutations (single)"] = results[
            f"5a max-T, {permutations} permutations (single)"]
    else:
        with measured("5b max-T, 1,000 permutations (single)", results):
            max_t_permutation(change, design, [1, 0], n_permutations=1000, nuisance=nuisance,
                              random_state=0, precision="single")
    results["max_t_1000_over_change"] = results["5b max-T, 1,000 permutations (single)"][
        "peak_above_gib"] / (change.nbytes / GIB)
    with measured(f"6 NBS, {permutations} permutations", results):
        rows, cols = np.triu_indices(nodes, 1)
        matrices = np.zeros((arm.size, nodes, nodes), dtype=np.float32)
        matrices[:, rows, cols] = change
        matrices += matrices.transpose(0, 2, 1)
        network = nbs(matrices[arm == 1], matrices[arm == 0], 3.5, n_permutations=permutations,
                      random_state=0)
        del matrices
    with measured(f"7 max-T in edge chunks of {edge_chunk}", results):
        chunked = max_t_permutation(change, design, [1, 0], n_permutations=permutations,
                                    nuisance=nuisance, random_state=0, precision="single",
                                    edge_chunk=edge_chunk)
    assert np.array_equal(whole.p_fwe, chunked.p_fwe), "edge-chunked max-T differs"
    planted = np.isin(names, __import__("json").loads(study.ground_truth.read_text())
                      ["effects"][0]["edges"])
    steps = [k for k in results if isinstance(results[k], dict) and not k.startswith("5b")
             or k.startswith("5b") and permutations != 1000]
    total = sum(results[k]["s"] for k in steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    results["total_s"], results["peak_rss_gib"] = total, peak
    print(f"planted edges found at p_FWE < 0.05: {(whole.p_fwe[planted] < 0.05).mean():.0%}; "
          f"other edges: {(whole.p_fwe[~planted] < 0.05).sum()}; NBS components p < 0.05: "
          f"{int((network.p_values < 0.05).sum())}")
    print(f"total {total:.0f} s; peak RSS of the process {peak:.2f} GiB (goal <= 16 at 2,000); "
          f"max-T 1,000 permutations peak {results['max_t_1000_over_change']:.1f}x the change "
          "scores (goal <= 3 GB at 2,000 x 79,800)")
    return results


def max_t_memory(n: int, n_edges: int, permutations: int) -> dict:
    """Peak memory of max-T alone: n change scores x n_edges (float32), arm + age + sex + 3 site
    dummies, single precision."""
    from theramark.group.inference import max_t_permutation

    rng = np.random.default_rng(0)
    change = np.empty((n, n_edges), dtype=np.float32)
    for first in range(0, n_edges, 10_000):  # filled in blocks: no float64 copy of the whole
        change[:, first:first + 10_000] = rng.standard_normal((n, min(10_000, n_edges - first)),
                                                              dtype=np.float32)
    arm = np.repeat([1.0, 0.0], n // 2 + 1)[:n]
    design = np.column_stack([arm, np.ones(n)])
    nuisance = np.column_stack([rng.normal(40, 10, n), rng.integers(0, 2, n),
                                np.eye(4)[rng.integers(0, 4, n)][:, 1:]])
    results: dict = {}
    print(f"max-T alone: {n} x {n_edges} float32 = {change.nbytes / GIB:.2f} GiB, "
          f"{permutations} permutations, single precision", flush=True)
    with measured(f"max-T, {permutations} permutations", results):
        max_t_permutation(change, design, [1, 0], n_permutations=permutations, nuisance=nuisance,
                          random_state=0, precision="single")
    step = results[f"max-T, {permutations} permutations"]
    step["over_data"] = step["peak_above_gib"] / (change.nbytes / GIB)
    print(f"peak {step['peak_above_gib']:.2f} GiB above the data = {step['over_data']:.1f}x the data; "
          f"process {step['rss_gib']:.2f} GiB (goal <= 3 GB at 2,000 x 79,800)")
    return results


if __name__ == "__main__":
    main()
