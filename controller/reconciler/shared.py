"""What the phases of a cycle share: its result, the clock, the collaborators' protocols, and the
"report each problem once" memory."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from controller.core.errors import Issue
from controller.core.records import Record
from controller.core.state import RolloutState

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CycleResult:
    records: list[Record] = field(default_factory=list)  # only with keep_records (tests, the demo)
    decisions: int = 0  # records made (kept or not)
    problems: list[str] = field(default_factory=list)  # flags that could not be reconciled
    policy_errors: list[Issue] = field(default_factory=list)
    wrote: bool = False
    prometheus_answered: bool = True  # False when every query of the cycle was an error
    states: dict[str, RolloutState] = field(default_factory=dict)  # every managed flag, as written
    unguarded: dict[str, str] = field(default_factory=dict)  # exposed flags no policy judges, and why
    unjudged: set[str] = field(default_factory=set)  # managed flags no policy judges, exposed or not

    @property
    def ok(self) -> bool:
        return not self.problems and not self.policy_errors


class CycleObserver(Protocol):
    """Told about every cycle (metrics, health): see :class:`controller.adapters.telemetry.Telemetry`."""

    def beat(self) -> None: ...

    def recorded(self, records: Sequence[Record]) -> None:
        """Records as each commit makes them (from a worker thread), a chunk at a time."""

    def cycle_done(
        self,
        *,
        ok: bool,
        policy_errors: int,
        prometheus_answered: bool,
        duration_seconds: float,
        states: Mapping[str, RolloutState] | None = None,
        unguarded: Collection[str] = (),
        unjudged: Collection[str] = (),
    ) -> None: ...

    def cycle_failed(self, duration_seconds: float) -> None: ...

    def follower(self) -> None: ...


@runtime_checkable
class Refreshing(Protocol):
    """A store with derived output to keep current between writes (the merged file of an overlay)."""

    def refresh(self, *, force: bool = False) -> bool: ...


class Leadership(Protocol):
    """Who may write: consulted before each cycle and before each write."""

    def is_leader(self) -> bool: ...


class Reported:
    """Each distinct problem reported once, by key: a broken policy must not flood the log every
    cycle. A key forgotten (the problem cleared) is reported again when it comes back."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self._keys: set[str] = set()

    def first(self, key: str) -> bool:
        """Whether ``key`` is new (it is remembered from now on)."""
        if key in self._keys:
            return False
        self._keys.add(key)
        return True

    def once(self, key: str, event: str, **fields: Any) -> None:
        """Log ``event`` as an error the first time ``key`` is seen."""
        if self.first(key):
            self.log.error(event, **fields)

    def forget(self, key: str) -> None:
        self._keys.discard(key)
