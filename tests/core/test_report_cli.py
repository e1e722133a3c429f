from __future__ import annotations

import base64
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from theramark import __version__
from theramark.cli import main
from theramark.report import Figure, Report, Section, Table, Text


def test_report_is_self_contained_and_ordered(tmp_path: Path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    report = Report("Study", "subtitle")
    report.add(Section("b", "Second", [Text("x < y")], order=20))
    report.add(Section("a", "First", [Figure(fig, "a line"), Table(pd.DataFrame({"v": [1.23456]}))],
                       order=10))
    report.add(Section("b", "Second again", [Text("replaced")], order=20))
    html = report.write(tmp_path / "report.html").read_text()
    assert html.index("First") < html.index("Second again")
    assert "x &lt; y" not in html and "replaced" in html  # same id replaces
    png = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html).group(1)
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1.235" in html
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_table_truncates_long_tables():
    html = Table(pd.DataFrame({"v": range(500)}), max_rows=10).to_html()
    assert "Showing 10 of 500 rows" in html
    folded = Table(pd.DataFrame({"v": range(40)}), source="group/x/t.tsv", visible_rows=12).to_html()
    visible, hidden = folded.split("<details>")
    assert visible.count("<td>") == 12 and hidden.count("<td>") == 28
    assert "show 28 more rows" in hidden and "href='group/x/t.tsv'" in visible


def test_version_and_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2


def test_run_on_missing_dataset_is_bad_input(tmp_path: Path, capsys):
    code = main(["run", str(tmp_path / "none"), str(tmp_path / "out"), "group"])
    assert code == 2
    err = capsys.readouterr().err
    # checked before any work (theramark.paths): the folder itself is named
    assert f"{tmp_path / 'none'}: BIDS folder not found" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_group_level_before_participant_level_is_bad_input(tmp_path: Path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    pd.DataFrame({"participant_id": ["sub-01"], "group": ["CBT"]}).to_csv(
        bids / "participants.tsv", sep="\t", index=False)
    # a study without BOLD data has no participant level: the group level runs what it can
    assert main(["run", str(bids), str(tmp_path / "out"), "group"]) == 0
    skipped = pd.read_csv(tmp_path / "out" / "group" / "skipped.tsv", sep="\t")
    assert "no participant-level outputs" in " ".join(skipped["reason"])
    # with BOLD data, running the group level first is an error that says what to run
    func = bids / "sub-01" / "func"
    func.mkdir(parents=True)
    (func / "sub-01_task-rest_bold.nii.gz").write_bytes(b"")
    capsys.readouterr()
    assert main(["run", str(bids), str(tmp_path / "out2"), "group"]) == 2
    err = capsys.readouterr().err
    assert "no participant-level outputs (participant_runs.tsv is missing)" in err
    assert "participant' first" in err
