"""The last unguarded record of each flag, so that an unguarded flag is recorded when its reason
changes and again every :data:`~controller.core.guarding.NOTICE_REPEAT_SECONDS`, not every cycle.

Seeded from the decision log the first time a flag is asked about in a process, so that a restart (or
a CronJob's next run) does not repeat a notice that is still fresh. A flag that a policy judges again
is forgotten: its next unguarded spell is recorded at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from controller.adapters.decisionlog import DecisionLog, last_by_flag
from controller.core.guarding import Noticed


class Reminders:
    def __init__(self, decision_log: DecisionLog | None, log: Any) -> None:
        self.decision_log = decision_log
        self.log = log
        self._known: dict[str, Noticed | None] = {}

    def prime(self, keys: Iterable[str]) -> None:
        """Read the last record of each flag not asked about yet in this process (one pass)."""
        unseen = [key for key in keys if key not in self._known]
        if not unseen:
            return
        found = {}
        if self.decision_log is not None:
            try:
                found = last_by_flag(self.decision_log.path, unseen)
            except OSError as exc:
                self.log.error("decision_log_unreadable", path=str(self.decision_log.path), error=str(exc))
        for key in unseen:
            record = found.get(key)
            self._known[key] = _noticed(record) if record is not None else None

    def last(self, key: str) -> Noticed | None:
        self.prime([key])
        return self._known.get(key)

    def said(self, key: str, reason: str, at: datetime) -> None:
        self._known[key] = Noticed(reason, at)

    def forget(self, key: str) -> None:
        self._known[key] = None


def _noticed(record: dict[str, Any]) -> Noticed | None:
    if record.get("guarded") is not False:
        return None
    try:
        at = datetime.fromisoformat(str(record.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return Noticed(str(record.get("reason", "")), at) if at.tzinfo is not None else None
