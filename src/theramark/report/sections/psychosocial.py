"""Report sections for the psychosocial analyses (orders 60–64; the network is 62).

Figures are drawn from the result tables of :mod:`theramark.psychosocial`; nothing is estimated
here (the breakpoint plot only evaluates the fitted broken line from its coefficients).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from theramark.report.document import Figure, Section, Table, Text

_SHOW = ["estimate", "se", "ci_low", "ci_high", "p", "std_estimate"]


def _fmt(row: pd.Series) -> str:
    return f"{row['estimate']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def path_diagram(result: pd.DataFrame, title: str = ""):
    """X → M(s) → Y diagram with estimates and 95% CIs on the arrows (matplotlib Figure)."""
    import matplotlib.pyplot as plt

    attrs = result.attrs
    x, ms, y, w = attrs["x"], attrs["m"], attrs["y"], attrs.get("w")
    model = attrs.get("model", 4)
    several = len(ms) > 1
    fig, ax = plt.subplots(figsize=(7.5, 2.6 + 1.1 * len(ms)))
    ax.set_xlim(0, 10)
    top = 2.2 + 1.1 * len(ms)
    ax.set_ylim(-0.6, top + (0.9 if w else 0.2))
    ax.axis("off")
    box = dict(boxstyle="round,pad=0.4", fc="#eef2f8", ec="#23395d")
    pos = {x: (1.0, 0.5), y: (9.0, 0.5)}
    for j, m in enumerate(ms):
        # serial mediators are staggered left to right so the chain arrows do not overlap
        if model == 6 and several:
            pos[m] = (3.0 + 4.0 * j / (len(ms) - 1), 2.4)
        else:
            pos[m] = (5.0, 2.0 + 1.1 * j)
    for name, (px, py) in pos.items():
        ax.text(px, py, name, ha="center", va="center", bbox=box, fontsize=10)

    def arrow(a, b, label, offset=0.25, color="#23395d"):
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.annotate("", xy=(x1 - 0.6 * np.sign(x1 - x0), y1), xytext=(x0 + 0.6 * np.sign(x1 - x0),
                    y0), arrowprops=dict(arrowstyle="->", color=color, lw=1.4))
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + offset, label, ha="center", fontsize=8,
                color=color, bbox=dict(fc="white", ec="none", alpha=0.8, pad=0.5))

    serial = model == 6 and several
    for j, m in enumerate(ms):
        key_a = f"a[{m}]" if several else "a"
        key_b = f"b[{m}]" if several else "b"
        # in a serial diagram the long arrows cross near the middle: move their labels apart
        first, last = j == 0, j == len(ms) - 1
        arrow(x, m, f"a = {_fmt(result.loc[key_a])}",
              offset=0.25 if (first or not serial) else 0.65)
        arrow(m, y, f"b = {_fmt(result.loc[key_b])}",
              offset=0.25 if (last or not serial) else -0.55)
    if model == 6:
        for key in [k for k in result.index if k.startswith("d[")]:
            first, second = key[2:-1].split("->")
            arrow(first, second, f"d = {_fmt(result.loc[key])}", offset=0.0)
    arrow(x, y, f"c' = {_fmt(result.loc['direct'])}   (total c = {_fmt(result.loc['total'])})",
          offset=-0.55)
    if w:
        ax.text(5.0, top + 0.4, w, ha="center", va="center", bbox=box, fontsize=10)
        notes = []
        for key in [k for k in result.index if "interaction" in k]:
            notes.append(f"{key} = {_fmt(result.loc[key])}")
        ax.text(5.0, top - 0.25, "; ".join(notes), ha="center", fontsize=8, color="#8a3b12")
    if w:
        # W = 0 may lie outside the data (e.g. age): show the index or the conditional effects.
        keys = [k for k in result.index if k.startswith("index_moderated_mediation")]
        if not keys:
            keys = [k for k in result.index if k.startswith("contrast[")]
        summary = "; ".join(f"{k} = {_fmt(result.loc[k])}" for k in keys)
        method = result.loc[keys[0], "ci_method"] if keys else ""
    else:
        summary = f"indirect = {_fmt(result.loc['indirect'])}"
        method = result.loc["indirect", "ci_method"]
    if summary:
        ax.text(5.0, -0.5, f"{summary}  ({method})", ha="center", fontsize=9, weight="bold")
    if title:
        ax.set_title(title, fontsize=11)
    return fig


def conditional_indirect_figure(result: pd.DataFrame):
    """Conditional indirect effects (estimate and bootstrap CI) at each probed moderator value."""
    import matplotlib.pyplot as plt

    rows = result.loc[[k for k in result.index if k.startswith("indirect[") and "=" in k]]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(rows)))
    positions = np.arange(len(rows))
    ax.errorbar(rows["estimate"], positions,
                xerr=[rows["estimate"] - rows["ci_low"], rows["ci_high"] - rows["estimate"]],
                fmt="o", color="#23395d", capsize=3)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(positions, [k[len("indirect["):-1] for k in rows.index])
    ax.set_xlabel(f"conditional indirect effect of {result.attrs['x']} on {result.attrs['y']}")
    ax.invert_yaxis()
    return fig


def johnson_neyman_figure(result: pd.DataFrame):
    """Conditional effect of X across W with its confidence band and the J–N significance region."""
    import matplotlib.pyplot as plt

    curve = result.attrs["curve"]
    attrs = result.attrs
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(curve["w_value"], curve["estimate"], color="#23395d")
    ax.fill_between(curve["w_value"], curve["ci_low"], curve["ci_high"], color="#23395d",
                    alpha=0.2, label=f"{int(attrs['confidence'] * 100)}% CI")
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    significant = curve["p"] < 1 - attrs["confidence"]
    ax.fill_between(curve["w_value"], *ax.get_ylim(), where=significant.to_numpy(),
                    color="#2e7d32", alpha=0.08, label="significant region")
    jn = attrs.get("johnson_neyman")
    if jn is not None:
        for value in jn["w_high"].to_numpy()[:-1]:
            if curve["w_value"].min() <= value <= curve["w_value"].max():
                ax.axvline(value, color="#2e7d32", lw=1, ls=":")
    ax.set_xlabel(attrs["w"])
    ax.set_ylabel(f"effect of {attrs['x']} on {attrs['y']}")
    ax.legend(fontsize=8, loc="best")
    return fig


def breakpoint_figure(data: pd.DataFrame, result: pd.DataFrame):
    """Scatter of y on x with the fitted broken line and the breakpoint's confidence interval."""
    import matplotlib.pyplot as plt

    row = result.iloc[0]
    coefs = result.attrs["coefficients"].set_index("term")["estimate"]
    x, y = row["x"], row["y"]
    complete = data[[x, y]].dropna()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.scatter(complete[x], complete[y], s=12, alpha=0.5, color="#7a8699")
    grid = np.linspace(complete[x].min(), complete[x].max(), 200)
    fitted = (coefs.iloc[0] + coefs.iloc[1] * grid
              + coefs.iloc[2] * np.maximum(grid - row["breakpoint"], 0))
    if len(coefs) == 3:  # without covariates the line is the fit itself
        ax.plot(grid, fitted, color="#23395d", lw=2)
    ax.axvline(row["breakpoint"], color="#8a3b12", lw=1.2)
    ax.axvspan(row["ci_low"], row["ci_high"], color="#8a3b12", alpha=0.1)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"breakpoint {row['breakpoint']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
                 f", Davies p = {row['davies_p']:.3g}", fontsize=10)
    return fig


