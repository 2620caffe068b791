"""Verified serving: after the flag file changes, does the flag server serve what it now says?

Pure: what to verify after a change (:func:`expectation`), how to judge one round of answers from the
flag server (:func:`judge`), and the decision-log record of the outcome (:func:`verification_record`).
Asking the server is :mod:`controller.adapters.ofrep`'s job; polling until the answers fit, or a
deadline passes, is the loop's (:mod:`controller.reconciler.verify`).

Two checks, over a fixed sample of targeting keys (:func:`sample_keys`: the same keys for every flag,
never chosen by flagroll's own hash, as the server may bucket users differently):

- **off**: after a write that takes a flag's treatment exposure to 0 (a rollback, a stop, an
  ``onDelete`` rollback), every key must be served the ``off`` variant, whichever evaluator serves
  the flag: at 0 % no bucketing can put a key anywhere else.
- **share**: after a write that changes a flag's treatment or control share (an advance, a lower
  revision), the number of sampled keys served ``on`` (and ``control``) must be plausible for the
  new shares: inside the range a fair draw lands in but for :data:`SHARE_ALPHA` (split between the
  tails). Not key by key: another evaluator buckets each key its own way, only the shares agree. A
  server that never reloads the flag file keeps serving the old shares, which fall outside.

A verification never moves a flag: its outcome is a record (``action: verify``), a metric and, when
the server does not serve what the file says, a notification.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from controller.core.errors import FlagFileError
from controller.core.flagd import CONTROL, OFF, TREATMENT, parse_targeting, read_state
from controller.core.policy import pct
from controller.core.state import Action, RolloutState

Record = dict[str, Any]

SAMPLE_KEY_PREFIX = "flagroll-verify-"
DEFAULT_SAMPLE = 1000  # keys asked per round
SHARE_ALPHA = 1e-4  # a fair draw falls outside the plausible range this rarely (both tails together)
DISABLED = "(disabled)"  # the server says the flag is disabled: each caller gets its own default
NO_VARIANT = "(no variant)"  # the server named no variant (it defers to the caller's default)


class Check(StrEnum):
    OFF = "off"  # every key served off
    SHARE = "share"  # the served shares plausible for the written ones


class Outcome(StrEnum):
    CONFIRMED = "confirmed"
    UNVERIFIED = "unverified"


def sample_keys(count: int) -> list[str]:
    """The targeting keys asked: ``flagroll-verify-0`` … in order, the same for every flag."""
    return [f"{SAMPLE_KEY_PREFIX}{index}" for index in range(count)]


@dataclass(frozen=True)
class Expectation:
    """What the flag server should serve for ``flag`` now that the flag file holds ``state``."""

    flag: str
    check: Check
    state: RolloutState
    before_percent: float
    disabled: bool = False  # the flag file has the flag DISABLED: the server says so for every key

    @property
    def written_at(self) -> datetime:
        return self.state.updated_at


def serves_differently(before: RolloutState, after: RolloutState) -> bool:
    """Whether the flag file's flag serves other shares than before (a move, not a mark)."""
    return (before.percent, before.control_percent) != (after.percent, after.control_percent)


def expectation(
    flag: str, before: RolloutState | None, after: RolloutState, *, share: bool
) -> Expectation | None:
    """What to verify once the flag file went from ``before`` (None: the flag was not there) to
    ``after`` (None: nothing). A state older than the one seen before changes nothing."""
    if before is not None and (after.updated_at < before.updated_at or not serves_differently(before, after)):
        return None
    before_percent = before.percent if before is not None else 0.0
    if after.percent <= 0:
        return Expectation(flag, Check.OFF, after, before_percent) if before_percent > 0 else None
    if share:
        return Expectation(flag, Check.SHARE, after, before_percent)
    return None


