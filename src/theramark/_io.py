"""Atomic file writing, sidecars with provenance, and content hashes.

Every output goes through these helpers so that an interrupted run never leaves a half-written file:
data is written to a temporary file in the destination folder and renamed over the target.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from theramark import __version__

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    Parameters
    ----------
    path : path-like
        Final destination. Parent folders are created.
    suffix : str, optional
        Suffix of the temporary file (some writers pick the format from it, e.g. ``.nii.gz``).
        Defaults to the destination's full suffix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    # mkstemp creates files readable by the owner only; outputs get the usual umask permissions.
    os.chmod(tmp, 0o666 & ~_UMASK)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_nifti(path: str | os.PathLike, img: Any) -> Path:
    """Write a nibabel image to ``path`` (``.nii`` or ``.nii.gz``) atomically."""
    suffix = ".nii.gz" if str(path).endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        img.to_filename(tmp)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _finite_or_none(obj: Any) -> Any:
    """Replace non-finite floats by None (JSON has no NaN) in nested containers."""
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {key: _finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_none(value) for value in obj]
    if isinstance(obj, np.ndarray):
        return _finite_or_none(obj.tolist())
    return obj


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write a mapping as indented JSON, atomically.

    NumPy scalars and arrays are converted; NaN and infinities become ``null``.
    """
    text = json.dumps(_finite_or_none(data), indent=2, default=_json_default, allow_nan=False)
    return write_text(path, text + "\n")


def write_tsv(path: str | os.PathLike, table: pd.DataFrame, index: bool = False) -> Path:
    """Write a DataFrame as a BIDS-style TSV (tab separated, missing values as ``n/a``), atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=index, na_rep="n/a", lineterminator="\n")
    return Path(path)


def read_tsv(path: str | os.PathLike, **kwargs: Any) -> pd.DataFrame:
    """Read a BIDS TSV (``n/a`` means missing).

    Every data row must have as many fields as the header (:func:`check_row_lengths`): pandas
    would pad a short row with missing values, and shift every column when each row ends with a
    tab.

    Raises
    ------
    BadInputError
        If the file is missing, empty, has a row of another length than the header, or is not a
        well-formed table; the message (one line) names the file.
    """
    from theramark.errors import BadInputError

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: file not found")
    check_row_lengths(path, encoding=kwargs.get("encoding") or "utf-8")
    try:
        return pd.read_csv(
            path, sep="\t", na_values=["n/a", "N/A", "NaN", "nan", ""], keep_default_na=False,
            **kwargs,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise BadInputError(f"{path}: not a readable tab-separated table ({reason})") from None


class _QuotedFields(Exception):
    """A line holds a quote: fields must be counted the way a CSV reader reads them."""


def _plain_rows(handle: Any, block: int = 1 << 20) -> Iterator[tuple[int, int, bool]]:
    """``(line number, number of fields, last field empty)`` of the first non-blank line and of
    each non-blank line with another number of fields (the file is read in blocks: the common
    case costs one ``str.count`` per line)."""
    header: int | None = None
    number = 0
    while text := handle.read(block):
        text += handle.readline()
        if '"' in text:
            raise _QuotedFields
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        tabs = [line.count("\t") for line in lines]
        for index, count in enumerate(tabs):
            if count == header or (count == 0 and not lines[index].strip()):
                continue  # pandas skips blank lines
            if header is None:
                header = count
            yield number + index + 1, count + 1, lines[index].endswith("\t")
        number += len(lines)


def _quoted_rows(handle: Any) -> Iterator[tuple[int, int, bool]]:
    """As :func:`_plain_rows` for every non-blank row, with quoted fields (which may hold tabs and
    newlines) read as pandas reads them."""
    reader = csv.reader(handle, delimiter="\t")
    for row in reader:
        if len(row) <= 1 and not "".join(row).strip():
            continue
        yield reader.line_num, len(row), row[-1] == ""


def _mismatches(rows: Iterable[tuple[int, int, bool]], keep: int = 11):
    """Fields of the header, the first ``keep`` rows of another length, and how many there are."""
    header: int | None = None
    first: list[tuple[int, int, bool]] = []
    count = 0
    for number, fields, trailing in rows:
        if header is None:
            header = fields
        elif fields != header:
            count += 1
            if len(first) < keep:
                first.append((number, fields, trailing))
    return header, first, count


def check_row_lengths(path: str | os.PathLike, encoding: str = "utf-8") -> None:
    """Check that every data row of a TSV has as many fields as its header.

    Blank lines are skipped and quoted fields are understood, as pandas reads them; lines end with
    ``\\n``, ``\\r\\n`` or ``\\r``. The file is streamed (memory does not grow with its size).

    Parameters
    ----------
    path : path-like
        A tab-separated file whose first line is the header.
    encoding : str
        Its text encoding.

    Raises
    ------
    BadInputError
        ``"<path>: line N has K fields, the header has M"``, one line, with a hint when the row
        ends with a tab and the count of the other rows of another length; or the file cannot be
        decoded.
    """
    from theramark.errors import BadInputError

    path = Path(path)
    try:
        try:
            with open(path, encoding=encoding) as handle:
                header, first, count = _mismatches(_plain_rows(handle))
        except _QuotedFields:
            with open(path, encoding=encoding, newline="") as handle:
                header, first, count = _mismatches(_quoted_rows(handle))
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not a readable tab-separated table ({exc})") from None
    if not count:
        return
    number, fields, trailing = first[0]
    hint = " (a trailing tab?)" if trailing and fields == header + 1 else ""
    more = ""
    if count > 1:
        listed = ", ".join(str(n) for n, _, _ in first[1:]) + (", ..." if count > len(first) else "")
        more = f"; {count - 1} other line(s) differ from the header too: {listed}"
    raise BadInputError(
        f"{path}: line {number} has {fields} fields, the header has {header}{hint}{more}")


def file_hash(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's content (``algorithm:hexdigest``)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return f"{algorithm}:{digest.hexdigest()}"


def parameter_hash(parameters: Mapping[str, Any]) -> str:
    """Stable short hash of a parameter mapping (used to decide whether a rerun can skip a job)."""
    text = json.dumps(parameters, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance(
    parameters: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str | os.PathLike] | None = None,
    hash_inputs: bool = True,
) -> dict[str, Any]:
    """Sidecar content every output carries: software versions, parameters and input hashes.

    Parameters
    ----------
    parameters : mapping, optional
        The parameters that produced the output.
    inputs : mapping of str to path, optional
        Named input files; their content hash is recorded when ``hash_inputs``.
    hash_inputs : bool
        Hash the inputs (set False for very large inputs already hashed upstream).
    """
    import nibabel
    import nilearn
    import scipy
    import sklearn

    record: dict[str, Any] = {
        "GeneratedBy": [
            {
                "Name": "theramark",
                "Version": __version__,
                "Dependencies": {
                    "python": platform.python_version(),
                    "numpy": np.__version__,
                    "scipy": scipy.__version__,
                    "pandas": pd.__version__,
                    "nibabel": nibabel.__version__,
                    "nilearn": nilearn.__version__,
                    "scikit-learn": sklearn.__version__,
                },
            }
        ],
        "Parameters": dict(parameters or {}),
    }
    if parameters is not None:
        record["ParameterHash"] = parameter_hash(parameters)
    if inputs:
        record["Sources"] = {
            name: {"path": str(p), **({"hash": file_hash(p)} if hash_inputs else {})}
            for name, p in inputs.items()
        }
    return record
