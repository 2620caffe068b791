"""Notifications: which records become events, the payloads, retries, a bounded queue that never blocks,
and delivery to a real local HTTP receiver from `flagroll run` and `flagroll stop`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from controller.adapters.notify import Event, Notifier, Target, events_from, parse_targets, payload
from controller.adapters.promserver import PrometheusServer
from controller.core.errors import UsageError
from tests.support.receiver import Receiver, receiving
from tests.support.waiting import wait_for


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from receiving()


def _record(action: str, **extra: Any) -> dict[str, Any]:
    return {
        "flag": "cache",
        "action": action,
        "from_percent": 5.0,
        "to_percent": 0.0 if action in {"rollback", "stop"} else 5.0,
        "reason": "guardrail failed: error-rate treatment 0.13 > 0.05",
        "actor": "controller",
        "owner": "sre-lead",
        "stale": False,
        **extra,
    }


def test_which_records_become_events() -> None:
    records = [
        _record("hold"),
        _record("advance"),
        _record("rollback"),
        _record("stop", actor="human:alice", reason="stopped by a human: 5xx"),
        _record("complete"),
        _record("promote", to_percent=100.0),
        _record("hold", reason="policy rejected, guardrails NOT evaluated until it is fixed; …"),
    ]
    kinds = [e.kind for e in events_from(records)]
    assert kinds == ["rollback", "stop", "complete", "complete", "policy_rejected"]
    assert "cache rolled back (5.0% → 0.0%)" in events_from([records[2]])[0].summary


def test_an_unguarded_flag_is_told_once_per_notice_and_reminders_are_not() -> None:
    loud = _record("hold", guarded=False, reason="UNGUARDED: 5 % exposed and guardrails NOT evaluated, …")
    reminder = {**loud, "reminder": True}
    rejected = _record("reject", reason="policy rejected: copy.yaml:3:8: spec.flag.key: …")
    adopted = _record("adopt", reason="adopted flag 'cache' for policy 'cache': …")
    assert [e.kind for e in events_from([loud, reminder, rejected, adopted])] == [
        "unguarded",
        "policy_rejected",
        "adopt",
    ]
    assert payload(Target("slack", "https://hooks.example/x"), events_from([loud])[0])["text"].startswith(
        ":rotating_light: flagroll: cache: UNGUARDED"
    )


def test_a_flag_server_not_serving_what_flagroll_wrote_is_told_and_a_confirmation_is_not() -> None:
    def verify(outcome: str, reason: str) -> dict[str, Any]:
        serving = {"check": "off", "outcome": outcome, "percent": 0.0}
        return _record("verify", to_percent=0.0, reason=reason, stale=True, serving=serving)

    confirmed = verify(
        "confirmed", "serving verified: the flag server (http://flagd:8016) serves off to all 1000"
    )
    failed = verify("unverified", "SERVING NOT VERIFIED after the write at …: still serves on to 12 of 1000")
    events = events_from([confirmed, failed], set())
    assert [e.kind for e in events] == ["serving_unverified"]  # not a decision: no stale event either
    assert events[0].summary.startswith("cache: SERVING NOT VERIFIED")
    assert payload(Target("slack", "https://hooks.example/x"), events[0])["text"].startswith(
        ":rotating_light: flagroll: cache: SERVING NOT VERIFIED"
    )
    assert payload(Target("webhook", "http://x"), events[0])["record"]["serving"]["outcome"] == "unverified"


def test_a_stale_rollout_is_reported_once_until_it_is_no_longer_stale() -> None:
    seen: set[str] = set()
    stale = _record("hold", stale=True, review="2026-10-01")
    assert [e.kind for e in events_from([stale], seen)] == ["stale"]
    assert "past its review date 2026-10-01" in events_from([stale], set())[0].summary
    assert events_from([stale, stale], seen) == []
    assert events_from([_record("advance", stale=False)], seen) == []
    assert [e.kind for e in events_from([stale], seen)] == ["stale"]


def test_payloads() -> None:
    event = events_from([_record("rollback")])[0]
    slack = payload(Target("slack", "http://x"), event)
    assert set(slack) == {"text"}
    assert slack["text"].startswith(":rotating_light: flagroll: cache rolled back")
    webhook = payload(Target("webhook", "http://x"), event)
    assert webhook["event"] == "rollback"
    assert webhook["flag"] == "cache"
    assert webhook["record"]["reason"].startswith("guardrail failed")
    json.dumps(webhook)


def test_outside_text_in_a_slack_message_is_shown_not_acted_on() -> None:
    """An alert's labels come from the metrics (request paths, user agents): in a rollback's reason
    they must not ping the channel or make a link that looks like flagroll's own."""
    hostile = 'alert firing: pages (Down{path="<!channel> <https://evil.example/approve|Approve> & co"})'
    event = events_from([_record("rollback", reason=hostile)])[0]
    text = payload(Target("slack", "http://x"), event)["text"]
    assert "<" not in text
    assert ">" not in text
    assert "&lt;!channel&gt; &lt;https://evil.example/approve|Approve&gt; &amp; co" in text
    webhook = payload(Target("webhook", "http://x"), event)
    assert webhook["record"]["reason"] == hostile  # the webhook's JSON carries the record as it is


