"""Streaming the data block of a (possibly gzipped) NIfTI file in large pieces.

Inflating gzip is the floor of reading a ``.nii.gz`` BOLD run: with zlib it takes about half of
the participant level's time. ISA-L (the ``isal`` package, Intel's Intelligent Storage
Acceleration Library) inflates the same DEFLATE streams two to three times faster and exposes a
``zlib``-compatible ``decompressobj``; it is used when it is installed (theramark depends on it
on the platforms it has wheels for: x86-64 and ARM64 Linux, macOS and Windows), and zlib is the
fallback. Both check every member's CRC-32 and length.

``THERAMARK_INFLATE=zlib`` in the environment forces zlib (to compare, or to rule ISA-L out).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

__all__ = ["INFLATE_ERRORS", "inflate_engine", "stored_bytes"]

_GZIP_MAGIC = b"\x1f\x8b"


def _load_isal() -> ModuleType | None:
    try:
        from isal import isal_zlib
    except ImportError:  # no wheel for this platform: zlib does the work
        return None
    return isal_zlib


_ISAL = _load_isal()

#: Exceptions a corrupt compressed stream raises (zlib's, ISA-L's) and a truncated one (EOFError).
INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, EOFError) + (
    (_ISAL.error,) if _ISAL is not None else ())


def inflate_engine(engine: str | None = None) -> ModuleType:
    """The module whose ``decompressobj`` inflates gzip streams.

    Parameters
    ----------
    engine : {"isal", "zlib"}, optional
        Force one; by default ``$THERAMARK_INFLATE`` if set, else ISA-L when installed, else zlib.

    Returns
    -------
    module
        ``isal.isal_zlib`` or ``zlib``.
    """
    choice = engine or os.environ.get("THERAMARK_INFLATE", "").strip().lower() or None
    if choice is None:
        return _ISAL if _ISAL is not None else zlib
    if choice == "zlib":
        return zlib
    if choice == "isal":
        if _ISAL is None:
            raise ImportError("inflate engine 'isal' requested but the isal package is not installed "
                              "(pip install isal)")
        return _ISAL
    raise ValueError(f"inflate engine must be 'isal' or 'zlib', got {choice!r}")


def stored_bytes(path: str | os.PathLike, offset: int = 0, chunk: int = 16 << 20,
                 engine: str | None = None) -> Iterator[bytes]:
    """The file's bytes from ``offset`` on, inflated when gzipped, in large pieces.

    The inflater is driven directly with big chunks: Python's ``gzip`` module reads through many
    small buffered calls and spends as much time in Python as in zlib for a 1 GB image.

    Parameters
    ----------
    path : path-like
    offset : int
        Bytes of the (uncompressed) stream to skip (the NIfTI ``vox_offset``).
    chunk : int
        Bytes of the file read at once.
    engine : {"isal", "zlib"}, optional
        See :func:`inflate_engine`.

    Yields
    ------
    bytes
        Consecutive pieces of the uncompressed stream. Multi-member gzip files (``cat a.gz
        b.gz``, pigz, bgzip) are read member after member.

    Raises
    ------
    EOFError
        When the file ends inside a gzip member (a truncated file), after the bytes it holds.
    zlib.error or isal_zlib.error
        Corrupt compressed data or a wrong CRC (all in :data:`INFLATE_ERRORS`).
    """
    module = inflate_engine(engine)
    wbits = 16 + zlib.MAX_WBITS
    with open(Path(path), "rb") as handle:
        if handle.read(2) != _GZIP_MAGIC:
            handle.seek(offset)
            while piece := handle.read(chunk):
                yield piece
            return
        handle.seek(0)
        skip = offset
        decompressor = module.decompressobj(wbits)
        fed = False  # whether the current member has received any input
        while raw := handle.read(chunk):
            while raw:
                fed = True
                piece = decompressor.decompress(raw)
                if skip:
                    dropped = min(skip, len(piece))
                    piece = piece[dropped:]
                    skip -= dropped
                if piece:
                    yield piece
                if decompressor.eof:  # a multi-member gzip file: continue with the next member
                    raw = decompressor.unused_data
                    decompressor = module.decompressobj(wbits)
                    fed = False
                else:
                    raw = b""
        if fed and not decompressor.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
