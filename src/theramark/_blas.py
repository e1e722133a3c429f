"""How many threads BLAS may use, read and limited through threadpoolctl (one controller per process).

threadpoolctl comes with scikit-learn; without it, BLAS is treated as single-threaded and limits
are no-ops.
"""

from __future__ import annotations

import contextlib
from typing import Any

_controller: Any = None


def _get_controller() -> Any:
    """The process's ``ThreadpoolController`` (built once: scanning the loaded libraries costs ~1 ms),
    or ``False`` without threadpoolctl."""
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        except ImportError:
            _controller = False
    return _controller


def blas_threads() -> int:
    """Threads BLAS may use now: 1 inside a joblib worker or a ``threadpool_limits(1)`` block."""
    controller = _get_controller()
    if controller is False:
        return 1
    counts = [lib.num_threads for lib in controller.select(user_api="blas").lib_controllers]
    return max(1, min(counts, default=1))


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """Context manager limiting BLAS to one thread."""
    controller = _get_controller()
    if controller is False:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")
