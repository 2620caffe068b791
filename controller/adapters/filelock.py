"""An exclusive ``flock`` on a lock file beside the file it guards, waited for with a deadline.

The flag file (``<flags>.lock``) and the decision log (``<log>.lock``) are each guarded this way:
writers in other processes (a second replica, a human command) take the same lock. ``flock`` has no
timeout of its own, so :func:`exclusive` polls a non-blocking attempt until its deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from controller.core.errors import WriteError


@contextlib.contextmanager
def exclusive(
    where: Path,
    timeout_seconds: float,
    *,
    poll_seconds: float,
    holder: str = "another writer",
    timeout_error: type[Exception] = WriteError,
) -> Iterator[None]:
    """Hold ``where`` exclusively for the block (creating it if missing).

    Raises :class:`WriteError` when the lock file cannot be opened, and ``timeout_error`` when
    ``holder`` keeps it longer than ``timeout_seconds``.
    """
    try:
        fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise WriteError(f"cannot open lock file {where}: {exc.strerror or exc}") from exc
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    message = f"{where} is held by {holder} (waited {timeout_seconds:g}s)"
                    raise timeout_error(message) from None
                time.sleep(poll_seconds)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
