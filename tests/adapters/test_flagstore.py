"""The file flag store: atomic replacement, refusal of bad documents and stale snapshots, the lock."""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest

from controller.adapters import flagstore
from controller.adapters.flagstore import FileFlagStore, atomic_write, check_loadable
from controller.core.errors import FlagFileError, LockTimeoutError, WriteError
from controller.core.flagd import SCHEMA_URL, empty_document, read_state, render_document, write_flag
from controller.core.state import RolloutState, Status

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

OLD_TEXT = '{"flags": {}, "old": true}\n'


def temp_files(directory: Path, name: str) -> list[Path]:
    """Leftover temporary files of ``atomic_write`` for ``name``: ``.<name>.*.tmp``."""
    return sorted(directory.glob(f".{name}.*.tmp"))


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    path = tmp_path / "flags.json"
    path.write_text(OLD_TEXT, encoding="utf-8")
    return path


def state(percent: float = 5.0) -> RolloutState:
    return RolloutState(
        policy="cache",
        revision="abc123",
        status=Status.PROGRESSING,
        step=1,
        steps=3,
        percent=percent,
        control=True,
        step_started_at=T0,
        updated_at=T0,
        owner="sre-lead",
    )


# atomic_write ----------------------------------------------------------------------------------


def test_atomic_write_replaces_the_content_entirely(old_file: Path) -> None:
    atomic_write(old_file, "new")

    assert old_file.read_bytes() == b"new"
    assert temp_files(old_file.parent, old_file.name) == []


def test_atomic_write_creates_a_missing_file_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"

    atomic_write(path, "{}\n")

    assert path.read_text(encoding="utf-8") == "{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert temp_files(tmp_path, path.name) == []


def test_new_mtime_is_later_than_the_old_one(old_file: Path) -> None:
    before = old_file.stat().st_mtime_ns

    atomic_write(old_file, "new")

    assert old_file.stat().st_mtime_ns > before


def test_new_mtime_is_later_even_when_the_old_one_is_in_the_future(old_file: Path) -> None:
    future = old_file.stat().st_mtime_ns + 10 * 1_000_000_000
    os.utime(old_file, ns=(future, future))
    assert old_file.stat().st_mtime_ns == future

    atomic_write(old_file, "new")

    assert old_file.stat().st_mtime_ns > future
    assert old_file.read_bytes() == b"new"


def test_the_old_files_mode_is_kept(old_file: Path) -> None:
    old_file.chmod(0o640)

    atomic_write(old_file, "new")

    assert stat.S_IMODE(old_file.stat().st_mode) == 0o640


OTHER_UID, OTHER_GID = 12345, 23456  # nobody on this machine: proves the old values are copied


@pytest.mark.parametrize("mode", [0o640, 0o4750, 0o2755])
def test_the_old_files_owner_group_and_mode_are_kept(old_file: Path, mode: int) -> None:
    os.chown(old_file, OTHER_UID, OTHER_GID)
    old_file.chmod(mode)  # after chown: chown clears the set-id bits

    atomic_write(old_file, "new")

    after = old_file.stat()
    assert (after.st_uid, after.st_gid) == (OTHER_UID, OTHER_GID)
    assert stat.S_IMODE(after.st_mode) == mode
    assert old_file.read_bytes() == b"new"


def test_a_store_write_keeps_the_flag_files_owner_group_and_mode(tmp_path: Path) -> None:
    store = FileFlagStore(tmp_path / "flags.json")
    store.write(write_flag(empty_document(), "cache", state(1)), store.read(), ["cache"])
    os.chown(store.path, OTHER_UID, OTHER_GID)
    store.path.chmod(0o660)

    store.write(write_flag(store.read().document, "cache", state(5)), store.read(), ["cache"])

    after = store.path.stat()
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (OTHER_UID, OTHER_GID, 0o660)
    assert read_state(store.read().document, "cache") == state(5)


def test_the_file_is_replaced_not_edited_in_place(old_file: Path) -> None:
    """A reader holding the old file keeps seeing the old content: readers never see a mix."""
    with old_file.open("rb") as reader:
        old_inode = os.fstat(reader.fileno()).st_ino
        atomic_write(old_file, "new content that is longer than the old one ................")
        assert reader.read() == OLD_TEXT.encode()
    assert old_file.stat().st_ino != old_inode


def test_a_failed_replace_raises_write_error_and_keeps_the_old_file(
    old_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)

    with pytest.raises(WriteError, match="intact"):
        atomic_write(old_file, "new")

    assert old_file.read_bytes() == OLD_TEXT.encode()
    assert temp_files(old_file.parent, old_file.name) == []


def _can_write_in(directory: Path) -> bool:
    probe = directory / ".probe"
    try:
        probe.write_text("x", encoding="utf-8")
    except PermissionError:
        return False
    probe.unlink()
    return True


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / "flags.json").write_text(OLD_TEXT, encoding="utf-8")
    directory.chmod(0o555)
    try:
        yield directory
    finally:
        directory.chmod(0o755)


