"""``kind: Freeze``: a document in the policy directory that stops every advance it covers.

    apiVersion: flagroll/v1
    kind: Freeze
    metadata: {name: holiday-freeze}
    spec:
      from: 2026-12-24T00:00:00Z        # RFC 3339 with an offset, or a date
      to: 2027-01-02T00:00:00Z          # optional: without it, until the document is removed
      reason: "holiday freeze"
      selector: {matchLabels: {team: checkout}}   # optional: without it, every rollout

A date without a time is a whole **UTC** day: ``from: 2026-12-24`` starts at 2026-12-24 00:00 UTC and
``to: 2027-01-02`` ends at the end of 2027-01-02 (both days included, as a schedule's freeze dates).
An instant ``to`` is not part of the freeze. The model, its rules across fields and its JSON Schema;
what it covers at a moment is :mod:`controller.core.freezes`. Nothing here reads files or clocks.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema

from controller.core.policy import NAME_PATTERN, Metadata, Model, Path

FREEZE_KIND = "Freeze"

# A label key as Kubernetes writes one (an optional DNS prefix and '/', then a name of at most 63
# characters) and a label value (at most 63, possibly empty).
_LABEL_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.\-]{0,61}[A-Za-z0-9])?"
LABEL_KEY = re.compile(rf"^(?:[a-z0-9](?:[a-z0-9.\-]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
LABEL_VALUE = re.compile(rf"^(?:{_LABEL_NAME})?$")


def _moment(value: Any) -> date | datetime:
    """A date (a whole UTC day) or an instant with its offset (RFC 3339), as YAML or text gives it."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is neither a date (2026-12-24) nor an RFC 3339 time with an offset "
                "(2026-12-24T00:00:00Z)"
            ) from None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError(
                f"{value.isoformat()} has no offset: write it in UTC with Z (2026-12-24T00:00:00Z) or "
                "give its offset (+01:00), or give a date for a whole UTC day"
            )
        return value.astimezone(UTC)
    if isinstance(value, date):
        return value
    raise ValueError(f"a date or an RFC 3339 time is needed, not {value!r}")


Moment = Annotated[
    date | datetime,
    BeforeValidator(_moment),
    WithJsonSchema(
        {
            "type": "string",
            "anyOf": [{"format": "date"}, {"format": "date-time"}],
            "description": "A date (a whole UTC day) or an RFC 3339 time with an offset.",
        }
    ),
]


class Selector(Model):
    """Which rollouts a freeze covers: those whose policy's metadata.labels hold every pair."""

    match_labels: dict[str, str] = Field(
        alias="matchLabels",
        description="Labels a policy's metadata.labels must all hold (equal values) to be covered.",
    )


class FreezeSpec(Model):
    starts: Moment = Field(alias="from", description="When the freeze begins: a date or an RFC 3339 time.")
    ends: Moment | None = Field(
        None,
        alias="to",
        description="When it ends (a date: the end of that UTC day; a time: not part of the freeze). "
        "Without it, the freeze lasts until the document is removed.",
    )
    reason: str = Field("", description="Why: shown in every decision the freeze holds.")
    selector: Selector | None = Field(
        None, description="The rollouts it covers, by their policy's labels; without it, every rollout."
    )


class FreezeDocument(Model):
    """One ``kind: Freeze`` document."""

    api_version: Literal["flagroll/v1"]
    kind: Literal["Freeze"]
    metadata: Metadata
    spec: FreezeSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def begins_at(self) -> datetime:
        """The first instant frozen, in UTC."""
        return begins(self.spec.starts)

    @property
    def ends_at(self) -> datetime | None:
        """The first instant no longer frozen, in UTC; None while the document stays."""
        return ends(self.spec.ends) if self.spec.ends is not None else None


def begins(moment: date | datetime) -> datetime:
    if isinstance(moment, datetime):
        return moment
    return datetime.combine(moment, time(), tzinfo=UTC)


# The calendar's last instant: a freeze "until 9999-12-31" ends there (the next midnight does not exist).
END_OF_CALENDAR = datetime.max.replace(tzinfo=UTC)


def ends(moment: date | datetime) -> datetime:
    """A date ends at the next UTC midnight: the day is included."""
    if isinstance(moment, datetime):
        return moment
    if moment == date.max:
        return END_OF_CALENDAR
    return datetime.combine(moment + timedelta(days=1), time(), tzinfo=UTC)


def semantic_issues(freeze: FreezeDocument) -> list[tuple[Path, str, str]]:
    """Rules across fields: (path, message, severity)."""
    found: list[tuple[Path, str, str]] = []
    if not NAME_PATTERN.match(freeze.name):
        found.append(
            (
                ("metadata", "name"),
                f"{freeze.name!r} is not a valid name: use lower-case letters, digits, '-' and '.', "
                "starting and ending with a letter or digit",
                "error",
            )
        )
    end = freeze.ends_at
    if end is not None and end <= freeze.begins_at:
        found.append(
            (
                ("spec", "to"),
                f"'to' ({_shown(freeze.spec.ends)}) is not after 'from' ({_shown(freeze.spec.starts)}): "
                "the freeze would cover nothing",
                "error",
            )
        )
    if freeze.spec.selector is not None:
        found.extend(_selector_issues(freeze.spec.selector))
    if not freeze.spec.reason:
        found.append((("spec", "reason"), "no reason: say why, for the people it holds", "warning"))
    return found


def _selector_issues(selector: Selector) -> list[tuple[Path, str, str]]:
    path: Path = ("spec", "selector", "matchLabels")
    if not selector.match_labels:
        return [
            (
                path,
                "an empty matchLabels would cover every rollout: leave the selector out to say so",
                "error",
            )
        ]
    found: list[tuple[Path, str, str]] = []
    for key, value in selector.match_labels.items():
        if not LABEL_KEY.match(key):
            found.append(((*path, key), f"{key!r} is not a label name", "error"))
        elif not LABEL_VALUE.match(value):
            found.append(((*path, key), f"{value!r} is not a label value", "error"))
    return found


def _shown(moment: date | datetime | None) -> str:
    if isinstance(moment, datetime):
        return moment.isoformat().replace("+00:00", "Z")
    return moment.isoformat() if moment is not None else "none"


def json_schema() -> dict[str, object]:
    """The JSON Schema of a Freeze document, for editors and CI."""
    schema = FreezeDocument.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "flagroll Freeze"
    return schema
