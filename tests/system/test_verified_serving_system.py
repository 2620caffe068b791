"""Verified serving end to end: ``flagroll run --verify-ofrep`` as a child process against a real
Prometheus, with a flag server that never reloads the flag file (the in-process fake of
tests/support/ofrepfake.py: the flagd daemon cannot run here). The rollback is made, and every
channel says loudly that the server does not serve it: the decision log, /metrics, a webhook, and
``flagroll status``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from controller.adapters.promserver import PrometheusServer, free_port
from tests.support.controller import ControllerProcess
from tests.support.ofrepfake import OfrepFake
from tests.support.receiver import Receiver
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {name: served}
spec:
  owner: sre-lead
  aim: "Confirm that the flag server serves the rollback."
  mechanism: "A rollback no server serves protects nobody."
  flag: {key: served}
  maxPercent: 20
  interval: 1s
  steps:
    - {percent: 20, hold: 1h}
  guardrails:
    - name: errors
      query: sum(label_replace(vector(ERRORS), "arm", "{{variant}}", "", ""))
      max: 0.01
"""


def test_a_rollback_the_flag_server_does_not_serve_is_loud_on_every_channel(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    with Receiver() as receiver, OfrepFake(tmp_path / "flags.json") as server:
        controller = ControllerProcess(
            tmp_path,
            prometheus.url,
            "--verify-ofrep",
            server.url,
            "--verify-sample",
            "300",
            "--verify-timeout",
            "3s",
            "--listen",
            listen,
            "--notify-webhook",
            receiver.url("/hook"),
        )
        controller.add_policy("served", POLICY.replace("ERRORS", "0.001"))
        with controller:
            wait_for(
                lambda: "advance" in [r["action"] for r in controller.records()],
                timeout_seconds=30,
                what="the start",
            )
            verified = wait_for(
                lambda: [r for r in controller.records() if r["action"] == "verify"],
                timeout_seconds=30,
                what="the share check of the start",
            )
            assert verified[0]["serving"]["outcome"] == "confirmed"  # 20 %, served as written
            server.freeze()  # from now on the server keeps serving 20 %
            controller.add_policy("served", POLICY.replace("ERRORS", "0.5"))  # a new revision that fails
            unverified = wait_for(
                lambda: [r for r in controller.records() if r["action"] == "verify"][1:],
                timeout_seconds=60,
                what="the verification of the rollback",
            )
            metrics = httpx.get(f"http://{listen}/metrics").text
            hook = wait_for(
                lambda: [b for b in receiver.bodies("/hook") if b["event"] == "serving_unverified"],
                timeout_seconds=30,
                what="the notification",
            )
        status = subprocess.run(
            [sys.executable, "-m", "controller", "status", "--flags", str(controller.flags), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    (rollback,) = [r for r in controller.records() if r["action"] == "rollback"]
    (record,) = unverified
    assert record["serving"]["written_at"] == rollback["time"]
    assert (record["serving"]["check"], record["serving"]["outcome"]) == ("off", "unverified")
    assert record["serving"]["served"]["on"] > 0
    assert "still serves on to" in record["reason"]
    state = controller.state("served")
    assert state is not None
    assert state.percent == 0  # rolled back, and left there: the verification moves nothing
    assert 'flagroll_serving_unverified{flag="served"} 1.0' in metrics
    assert 'flagroll_serving_verifications_total{check="off",outcome="unverified"} 1.0' in metrics
    assert 'flagroll_serving_verified_seconds_count{check="share"} 1.0' in metrics
    assert hook[0]["summary"].startswith("served: SERVING NOT VERIFIED")
    (row,) = json.loads(status.stdout)
    assert (row["last_action"], row["serving"]["outcome"]) == ("rollback", "unverified")
