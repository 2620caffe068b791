"""``flagroll demo --dir``: the demo deletes its flag file and decision log from the directory and runs
every policy in its policies/, so it takes only a new or empty directory, or one a demo used before;
anything else is refused (exit 2) before anything starts, with nothing touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main
from controller.core.errors import UsageError
from controller.demo.runner import prepare_directory


def test_a_directory_with_someone_elses_files_is_refused_and_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = tmp_path / "flags.json"
    flags.write_text('{"flags": {"checkout": {}}}')
    log = tmp_path / "decisions.jsonl"
    log.write_text('{"policy": "checkout"}\n')
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "checkout.yaml").write_text("kind: RolloutPolicy\n")

    code = main(["demo", "--dir", str(tmp_path)])

    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--dir {tmp_path}" in err
    assert "decisions.jsonl" in err
    assert flags.read_text() == '{"flags": {"checkout": {}}}'
    assert log.read_text() == '{"policy": "checkout"}\n'
    assert sorted(p.name for p in (tmp_path / "policies").iterdir()) == ["checkout.yaml"]


def test_a_directory_that_cannot_be_made_is_named_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")

    code = main(["demo", "--dir", str(tmp_path / "a-file" / "demo")])

    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--dir {tmp_path / 'a-file' / 'demo'}" in err
    assert "Traceback" not in err


def test_a_new_an_empty_and_a_previous_demos_directory_are_taken(tmp_path: Path) -> None:
    new, empty = tmp_path / "new" / "demo", tmp_path / "empty"
    empty.mkdir()
    for directory in (new, empty):
        prepare_directory(directory)
        assert (directory / "policies" / "price-quote-cache.yaml").exists()
    (empty / "flags.json").write_text("{}")
    (empty / "decisions.jsonl").write_text("{}\n")
    (empty / "service.log").write_text("")

    prepare_directory(empty)  # what the last demo left is its own

    assert not (empty / "flags.json").exists()
    assert not (empty / "decisions.jsonl").exists()
    assert sorted(p.name for p in (empty / "policies").iterdir()) == ["price-quote-cache.yaml"]


def test_a_previous_demos_directory_with_a_policy_added_is_refused(tmp_path: Path) -> None:
    prepare_directory(tmp_path)
    (tmp_path / "policies" / "mine.yaml").write_text("kind: RolloutPolicy\n")

    with pytest.raises(UsageError, match=r"mine\.yaml"):
        prepare_directory(tmp_path)
    assert (tmp_path / "policies" / "mine.yaml").exists()
