"""Progress bars for long steps (tqdm on a terminal; quiet in CI and when stderr is not a TTY)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    """Progress bars show on an interactive stderr unless THERAMARK_PROGRESS=0."""
    setting = os.environ.get("THERAMARK_PROGRESS")
    if setting is not None:
        return setting not in ("0", "false", "no")
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar labelled ``desc`` when progress is enabled."""
    from tqdm.auto import tqdm

    return iter(
        tqdm(iterable, desc=desc, total=total, unit=unit, disable=not progress_enabled(),
             leave=False, dynamic_ncols=True)
    )
