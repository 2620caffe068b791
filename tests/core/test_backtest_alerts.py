"""``spec.alerts`` in the backtest: the firing alerts at an evaluation time are the ``ALERTS`` series
with a point then (the range answer of the selector's query); a firing alert holds the simulated
rollout as it would have held the controller's."""

from __future__ import annotations

from datetime import timedelta

from controller.core.backtest import evaluation_times, fetched_queries, replay
from controller.core.backtestranges import Failure, RangeAnswer, Series, listing_at, to_ms
from controller.core.queries import Reading, ReadingKind, Source
from controller.core.state import Action
from tests.core.test_backtest import POLICY, START, constant, load

ALERTS = """\
  alerts:
    - name: pages
      selector: '{severity="page"}'
"""
PAGE = {"__name__": "ALERTS", "alertname": "Down", "alertstate": "firing", "severity": "page"}


def test_the_alerts_firing_at_a_time_are_the_series_with_a_point_then() -> None:
    at = to_ms(START)
    answer = RangeAnswer(
        (
            Series(PAGE, {at: 1.0}),
            Series({**PAGE, "alertname": "Slow"}, {at: 1.0, at + 60_000: 1.0}),
        )
    )
    assert listing_at(answer, at) == Reading.listed(['Down{severity="page"}', 'Slow{severity="page"}'])
    assert listing_at(answer, at + 60_000) == Reading.listed(['Slow{severity="page"}'])
    assert listing_at(answer, at + 120_000) == Reading.listed([])
    failed = RangeAnswer((), (Failure(at, at + 60_000, "HTTP 503"),))
    assert listing_at(failed, at).kind is ReadingKind.ERROR


def test_a_firing_alert_holds_the_replayed_ramp_until_it_resolves() -> None:
    policy = load(POLICY + ALERTS)
    times = evaluation_times(START, START + timedelta(hours=2), policy.spec.interval_seconds)
    resolved = START + timedelta(minutes=40)
    answers: dict[str, RangeAnswer] = {}
    for q in fetched_queries(policy, {}):
        if q.key.source is Source.ALERT:
            answers[q.promql] = RangeAnswer((Series(PAGE, {to_ms(t): 1.0 for t in times if t < resolved}),))
        else:
            answers[q.promql] = constant(times, 1000.0 if q.key.name == "traffic" else 0.01)
    result = replay(policy, times, answers, {})
    assert [(m.action, m.at) for m in result.moves] == [
        (Action.ADVANCE, resolved),
        (Action.ADVANCE, resolved + timedelta(minutes=10)),
        (Action.COMPLETE, resolved + timedelta(minutes=20)),
    ]
