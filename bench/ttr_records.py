"""Predicates on what the time-to-rollback benchmark reads: the controller's decision records and
the OpenFeature client's evaluations."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from openfeature.flag_evaluation import FlagEvaluationDetails

Record = Mapping[str, Any]


def passing(record: Record, percent: float) -> bool:
    """A hold at ``percent`` in which every check (traffic and guardrails) passed."""
    checks = record.get("checks") or []
    return (
        record.get("action") == "hold"
        and record.get("status") == "progressing"
        and record.get("to_percent") == percent
        and bool(checks)
        and all(isinstance(c, Mapping) and c.get("verdict") == "pass" for c in checks)
    )


def tripped(record: Record) -> Mapping[str, Any] | None:
    """The first failed guardrail check of a rollback record."""
    return next(
        (
            c
            for c in record.get("checks") or []
            if isinstance(c, Mapping) and c.get("kind") == "guardrail" and c.get("verdict") == "fail"
        ),
        None,
    )


def record_time(record: Record) -> datetime:
    moment = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"record time without a zone: {record['time']!r}")
    return moment.astimezone(UTC)


def is_on(details: FlagEvaluationDetails[bool]) -> bool:
    return details.error_code is None and details.value is True and details.variant == "on"


def is_off(details: FlagEvaluationDetails[bool]) -> bool:
    return details.error_code is None and details.value is False and details.variant == "off"
