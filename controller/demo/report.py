"""What ``flagroll demo`` prints, from decision records alone: one line per cycle, the statistical
guardrail's comparison with the control arm beneath it, and the summary's account of which guardrail
tripped first and why, in words for the person on call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from controller.core.checkrecord import describe, fmt
from controller.core.policy import pct

Record = Mapping[str, Any]

_RANK = {"fail": 3, "error": 2, "no_data": 1, "pass": 0}
_INDENT = " " * 10


def _checks(record: Record) -> list[Mapping[str, Any]]:
    return [c for c in record.get("checks", []) if isinstance(c, Mapping)]


def _statistical(check: Mapping[str, Any]) -> bool:
    """An errorRatio or latency guardrail: judged against the control arm by a confidence sequence."""
    return check.get("kind") == "guardrail" and check.get("metric") is not None


def long_lines(text: str, width: int = 200) -> str:
    """``text`` with each line longer than ``width`` cut short (a query of eight subqueries is
    kilobytes long; ``flagroll log`` shows it in full)."""
    return "\n".join(
        line if len(line) <= width else f"{line[: width - 40]} … (in full: flagroll log)"
        for line in text.splitlines()
    )


def percent(share: Any) -> str:
    """``2.1 %`` for 0.021; ``—`` for no value."""
    return f"{100 * share:.1f} %" if isinstance(share, int | float) else "—"


def points(share: Any) -> str:
    """A difference of shares in percentage points, signed: ``+0.4 pt``, ``-1.2 pt``, ``+0.03 pt``."""
    if not isinstance(share, int | float):
        return "— pt"
    value = 100 * share
    return f"{value:+.2f} pt" if abs(value) < 0.1 else f"{value:+.1f} pt"


def _count(value: Any) -> str:
    return fmt(round(value)) if isinstance(value, int | float) else "—"


def cycle_line(record: Record, at: str) -> str:
    """``+ 24.4s   50%  step 3/3   hold      error-rate 0.03 ≤ 0.2 · p95-latency 0.06 ≤ 0.25  (n …)``:
    the fixed guardrails, each by its most telling check, and each arm's requests in the window."""
    checks = _checks(record)
    samples = {c["arm"]: c.get("value") for c in checks if c.get("kind") == "traffic"}
    worst: dict[str, Mapping[str, Any]] = {}
    for check in checks:
        if check.get("kind") == "guardrail" and not _statistical(check):
            name = check["name"]
            if name not in worst or _RANK[check["verdict"]] > _RANK[worst[name]["verdict"]]:
                worst[name] = check
    parts = []
    for check in worst.values():
        if check.get("value") is None:
            parts.append(f"{check['name']} {check['verdict']}")
        elif check["verdict"] in {"pass", "fail"}:
            symbol = ">" if check["verdict"] == "fail" else "≤"
            parts.append(f"{check['name']} {fmt(check['value'])} {symbol} {fmt(check['bound'])}")
        else:  # a value, but too few samples behind it to judge
            parts.append(f"{check['name']} {fmt(check['value'])} ({check['verdict']})")
    parts.extend(
        f"{c['name']} {c['verdict']}"
        for c in checks
        if c.get("kind") == "exposure" and c["verdict"] != "pass"
    )
    n = "/".join(_count(samples.get(arm)) for arm in ("treatment", "control"))
    step = record.get("to_step")
    step_text = f"step {step + 1}/{record.get('steps')}" if isinstance(step, int) and step >= 0 else "step -"
    return (
        f"{at}  {pct(record['to_percent']):>3}%  {step_text:<9}  {record['action']:<8}  "
        f"{' · '.join(parts) or '—'}  (n treatment/control {n})"
    )


def comparison_lines(record: Record) -> list[str]:
    """One line per statistical check, beneath the cycle's line: ``errors-vs-control: treatment
    2.1 % vs control 1.0 % (n 812/790 since exposure), excess ≥ +0.4 pt (bound 0)``."""
    return [f"{_INDENT}{comparison(c)}" for c in _checks(record) if _statistical(c)]


