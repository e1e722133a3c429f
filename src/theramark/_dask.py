"""One way to reach a Dask scheduler (``--scheduler``), for the participant and group levels."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from theramark.errors import BadInputError


@contextlib.contextmanager
def dask_client(scheduler: str | None) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``scheduler``, closed on exit; None without one.

    Closing the client (also on Ctrl-C or SIGTERM) releases its futures, so the scheduler drops the
    tasks of this command that have not started; the workers belong to the cluster and stay up.

    Raises
    ------
    BadInputError
        When Dask's distributed scheduler is not installed or the scheduler cannot be reached.
    """
    if not scheduler:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:  # an optional extra: pip install 'theramark[dask]'
        raise BadInputError("--scheduler needs Dask's distributed scheduler: pip install "
                            "'theramark[dask]'") from None
    try:
        client = Client(scheduler, timeout="20s")
    except OSError as exc:
        raise BadInputError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None
    try:
        yield client
    finally:
        client.close()