def against_file(wanted: Expectation, document: Mapping[str, Any]) -> tuple[Expectation | None, str]:
    """The expectation as the flag file stands when the verification starts, or None and why it is
    not verified: the flag moved meanwhile (a newer change is verified instead), or a share cannot
    be checked with targeting keys alone (a segment, a DISABLED flag)."""
    entry = document.get("flags", {}).get(wanted.flag)
    try:
        current = read_state(document, wanted.flag, check_layout=False)
    except FlagFileError as exc:
        return None, f"its state cannot be read: {exc}"
    if not isinstance(entry, dict) or current is None:
        return None, "it left the flag file"
    if serves_differently(current, wanted.state) or current.updated_at < wanted.state.updated_at:
        return None, "it moved again meanwhile"
    disabled = entry.get("state") == "DISABLED"
    if wanted.check is Check.SHARE:
        if disabled:
            return None, "it is DISABLED: every caller gets its own default, there is no share to check"
        try:
            segment = parse_targeting(entry.get("targeting"), wanted.flag).segment
        except FlagFileError as exc:
            return None, f"its targeting is not flagroll's layout: {exc}"
        if segment is not None:
            return None, "it has a segment: keys with nothing but a targeting key fall outside it"
    return Expectation(wanted.flag, wanted.check, wanted.state, wanted.before_percent, disabled), ""


# Answers ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One key's answer from the flag server."""

    variant: str | None = None  # the variant served; None: none named
    disabled: bool = False  # the server says the flag is disabled
    error: str | None = None  # no usable answer, and why

    @classmethod
    def served(cls, variant: str | None) -> Answer:
        return cls(variant=variant)

    @classmethod
    def flag_disabled(cls) -> Answer:
        return cls(disabled=True)

    @classmethod
    def failed(cls, error: str) -> Answer:
        return cls(error=error)


@dataclass(frozen=True)
class Tally:
    """One round: how many keys were served each variant, and the failed answers."""

    asked: int  # keys in the sample
    served: Mapping[str, int]  # variant (or DISABLED, NO_VARIANT) → keys
    errors: int = 0
    first_error: str | None = None

    @property
    def answered(self) -> int:
        return sum(self.served.values())

    def count(self, variant: str) -> int:
        return self.served.get(variant, 0)


def tally(answers: Sequence[Answer], asked: int) -> Tally:
    served: dict[str, int] = {}
    errors = 0
    first_error = None
    for answer in answers:
        if answer.error is not None:
            errors += 1
            first_error = first_error or answer.error
            continue
        name = DISABLED if answer.disabled else answer.variant if answer.variant is not None else NO_VARIANT
        served[name] = served.get(name, 0) + 1
    return Tally(asked, dict(sorted(served.items())), errors, first_error)


def binomial_range(trials: int, share: float, alpha: float = SHARE_ALPHA) -> tuple[int, int]:
    """The counts a fair draw of ``trials`` keys, each in the arm with probability ``share``, lands
    in but for ``alpha`` (half in each tail): exact, from the binomial distribution."""
    if trials <= 0 or share <= 0:
        return 0, 0
    if share >= 1:
        return trials, trials
    log_p, log_q = math.log(share), math.log1p(-share)
    head = math.lgamma(trials + 1)

    def mass(k: int) -> float:
        ways = head - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
        return math.exp(ways + k * log_p + (trials - k) * log_q)

    low, tail = 0, 0.0
    while low < trials and tail + mass(low) <= alpha / 2:
        tail += mass(low)
        low += 1
    high, tail = trials, 0.0
    while high > low and tail + mass(high) <= alpha / 2:
        tail += mass(high)
        high -= 1
    return low, high


@dataclass(frozen=True)
class Verdict:
    """Whether one round fits the expectation, and what it shows, in words."""

    ok: bool
    found: str
    plausible: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # share: each arm's range


def _served_text(t: Tally, variants: Sequence[str]) -> str:
    parts = [f"{name} to {t.count(name)}" for name in variants if t.count(name)]
    if not parts:
        return f"none of the {t.asked} sampled keys anything"
    return f"{parts[0]} of {t.asked} sampled keys" + "".join(f", {p}" for p in parts[1:])


