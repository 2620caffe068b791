"""``spec.alerts``: Prometheus's firing alerts as a signal. While an alert matching a selector fires, the
rollout holds (``onFiring: hold``) or rolls back (``onFiring: rollback``); the record names the
firing alerts; an alert query that errors follows ``onError``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core import alerts
from controller.core.checkrecord import describe
from controller.core.commands import approve
from controller.core.decision import queries_for, rebase
from controller.core.errors import NotAwaitingApprovalError
from controller.core.policy import Policy
from controller.core.queries import Arm, Reading, Source, alerts_query
from controller.core.records import Context, record_problem, to_record
from controller.core.state import Action, Status
from tests.core.test_decision import T0, at_step, policy, run
from tests.core.test_decision_approval import gated, over
from tests.core.test_decision_schedule import MONDAY, OFFICE

ALERTS = """\
  alerts:
    - name: checkout-pages
      selector: '{service="checkout", severity="page"}'
      onFiring: {on_firing}
"""
PAGE = 'CheckoutErrors{service="checkout", severity="page"}'


def alerted(on_firing: str = "hold", extra: str = "") -> Policy:
    return policy(ALERTS.replace("{on_firing}", on_firing) + extra)


def firing(*names: str) -> dict[tuple[str, Arm], Reading | float]:
    return {("checkout-pages", Arm.TREATMENT): Reading.listed(list(names))}


def test_the_alert_query_asks_for_the_firing_alerts_of_the_selector() -> None:
    p = alerted()
    state = rebase(p, None, T0).state
    planned = [q for q in queries_for(p, state, T0) if q.key.source is Source.ALERT]
    assert [q.promql for q in planned] == ['ALERTS{alertstate="firing", service="checkout", severity="page"}']
    assert planned[0].listing


def test_rollouts_sharing_a_selector_share_one_query_whatever_its_spelling() -> None:
    spelled = [
        '{service="checkout", severity="page"}',
        '{severity = "page",service="checkout"}',
        'ALERTS{service="checkout",severity="page"}',
        '{service="checkout", severity="page", service="checkout"}',
    ]
    assert len({alerts_query(s) for s in spelled}) == 1
    assert alerts_query("{}") == 'ALERTS{alertstate="firing"}'
    assert alerts_query('{a="x = y"}') == 'ALERTS{alertstate="firing", a="x = y"}'  # a value is kept
    assert alerts_query('up{job="x"}') == ""  # not ALERTS: an empty query, an error reading


def test_no_alert_firing_changes_nothing() -> None:
    p = alerted()
    decision = run(p, at_step(p, 0, started=T0 - timedelta(minutes=6)), T0)
    assert decision.action is Action.ADVANCE
    assert decision.waiting is None
    check = next(c for c in decision.checks if c.kind is Source.ALERT)
    assert check.verdict.value == "pass"
    assert describe(check.as_record()) == "alert checkout-pages: none firing"


def test_a_firing_alert_holds_an_advance_and_the_record_names_it() -> None:
    p = alerted()
    decision = run(p, at_step(p, 0, started=T0 - timedelta(minutes=6)), T0, firing(PAGE))
    assert decision.action is Action.HOLD
    assert decision.after.percent == 1
    assert decision.reason == f"alert firing: checkout-pages ({PAGE}); onFiring: hold"
    assert decision.waiting is not None
    assert decision.waiting.reason == "alert"
    record = to_record(decision, Context("cache", policy=p), T0)
    assert record_problem(record) is None
    assert record["waiting"]["alerts"] == [{"name": "checkout-pages", "firing": [PAGE]}]
    check = next(c for c in record["checks"] if c["kind"] == "alert")
    assert check["firing"] == [PAGE]
    assert check["verdict"] == "fail"
    assert describe(check) == f"alert checkout-pages: 1 alert firing ({PAGE}); onFiring: hold"
    assert alerts.waiting_read(record["waiting"]) == decision.waiting


def test_a_firing_alert_keeps_a_new_rollout_from_starting() -> None:
    p = alerted()
    decision = run(p, None, T0, firing(PAGE))
    assert decision.action is Action.HOLD
    assert decision.after.percent == 0
    assert decision.reason.startswith("not starting: alert firing: checkout-pages")


def test_once_it_stops_firing_the_due_advance_is_taken() -> None:
    p = alerted()
    state = at_step(p, 0, started=T0 - timedelta(minutes=6))
    held = run(p, state, T0, firing(PAGE))
    assert run(p, held.after, T0 + timedelta(seconds=30)).action is Action.ADVANCE


def test_guardrails_stay_armed_while_an_alert_holds() -> None:
    p = alerted()
    state = at_step(p, 1)
    decision = run(p, state, T0, {**firing(PAGE), ("error-rate", Arm.TREATMENT): 0.5})
    assert decision.action is Action.ROLLBACK
    assert decision.reason.startswith("guardrail failed: error-rate")


def test_on_firing_rollback_rolls_an_exposed_rollout_back() -> None:
    p = alerted("rollback")
    decision = run(p, at_step(p, 1), T0, firing(PAGE, 'CheckoutSlow{service="checkout"}'))
    assert decision.action is Action.ROLLBACK
    assert decision.after.percent == 0
    assert decision.reason.startswith("alert firing: alert checkout-pages: 2 alerts firing (")
    assert decision.after.status is Status.ROLLED_BACK
    not_started = run(p, None, T0, firing(PAGE))
    assert not_started.action is Action.HOLD
    assert not_started.reason.startswith("not starting: an alert fires before anyone is exposed")


def test_an_alert_query_error_follows_on_error() -> None:
    broken = {("checkout-pages", Arm.TREATMENT): Reading.error("HTTP 503")}
    held = run(alerted(), at_step(alerted(), 1), T0, broken)
    assert held.action is Action.HOLD
    assert "error: alert checkout-pages: error (HTTP 503); onError: hold" in held.reason
    strict = alerted(extra="  onError: rollback\n")
    assert run(strict, at_step(strict, 1), T0, broken).action is Action.ROLLBACK


def test_an_answer_that_is_not_a_list_is_an_error_never_a_pass() -> None:
    odd = {("checkout-pages", Arm.TREATMENT): Reading.no_data("empty result")}
    decision = run(alerted(), at_step(alerted(), 0, started=T0 - timedelta(minutes=6)), T0, odd)
    assert decision.action is Action.HOLD
    check = next(c for c in decision.checks if c.kind is Source.ALERT)
    assert check.verdict.value == "error"


def test_a_completed_rollout_says_the_alert_and_does_not_wait() -> None:
    p = alerted()
    done = at_step(p, 2).moved(status=Status.COMPLETED)
    decision = run(p, done, T0, firing(PAGE))
    assert decision.action is Action.HOLD
    assert decision.waiting is None
    assert "alert firing: checkout-pages" in decision.reason


def test_a_paused_rollout_says_the_alert_and_waits_for_the_human() -> None:
    p = alerted()
    paused = at_step(p, 1, status=Status.PAUSED)
    decision = run(p, paused, T0, firing(PAGE))
    assert decision.action is Action.HOLD
    assert decision.waiting is None
    assert decision.reason.startswith("paused")
    assert "alert firing: checkout-pages" in decision.reason


def test_alerts_are_not_part_of_the_revision() -> None:
    assert alerted().revision == policy().revision == alerted("rollback").revision


def test_many_firing_alerts_are_counted_and_only_the_first_named() -> None:
    names = [f"A{i:02d}{{}}" for i in range(30)]
    decision = run(alerted(), at_step(alerted(), 1), T0, firing(*names))
    check = next(c for c in decision.checks if c.kind is Source.ALERT)
    assert check.value == 30
    assert len(check.firing) == alerts.SHOWN_FIRING
    assert describe(check.as_record()).endswith("and 10 more); onFiring: hold")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["quiet", "firing", "error", "failing"]), min_size=1, max_size=25))
def test_no_exposure_rise_while_an_alert_fires(cycles: list[str]) -> None:
    """Over any sequence of cycles (3 min apart: holds end within a few cycles), exposure
    never rises in a cycle whose alert fires (a hold, not a rollback), and a failing guardrail always
    rolls back at once."""
    p = alerted()
    state = None
    now = T0
    for cycle in cycles:
        table: dict[str, dict[tuple[str, Arm], Reading | float]] = {
            "quiet": {},
            "firing": firing(PAGE),
            "error": {("checkout-pages", Arm.TREATMENT): Reading.error("timeout")},
            "failing": {("error-rate", Arm.TREATMENT): 0.5},
        }
        changes = table[cycle]
        before = state.percent if state is not None else 0.0
        decision = run(p, state, now, changes)
        if cycle in {"firing", "error"}:
            assert decision.to_percent <= before
        if cycle == "firing":  # onFiring: hold holds, never rolls back
            assert decision.action is Action.HOLD
        if cycle == "failing" and before > 0:
            assert decision.action is Action.ROLLBACK
        state = decision.after
        now += timedelta(minutes=3)


def test_an_alert_waits_before_a_closed_window_which_waits_once_it_resolves() -> None:
    """Both would hold a due advance: the alert's wait is the one said (and gauged) while it fires;
    once it resolves, the window's; inside the window and quiet, the advance is taken."""
    p = alerted(extra=OFFICE)
    state = at_step(p, 0, started=T0 - timedelta(hours=1))  # Saturday: closed, the hold long over
    paged = run(p, state, T0, firing(PAGE))
    assert (paged.action, paged.waiting and paged.waiting.reason) == (Action.HOLD, alerts.ALERT)
    quiet = run(p, state, T0 + timedelta(minutes=1))
    assert (quiet.action, quiet.waiting and quiet.waiting.reason) == (Action.HOLD, "window")
    opened = run(p, state, MONDAY, firing(PAGE))
    assert (opened.action, opened.waiting and opened.waiting.reason) == (Action.HOLD, alerts.ALERT)
    assert run(p, state, MONDAY + timedelta(minutes=1)).action is Action.ADVANCE


