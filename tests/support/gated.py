"""A rollout whose first step needs a human's approval, in an :class:`Environment` whose CLI commands
read the environment's clock: shared by the approval tests of the CLI and of the reconciler."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import common
from tests.support.environment import POLICY, Environment

GATED = POLICY.format(name="cache", key="cache").replace(
    "- {percent: 1, hold: 1m}", "- {percent: 1, hold: 1m, approval: required}"
)


def gated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    """An environment with the gated policy for flag ``cache``; ``flagroll`` commands see its clock."""
    environment = Environment(tmp_path)
    environment.add_policy("cache", "cache", GATED)
    monkeypatch.setattr(common, "utc_now", lambda: environment.clock.now)
    return environment
