"""The session log: ``LOG_DIR/feedback.tsv``, one row per volume, durable as it is written.

Each row is appended, flushed and ``os.fsync``'ed before the next volume is processed, so that a
crash or a kill loses at most the row being written (a partial last line is dropped when the log
is reopened). Numbers are written with Python's ``repr`` (the shortest text that reads back to the
same float), missing values as ``n/a`` (BIDS). ``feedback.json`` beside it records the settings;
reopening a log written with other settings is an error, so that a resumed run cannot mix two
analyses.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from theramark.errors import BadInputError

__all__ = ["LOG_NAME", "SIDECAR_NAME", "FeedbackLog", "read_log"]

LOG_NAME = "feedback.tsv"
SIDECAR_NAME = "feedback.json"
#: Settings that may change between a run and its resumption (they do not change any value).
VOLATILE = ("display", "port", "udp_out", "tcp_out", "missing_after_s", "source")


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) or hasattr(value, "dtype"):
        value = float(value)
        return "n/a" if math.isnan(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    return " ".join(str(value).split()) or "n/a"


def read_log(path: str | os.PathLike) -> pd.DataFrame:
    """A feedback log as a table (``n/a`` → NaN); ``path`` is the TSV or its folder."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.is_file():
        raise BadInputError(f"{path}: no feedback log here")
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                       dtype={"status": str, "block": str, "message": str}).fillna(
        {"message": "", "block": ""})


class FeedbackLog:
    """Append-only, fsync'ed TSV of per-volume records with a JSON sidecar of the settings.

    Parameters
    ----------
    out_dir : path
        ``LOG_DIR``; created if needed.
    columns : sequence of str
        Columns of every row, in order.
    settings : mapping
        What produced the values (written to ``feedback.json``; compared on resumption).
    """

    def __init__(self, out_dir: str | os.PathLike, columns: Sequence[str], settings: Mapping[str, Any]):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOG_NAME
        self.sidecar = self.out_dir / SIDECAR_NAME
        self.columns = list(columns)
        self.settings = json.loads(json.dumps(dict(settings), default=str))
        self._handle = None

    def open(self) -> pd.DataFrame:
        """Open for appending; returns the rows already logged (empty for a new log).

        Raises
        ------
        BadInputError
            If the folder holds a log of other columns or other settings.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._check_sidecar()
            with self.path.open("rb+") as handle:
                data = handle.read()
                if not data.endswith(b"\n"):  # killed while writing a row: drop the partial row
                    handle.truncate(data.rfind(b"\n") + 1)
            header = self.path.read_text(encoding="utf-8").split("\n", 1)[0].split("\t")
            if header != self.columns:
                raise BadInputError(f"{self.path}: a log of other columns ({', '.join(header)}); "
                                    "resume with the same ROIs, or write to another folder")
            existing = read_log(self.path)
            self._handle = self.path.open("a", encoding="utf-8")
            return existing
        self.sidecar.write_text(json.dumps(self.settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        self._handle = self.path.open("w", encoding="utf-8")
        self._write("\t".join(self.columns))
        return pd.DataFrame(columns=self.columns)

    def _check_sidecar(self) -> None:
        if not self.sidecar.is_file():
            raise BadInputError(f"{self.out_dir}: {LOG_NAME} without its {SIDECAR_NAME}; cannot check that "
                                "resuming it keeps the same settings")
        before = json.loads(self.sidecar.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(before) | set(self.settings)
                         if k not in VOLATILE and before.get(k) != self.settings.get(k))
        if changed:
            shown = "; ".join(f"{k}: {before.get(k)!r} then {self.settings.get(k)!r}" for k in changed)
            raise BadInputError(f"{self.out_dir}: holds a run with other settings ({shown}); resume with "
                                "the same settings, or write to another folder")

    def _write(self, line: str) -> None:
        self._handle.write(line + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one volume's row (flushed and fsync'ed before returning)."""
        self._write("\t".join(_cell(record.get(c)) for c in self.columns))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> FeedbackLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
