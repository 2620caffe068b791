"""The flagd flag document: the mirrored layout, and rollout state kept in a flag's metadata.

Pure functions over the parsed JSON document. The layout gives ``fractional`` a constant total weight
and puts treatment at the bottom, control at the top and everyone else in between::

    {"fractional": [["on", w], ["off", TOTAL - 2w], ["control", w]]}

so a user's bucket never changes arm as ``w`` grows or shrinks. A ``segment`` wraps it in an ``if``
whose else-branch is ``off``. State lives in the flag's ``metadata`` under ``flagroll.*`` keys (flagd
allows only strings, numbers and booleans there), so one atomic write commits the percentage and the
state together. Flags without ``flagroll.policy`` metadata are not flagroll's and are never changed.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from controller.core.errors import FlagFileError, FlagNotManagedError
from controller.core.ownership import Unmanaged
from controller.core.state import ACTIVE, NOT_STARTED, RolloutState, Status

SCHEMA_URL = "https://flagd.dev/schema/v0/flags.json"
TOTAL_WEIGHT = 10_000  # one weight unit is 0.01 % of users
PREFIX = "flagroll."
TREATMENT, OFF, CONTROL = "on", "off", "control"

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Layout:
    """What a managed flag's targeting serves."""

    percent: float
    control_percent: float
    segment: Mapping[str, Any] | None
    has_control: bool  # the control variant is among the buckets (possibly with weight 0)


def weight(percent: float) -> int:
    return round(percent * TOTAL_WEIGHT / 100)


def targeting(state: RolloutState, segment: Mapping[str, Any] | None) -> JsonObject:
    """The targeting rule for the mirrored layout serving ``state``."""
    on, held = weight(state.percent), weight(state.control_percent)
    if on + held > TOTAL_WEIGHT:
        raise ValueError(f"treatment {state.percent} % and control {state.control_percent} % > 100 %")
    buckets: list[list[Any]] = [[TREATMENT, on], [OFF, TOTAL_WEIGHT - on - held]]
    if state.control:
        buckets.append([CONTROL, held])
    rule: JsonObject = {"fractional": buckets}
    if segment is not None:
        return {"if": [copy.deepcopy(dict(segment)), rule, OFF]}
    return rule


def parse_targeting(rule: Any, key: str) -> Layout:
    """Read back a targeting rule written by :func:`targeting`; anything else is an error."""
    segment: Mapping[str, Any] | None = None
    inner = rule
    if isinstance(rule, dict) and set(rule) == {"if"}:
        branches = rule["if"]
        if not (isinstance(branches, list) and len(branches) == 3 and branches[2] == OFF):
            raise FlagFileError(f"flag {key!r}: targeting 'if' is not flagroll's segment layout")
        if not isinstance(branches[0], dict):
            raise FlagFileError(f"flag {key!r}: the segment rule is not a JSONLogic object")
        segment, inner = branches[0], branches[1]
    if not (isinstance(inner, dict) and set(inner) == {"fractional"}):
        raise FlagFileError(f"flag {key!r}: targeting is not flagroll's fractional layout")
    buckets = inner["fractional"]
    weights: dict[str, int] = {}
    if not isinstance(buckets, list):
        raise FlagFileError(f"flag {key!r}: fractional buckets must be a list")
    for bucket in buckets:
        if not (
            isinstance(bucket, list)
            and len(bucket) == 2
            and isinstance(bucket[0], str)
            and isinstance(bucket[1], int)
            and not isinstance(bucket[1], bool)
            and bucket[1] >= 0
        ):
            raise FlagFileError(f"flag {key!r}: fractional bucket {bucket!r} is not [variant, weight]")
        weights[bucket[0]] = bucket[1]
    order = [b[0] for b in buckets]
    if order not in ([TREATMENT, OFF], [TREATMENT, OFF, CONTROL]):
        raise FlagFileError(
            f"flag {key!r}: fractional buckets must be on, off[, control] in that order, got {order}"
        )
    if sum(weights.values()) != TOTAL_WEIGHT:
        raise FlagFileError(
            f"flag {key!r}: fractional weights add up to {sum(weights.values())}, not {TOTAL_WEIGHT}"
        )
    return Layout(
        percent=weights[TREATMENT] * 100 / TOTAL_WEIGHT,
        control_percent=weights.get(CONTROL, 0) * 100 / TOTAL_WEIGHT,
        segment=segment,
        has_control=CONTROL in weights,
    )


def empty_document() -> JsonObject:
    return {"$schema": SCHEMA_URL, "flags": {}}