def test_targets_must_be_http_urls_and_are_shown_redacted() -> None:
    with pytest.raises(UsageError, match="http:// or https://"):
        parse_targets(["ftp://x"], [])
    target = parse_targets([], ["https://hooks.example.com/services/T000/B000/SECRETSECRET"])[0]
    assert target.shown == "slack https://hooks.example.com/…"
    assert "SECRET" not in target.shown


def _event(n: int = 0) -> Event:
    return Event("rollback", f"flag-{n}", f"flag-{n} rolled back")


def test_delivery_to_a_real_receiver_with_retries_on_503(receiver: Receiver) -> None:
    receiver.answers = [503, 503]
    notifier = Notifier(
        [Target("webhook", receiver.url())], log=structlog.get_logger(), sleep=lambda s: None
    ).start()
    try:
        notifier.send(_event())
        bodies = wait_for(receiver.bodies, timeout_seconds=10, what="the webhook")
    finally:
        notifier.close()
    assert bodies[0]["event"] == "rollback"
    assert notifier.delivered == 1


def test_a_4xx_is_not_retried_and_is_logged(receiver: Receiver) -> None:
    receiver.answers = [400, 400, 400]
    with capture_logs() as logs:
        notifier = Notifier(
            [Target("webhook", receiver.url())], log=structlog.get_logger(), sleep=lambda s: None
        )
        notifier.send_now(_event())
        notifier.close()
    assert receiver.answers == [400, 400]  # asked once
    failed = [e for e in logs if e["event"] == "notification_failed"]
    assert failed[0]["error"] == "HTTP 400"


def test_retries_give_up_after_the_last_attempt(receiver: Receiver) -> None:
    receiver.answers = [500] * 10
    notifier = Notifier(
        [Target("webhook", receiver.url())], log=structlog.get_logger(), attempts=3, sleep=lambda s: None
    )
    notifier.send_now(_event())
    notifier.close()
    assert len(receiver.answers) == 7
    assert notifier.failed == 1


def test_the_queue_is_bounded_and_never_blocks_even_when_the_receiver_hangs(receiver: Receiver) -> None:
    receiver.gate.clear()  # the receiver holds every request
    notifier = Notifier(
        [Target("webhook", receiver.url())], log=structlog.get_logger(), queue_size=10, sleep=lambda s: None
    ).start()
    started = time.monotonic()
    for n in range(500):
        notifier.send(_event(n))
    elapsed = time.monotonic() - started
    receiver.gate.set()
    wait_for(lambda: notifier.delivered >= 10, timeout_seconds=30, what="the queue to drain")
    notifier.close()
    assert elapsed < 1.0  # 500 sends while nothing was delivered: no waiting on the network
    assert notifier.dropped >= 489
    flags = [body["flag"] for body in receiver.bodies()]
    assert "flag-499" in flags  # the newest news is kept


# --------------------------------------------------------------------------- from the commands

POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {name: notified}
spec:
  owner: sre-lead
  aim: "Tell people when it matters."
  mechanism: "Events from decision records."
  flag: {key: notified}
  maxPercent: 10
  interval: 1s
  steps:
    - {percent: 5, hold: 1h}
  guardrails:
    - name: errors
      query: sum(label_replace(vector(ERRORS), "arm", "{{variant}}", "", ""))
      max: 0.01
"""


def _flagroll(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", "--log-format", "json", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.prometheus
def test_run_and_stop_notify_a_real_receiver(
    tmp_path: Path, prometheus: PrometheusServer, receiver: Receiver
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    flags = str(tmp_path / "flags.json")
    env = {"FLAGROLL_NOTIFY_WEBHOOK": receiver.url("/hook"), "FLAGROLL_NOTIFY_SLACK": receiver.url("/slack")}
    run = ("run", "--once", "--policies", str(policies), "--flags", flags, "--prometheus", prometheus.url)
    (policies / "p.yaml").write_text(POLICY.replace("ERRORS", "0.001"))
    started = _flagroll(*run, env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert receiver.bodies() == []  # a start is not news
    (policies / "p.yaml").write_text(POLICY.replace("ERRORS", "0.5"))
    rolled = _flagroll(*run, env=env)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    hook = receiver.bodies("/hook")
    assert [b["event"] for b in hook] == ["rollback"]
    assert hook[0]["record"]["checks"][0]["verdict"] == "fail"
    assert receiver.bodies("/slack")[0]["text"].startswith(":rotating_light: flagroll: notified rolled back")
    assert receiver.url("/hook") not in rolled.stdout  # URLs are shown redacted
    resumed = _flagroll("resume", "notified", "--flags", flags, env=env)
    assert resumed.returncode == 0
    (policies / "p.yaml").write_text(POLICY.replace("ERRORS", "0.001"))
    assert _flagroll(*run, env=env).returncode == 0
    stopped = _flagroll("stop", "notified", "--flags", flags, "--reason", "5xx on checkout", env=env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    events = [b["event"] for b in receiver.bodies("/hook")]
    assert events == ["rollback", "stop"]
    assert "5xx on checkout" in receiver.bodies("/hook")[-1]["summary"]