def comparison(check: Mapping[str, Any]) -> str:
    """The estimate and the confidence sequence's lower bound of the excess, as they tighten."""
    control = check.get("control") or {}
    seq = check.get("sequential")
    if check.get("value") is None and control.get("value") is None:
        why = str(check.get("detail") or check.get("verdict"))
        if "nobody is exposed" not in why and check.get("verdict") == "no_data":
            why = "no requests counted yet"
        return f"{check['name']}: not judged yet: {why}"
    head = (
        f"{check['name']}: treatment {percent(check.get('value'))} vs control {percent(control.get('value'))}"
    )
    n = f"n {_count(check.get('samples'))}/{_count(control.get('samples'))}"
    if not isinstance(seq, Mapping):
        if check.get("settling"):
            why = "measuring how much the counts vary"
        else:
            why = str(check.get("detail") or check.get("verdict"))
        return f"{head} ({n}): not judged yet: {why}"
    lower = seq.get("excess_lower")
    limit = check.get("limit")
    if isinstance(lower, int | float) and isinstance(limit, int | float):
        # The excess is at least -(1 + limit) whatever the counts (both shares lie in [0, 1]); a
        # bound below that, from a handful of requests, says nothing more than that.
        lower = max(lower, -(1 + limit))
    over = "above" if check.get("verdict") == "fail" else "bound"
    return f"{head} ({n} since exposure), excess ≥ {points(lower)} ({over} 0)"


def _level(alpha: Any) -> str:
    return f"{fmt(100 * (1 - alpha))} %" if isinstance(alpha, int | float) else "the policy's"


def why(check: Mapping[str, Any], window_seconds: int) -> str:
    """Why a check failed, for the person on call."""
    if _statistical(check) and isinstance(check.get("sequential"), Mapping):
        seq = check["sequential"]
        control = check.get("control") or {}
        tolerated = ""
        if check.get("rule") == "maxDelta" and check.get("limit"):
            tolerated = f" beyond the {points(check['limit']).lstrip('+')} tolerated"
        return (
            f"{check['name']} (treatment against the control arm, since exposure began): "
            f"{percent(check.get('value'))} of the treatment's {_count(check.get('samples'))} requests "
            f"failed against {percent(control.get('value'))} of the control's "
            f"{_count(control.get('samples'))}; with {_level(seq.get('alpha'))} confidence the treatment "
            f"fails at least {points(seq.get('excess_lower')).lstrip('+')}{tolerated} more often: "
            "more than chance explains"
        )
    return f"{fixed(check, window_seconds)}: the treatment breached it"


def fixed(check: Mapping[str, Any], window_seconds: int) -> str:
    """``error-rate treatment 0.05 ≤ 0.2 (max; n=600/610) over the last 10s, a fixed bound``."""
    kind = "a fixed bound" if check.get("rule") in {"max", "min"} else "a bound relative to the control arm"
    return f"{describe(check)} over the last {window_seconds}s, {kind}"


def tripped(rollback: Record, window_seconds: int) -> list[str]:
    """Which guardrail tripped first (every check that failed in the rolling-back cycle) and why; then
    how the guardrails that did not trip stood at that moment."""
    checks = [c for c in _checks(rollback) if c.get("kind") == "guardrail" and not c.get("shadow")]
    failed = [c for c in checks if c.get("verdict") == "fail"]
    if not failed:
        return [f"rolled back: {rollback.get('reason')}"]
    names = " and ".join(str(c["name"]) for c in failed)
    lines = [f"tripped first: {names}{' (in the same cycle)' if len(failed) > 1 else ''}"]
    lines.extend(f"  {why(c, window_seconds)}" for c in failed)
    failed_names = {c["name"] for c in failed}
    for check in checks:
        if check["name"] in failed_names or check.get("verdict") != "pass":
            continue
        if _statistical(check):
            lines.append(f"  not tripped: {comparison(check)}")
        else:
            lines.append(f"  not tripped: {fixed(check, window_seconds)}")
    return lines


def calm(records: Sequence[Record]) -> list[str]:
    """For a rollout that did not roll back: how the statistical guardrails last stood."""
    judged = [r for r in records if any(_statistical(c) and c.get("sequential") for c in _checks(r))]
    if not judged:
        return ["no guardrail tripped"]
    lines = ["no guardrail tripped; against the control arm at the last look:"]
    for check in _checks(judged[-1]):
        if not (_statistical(check) and isinstance(check.get("sequential"), Mapping)):
            continue
        if check.get("verdict") == "pass":
            lines.append(
                f"  {comparison(check)}: the arms differ by no more than chance explains, so nothing "
                "was rolled back on noise"
            )
        else:
            lines.append(f"  {comparison(check)}: {check.get('verdict')}")
    return lines
