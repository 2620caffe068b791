"""A rollout driven through the real reconciler (``Environment``: real policy file, flag file and decision
log; fake clock and metrics): a ramp over :data:`RAMP`, a rollback, and a re-ramp under a new revision,
with the flag document as written after each change of percentage."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.support.environment import Environment, failing, healthy

RAMP = (1, 5, 20, 50)
SEQUENCE = (*RAMP, 0, *RAMP)
"""The percentages the flag file serves in turn: the ramp, the rollback, the re-ramp."""

POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {{name: checkout}}
spec:
  owner: web-team
  aim: A faster checkout.
  mechanism: One request instead of three.
  flag: {{key: {key}}}
  interval: 10s
  steps:
{steps}
  traffic:
    query: sum(requests{{v="{{{{variant}}}}"}})
    minSamples: 10
  guardrails:
    - name: errors
      query: sum(errors{{v="{{{{variant}}}}",flag="{{{{flag}}}}"}})
      max: {max_errors}
"""


def policy(key: str, max_errors: float) -> str:
    steps = "\n".join(f"    - {{percent: {p}, hold: 1m}}" for p in RAMP)
    return POLICY.format(key=key, steps=steps, max_errors=max_errors)


def ramp_rollback_reramp(root: Path, key: str) -> list[tuple[float, dict[str, Any]]]:
    """``(percent, flag document)`` after each cycle that changed the percentage of ``key``."""
    env = Environment(root)
    (env.policies / "cache.yaml").unlink()
    env.add_policy("checkout", key, policy(key, 0.01))
    written: list[tuple[float, dict[str, Any]]] = []

    def cycle(seconds: float) -> None:
        env.clock.now += timedelta(seconds=seconds)
        env.cycle()
        percent = env.percent(key)
        if not written or written[-1][0] != percent:
            written.append((percent, json.loads(env.flags.read_text())))

    def ramp() -> None:
        cycle(10)
        for _ in range(len(RAMP) * 2):
            if env.percent(key) == RAMP[-1]:
                return
            cycle(61)
        raise AssertionError(f"the ramp stopped at {env.percent(key)} %: {env.actions()}")

    ramp()
    env.metrics.answer = failing
    cycle(10)
    env.metrics.answer = healthy
    env.add_policy("checkout", key, policy(key, 0.02))  # a new revision ramps again from the first step
    ramp()
    return written
