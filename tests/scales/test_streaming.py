"""``theramark scales score`` reads, scores and writes a table in blocks of rows (issue 11, item 9).

The blocks are made tiny here so that every check that spans rows (repeated participants, rows
without an id, the list of disallowed answers) has to see across blocks; the result must be the
same, byte for byte or message for message, as scoring the whole table at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from theramark._io import read_tsv, write_tsv
from theramark.cli import main
from theramark.errors import BadInputError
from theramark.scales import commands
from theramark.scales.engine import score, score_blocks

ITEMS = [f"phq9_{i}" for i in range(1, 10)]
BLOCK = 7


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(commands, "_BLOCK_ROWS", BLOCK)


def generated(n_participants: int = 60, seed: int = 3, invalid: bool = True) -> list[list[str]]:
    """Rows (as text) of a wide PHQ-9 table, sessions pre and post, with missing and bad answers."""
    rng = np.random.default_rng(seed)
    answers = rng.integers(0, 4, size=(2 * n_participants, 9)).astype(str).astype(object)
    answers[rng.random(answers.shape) < 0.08] = "n/a"
    answers[rng.random(answers.shape) < 0.03] = ""
    if invalid:
        for value in ("7", "x", "2.5", " 3 ", "True", "-1", "3.0"):
            answers[rng.integers(len(answers)), rng.integers(9)] = value
    return [[f"sub-{p:03d}", session, *answers[2 * p + s]]
            for p in range(n_participants) for s, session in enumerate(("pre", "ses-post"))]


def write_table(path, rows, columns=("participant_id", "session", *ITEMS)):
    text = "\t".join(columns) + "\n" + "".join("\t".join(row) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")
    return path


def whole(path, errors="flag", **kwargs):
    return score("phq9", read_tsv(path, dtype={"participant_id": str, "session": str}),
                 errors=errors, source=str(path), **kwargs)


def test_blocks_give_the_same_file_as_the_whole_table(tmp_path, capsys):
    items = write_table(tmp_path / "items.tsv", [*generated(), ["sub-900", "pre", *["n/a"] * 9]])
    assert main(["scales", "score", "phq9", str(items), "-o", str(tmp_path / "s.tsv"),
                 "--errors", "flag"]) == 0
    printed = capsys.readouterr().out
    expected = whole(items)
    assert len(expected) > 10 * BLOCK
    assert (tmp_path / "s.tsv").read_bytes() == write_tsv(tmp_path / "w.tsv", expected).read_bytes()
    flagged = expected[expected["flags"] != ""]
    assert 0 < len(flagged) < len(expected)
    assert f"scored {int(expected['scored'].sum())} of {len(expected)} rows" in printed
    assert f"{len(flagged)} row(s) with problems:" in printed
    listed = [line for line in printed.splitlines() if line.startswith("  ")]
    assert listed == [f"  {p}, {s}: {f}" for p, s, f in
                      flagged[["participant_id", "session", "flags"]].itertuples(index=False)]
    shown = " ".join(expected["invalid_items"])
    for value in ("=7", "=x", "=2.5", "=True", "=-1"):
        assert value in shown


def test_score_blocks_concatenated_equal_score(tmp_path):
    items = write_table(tmp_path / "items.tsv", generated(seed=5))
    table = pd.read_csv(items, sep="\t", dtype=str, na_values=["n/a", ""], keep_default_na=False)
    blocks = [table.iloc[i:i + 11] for i in range(0, len(table), 11)]
    parts = list(score_blocks("phq9", blocks, errors="flag"))
    assert len(parts) == len(blocks)
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), score("phq9", table, errors="flag"))


def error_of(call) -> str:
    with pytest.raises(BadInputError) as caught:
        call()
    return str(caught.value)


def test_raise_reports_every_disallowed_answer_of_every_block(tmp_path, capsys):
    rows = generated(invalid=False)
    rows[1][3] = "9"       # block 1
    rows[30][5] = "x"      # block 5
    rows[-1][10] = "-2"    # the last block
    items = write_table(tmp_path / "items.tsv", rows)
    out = tmp_path / "s.tsv"
    assert main(["scales", "score", "phq9", str(items), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    expected = error_of(lambda: whole(items, errors="raise"))
    assert "3 answer(s) not allowed for phq9" in expected
    for value in ("'9'", "'x'", "'-2'"):
        assert value in err
    assert expected in err
    assert not out.exists() and not list(tmp_path.glob(".s.tsv*"))


def test_raise_lists_the_first_thousand_answers_over_all_blocks():
    table = pd.DataFrame({"participant_id": [f"sub-{i:04d}" for i in range(1200)],
                          **{item: ["5"] * 1200 for item in ITEMS}})
    blocks = [table.iloc[i:i + 100] for i in range(0, 1200, 100)]
    expected = error_of(lambda: score("phq9", table))
    assert "10800 answer(s) not allowed" in expected and "... and 9800 more" in expected
    assert error_of(lambda: list(score_blocks("phq9", blocks))) == expected


def test_a_participant_repeated_in_another_block_is_refused(tmp_path, capsys):
    rows = generated(invalid=False)
    rows[40] = ["sub-002", "ses-pre", *rows[40][2:]]   # sub-002 pre is row 4: another block
    rows[41] = ["sub-002", "pre", *rows[41][2:]]       # ... and a third time
    rows[50] = ["sub-007", "ses-post", *rows[50][2:]]  # twice: rows 15 and 50
    items = write_table(tmp_path / "items.tsv", rows)
    out = tmp_path / "s.tsv"
    assert main(["scales", "score", "phq9", str(items), "-o", str(out), "--errors", "flag"]) == 2
    err = capsys.readouterr().err
    expected = error_of(lambda: whole(items))
    assert "the same participant and session appears more than once" in expected
    assert "sub-002, pre: 3 rows" in expected and "sub-007, post: 2 rows" in expected
    assert expected in err
    assert not out.exists()


def test_repeats_without_sessions_and_within_one_block():
    table = pd.DataFrame({"participant_id": ["a", "b", "a", "c", "c", "d"],
                          **{item: ["1"] * 6 for item in ITEMS}})
    expected = error_of(lambda: score("phq9", table))
    assert expected.startswith("input table: the same participant appears more than once")
    assert "a: 2 rows" in expected and "c: 2 rows" in expected
    assert error_of(lambda: list(score_blocks("phq9", [table.iloc[:2], table.iloc[2:]]))) == expected
    assert error_of(lambda: list(score_blocks("phq9", [table]))) == expected


def test_rows_without_an_id_are_reported_by_their_line_in_the_file(tmp_path, capsys):
    rows = generated(invalid=False)
    rows[3][0] = "n/a"
    rows[33][1] = " "
    items = write_table(tmp_path / "items.tsv", rows)
    assert main(["scales", "score", "phq9", str(items), "-o", str(tmp_path / "s.tsv")]) == 2
    err = capsys.readouterr().err
    expected = error_of(lambda: whole(items))
    assert "data row at line 5" in expected and "data row at line 35" in expected
    assert expected in err


def test_long_input_header_only_and_other_columns(tmp_path):
    # long input cannot be split by rows: it is scored whole, as before
    long = tmp_path / "long.tsv"
    long.write_text("participant_id\tsession\titem\tvalue\n" + "".join(
        f"sub-{p}\tpre\t{i}\t{(p + i) % 4}\n" for p in range(5) for i in range(1, 10)), encoding="utf-8")
    assert main(["scales", "score", "phq9", str(long), "-o", str(tmp_path / "l.tsv")]) == 0
    assert (tmp_path / "l.tsv").read_bytes() == write_tsv(tmp_path / "lw.tsv", whole(long)).read_bytes()
    empty = write_table(tmp_path / "empty.tsv", [])
    assert main(["scales", "score", "phq9", str(empty), "-o", str(tmp_path / "e.tsv")]) == 0
    assert (tmp_path / "e.tsv").read_bytes() == write_tsv(tmp_path / "ew.tsv", whole(empty)).read_bytes()
    # columns that are not ids or items are not read; an item map still applies to every block
    rows = [[*row[:2], "note", *row[2:]] for row in generated(n_participants=10, invalid=False)]
    mapped = write_table(tmp_path / "mapped.tsv", rows,
                         ("participant_id", "session", "comment", *[f"q{i}" for i in range(1, 10)]))
    item_map = tmp_path / "map.json"
    item_map.write_text("{" + ", ".join(f'"q{i}": "phq9_{i}"' for i in range(1, 10)) + "}", encoding="utf-8")
    assert main(["scales", "score", "phq9", str(mapped), "-o", str(tmp_path / "m.tsv"),
                 "--items", str(item_map), "--errors", "flag"]) == 0
    expected = whole(mapped, items={f"q{i}": f"phq9_{i}" for i in range(1, 10)})
    assert (tmp_path / "m.tsv").read_bytes() == write_tsv(tmp_path / "mw.tsv", expected).read_bytes()


def test_the_command_reads_the_table_in_blocks(tmp_path, monkeypatch):
    items = write_table(tmp_path / "items.tsv", generated(n_participants=20, invalid=False))
    sizes = []
    original = commands.pd.read_csv

    def spying(*args, **kwargs):
        reader = original(*args, **kwargs)
        if kwargs.get("chunksize") is None:
            return reader
        return (sizes.append(len(block)) or block for block in reader)

    class Reader:  # read_csv's chunk iterator is a context manager
        def __init__(self, blocks):
            self.blocks = blocks

        def __enter__(self):
            return self

        def __iter__(self):
            return iter(self.blocks)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(commands.pd, "read_csv",
                        lambda *a, **k: Reader(spying(*a, **k)) if k.get("chunksize") else original(*a, **k))
    assert main(["scales", "score", "phq9", str(items), "-o", str(tmp_path / "s.tsv")]) == 0
    assert sizes == [BLOCK] * 5 + [40 - 5 * BLOCK]


@pytest.mark.parametrize("seed", range(5))
def test_repeats_counted_over_any_split_as_in_the_whole_table(seed):
    rng = np.random.default_rng(seed)
    n = 200
    table = pd.DataFrame({"participant_id": [f"sub-{i}" for i in rng.integers(0, 150, n)],
                          "session": rng.choice(["pre", "ses-pre", "post"], n),
                          **{item: rng.integers(0, 4, n).astype(str) for item in ITEMS}})
    cuts = np.sort(rng.choice(np.arange(1, n), size=6, replace=False))
    bounds = list(zip([0, *cuts], [*cuts, n], strict=True))
    blocks = [table.iloc[a:b] for a, b in bounds]
    expected = error_of(lambda: score("phq9", table, errors="flag"))
    assert "appears more than once" in expected
    assert error_of(lambda: list(score_blocks("phq9", blocks, errors="flag"))) == expected
    unique = table.assign(participant_id=[f"sub-{i}" for i in range(n)])
    parts = list(score_blocks("phq9", [unique.iloc[a:b] for a, b in bounds]))
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), score("phq9", unique))


def test_an_unreadable_row_in_a_later_block_leaves_no_output(tmp_path, capsys):
    items = write_table(tmp_path / "items.tsv", generated(invalid=False))
    items.write_bytes(items.read_bytes().replace(b"sub-030\tpre\t", b"sub-030\tpre\t\xff"))
    out = tmp_path / "s.tsv"
    assert main(["scales", "score", "phq9", str(items), "-o", str(out), "--errors", "flag"]) == 2
    err = capsys.readouterr().err
    assert f"{items}: not a readable tab-separated table" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".s.tsv*"))
