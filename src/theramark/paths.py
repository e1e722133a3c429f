"""Checks of the paths a user gives, run before a command starts any work.

Each check returns the path (a :class:`~pathlib.Path`) when it is usable and otherwise raises
:class:`~theramark.errors.BadInputError` with one line naming the path and what is wrong, which the
command line turns into exit status 2. Inputs must exist, be of the right kind (a folder or a file)
and be readable. Outputs must be writable: an output folder either exists as a folder or can be
created (its nearest existing ancestor is a writable folder); an output file's folder is such a
folder and the file itself, if it exists, is not a folder. Writability is tested by creating (and
removing) a temporary file, so that a read-only file system or a path under a regular file is
caught for every user, root included, whom permission bits do not stop.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from theramark.errors import BadInputError

__all__ = ["input_dir", "input_file", "output_dir", "output_file", "output_subdirs"]


def _kind(path: Path) -> str:
    """What a path that exists is, in words."""
    if path.is_dir():
        return "a folder"
    if path.is_file():
        return "a file"
    return "something that is neither a file nor a folder"


def input_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """An existing, readable folder.

    Parameters
    ----------
    path : path-like
        The folder the user gave.
    what : str
        What it is, for the message (``"BIDS folder"``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    BadInputError
        The path does not exist, is not a folder or cannot be listed.
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: {what} not found")
    if not path.is_dir():
        raise BadInputError(f"{path}: found {_kind(path)} where the {what} should be")
    if not os.access(path, os.R_OK | os.X_OK):
        raise BadInputError(f"{path}: {what} is not readable (permission denied)")
    return path


def input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """An existing, readable file.

    Parameters
    ----------
    path : path-like
        The file the user gave.
    what : str
        What it is, for the message (``"config file"``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    BadInputError
        The path does not exist, is a folder or cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: {what} not found")
    if path.is_dir():
        raise BadInputError(f"{path}: found a folder where the {what} should be")
    if not os.access(path, os.R_OK):
        raise BadInputError(f"{path}: {what} is not readable (permission denied)")
    return path


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``lexists``: a dangling link counts)."""
    current = path
    while not os.path.lexists(current) and current.parent != current:
        current = current.parent
    return current


def _probe_writable(folder: Path, path: Path, what: str) -> None:
    """Create and remove a temporary file in ``folder``; an error names ``path``."""
    try:
        fd, name = tempfile.mkstemp(prefix=".theramark-write-test-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if folder == path:
            raise BadInputError(f"{path}: the {what} is not writable ({reason})") from None
        raise BadInputError(f"{path}: cannot write the {what}: {folder} is not writable ({reason})"
                            ) from None
    os.close(fd)
    os.unlink(name)


def output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """A folder that exists and is writable, or that can be created; nothing is created.

    Parameters
    ----------
    path : path-like
        The folder the user gave.
    what : str
        What it is, for the message.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    BadInputError
        The path (or one of its ancestors) is a file, or the folder cannot be written or created.
    """
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        if existing == path:
            raise BadInputError(f"{path}: found {_kind(path)} where the {what} should be")
        raise BadInputError(f"{path}: cannot create the {what}: {existing} is {_kind(existing)}, "
                            "not a folder")
    _probe_writable(existing, path, what)
    return path


def output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """A file that can be written (atomically, in its folder): not a folder, in a writable folder.

    Parameters
    ----------
    path : path-like
        The file the user gave; its folder may be missing if it can be created.
    what : str
        What it is, for the message.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    BadInputError
        The path is a folder, or its folder cannot be written or created.
    """
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"{path}: found a folder where the {what} should be")
    if path.exists() and not path.is_file():
        raise BadInputError(f"{path}: found {_kind(path)} where the {what} should be")
    parent = path.parent
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise BadInputError(f"{path}: cannot write the {what}: {existing} is {_kind(existing)}, "
                            "not a folder")
    _probe_writable(existing, path, what)
    return path


def output_subdirs(root: str | os.PathLike, relative: Iterable[str | os.PathLike],
                   what: str = "output folder") -> Path:
    """Check that the folders a command will create under ``root`` are not blocked by files.

    A file where an output folder should be (``OUT/sub-01`` is a file) would otherwise fail every
    job that writes below it; this finds each such file before any job starts. Folders that exist
    must be writable.

    Parameters
    ----------
    root : path-like
        The output root (checked with :func:`output_dir`).
    relative : iterable of path-like
        Folders under ``root`` that will be written, e.g. ``sub-01/ses-pre/func``.
    what : str
        What the root is, for the message.

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    BadInputError
        One line naming every blocking path, or a folder that is not writable.
    """
    root = output_dir(root, what)
    blocked: dict[Path, None] = {}
    unwritable: dict[Path, None] = {}
    for rel in relative:
        current = root
        for part in Path(rel).parts:
            current = current / part
            if not os.path.lexists(current):
                break
            if not current.is_dir():
                blocked[current] = None
                break
        else:
            if not os.access(current, os.W_OK | os.X_OK):
                unwritable[current] = None
    if blocked:
        names = sorted(map(str, blocked))
        raise BadInputError(
            f"{names[0]}: a file where an output folder must be created; move or remove it"
            + (f" (also: {', '.join(names[1:])})" if len(names) > 1 else ""))
    if unwritable:
        names = sorted(map(str, unwritable))
        raise BadInputError(f"{names[0]}: output folder is not writable (permission denied)"
                            + (f" (also: {', '.join(names[1:])})" if len(names) > 1 else ""))
    return root
