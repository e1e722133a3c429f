"""Benchmark: mass-univariate group × time models against statsmodels loops (one process).

Data: ``n`` participants in 3 arms × 2 sessions × ``F`` features (FC edges).

1. Change-score path (complete pairs): theramark's vectorized OLS over all features at once
   (:func:`theramark.group.longitudinal.group_time_effects`, ``method="change"``) against a loop of
   ``statsmodels.formula.api.ols("change ~ group")`` per feature.
2. Mixed-model path (REML, random intercept; missing sessions): theramark's REML vectorized over
   features (``method="mixed"``) against a loop of ``statsmodels MixedLM(reml=True)`` per feature.

The statsmodels loops are timed on a subset of features and extrapolated per feature (stated in the
output); the estimates of the subset are checked equal. Ratios are statsmodels / theramark.

Run: ``python benchmarks/bench_group_models.py`` (``--quick`` for a smaller run).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd


def _table(n_per_arm: int, n_features: int, missing: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arms = np.repeat(["waitlist", "CBT", "MBCT"], n_per_arm)
    n = len(arms)
    trait = rng.normal(0, 1, (n, n_features))
    frames = []
    for session in ("pre", "post"):
        values = trait + rng.normal(0, 0.7, trait.shape)
        if session == "post":
            values[arms == "CBT", : n_features // 10] += 0.5
            drop = rng.random(n) < missing
            values[drop] = np.nan
        frame = pd.DataFrame(values, columns=[f"e{i}" for i in range(n_features)])
        frame.insert(0, "session", session)
        frame.insert(0, "group", arms)
        frame.insert(0, "participant_id", [f"sub-{i:03d}" for i in range(n)])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _time(function, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def bench_change(n_per_arm: int, n_features: int, n_loop: int) -> float:
    import statsmodels.formula.api as smf

    from theramark.group.longitudinal import group_time_effects

    table = _table(n_per_arm, n_features, missing=0.0)
    features = [f"e{i}" for i in range(n_features)]
    ours_s = _time(lambda: group_time_effects(table, features, method="change", reference_group="waitlist"))
    ours = group_time_effects(table, features[:n_loop], method="change",
                              reference_group="waitlist")

    wide = table.set_index(["participant_id", "session"])
    change = (wide.xs("post", level="session")[features[:n_loop]]
              - wide.xs("pre", level="session")[features[:n_loop]])
    change["group"] = wide.xs("pre", level="session")["group"]
    formula_group = "C(group, Treatment('waitlist'))"

    def loop():
        return [smf.ols(f"{f} ~ {formula_group}", change).fit() for f in features[:n_loop]]

    loop_s = _time(loop, repeat=1)
    fits = loop()
    estimates = np.array([fit.params[f"{formula_group}[T.CBT]"] for fit in fits])
    got = ours[ours["arm"] == "CBT"]["estimate"].to_numpy()
    assert np.allclose(got, estimates, rtol=1e-8), "change-score estimates differ"
    per_feature = loop_s / n_loop
    ratio = per_feature * n_features / ours_s
    print(f"change-score OLS, {3 * n_per_arm} participants x {n_features} features: theramark "
          f"{ours_s:.3f} s; statsmodels ols loop {per_feature * 1e3:.2f} ms/feature "
          f"(timed on {n_loop}, extrapolated {per_feature * n_features:.1f} s); "
          f"ratio {ratio:.0f}x")
    return ratio


def bench_mixed(n_per_arm: int, n_features: int, n_loop: int) -> float:
    from statsmodels.regression.mixed_linear_model import MixedLM

    from theramark.group.longitudinal import group_time_effects

    table = _table(n_per_arm, n_features, missing=0.15, seed=1)
    features = [f"e{i}" for i in range(n_features)]
    ours_s = _time(lambda: group_time_effects(table, features, method="mixed",
                                                     reference_group="waitlist"), repeat=1)
    ours = group_time_effects(table, features[:n_loop], method="mixed",
                              reference_group="waitlist")
    data = table.assign(group=pd.Categorical(table["group"], ["waitlist", "CBT", "MBCT"]),
                        session=pd.Categorical(table["session"], ["pre", "post"]))
    term = "group[T.CBT]:session[T.post]"

    def loop():
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for f in features[:n_loop]:
                rows = data.dropna(subset=[f])
                model = MixedLM.from_formula(f"{f} ~ group * session", rows,
                                             groups=rows["participant_id"])
                out.append(model.fit(reml=True).fe_params[term])
        return np.array(out)

    loop_s = _time(loop, repeat=1)
    estimates = loop()
    got = ours[ours["arm"] == "CBT"]["estimate"].to_numpy()
    assert np.allclose(got, estimates, atol=1e-4), "mixed-model estimates differ"
    per_feature = loop_s / n_loop
    ratio = per_feature * n_features / ours_s
    print(f"REML mixed model (15% missing post), {3 * n_per_arm} participants x {n_features} "
          f"features: theramark {ours_s:.3f} s incl. Satterthwaite df; statsmodels MixedLM loop "
          f"{per_feature * 1e3:.1f} ms/feature (timed on {n_loop}, extrapolated "
          f"{per_feature * n_features:.1f} s, no df); ratio {ratio:.0f}x")
    return ratio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller problem")
    args = parser.parse_args(argv)
    if args.quick:
        bench_change(20, 2000, 100)
        bench_mixed(20, 500, 20)
    else:
        bench_change(40, 4950, 200)  # 100 ROIs
        bench_mixed(40, 4950, 40)


if __name__ == "__main__":
    main()