def _mediation_text(name: str, result: pd.DataFrame) -> str:
    attrs = result.attrs
    model = attrs["model"]
    ind = result.loc["indirect"]
    text = (f"PROCESS model {model}: {attrs['x']} → {', '.join(attrs['m'])} → {attrs['y']}"
            + (f", moderated by {attrs['w']}" if attrs.get("w") else "")
            + f". OLS paths; indirect effects with {attrs['n_boot']} bootstrap resamples "
              f"({attrs['ci_method']} intervals). {attrs['note']}. Indirect effect "
              f"{_fmt(ind)}.")
    if "index_moderated_mediation" in result.index:
        text += (" Index of moderated mediation "
                 f"{_fmt(result.loc['index_moderated_mediation'])}.")
    return text


#: Result attributes stored as tables of their own (``<result>_<attribute>.tsv``).
_TABLE_ATTRIBUTES = ("coefficients", "johnson_neyman", "curve", "profile", "davies")


def load_results(files) -> dict[str, Any]:
    """The psychosocial results as written: tables with their ``attrs``, and skipped reasons."""
    names = files.names()
    results: dict[str, Any] = {}
    attrs = files.summary.get("attrs", {})
    for name in names:
        if any(name.endswith(f"_{key}") for key in _TABLE_ATTRIBUTES):
            continue
        table = files.table(name)
        table.attrs.update(attrs.get(name, {}))
        for key in _TABLE_ATTRIBUTES:
            if f"{name}_{key}" in names:
                table.attrs[key] = files.table(f"{name}_{key}")
        results[name] = table
    results["skipped"] = {entry["step"]: entry["reason"] for entry in files.skipped}
    if "network_note" in files.summary:
        results["network_note"] = files.summary["network_note"]
    return results