def parse_document(text: str, source: str) -> JsonObject:
    """Parse flag-file text; the top level must be an object with a ``flags`` object."""
    if not text.strip():
        return empty_document()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlagFileError(f"{source}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise FlagFileError(f"{source}: JSON nested too deeply") from None
    except ValueError as exc:  # an integer too long to convert (thousands of digits)
        raise FlagFileError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise FlagFileError(f"{source}: the top level must be a JSON object with 'flags'")
    flags = document.setdefault("flags", {})
    if not isinstance(flags, dict):
        raise FlagFileError(f"{source}: 'flags' must be a JSON object")
    return document


def render_document(document: Mapping[str, Any]) -> str:
    """The flag file's text: indented JSON and a final newline."""
    return "".join(_pieces(document)) + "\n"


RENDER_PIECE_CHARS = 1 << 16


def _pieces(document: Mapping[str, Any]) -> Iterator[str]:
    """The indented text in pieces of about RENDER_PIECE_CHARS. Indented output is encoded in
    Python, a few characters at a time; joined all at once, thousands of flags would first make
    millions of tiny strings."""
    encoder = json.JSONEncoder(indent=2, ensure_ascii=False, allow_nan=False)
    piece: list[str] = []
    size = 0
    for chunk in encoder.iterencode(document):
        piece.append(chunk)
        size += len(chunk)
        if size >= RENDER_PIECE_CHARS:
            yield "".join(piece)
            piece.clear()
            size = 0
    yield "".join(piece)


def is_managed(flag: Any) -> bool:
    return (
        isinstance(flag, dict)
        and isinstance(flag.get("metadata"), dict)
        and isinstance(flag["metadata"].get(PREFIX + "policy"), str)
    )


def describe_unmanaged(key: str, flag: Any) -> Unmanaged:
    """What a flag that is not flagroll's serves, for adoption (see :mod:`controller.core.ownership`)."""
    if not isinstance(flag, dict):
        return Unmanaged(key, False, None, "something that is not a flag definition")
    if flag.get("state") == "DISABLED":
        return Unmanaged(
            key, True, None, "nothing: it is DISABLED, so every client gets its own default", True
        )
    targeting = flag.get("targeting")
    if targeting not in (None, {}):
        shown = json.dumps(targeting, ensure_ascii=False)
        return Unmanaged(key, False, None, f"its own targeting rule {shown[:160]}{'…' * (len(shown) > 160)}")
    variants, default = flag.get("variants"), flag.get("defaultVariant")
    if not isinstance(variants, dict) or not isinstance(default, str) or default not in variants:
        return Unmanaged(
            key, False, None, f"no known value: its defaultVariant {default!r} is not among its variants"
        )
    value = variants[default]
    return Unmanaged(
        key, True, value, f"variant {default!r} ({json.dumps(value, ensure_ascii=False)}) to everyone"
    )


def owners(document: Mapping[str, Any]) -> dict[str, str]:
    """Which policy rolls out each managed flag, as its metadata says."""
    return {key: document["flags"][key]["metadata"][PREFIX + "policy"] for key in managed_keys(document)}


def managed_keys(document: Mapping[str, Any]) -> Iterator[str]:
    for key, flag in document.get("flags", {}).items():
        if is_managed(flag):
            yield key


def read_state(document: Mapping[str, Any], key: str, *, check_layout: bool = True) -> RolloutState | None:
    """The rollout state of flag ``key``: None if absent, an error if it is not flagroll's.

    With ``check_layout`` the targeting must serve exactly what the metadata records: a flag edited
    by hand is reported, not silently overwritten.
    """
    flag = document.get("flags", {}).get(key)
    if flag is None:
        return None
    if not is_managed(flag):
        raise FlagNotManagedError(
            f"flag {key!r} exists and is not managed by flagroll (no '{PREFIX}policy' metadata); "
            "flagroll does not take over flags it did not create: remove it from the flag file "
            "or choose another flag key"
        )
    meta = flag["metadata"]
    state = _state_from_metadata(meta, key)
    if check_layout:
        layout = parse_targeting(flag.get("targeting"), key)
        if not (
            math.isclose(layout.percent, state.percent, abs_tol=1e-9)
            and math.isclose(layout.control_percent, state.control_percent, abs_tol=1e-9)
            and layout.has_control == state.control
        ):
            raise FlagFileError(
                f"flag {key!r} was edited outside flagroll: its targeting serves "
                f"{layout.percent:g} % (control {layout.control_percent:g} %) but flagroll recorded "
                f"{state.percent:g} % (control {state.control_percent:g} %); restore the targeting, "
                "or use 'flagroll stop' to take it to 0 %"
            )
    return state


def check_fits(key: str, state: RolloutState, policy_name: str, same_revision: bool, steps: int) -> None:
    """Raise if the stored ``state`` of flag ``key`` cannot be judged by its policy as it stands: a
    step beyond the policy's ``steps`` under the same revision (``same_revision``, however the flag
    wrote it; a new revision continues from the step matching the percentage, so the stored step does
    not matter then)."""
    if same_revision and state.status in ACTIVE and state.step >= steps:
        raise FlagFileError(
            f"flag {key!r}: metadata '{PREFIX}step' {state.step} is beyond policy {policy_name!r}'s "
            f"{steps} steps (revision {state.revision}); restore the flag's metadata, or use 'flagroll stop'"
        )


def _state_from_metadata(meta: Mapping[str, Any], key: str) -> RolloutState:
    def get(name: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
        value = meta.get(PREFIX + name)
        if value is None:
            if required:
                raise FlagFileError(f"flag {key!r}: metadata '{PREFIX}{name}' is missing")
            return None
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise FlagFileError(f"flag {key!r}: metadata '{PREFIX}{name}' has the wrong type")
        if not isinstance(value, kind):
            raise FlagFileError(f"flag {key!r}: metadata '{PREFIX}{name}' has the wrong type")
        return value

    status_text = get("status", str)
    try:
        status = Status(status_text)
    except ValueError:
        raise FlagFileError(f"flag {key!r}: metadata '{PREFIX}status' {status_text!r} is unknown") from None
    try:
        percent = float(get("percent", (int, float)))
    except OverflowError:
        raise FlagFileError(f"flag {key!r}: metadata '{PREFIX}percent' is too large") from None
    if not 0 <= percent <= 100:
        raise FlagFileError(f"flag {key!r}: metadata '{PREFIX}percent' {percent:g} is outside 0–100")
    step = get("step", int)
    steps = get("steps", int)
    if not NOT_STARTED <= step < max(steps, 1):
        raise FlagFileError(
            f"flag {key!r}: metadata '{PREFIX}step' {step} is outside the {steps} steps "
            f"'{PREFIX}steps' records"
        )
    review_text = get("review", str, required=False)

    def moment(name: str, required: bool = False) -> datetime | None:
        return _time(get(name, str, required=required), key, name)

    return RolloutState(
        policy=get("policy", str),
        revision=get("revision", str),
        status=status,
        step=step,
        steps=steps,
        percent=percent,
        control=get("control", bool),
        step_started_at=moment("stepStartedAt", required=step >= 0 or percent > 0),
        updated_at=moment("updatedAt", required=True) or datetime.fromtimestamp(0, UTC),
        owner=get("owner", str, required=False) or "",
        review=_date(review_text, key) if review_text else None,
        reason=get("reason", str, required=False) or "",
        exposed_since=moment("exposedSince"),
        rollback_on_delete=get("onDelete", str, required=False) == "rollback",
        unguarded_reason=get("unguarded", str, required=False) or "",
        unguarded_since=moment("unguardedSince"),
        unguarded_noticed_at=moment("unguardedNoticedAt"),
        absent_since=moment("absentSince"),
        absent_cycles=get("absentCycles", int, required=False) or 0,
        awaiting_approval_since=moment("awaitingApprovalSince"),
        approved_step=get("approvedStep", int, required=False),
    )


def _time(text: str | None, key: str, name: str) -> datetime | None:
    if text is None:
        return None
    field = f"metadata '{PREFIX}{name}'"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise FlagFileError(f"flag {key!r}: {field} {text!r} is not an ISO time") from None
    if value.tzinfo is None:
        raise FlagFileError(f"flag {key!r}: {field} {text!r} has no timezone")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise FlagFileError(f"flag {key!r}: {field} {text!r} is out of range in UTC") from None


def _date(text: str, key: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FlagFileError(f"flag {key!r}: metadata '{PREFIX}review' {text!r} is not an ISO date") from None


def _metadata(state: RolloutState) -> JsonObject:
    meta: JsonObject = {
        PREFIX + "policy": state.policy,
        PREFIX + "revision": state.revision,
        PREFIX + "status": state.status.value,
        PREFIX + "step": state.step,
        PREFIX + "steps": state.steps,
        PREFIX + "percent": _number(state.percent),
        PREFIX + "control": state.control,
        PREFIX + "updatedAt": _iso(state.updated_at),
    }
    if state.step_started_at is not None:
        meta[PREFIX + "stepStartedAt"] = _iso(state.step_started_at)
    if state.exposed_since is not None:
        meta[PREFIX + "exposedSince"] = _iso(state.exposed_since)
    if state.owner:
        meta[PREFIX + "owner"] = state.owner
    if state.review is not None:
        meta[PREFIX + "review"] = state.review.isoformat()
    if state.reason:
        meta[PREFIX + "reason"] = state.reason
    if state.rollback_on_delete:
        meta[PREFIX + "onDelete"] = "rollback"
    if state.unguarded_reason:
        meta[PREFIX + "unguarded"] = state.unguarded_reason
    for name, moment in (
        ("unguardedSince", state.unguarded_since),
        ("unguardedNoticedAt", state.unguarded_noticed_at),
        ("absentSince", state.absent_since),
        ("awaitingApprovalSince", state.awaiting_approval_since),
    ):
        if moment is not None:
            meta[PREFIX + name] = _iso(moment)
    if state.absent_cycles:
        meta[PREFIX + "absentCycles"] = state.absent_cycles
    if state.approved_step is not None:
        meta[PREFIX + "approvedStep"] = state.approved_step
    return meta


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def with_state(document: Mapping[str, Any], key: str, state: RolloutState) -> JsonObject:
    """Flag ``key`` of ``document`` with ``state`` in its metadata and nothing else changed: what it
    serves (targeting, variants, state) stays as it is, even if edited by hand. For flagroll's own
    marks (unguarded, a missing policy counted), never for a move."""
    existing = document.get("flags", {}).get(key)
    if not is_managed(existing):
        raise FlagNotManagedError(f"flag {key!r} is not managed by flagroll; not writing it")
    meta = {k: v for k, v in existing["metadata"].items() if not k.startswith(PREFIX)}
    return {**existing, "metadata": {**meta, **_metadata(state)}}


def write_flag(
    document: Mapping[str, Any],
    key: str,
    state: RolloutState,
    *,
    variants: Mapping[str, Any] | None = None,
    segment: Mapping[str, Any] | None = None,
    keep_segment: bool = False,
) -> JsonObject:
    """A new document with flag ``key`` serving ``state``; every other flag is left as it was.

    ``variants`` and ``segment`` come from the policy; a human command (stop, pause, resume) has no
    policy at hand and passes ``keep_segment=True`` to reuse what the flag already has.
    """
    flag = flag_entry(document, key, state, variants=variants, segment=segment, keep_segment=keep_segment)
    new_document = dict(document)
    new_document["flags"] = {**document.get("flags", {}), key: flag}
    return new_document


def flag_entry(
    document: Mapping[str, Any],
    key: str,
    state: RolloutState,
    *,
    variants: Mapping[str, Any] | None = None,
    segment: Mapping[str, Any] | None = None,
    keep_segment: bool = False,
    adopt: bool = False,
) -> JsonObject:
    """The definition of flag ``key`` serving ``state``, from what ``document`` holds for it (see
    :func:`write_flag`). Many flags change in one cycle: the caller sets each in one copy.

    ``adopt``: the flag exists and is not flagroll's, and a policy takes it (its targeting and
    variants are replaced, its own metadata kept, and a disabled flag is enabled)."""
    flags = document.get("flags", {})
    existing = flags.get(key)
    if existing is not None and not is_managed(existing) and not adopt:
        raise FlagNotManagedError(f"flag {key!r} is not managed by flagroll; not writing it")
    previous: JsonObject = existing if isinstance(existing, dict) else {}
    if keep_segment:
        try:
            segment = parse_targeting(previous.get("targeting"), key).segment if previous else None
        except FlagFileError:
            if state.percent > 0:
                raise
            segment = None  # a hand-edited rule: at 0 % nobody is exposed, with or without it
    if variants is None:
        old = previous.get("variants", {})
        variants = {TREATMENT: old.get(TREATMENT, True), OFF: old.get(OFF, False)}
    served = {TREATMENT: variants[TREATMENT], OFF: variants[OFF]}
    rule = targeting(state, segment)
    if state.control:
        served[CONTROL] = copy.deepcopy(variants[OFF])
    kept_meta = {k: v for k, v in previous.get("metadata", {}).items() if not k.startswith(PREFIX)}
    flag: JsonObject = {
        "state": "ENABLED" if adopt else previous.get("state", "ENABLED"),
        "variants": copy.deepcopy(served),
        "defaultVariant": OFF,
        "targeting": rule,
        "metadata": {**kept_meta, **_metadata(state)},
    }
    return flag