def judge(wanted: Expectation, t: Tally, alpha: float = SHARE_ALPHA) -> Verdict:
    """Whether a complete round of answers shows the flag served as the file says."""
    if t.errors:
        return Verdict(False, f"gave no usable answer for {t.errors} of the keys asked: {t.first_error}")
    if wanted.check is Check.OFF:
        return _judge_off(wanted, t)
    return _judge_share(wanted, t, alpha)


def _judge_off(wanted: Expectation, t: Tally) -> Verdict:
    fine = {OFF, DISABLED} if wanted.disabled else {OFF}
    others = [name for name in (TREATMENT, CONTROL, *sorted(t.served)) if name not in fine]
    others = list(dict.fromkeys(others))  # treatment first, then control, then the rest
    if t.answered == t.asked and not any(t.count(name) for name in others):
        disabled = f" (the flag DISABLED for {t.count(DISABLED)})" if t.count(DISABLED) else ""
        return Verdict(True, f"serves off to all {t.asked} sampled keys{disabled}")
    return Verdict(False, "serves " + _served_text(t, others))


def _judge_share(wanted: Expectation, t: Tally, alpha: float) -> Verdict:
    state = wanted.state
    shares = {TREATMENT: state.percent / 100, CONTROL: state.control_percent / 100}
    shown = [arm for arm, share in shares.items() if share > 0 or t.count(arm)]
    plausible = {arm: binomial_range(t.asked, shares[arm], alpha) for arm in shown}
    strays = [name for name in t.served if name not in (TREATMENT, OFF, CONTROL)]
    parts = [f"{arm} to {t.count(arm)} (plausible {low}–{high})" for arm, (low, high) in plausible.items()]
    parts += [f"{name} to {t.count(name)} (not a variant of flagroll's layout)" for name in strays]
    found = f"serves {', '.join(parts) or 'off only'} among {t.asked} sampled keys"
    inside = all(low <= t.count(arm) <= high for arm, (low, high) in plausible.items())
    return Verdict(t.answered == t.asked and not strays and inside, found, plausible)


# The record -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """The outcome of one verification, for its record."""

    wanted: Expectation
    outcome: Outcome
    url: str
    keys: int
    rounds: int  # complete rounds asked
    waited_seconds: float  # from the first question to the outcome
    deadline_seconds: float
    last: Tally | None = None  # the last complete round (None: none completed)
    verdict: Verdict | None = None
    seconds: float | None = None  # confirmed: from the write to the confirming round's last answer
    error: str | None = None  # why no round completed, or the last round's failure


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _written(wanted: Expectation) -> str:
    state = wanted.state
    control = f", control {pct(state.control_percent)} %" if state.control_percent else ""
    return (
        f"the write at {_iso(wanted.written_at)} ({state.status.value}, {pct(wanted.before_percent)} % → "
        f"{pct(state.percent)} %{control})"
    )


def _reason(v: Verification) -> str:
    wanted, found = v.wanted, (v.verdict.found if v.verdict is not None else None)
    server = f"the flag server ({v.url})"
    if v.outcome is Outcome.CONFIRMED:
        seconds = f"{v.seconds:.2f}s" if v.seconds is not None else "?"
        return f"serving verified: {server} {found}, {seconds} after {_written(wanted)}"
    head = f"SERVING NOT VERIFIED after {_written(wanted)}: "
    if found is None:
        return head + f"{server} gave no complete answer within {v.deadline_seconds:g}s: {v.error}"
    if v.last is not None and v.last.errors:
        return head + f"{server} {found} (after {v.waited_seconds:.1f}s); the flag was not moved"
    if wanted.check is Check.OFF:
        return (
            head + f"after {v.waited_seconds:.1f}s {server} still {found}; the flag file says 0 %: check "
            "that the flag server reads this flag file and reloads it (the flag was not moved)"
        )
    return (
        head + f"after {v.waited_seconds:.1f}s {server} {found}, not plausible for what the flag file "
        "says: it may serve an older or another flag file (the flag was not moved)"
    )


