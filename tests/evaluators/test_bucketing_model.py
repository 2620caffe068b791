"""The pinned Python evaluator buckets as the docs say, checked against a few-line model of its hashing
(tests/support/bucketing.py); no node needed. An upgrade that changes the hashed bytes or the mapping
from hash to variant fails here, and the figures of docs/evaluators.md must then be measured again."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.core.flagd import empty_document, write_flag
from controller.core.state import NOT_STARTED, RolloutState, Status
from tests.support.bucketing import (
    FLAG,
    KEYS,
    agreement,
    documented_agreement,
    fine_document,
    javascript_hash,
    modelled,
    murmur3_32,
    python_bytes,
    python_hash,
    python_variants,
)
from tests.support.paths import ROOT
from tests.support.ramp import RAMP

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PAGE = ROOT / "docs" / "evaluators.md"
VARIANTS = {"on": True, "off": False}
ODD_KEYS = ["é", "ключ", "😀", "x" * 23, "y" * 24, "z" * 300, "a b\tc"]


def layout(percent: float, *, control: bool = True, status: Status = Status.PROGRESSING) -> dict[str, Any]:
    state = RolloutState(
        policy="checkout",
        revision="abc123def456",
        status=status,
        step=0 if percent else NOT_STARTED,
        steps=4,
        percent=percent,
        control=control,
        step_started_at=NOW,
        updated_at=NOW,
        owner="web-team",
    )
    return write_flag(empty_document(), FLAG, state, variants=VARIANTS)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0x00000000),
        (b"hello", 0x248BFA47),
        (b"Hello, world!", 0xC0363E43),
        (b"The quick brown fox jumps over the lazy dog", 0x2E4FF723),
    ],
)
def test_the_model_hash_is_murmur3_32(data: bytes, expected: int) -> None:
    assert murmur3_32(data) == expected
    assert murmur3_32(b"", seed=1) == 0x514E28B7


def test_the_python_evaluator_hashes_canonical_cbor_of_the_flag_key_and_the_targeting_key() -> None:
    # an array of 2, a text of 12 bytes, a text of 6 bytes
    assert python_bytes(FLAG, "user-1") == bytes.fromhex("82 6c") + b"new-checkout" + b"\x66user-1"
    assert python_bytes(FLAG, "y" * 24)[14:16] == bytes([0x78, 24])  # a longer text takes a length byte
    assert python_bytes(FLAG, "é")[14:] == b"\x62\xc3\xa9"  # UTF-8


def test_the_javascript_model_hashes_the_concatenated_string_latin_1_below_u_0100() -> None:
    assert javascript_hash(FLAG, "user-1") == murmur3_32(b"new-checkoutuser-1")
    assert javascript_hash(FLAG, "é") == murmur3_32(b"new-checkout\xe9")


def mismatches(document: dict[str, Any], keys: list[str]) -> str:
    served = python_variants(document, FLAG, keys)
    model = modelled(document, FLAG, keys, python_hash)
    wrong = [(k, m, s) for k, m, s in zip(keys, model, served, strict=True) if m != s]
    if not wrong:
        return ""
    first = ", ".join(f"{k!r}: model {m!r}, evaluator {s!r}" for k, m, s in wrong[:3])
    return (
        f"the pinned Python evaluator no longer buckets as murmur3 (seed 0) of canonical CBOR "
        f"[flagKey, targetingKey], bucket = hash * total >> 32: {len(wrong)} of {len(keys)} keys differ "
        f"({first}); measure docs/evaluators.md again and say what an upgrade does to running rollouts"
    )


@pytest.mark.parametrize("percent", [*RAMP, 0, 0.01, 33.33])
def test_the_pinned_python_evaluator_buckets_as_the_model_on_flagrolls_layout(percent: float) -> None:
    assert mismatches(layout(percent), [*KEYS, *ODD_KEYS]) == ""


def test_the_model_holds_without_a_control_arm_and_when_promoted() -> None:
    assert mismatches(layout(80, control=False), KEYS[:5000]) == ""
    assert mismatches(layout(100, status=Status.PROMOTED), KEYS[:5000]) == ""


def test_the_model_holds_for_a_thousand_buckets_and_keys_beyond_ascii() -> None:
    """Any change of the hashed bytes moves almost every key to another of 1,000 variants."""
    assert mismatches(fine_document(FLAG), [*KEYS[:5000], *ODD_KEYS]) == ""


def test_the_docs_print_the_disagreement_of_the_python_evaluator_and_the_javascript_model() -> None:
    """The same table is checked against the real JavaScript evaluator in test_javascript_evaluator.py;
    here the JavaScript side is its model, so that the docs are checked where node is missing too."""
    measured = []
    for percent in RAMP:
        document = layout(percent)
        python = python_variants(document, FLAG, KEYS)
        measured.append(agreement(percent, python, modelled(document, FLAG, KEYS, javascript_hash)))
    assert documented_agreement(PAGE) == measured


def test_the_figures_quoted_in_prose_are_the_tables() -> None:
    table = {row.percent: row for row in documented_agreement(PAGE)}
    quoted = 0
    for page in (PAGE, ROOT / "README.md"):
        text = " ".join(page.read_text().split())
        for percent, share in re.findall(r"at (\d+) %, (\d+) % of the users the Python", text):
            assert table[int(percent)].exposed_elsewhere_percent == int(share), f"{page.name}: at {percent} %"
            quoted += 1
        for differ in re.findall(r"every one of the ([\d,]+) who differ", text):
            assert table[50].differ == int(differ.replace(",", "")), page.name
            quoted += 1
        for percent, about in re.findall(r"at (\d+) %, about ([\d,]+) of 20,000 users", text):
            assert round(table[int(percent)].differ, -3) == int(about.replace(",", "")), page.name
            quoted += 1
    assert quoted == 4  # each figure the pages quote (a rewording must keep it checked)


@pytest.mark.parametrize("page", ["how-flagroll-decides.md", "evaluators.md"])
def test_the_docs_say_what_each_evaluator_hashes(page: str) -> None:
    """What the models above check, in the words of the pages that describe the flag file."""
    text = " ".join((ROOT / "docs" / page).read_text().split())
    assert "CBOR" in text  # the Python evaluator …
    assert "`[flagKey, targetingKey]`" in text
    assert "the string `flagKey + targetingKey`" in text  # the JavaScript evaluator
