"""``theramark demo`` from nothing to a report, on a small study (the full demo is what make demo runs)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from theramark.cli import main


@pytest.mark.slow
def test_demo_writes_every_section_and_resumes(tmp_path: Path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(out), "--n-per-group", "4", "--n-jobs", "2"]) == 0
    printed = capsys.readouterr().out
    report = out / "derivatives" / "report.html"
    assert f"Report: {report.resolve()}" in printed
    html = report.read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", html)
    for expected in ("Summary of findings", "Study", "Imaging quality control",
                     "Questionnaires and clinical outcomes", "Symptoms: therapy × time",
                     "Functional connectivity", "Task activation", "Imaging: therapy × time",
                     "Brain dynamics: dynamic-FC states",
                     "Psychosocial pathways: mediation", "Psychosocial network",
                     "Methods and software"):
        assert expected in titles, titles
    assert titles.index("Summary of findings") == 0
    # the report is rebuilt from the derivatives alone, identical to the run's
    assert main(["report", str(out / "derivatives")]) == 0
    assert report.read_text() == html
    assert (out / "study.toml").is_file()
    runs = pd.read_csv(out / "derivatives" / "participant_runs.tsv", sep="\t")
    assert len(runs) == 4 * (3 * 3 + 2) * 2 and set(runs["status"]) <= {"ok", "excluded"}
    hypotheses = pd.read_csv(out / "derivatives" / "group" / "longitudinal" / "hypotheses.tsv",
                             sep="\t")
    assert hypotheses["feature"].nunique() == 5
    # a rerun reuses the simulated study and every finished run, keeping each run's status
    assert main(["demo", str(out), "--n-jobs", "2"]) == 0
    assert "reusing the simulated study" in capsys.readouterr().out
    rerun = pd.read_csv(out / "derivatives" / "participant_runs.tsv", sep="\t")
    assert rerun["reused"].all() and (rerun["status"] == runs["status"]).all()
    # config init on the demo study writes a config that runs (nothing of the demo is built in)
    config = tmp_path / "inferred.toml"
    assert main(["config", "init", str(out / "bids"), "-o", str(config)]) == 0
    text = config.read_text()
    assert 'reference_group = "waitlist"' in text and 'control_group = "HC"' in text
    assert main(["run", str(out / "bids"), str(out / "derivatives"), "group",
                 "--config", str(config)]) == 0