def test_a_gate_reached_while_an_alert_fires_awaits_approval_once_it_resolves() -> None:
    """The alert's wait comes first: the rollout is not awaiting approval yet (``flagroll approve``
    refuses), and starts to at the first evaluation after the alert resolves. One awaiting
    approval can be approved while an alert fires; the advance still waits for the alert."""
    p = gated(ALERTS.replace("{on_firing}", "hold"))
    paged = run(p, over(p), T0, firing(PAGE))
    assert paged.waiting is not None
    assert paged.waiting.reason == alerts.ALERT
    assert paged.after.awaiting_approval_since is None
    with pytest.raises(NotAwaitingApprovalError):
        approve(paged.after, "looks fine", T0 + timedelta(minutes=1))
    awaiting = run(p, paged.after, T0 + timedelta(minutes=2))
    assert awaiting.waiting is not None
    assert awaiting.waiting.reason == "approval"
    approved = approve(awaiting.after, "looks fine", T0 + timedelta(minutes=3)).after
    still = run(p, approved, T0 + timedelta(minutes=4), firing(PAGE))
    assert (still.action, still.after.step, still.after.approved_step) == (Action.HOLD, 1, 1)
    assert still.waiting is not None
    assert still.waiting.reason == alerts.ALERT
    moved = run(p, still.after, T0 + timedelta(minutes=5))
    assert (moved.action, moved.after.step) == (Action.ADVANCE, 2)
