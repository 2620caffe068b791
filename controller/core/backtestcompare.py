"""``flagroll backtest --compare``: two policy sets replayed on the same readings, side by side per
flag: each set's first would-be rollback and where its rollout ended, and which set rolled back
earlier (with both times), or that only one did. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.core.backtest import Replay
from controller.core.durations import format_duration
from controller.core.policy import pct

SETS = ("--policies", "--compare")


@dataclass(frozen=True, slots=True)
class FlagComparison:
    """One flag as each set replayed it (``None``: that set has no policy for the flag)."""

    flag: str
    base: Replay | None
    other: Replay | None

    @property
    def verdict(self) -> str:
        """Which set rolled back earlier or later, with both times; that only one did; or neither."""
        if self.base is None or self.other is None:
            return f"only {SETS[0] if self.other is None else SETS[1]} has a policy for this flag"
        first, second = self.base.first_rollback, self.other.first_rollback
        if first is None and second is None:
            return "neither set rolled back"
        if second is None:
            assert first is not None
            return f"only {SETS[0]} rolled back, at {_time(first.at)}"
        if first is None:
            return f"only {SETS[1]} rolled back, at {_time(second.at)}"
        if first.at == second.at:
            return f"both rolled back at {_time(first.at)}"
        earlier, later = (SETS[0], SETS[1]) if first.at < second.at else (SETS[1], SETS[0])
        gap = format_duration(abs((second.at - first.at).total_seconds()))
        return (
            f"{earlier} rolled back {gap} earlier than {later}: "
            f"{SETS[0]} at {_time(first.at)}, {SETS[1]} at {_time(second.at)}"
        )


def compare(base: Sequence[Replay], other: Sequence[Replay]) -> list[FlagComparison]:
    """Per flag (in the order first met, ``--policies`` first), the replay of each set."""
    by_base = {r.flag: r for r in reversed(base)}
    by_other = {r.flag: r for r in reversed(other)}
    flags = list(dict.fromkeys([*(r.flag for r in base), *(r.flag for r in other)]))
    return [FlagComparison(flag, by_base.get(flag), by_other.get(flag)) for flag in flags]


def _time(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _side(replay: Replay | None) -> dict[str, Any] | None:
    if replay is None:
        return None
    rollback = replay.first_rollback
    final = replay.final
    return {
        "policy": replay.policy,
        "decisions": [
            {
                "time": _time(m.at),
                "action": m.action.value,
                "from_percent": m.from_percent,
                "to_percent": m.to_percent,
            }
            for m in replay.moves
        ],
        "first_rollback": None if rollback is None else _time(rollback.at),
        "final": None if final is None else {"status": final.status.value, "percent": final.percent},
    }


def as_dict(comparisons: Sequence[FlagComparison]) -> list[dict[str, Any]]:
    """The comparison as plain data (``--json``)."""
    return [
        {"flag": c.flag, "policies": _side(c.base), "compare": _side(c.other), "verdict": c.verdict}
        for c in comparisons
    ]


def render_text(comparisons: Sequence[FlagComparison]) -> list[str]:
    """The comparison for people: the same content as :func:`as_dict`."""
    lines = ["comparison (the same readings for both sets):"]
    for c in comparisons:
        lines.append(f"  flag {c.flag}:")
        for name, replay in zip(SETS, (c.base, c.other), strict=True):
            if replay is None:
                lines.append(f"    {name}: no policy")
                continue
            rollback = replay.first_rollback
            moves = ", ".join(
                f"{_time(m.at)} {m.action.value} {pct(m.from_percent)}% → {pct(m.to_percent)}%"
                for m in replay.moves
            )
            end = (
                ""
                if replay.final is None
                else f"; ends {replay.final.status.value} at {pct(replay.final.percent)} %"
            )
            lines.append(
                f"    {name} ({replay.policy}): first would-be rollback "
                f"{_time(rollback.at) if rollback else 'none'}{end}"
            )
            lines.append(f"      decisions: {moves or 'none but holds'}")
        lines.append(f"    {c.verdict}")
    return lines