def verification_record(v: Verification, now: datetime) -> Record:
    """The decision-log record of a verification (``action: verify``): the fields every record has,
    the state verified, and ``serving`` with the evidence."""
    state = v.wanted.state
    serving: Record = {
        "check": v.wanted.check.value,
        "outcome": v.outcome.value,
        "url": v.url,
        "written_at": _iso(v.wanted.written_at),
        "seconds": round(v.seconds, 3) if v.seconds is not None else None,
        "waited_seconds": round(v.waited_seconds, 3),
        "deadline_seconds": v.deadline_seconds,
        "keys": v.keys,
        "rounds": v.rounds,
        "percent": state.percent,
        "control_percent": state.control_percent,
        "found": v.verdict.found if v.verdict is not None else None,
        "served": dict(v.last.served) if v.last is not None else None,
        "errors": v.last.errors if v.last is not None else None,
        "error": v.error,
        "plausible": (
            {arm: list(bounds) for arm, bounds in v.verdict.plausible.items()}
            if v.verdict is not None and v.verdict.plausible
            else None
        ),
    }
    return {
        "time": _iso(now),
        "policy": state.policy,
        "flag": v.wanted.flag,
        "revision": state.revision,
        "action": Action.VERIFY.value,
        "from_percent": state.percent,
        "to_percent": state.percent,
        "from_step": state.step,
        "to_step": state.step,
        "steps": state.steps,
        "status": state.status.value,
        "reason": _reason(v),
        "notes": [],
        "checkpoint": None,
        "checks": [],
        "aim": None,
        "mechanism": None,
        "owner": state.owner or None,
        "review": state.review.isoformat() if isinstance(state.review, date) else None,
        "stale": state.is_stale(now.date()),
        "actor": "controller",
        "dry_run": False,
        "guarded": not (state.unguarded and state.exposed),
        "serving": serving,
    }


def describes(record: Mapping[str, Any], state: RolloutState) -> bool:
    """Whether a verification record is about what the flag serves now: the same shares, written
    no earlier than the flag's last move (later marks of flagroll's own change nothing served)."""
    serving = record.get("serving")
    if not is_verification(record) or not isinstance(serving, dict):
        return False
    if (serving.get("percent"), serving.get("control_percent")) != (state.percent, state.control_percent):
        return False
    try:
        written = datetime.fromisoformat(str(serving.get("written_at")).replace("Z", "+00:00"))
    except ValueError:
        return False
    moved = state.step_started_at
    return written.tzinfo is not None and (
        moved is None or written >= moved.replace(microsecond=moved.microsecond // 1000 * 1000)
    )


def summary(record: Mapping[str, Any]) -> str:
    """A verification in one short line, for ``flagroll status`` and ``explain``."""
    serving = record.get("serving")
    if not isinstance(serving, dict):
        return "serving: ?"
    found = serving.get("found")
    shown = f"the flag server {found}" if found else f"no answer: {serving.get('error') or '?'}"
    if serving.get("outcome") == Outcome.CONFIRMED:
        seconds = serving.get("seconds")
        after = f" {seconds:g}s after the write" if isinstance(seconds, int | float) else ""
        return f"serving verified{after}: {shown}"
    return f"SERVING NOT VERIFIED: {shown}"


def is_verification(record: Mapping[str, Any]) -> bool:
    return record.get("action") == Action.VERIFY.value


def unverified(record: Mapping[str, Any]) -> bool:
    """A verification record whose flag server did not serve what the flag file says."""
    serving = record.get("serving")
    return is_verification(record) and isinstance(serving, dict) and serving.get("outcome") == "unverified"