def test_a_read_only_directory_raises_write_error_and_keeps_the_old_file(
    read_only_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = read_only_dir / "flags.json"
    if _can_write_in(read_only_dir):  # root ignores the mode: simulate what the kernel would refuse
        real_mkstemp = tempfile.mkstemp

        def refused(*args: Any, **kwargs: Any) -> Any:
            if Path(kwargs.get("dir", "")) == read_only_dir:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            return real_mkstemp(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refused)

    with pytest.raises(WriteError, match=re.escape(str(path))):
        atomic_write(path, "new")

    assert path.read_bytes() == OLD_TEXT.encode()
    assert temp_files(read_only_dir, path.name) == []


# FileFlagStore.read ----------------------------------------------------------------------------


def test_reading_a_missing_file_gives_an_empty_document(tmp_path: Path) -> None:
    snapshot = FileFlagStore(tmp_path / "flags.json").read()

    assert snapshot.document == {"$schema": SCHEMA_URL, "flags": {}}
    assert snapshot.version is None


def test_reading_an_existing_file_gives_its_document_and_a_version(old_file: Path) -> None:
    snapshot = FileFlagStore(old_file).read()

    assert snapshot.document == {"flags": {}, "old": True}
    assert snapshot.version is not None


def test_invalid_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text('{\n  "flags": {\n    "x": \n  }\n}\n', encoding="utf-8")

    with pytest.raises(FlagFileError) as caught:
        FileFlagStore(path).read()

    assert f"{path}:4:" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[1, 2]\n", "top level"),
        ('"flags"\n', "top level"),
        ('{"flags": []}\n', "'flags'"),
        ('{"flags": "x"}\n', "'flags'"),
    ],
)
def test_a_document_of_the_wrong_shape_is_refused(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "flags.json"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(FlagFileError, match=complaint) as caught:
        FileFlagStore(path).read()

    assert str(path) in str(caught.value)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(b'{"flags": {"caf\xe9": {}}}\n')

    with pytest.raises(FlagFileError, match="UTF-8") as caught:
        FileFlagStore(path).read()

    assert str(path) in str(caught.value)


# FileFlagStore.write ---------------------------------------------------------------------------


def test_write_refuses_a_document_flagd_cannot_load(old_file: Path) -> None:
    store = FileFlagStore(old_file)
    snapshot = store.read()
    mtime = old_file.stat().st_mtime_ns
    broken = {
        "flags": {"x": {"state": "BROKEN", "variants": {"on": True, "off": False}, "defaultVariant": "off"}}
    }

    with pytest.raises(FlagFileError, match="flagd would refuse"):
        store.write(broken, snapshot, ["x"])

    assert old_file.read_bytes() == OLD_TEXT.encode()
    assert old_file.stat().st_mtime_ns == mtime
    assert temp_files(old_file.parent, old_file.name) == []


def test_among_many_flags_the_refusal_names_the_ones_flagd_refuses(
    old_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flagstore, "CHECK_BATCH_FLAGS", 4)  # ten flags: three batches
    good = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
    flags = {f"f{i}": dict(good) for i in range(10)}
    flags["f6"] = {**good, "state": "BROKEN"}
    store = FileFlagStore(old_file)

    with pytest.raises(FlagFileError, match="flagd would refuse") as caught:
        store.write({"flags": flags}, store.read(), sorted(flags))

    assert "would refuse f6: " in str(caught.value)
    assert old_file.read_bytes() == OLD_TEXT.encode()
    loaded: list[int] = []
    refusal = flagstore._refusal

    def counted(document: Mapping[str, Any], keys: Sequence[str]) -> str | None:
        loaded.append(len(keys))
        return refusal(document, keys)

    monkeypatch.setattr(flagstore, "_refusal", counted)
    check_loadable({"flags": {k: v for k, v in flags.items() if k != "f6"}}, sorted(flags), "ok")
    assert loaded == [4, 4, 1]  # nine flags present, four at a time


def test_a_file_that_grows_while_it_is_read_is_read_whole(
    old_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = {"flags": {f"f{i}": {"state": "ENABLED"} for i in range(100)}}
    old_file.write_text(render_document(document))
    real_fstat = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: os.stat_result((*real_fstat(fd)[:6], 0, *real_fstat(fd)[7:])))
    assert FileFlagStore(old_file).read().document == document  # a size of 0 told: read to the end


def test_write_refuses_when_the_file_changed_since_it_was_read(old_file: Path) -> None:
    store = FileFlagStore(old_file)
    snapshot = store.read()
    theirs = '{"flags": {}, "edited": "by someone else, meanwhile"}\n'
    old_file.write_text(theirs, encoding="utf-8")

    with pytest.raises(WriteError, match="changed since it was read"):
        store.write(write_flag(snapshot.document, "cache", state()), snapshot, ["cache"])

    assert old_file.read_text(encoding="utf-8") == theirs


def test_write_refuses_when_the_file_appeared_since_it_was_read(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    store = FileFlagStore(path)
    snapshot = store.read()
    path.write_text(OLD_TEXT, encoding="utf-8")

    with pytest.raises(WriteError):
        store.write(write_flag(snapshot.document, "cache", state()), snapshot, ["cache"])

    assert path.read_text(encoding="utf-8") == OLD_TEXT


def test_a_written_flag_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    store = FileFlagStore(path)
    snapshot = store.read()
    document = write_flag(
        snapshot.document, "cache", state(5.0), variants={"on": True, "off": False}, segment=None
    )

    store.write(document, snapshot, ["cache"])

    again = store.read()
    assert again.document == document
    assert again.version is not None
    assert path.read_text(encoding="utf-8") == render_document(document)
    assert read_state(again.document, "cache") == state(5.0)
    assert json.loads(path.read_text(encoding="utf-8"))["flags"]["cache"]["targeting"] == {
        "fractional": [["on", 500], ["off", 9000], ["control", 500]]
    }


def test_successive_writes_each_need_a_fresh_snapshot(tmp_path: Path) -> None:
    store = FileFlagStore(tmp_path / "flags.json")
    first = store.read()
    store.write(write_flag(first.document, "cache", state(1.0)), first, ["cache"])
    second = store.read()
    store.write(write_flag(second.document, "cache", state(5.0)), second, ["cache"])

    assert read_state(store.read().document, "cache") == state(5.0)
    with pytest.raises(WriteError):
        store.write(write_flag(second.document, "cache", state(10.0)), second, ["cache"])
    assert read_state(store.read().document, "cache") == state(5.0)


def test_write_keeps_flags_it_does_not_manage(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    foreign = {"state": "ENABLED", "variants": {"a": "x", "b": "y"}, "defaultVariant": "a"}
    path.write_text(json.dumps({**empty_document(), "flags": {"theirs": foreign}}), encoding="utf-8")
    store = FileFlagStore(path)
    snapshot = store.read()

    store.write(write_flag(snapshot.document, "cache", state()), snapshot, ["cache"])

    assert store.read().document["flags"]["theirs"] == foreign


# FileFlagStore.locked --------------------------------------------------------------------------


def _hold_lock(path: Path, ready: Event, release: Event) -> None:
    """Child process: take the store's lock, say so, and keep it until told to let go."""
    with FileFlagStore(path).locked(timeout_seconds=30):
        ready.set()
        if not release.wait(60):
            raise SystemExit(3)


def test_the_lock_is_exclusive_between_processes(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    store = FileFlagStore(path)
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    child = context.Process(target=_hold_lock, args=(path, ready, release), daemon=True)
    child.start()
    try:
        assert ready.wait(60), "the child process never took the lock"

        with (
            pytest.raises(LockTimeoutError, match="held by another writer"),
            store.locked(timeout_seconds=0.2),
        ):
            pytest.fail("the lock was taken while another process held it")

        release.set()
        child.join(60)
        assert child.exitcode == 0

        with store.locked(timeout_seconds=10):
            entered = True
        assert entered
    finally:
        release.set()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join(10)


def test_the_lock_file_sits_beside_the_flag_file(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    store = FileFlagStore(path)
    lock_path = tmp_path / "flags.json.lock"
    assert store.lock_path == lock_path

    with store.locked(timeout_seconds=1):
        assert lock_path.exists()

    # Whoever holds an flock on <flags>.lock keeps the store out.
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(LockTimeoutError), store.locked(timeout_seconds=0.2):
            pytest.fail("the lock was taken while <flags>.lock was held")
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def test_the_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    store = FileFlagStore(tmp_path / "flags.json")

    with pytest.raises(RuntimeError), store.locked(timeout_seconds=1):
        raise RuntimeError("boom")

    fd = os.open(store.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if still held
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def test_the_lock_is_released_after_the_block(tmp_path: Path) -> None:
    store = FileFlagStore(tmp_path / "flags.json")

    with store.locked(timeout_seconds=1):
        pass
    with store.locked(timeout_seconds=0.2):
        pass

    fd = os.open(store.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def test_a_broken_flag_someone_else_owns_does_not_block_a_write(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    theirs = {"state": "DISABLED_FOR_NOW", "variants": {"a": 1}, "defaultVariant": "a"}
    path.write_text(json.dumps({"flags": {"theirs": theirs}}))
    store = FileFlagStore(path)
    snapshot = store.read()
    store.write(write_flag(snapshot.document, "cache", state()), snapshot, ["cache"])
    written = json.loads(path.read_text())
    assert written["flags"]["theirs"] == theirs
    assert "cache" in written["flags"]


def test_a_number_json_cannot_hold_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text(
        '{"flags": {"theirs": {"state": "ENABLED", "variants": {"a": 1e999}, "defaultVariant": "a"}}}'
    )
    store = FileFlagStore(path)
    snapshot = store.read()
    with pytest.raises(FlagFileError, match="cannot write the document back"):
        store.write(write_flag(snapshot.document, "cache", state()), snapshot, ["cache"])
