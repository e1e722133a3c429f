"""Studies theramark did not make, run the way a researcher would: ``config init``, then ``run``.

(a) OpenNeuro ds003007's clinical data (no imaging; totals as wide ``BDI_ses-pre`` columns of
participants.tsv) must give the BDI therapy × time estimates of docs/examples/ds003007.md.
(b) A simulated study relabelled as a real one would be (sessions 1/2/3, arms cbt/mbct/tau/hc, a
subset of the questionnaires, no financial-strain file) must run both levels from ``config
init``'s output alone and report the arm × time results under its own labels.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from tests.acceptance.setup_studies import ds003007_with_config
from theramark.cli import main


def _html(out: Path) -> str:
    return (out / "report.html").read_text(encoding="utf-8")


def test_ds003007_clinical_data_from_config_init_to_report(tmp_path, capsys):
    bids, config = ds003007_with_config(tmp_path)
    text = config.read_text()
    assert 'reference_group = "depr_no_treatment"' in text and 'bdi2 = "BDI"' in text
    out = tmp_path / "out"
    assert main(["run", str(bids), str(out), "group", "--config", str(config)]) == 0
    table = pd.read_csv(out / "group" / "clinical" / "therapy_time.tsv", sep="\t")
    bdi = table[table["instrument"] == "bdi2"].set_index("arm")
    # docs/examples/ds003007.md (equal to lme4's lmer to 1e-8)
    assert bdi.loc["depr_cbt", "estimate"] == pytest.approx(-6.219, abs=5e-4)
    assert bdi.loc["depr_nfb", "estimate"] == pytest.approx(-5.862, abs=5e-4)
    assert bdi.loc["depr_cbt", "se"] == pytest.approx(5.263, abs=5e-4)
    html = _html(out)
    assert "Symptoms (bdi2, primary outcome)" in html  # the most-followed depression scale
    # MADRS has no untreated participant: the reason is stated, not a silent gap
    skipped = pd.read_csv(out / "group" / "skipped.tsv", sep="\t")
    madrs = skipped[skipped["step"] == "therapy × time of madrs"]
    assert "depr_no_treatment" in madrs["reason"].iloc[0]
    assert "Steps not run" in html
    # the report comes from the derivatives alone
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert _html(out) == html


_SESSIONS = {"pre": "1", "mid": "2", "post": "3"}
_GROUPS = {"CBT": "cbt", "MBCT": "mbct", "waitlist": "tau", "HC": "hc"}


def relabel_study(root: Path, keep_instruments: set[str]) -> None:
    """Rename a simulated study's sessions and arms in every path and table, as a lab would."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        name = path.name
        for old, new in _SESSIONS.items():
            name = name.replace(f"ses-{old}", f"ses-{new}")
        if name != path.name:
            path.rename(path.with_name(name))
    participants = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    participants["group"] = participants["group"].map(_GROUPS)
    participants.to_csv(root / "participants.tsv", sep="\t", index=False)
    for path in (root / "phenotype").glob("*.tsv"):
        if path.stem == "financial_strain" or (path.stem not in keep_instruments
                                               and path.stem != "ema"):
            path.unlink()
            continue
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        if "session" in table.columns:
            table["session"] = table["session"].map(
                lambda s: re.sub(r"(ses-)?(pre|mid|post)",
                                 lambda m: (m.group(1) or "") + _SESSIONS[m.group(2)], s))
        table.to_csv(path, sep="\t", index=False)
    for path in root.rglob("*_scans.tsv"):
        path.unlink()


@pytest.mark.slow
def test_relabelled_simulated_study_runs_from_config_init_alone(tmp_path):
    bids = tmp_path / "bids"
    assert main(["simulate", str(bids), "--n-per-group", "3", "--n-jobs", "2"]) == 0
    relabel_study(bids, keep_instruments={"hamd17", "bdi2", "shaps"})
    assert not list(bids.rglob("*ses-pre*")) and not (bids / "phenotype" / "pss10.tsv").exists()
    config = tmp_path / "study.toml"
    assert main(["config", "init", str(bids), "-o", str(config)]) == 0
    text = config.read_text()
    assert 'reference_group = "tau"' in text and 'control_group = "hc"' in text
    assert 'sessions = ["1", "2", "3"]' in text
    # a short permutation count keeps the test quick; every other value is config init's
    config.write_text(text.replace("n_permutations = 5000", "n_permutations = 200"))
    out = tmp_path / "out"
    assert main(["run", str(bids), str(out), "participant", "--config", str(config),
                 "--n-jobs", "2"]) == 0
    assert main(["run", str(bids), str(out), "group", "--config", str(config)]) == 0
    group_time = pd.read_csv(out / "group" / "longitudinal" / "group_time.tsv", sep="\t",
                             dtype={"session": str})
    assert set(group_time["arm"]) == {"cbt", "mbct"} and set(group_time["session"]) == {"2", "3"}
    assert group_time["contrast"].str.contains("tau").all()
    clinical = pd.read_csv(out / "group" / "clinical" / "therapy_time.tsv", sep="\t")
    assert {"hamd17", "bdi2", "shaps"} <= set(clinical["instrument"])
    html = _html(out)
    assert "arm contrast(s) against tau" in html
    assert "1 to 3: mean change in cbt minus mean change in tau" in html
    assert "sessions 1 → 2 → 3" in html
    skipped = pd.read_csv(out / "group" / "skipped.tsv", sep="\t")
    assert "psychosocial analyses" in set(skipped["step"])  # nothing declared, nothing assumed
