"""The lock beside the flag file and the decision log (controller.adapters.filelock)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from controller.adapters.filelock import exclusive
from controller.core.errors import LockTimeoutError, WriteError


def test_a_held_lock_times_out_with_the_error_asked_for_and_names_the_holder(tmp_path: Path) -> None:
    where = tmp_path / "f.lock"
    fd = os.open(where, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with (
            pytest.raises(LockTimeoutError, match=r"f\.lock is held by the other one \(waited 0\.05s\)"),
            exclusive(where, 0.05, poll_seconds=0.01, holder="the other one", timeout_error=LockTimeoutError),
        ):
            pass
    finally:
        os.close(fd)


def test_the_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    where = tmp_path / "f.lock"
    with pytest.raises(RuntimeError), exclusive(where, 1.0, poll_seconds=0.01):
        raise RuntimeError("inside")
    fd = os.open(where, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise BlockingIOError if still held
    finally:
        os.close(fd)


def test_a_lock_file_that_cannot_be_opened_is_a_write_error_naming_it(tmp_path: Path) -> None:
    where = tmp_path / "missing-dir" / "f.lock"
    with (
        pytest.raises(WriteError, match=r"cannot open lock file .*missing-dir/f\.lock"),
        exclusive(where, 1.0, poll_seconds=0.01),
    ):
        pass