def sections(files) -> list[Section]:
    """The psychosocial sections from ``OUT/group/psychosocial/``."""
    if not files.exists:
        return []
    cfg = files.parameters.get("psychosocial", {})
    return build_sections(load_results(files),
                          gamma=float(cfg.get("network", {}).get("gamma", 0.5)))


def build_sections(results: dict[str, Any], gamma: float = 0.5) -> list[Section]:
    """Sections for the psychosocial results (tables with their ``attrs``, ``skipped`` reasons)."""
    sections: list[Section] = []
    skipped = results.get("skipped", {})

    med = Section(id="psychosocial-mediation", title="Psychosocial pathways: mediation", order=60)
    for name in sorted(k for k in results if k.startswith("mediation_model")):
        result = results[name]
        med.add(Text(_mediation_text(name, result)))
        med.add(Figure(path_diagram(result, f"Model {result.attrs['model']}"),
                       caption=f"Path diagram, PROCESS model {result.attrs['model']}: estimates "
                               "and 95% CIs"))
        if result.attrs.get("w"):
            med.add(Figure(conditional_indirect_figure(result),
                           caption="Conditional indirect effects with bootstrap CIs"))
        med.add(Table(result.reset_index()[["effect", *_SHOW]], caption=f"{name}"))
    for name in sorted(k for k in skipped if k.startswith("mediation")):
        med.add(Text(f"{name} skipped: {skipped[name]}"))
    if med.blocks:
        sections.append(med)

    mod = Section(id="psychosocial-moderation", title="Moderation and Johnson–Neyman", order=61)
    if "moderation" in results:
        result = results["moderation"]
        a = result.attrs
        mod.add(Text(f"Moderation (PROCESS model 1) of {a['x']} → {a['y']} by {a['w']}. "
                     f"{a['note']}."))
        mod.add(Figure(johnson_neyman_figure(result),
                       caption="Conditional effect across the moderator (Johnson–Neyman)"))
        mod.add(Table(result.reset_index(), caption="Coefficients and simple slopes"))
        if "johnson_neyman" in a:
            mod.add(Table(a["johnson_neyman"], caption="Johnson–Neyman regions"))
    elif "moderation" in skipped:
        mod.add(Text(f"Moderation skipped: {skipped['moderation']}"))
    if mod.blocks:
        sections.append(mod)

    if "network" in results:
        from theramark.report.sections.psychosocial_network import network_sections

        sections.extend(network_sections(
            results["network"], results["centrality"],
            stability_summary=results.get("network_stability"),
            title="Psychosocial network", gamma=gamma))
    elif "network" in skipped:
        sections.append(Section(id="psychosocial-network", title="Psychosocial network",
                                order=62, blocks=[Text(f"Network skipped: {skipped['network']}")]))

    bp = Section(id="psychosocial-breakpoint", title="Threshold effect (breakpoint)", order=63)
    if "breakpoint" in results:
        result = results["breakpoint"]
        bp.add(Text("Segmented regression with one breakpoint (global least-squares optimum; "
                    "SE by Muggeo's linearization as in R's segmented; Davies' test for a change "
                    f"in slope). {result.attrs['note']}."))
        bp.add(Figure(breakpoint_figure(results["data"], result), caption="Breakpoint"))
        bp.add(Table(result, caption="Breakpoint estimate, slopes and Davies' test"))
    elif "breakpoint" in skipped:
        bp.add(Text(f"Breakpoint skipped: {skipped['breakpoint']}"))
    if bp.blocks:
        sections.append(bp)

    ema = Section(id="psychosocial-ema", title="Momentary data (EMA)", order=64)
    if "ema" in results:
        table = results["ema"]
        ema.add(Text(f"Multilevel model (REML, random intercept and within-person slope). "
                     f"{table.attrs['note']}."))
        ema.add(Table(table, caption="Fixed effects"))
    if "ema_compliance" in results and "summary" in results["ema_compliance"].attrs:
        s = results["ema_compliance"].attrs["summary"]
        ema.add(Text(f"Compliance: mean {s['mean']:.0%}, median {s['median']:.0%}, range "
                     f"{s['min']:.0%}–{s['max']:.0%} over {s['n_participants']} participants."))
    for key in ("ema", "ema_moderation"):
        if key in skipped:
            ema.add(Text(f"{key} skipped: {skipped[key]}"))
    if ema.blocks:
        sections.append(ema)
    return sections
