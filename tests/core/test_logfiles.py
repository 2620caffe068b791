"""The decision log's files as names (controller.core.logfiles): sizes as people write them, the
rotated generations in the order they are read, and the renames and deletions a rotation plans."""

from __future__ import annotations

import pytest

from controller.core.logfiles import (
    Generation,
    beyond_keep,
    format_size,
    generation_name,
    generations,
    parse_generation,
    parse_size,
    shifts,
)


@pytest.mark.parametrize(
    ("text", "size_bytes"),
    [
        ("0", 0),
        ("1234", 1234),
        ("64Mi", 64 * 1024**2),
        ("64MiB", 64 * 1024**2),
        ("64M", 64 * 1024**2),
        ("100MB", 100 * 1000**2),
        ("1Gi", 1024**3),
        ("2kb", 2000),
        (" 8 Ki ", 8192),
        ("10B", 10),
    ],
)
def test_sizes_are_read_in_bytes(text: str, size_bytes: int) -> None:
    assert parse_size(text) == size_bytes


@pytest.mark.parametrize("text", ["", "Mi", "-1", "1.5Mi", "64 mebibytes", "1Ti", "99999999999Gi"])
def test_a_bad_size_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_sizes_are_shown_for_people() -> None:
    assert format_size(64 * 1024**2) == "64 MiB"
    assert format_size(1536 * 1024**2) == "1.5 GiB"
    assert format_size(512) == "512 B"


def test_generation_names_round_trip() -> None:
    assert generation_name("decisions.jsonl", 3) == "decisions.jsonl.3.gz"
    assert generation_name("decisions.jsonl", 1, compressed=False) == "decisions.jsonl.1"
    assert parse_generation("decisions.jsonl", "decisions.jsonl.12.gz") == Generation(
        "decisions.jsonl.12.gz", 12, compressed=True
    )
    assert parse_generation("decisions.jsonl", "decisions.jsonl.1") == Generation(
        "decisions.jsonl.1", 1, False
    )
    for other in [
        "decisions.jsonl",
        "decisions.jsonl.lock",
        "decisions.jsonl.1.gz.tmp",
        "decisions.jsonl.0.gz",
        "decisions.jsonl.01.gz",
        "decisions.jsonl.x.gz",
        "decisions.jsonl.²",
        "other.jsonl.1.gz",
        "flags.json",
    ]:
        assert parse_generation("decisions.jsonl", other) is None, other


def test_generations_are_read_oldest_first_and_a_plain_copy_wins() -> None:
    names = [
        "decisions.jsonl",
        "decisions.jsonl.1.gz",
        "decisions.jsonl.4.gz",  # a gap at 3, left by a crash part-way through the renames
        "decisions.jsonl.2.gz",
        "decisions.jsonl.lock",
    ]
    assert [g.name for g in generations("decisions.jsonl", names)] == [
        "decisions.jsonl.4.gz",
        "decisions.jsonl.2.gz",
        "decisions.jsonl.1.gz",
    ]
    crashed = ["decisions.jsonl.1.gz", "decisions.jsonl.1", "decisions.jsonl.2.gz"]
    assert [g.name for g in generations("decisions.jsonl", crashed)] == [
        "decisions.jsonl.2.gz",
        "decisions.jsonl.1",
    ]
    assert [g.name for g in generations("decisions.jsonl", list(reversed(crashed)))] == [
        "decisions.jsonl.2.gz",
        "decisions.jsonl.1",
    ]


def test_shifts_free_number_one_oldest_first_and_stop_at_a_gap() -> None:
    assert shifts([]) == []
    assert shifts([1, 2, 3]) == [(3, 4), (2, 3), (1, 2)]
    assert shifts([1, 3]) == [(1, 2)]  # the gap at 2 is filled; 3 stays
    assert shifts([2, 3]) == []  # 1 is free already


def test_the_oldest_beyond_the_count_are_deleted_before_a_rotation() -> None:
    assert beyond_keep([1, 2, 3], keep=3) == [3]  # with the new one, three remain
    assert beyond_keep([1, 2, 3, 4, 5], keep=2) == [5, 4, 3, 2]
    assert beyond_keep([1, 4], keep=3) == []
    assert beyond_keep([], keep=1) == []
    assert beyond_keep([1], keep=1) == [1]
