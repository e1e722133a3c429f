"""theramark._io.read_tsv: every data row as long as the header, or one clear line naming the row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from theramark._io import check_row_lengths, read_tsv
from theramark.errors import BadInputError


def _write(tmp_path: Path, text: str, name: str = "t.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_trailing_tab_on_every_row_is_named_not_shifted(tmp_path: Path):
    path = _write(tmp_path, "participant_id\tgroup\n" + "".join(f"sub-{i}\tCBT\t\n" for i in range(44)))
    with pytest.raises(BadInputError) as info:
        read_tsv(path)
    message = str(info.value)
    assert message == (f"{path}: line 2 has 3 fields, the header has 2 (a trailing tab?); 43 other "
                       "line(s) differ from the header too: 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ...")
    assert "\n" not in message


def test_short_and_long_rows(tmp_path: Path):
    short = _write(tmp_path, "a\tb\tc\n1\t2\t3\n4\t5\n")
    with pytest.raises(BadInputError, match=r"t.tsv: line 3 has 2 fields, the header has 3$"):
        read_tsv(short)
    long = _write(tmp_path, "a\tb\n1\t2\n1\t2\t3\t4\n", "long.tsv")
    with pytest.raises(BadInputError, match=r"long.tsv: line 3 has 4 fields, the header has 2$"):
        read_tsv(long)


def test_what_pandas_accepts_still_reads(tmp_path: Path):
    # blank and whitespace-only lines are skipped; CR and CRLF line ends; a quoted field with a tab;
    # a quote inside a field
    cases = {
        "a\tb\n1\t2\n\n \n3\t4\n\n": [[1, 2], [3, 4]],
        "a\tb\r\n1\t2\r\n3\t4\r\n": [[1, 2], [3, 4]],
        "a\tb\r1\t2\r3\t4\r": [[1, 2], [3, 4]],
        'a\tb\n"x\ty"\t2\n': [["x\ty", 2]],
        'a\tb\n5" tall\tn/a\n': [['5" tall', None]],
        "a\tb\n\tn/a\n": [[None, None]],
    }
    for i, (text, rows) in enumerate(cases.items()):
        table = read_tsv(_write(tmp_path, text, f"{i}.tsv"))
        assert table.astype(object).where(table.notna(), None).to_numpy().tolist() == rows, text


def test_quoted_field_that_hides_an_extra_field(tmp_path: Path):
    path = _write(tmp_path, 'a\tb\n"x\ty"\t2\t3\n')
    with pytest.raises(BadInputError, match="line 2 has 3 fields, the header has 2"):
        read_tsv(path)


def test_mismatch_far_into_a_large_file(tmp_path: Path):
    """The file is read in blocks of 1 MiB: a row beyond the first block is still found."""
    rows = [f"sub-{i:06d}\t{i % 4}\t{i % 3}\n" for i in range(120_000)]
    rows[100_000] = "sub-x\t1\n"
    path = _write(tmp_path, "participant_id\tq1\tq2\n" + "".join(rows))
    assert len("".join(rows[:100_000])) > 1 << 20  # beyond the first block
    with pytest.raises(BadInputError, match=r"line 100002 has 2 fields, the header has 3$"):
        check_row_lengths(path)


def test_undecodable_and_empty_files(tmp_path: Path):
    binary = tmp_path / "b.tsv"
    binary.write_bytes(b"a\tb\n\xff\xfe\t1\n")
    with pytest.raises(BadInputError, match="b.tsv: not a readable tab-separated table"):
        read_tsv(binary)
    empty = _write(tmp_path, "", "e.tsv")
    with pytest.raises(BadInputError, match="e.tsv: not a readable tab-separated table"):
        read_tsv(empty)
    header_only = read_tsv(_write(tmp_path, "a\tb\n", "h.tsv"))
    assert list(header_only.columns) == ["a", "b"] and header_only.empty


def test_index_column_written_by_write_tsv_reads_back(tmp_path: Path):
    from theramark._io import write_tsv

    table = pd.DataFrame({"x": [1.0, 2.0]}, index=pd.Index(["r1", "r2"]))
    path = write_tsv(tmp_path / "m.tsv", table, index=True)
    back = read_tsv(path, index_col=0)
    assert back.index.tolist() == ["r1", "r2"] and back["x"].tolist() == [1.0, 2.0]
