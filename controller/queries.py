"""Which PromQL a rollout needs this cycle, and what an answer to one query can be.

A policy's queries are templates: ``{{variant}}`` becomes the arm's variant (``on`` for treatment,
``control`` for control) and ``{{flag}}`` the flag key. Substitution is plain text replacement with
values escaped for a PromQL label matcher; nothing in a policy is ever evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from controller.flagd import CONTROL, TREATMENT
from controller.policy import Policy

_PLACEHOLDER = re.compile(r"\{\{\s*(variant|flag)\s*\}\}")


class Arm(StrEnum):
    TREATMENT = "treatment"
    CONTROL = "control"

    @property
    def variant(self) -> str:
        return TREATMENT if self is Arm.TREATMENT else CONTROL


class Source(StrEnum):
    TRAFFIC = "traffic"
    GUARDRAIL = "guardrail"
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True, order=True)
class QueryKey:
    source: Source
    name: str
    arm: Arm


@dataclass(frozen=True)
class PlannedQuery:
    key: QueryKey
    promql: str


class ReadingKind(StrEnum):
    VALUE = "value"
    NO_DATA = "no_data"
    ERROR = "error"


@dataclass(frozen=True)
class Reading:
    """Prometheus's answer to one query, already judged for shape: a number, no data, or an error."""

    kind: ReadingKind
    value: float | None = None
    detail: str = ""

    @staticmethod
    def of(value: float) -> Reading:
        return Reading(ReadingKind.VALUE, value)

    @staticmethod
    def no_data(detail: str) -> Reading:
        return Reading(ReadingKind.NO_DATA, None, detail)

    @staticmethod
    def error(detail: str) -> Reading:
        return Reading(ReadingKind.ERROR, None, detail)


def escape_label_value(value: str) -> str:
    """Escape a value for use inside a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(template: str, *, flag: str, arm: Arm) -> str:
    values = {"variant": escape_label_value(arm.variant), "flag": escape_label_value(flag)}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def arms(control: bool) -> tuple[Arm, ...]:
    return (Arm.TREATMENT, Arm.CONTROL) if control else (Arm.TREATMENT,)


def plan(policy: Policy, *, with_checkpoint: bool) -> list[PlannedQuery]:
    """Every query the policy needs this cycle, one per arm."""
    spec = policy.spec
    templates: list[tuple[Source, str, str]] = []
    if spec.traffic is not None:
        templates.append((Source.TRAFFIC, "traffic", spec.traffic.query))
    templates.extend((Source.GUARDRAIL, g.name, g.query) for g in spec.guardrails)
    if with_checkpoint and spec.checkpoint is not None:
        templates.extend(
            (Source.CHECKPOINT, e.name, e.query) for e in spec.checkpoint.expect if e.query is not None
        )
    return [
        PlannedQuery(QueryKey(source, name, arm), render(template, flag=policy.flag_key, arm=arm))
        for source, name, template in templates
        for arm in arms(spec.control)
    ]


class MetricsSource(Protocol):
    """Where readings come from: Prometheus in production, anything with this method in tests."""

    async def query_all(self, queries: Sequence[PlannedQuery]) -> dict[QueryKey, Reading]: ...
