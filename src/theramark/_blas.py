"""The one place theramark reads and limits BLAS threads (threadpoolctl, one controller per process).

Parallel work (joblib workers, Dask tasks, bootstrap blocks) limits BLAS here so that processes do
not oversubscribe the cores; library code that shares work among threads asks how many BLAS may use.
"""

from __future__ import annotations

import contextlib

from threadpoolctl import ThreadpoolController

_controller: ThreadpoolController | None = None


def _get_controller() -> ThreadpoolController:
    """The process's controller (built once: scanning the loaded libraries costs ~1 ms)."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


def blas_threads() -> int:
    """Threads BLAS may use now: 1 inside a joblib worker or a ``limit_blas(1)`` block."""
    counts = [lib.num_threads for lib in _get_controller().select(user_api="blas").lib_controllers]
    return max(1, min(counts, default=1))


def limit_blas(threads: int = 1) -> contextlib.AbstractContextManager:
    """Context manager limiting BLAS to ``threads`` threads inside the block."""
    return _get_controller().limit(limits=int(threads), user_api="blas")


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """Context manager limiting BLAS to one thread."""
    return limit_blas(1)


def set_blas_threads(threads: int) -> None:
    """Limit BLAS to ``threads`` for the rest of this process (a worker that runs one job at a time)."""
    _get_controller().limit(limits=int(threads), user_api="blas")
