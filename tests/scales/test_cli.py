"""``theramark scales ...`` through theramark.cli.main: exit codes, messages, files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from theramark.cli import main
from theramark.scales import available_instruments, load_instrument
from theramark.scales.describe import describe


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def phq_file(tmp_path):
    header = "participant_id\tsession\t" + "\t".join(f"phq9_{i}" for i in range(1, 10))
    lines = [header,
             "sub-01\tses-pre\t" + "\t".join(["2"] * 9),
             "sub-01\tses-post\t" + "\t".join(["0"] * 9),
             "sub-02\tses-pre\tn/a\t" + "\t".join(["3"] * 8),
             "sub-02\tses-post\t" + "\t".join(["1"] * 9)]
    return write(tmp_path / "phq9.tsv", "\n".join(lines) + "\n")


def test_list_and_show_document_every_instrument(capsys):
    assert main(["scales", "list"]) == 0
    listing = capsys.readouterr().out
    for ident in available_instruments():
        assert ident in listing
        text = describe(load_instrument(ident))  # what `scales show` prints
        for word in ("Source:", "Items:", "Reverse-keyed items:", "Missing items:", "Remission:"):
            assert word in text, (ident, word)
    assert main(["scales", "show", "ctq_sf"]) == 0
    assert "minimization_denial" in capsys.readouterr().out
    assert main(["scales", "show", "shaps", "--scoring", "continuous"]) == 0
    assert "14-56" in capsys.readouterr().out


def test_score_writes_scores_and_sidecar(phq_file, tmp_path, capsys):
    out = tmp_path / "scores.tsv"
    assert main(["scales", "score", "phq9", str(phq_file), "-o", str(out)]) == 0
    scores = pd.read_csv(out, sep="\t", na_values="n/a")
    assert list(scores["session"]) == ["pre", "post", "pre", "post"]
    assert list(scores["total"]) == [18, 0, 27, 9]  # sub-02 pre: 24 over 8 items, prorated
    assert json.loads(out.with_suffix(".json").read_text())["Parameters"]["instrument"] == "phq9"
    assert "1 missing (phq9_1); prorated" in capsys.readouterr().out


def test_bad_answer_exits_2_with_a_precise_message(phq_file, tmp_path, capsys):
    text = phq_file.read_text().replace("sub-01\tses-post\t0", "sub-01\tses-post\t5")
    bad = write(tmp_path / "bad.tsv", text)
    out = tmp_path / "scores.tsv"
    assert main(["scales", "score", "phq9", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert ("participant sub-01, session post, item phq9_1: value '5' not allowed "
            "(allowed: integers 0-3)") in err
    assert "Traceback" not in err and not out.exists()
    assert main(["scales", "score", "phq9", str(bad), "-o", str(out), "--errors", "flag"]) == 0
    assert "phq9_1=5" in capsys.readouterr().out


def test_item_map_and_unknown_instrument(phq_file, tmp_path, capsys):
    text = phq_file.read_text().replace("phq9_", "Q")
    renamed = write(tmp_path / "renamed.tsv", text)
    mapping = write(tmp_path / "map.json", json.dumps({f"Q{i}": f"phq9_{i}" for i in range(1, 10)}))
    out = tmp_path / "scores.tsv"
    assert main(["scales", "score", "phq9", str(renamed), "-o", str(out), "--items", str(mapping)]) == 0
    assert list(pd.read_csv(out, sep="\t")["total"]) == [18, 0, 27, 9]
    tsv_map = write(tmp_path / "map.tsv", "source\titem\n" + "".join(
        f"Q{i}\tphq9_{i}\n" for i in range(1, 10)))
    assert main(["scales", "score", "phq9", str(renamed), "-o", str(out), "--items", str(tsv_map)]) == 0
    assert main(["scales", "score", "phq99", str(renamed), "-o", str(out)]) == 2
    assert "unknown instrument 'phq99'" in capsys.readouterr().err


def test_outcomes_command(phq_file, tmp_path, capsys):
    scores = tmp_path / "scores.tsv"
    assert main(["scales", "score", "phq9", str(phq_file), "-o", str(scores)]) == 0
    participants = write(tmp_path / "participants.tsv", "participant_id\tgroup\nsub-01\tCBT\nsub-02\tCBT\n")
    out = tmp_path / "outcomes.tsv"
    assert main(["scales", "outcomes", str(scores), "--instrument", "phq9", "--participants",
                 str(participants), "-o", str(out)]) == 0
    table = pd.read_csv(out, sep="\t")
    assert list(table["change"]) == [-18, -18] and list(table["group"]) == ["CBT", "CBT"]
    assert list(table["remission"]) == [True, False]
    capsys.readouterr()
    assert main(["scales", "outcomes", str(scores), "--endpoint", "week8"]) == 2  # instrument from sidecar
    assert "no rows for session 'week8'" in capsys.readouterr().err
    scores.with_suffix(".json").unlink()
    assert main(["scales", "outcomes", str(scores)]) == 2
    assert "--instrument" in capsys.readouterr().err


def test_cross_sectional_long_file(tmp_path):
    lines = ["participant_id\titem\tvalue"] + [f"sub-0{p}\tucla3_{i}\t{v}" for p, v in ((1, 3), (2, 1))
                                                for i in (1, 2, 3)]
    source = write(tmp_path / "long.tsv", "\n".join(lines) + "\n")
    out = tmp_path / "scores.tsv"
    assert main(["scales", "score", "ucla3", str(source), "-o", str(out)]) == 0
    table = pd.read_csv(out, sep="\t")
    assert list(table["total"]) == [9, 3] and list(table["severity"]) == ["lonely", "not lonely"]
