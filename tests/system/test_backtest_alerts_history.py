"""``flagroll backtest`` replays ``spec.alerts`` from a real Prometheus's history of ``ALERTS`` (2.x and
3.x): six hours of the shop's healthy counters and an alert, backfilled with ``promtool tsdb
create-blocks-from openmetrics``, firing for the first two hours and then pending (which holds
nothing). The replayed ramp starts only once it stops firing, and the report counts the alert."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.history import Shape, backfill, openmetrics_lines, shop_policy
from controller.adapters.promserver import PrometheusServer
from controller.cli.backtest import Outcome, Request, run_backtest
from tests.conftest import PROMETHEUS_VERSIONS, prometheus_binary

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

ALERTS = """\
  alerts:
    - name: shop-pages
      selector: '{severity="page", service="shop"}'
"""
# Backfilled samples carry no staleness marker: a range query still finds the last one for the
# lookback (5 minutes) after it; Prometheus's own rule manager marks a resolved alert stale at once.
LOOKBACK = timedelta(minutes=5)


@dataclass(frozen=True)
class History:
    server: PrometheusServer
    policies: Path
    start: datetime
    end: datetime
    resolved: datetime  # the first minute without a firing sample


def _alert_lines(start: datetime, resolved: datetime, end: datetime) -> Iterator[str]:
    labels = 'alertname="ShopDown",service="shop",severity="page",path="/a\\"b\\n"'
    yield "# TYPE ALERTS gauge"
    for state, since, until in (("firing", start, resolved), ("pending", resolved, end)):
        t = since
        while t < until:
            yield f'ALERTS{{{labels},alertstate="{state}"}} 1 {int(t.timestamp())}'
            t += timedelta(minutes=1)


@pytest.fixture(scope="module", params=PROMETHEUS_VERSIONS)
def history(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    root = tmp_path_factory.mktemp(f"alerts-history-{request.param}")
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    end -= timedelta(minutes=end.minute % 5)
    start = end - timedelta(hours=6)
    resolved = start + timedelta(hours=2)
    source = root / "history.om"
    shop = [
        line for line in openmetrics_lines(start, end, end + timedelta(days=1), Shape()) if line != "# EOF"
    ]
    source.write_text("\n".join([*shop, *_alert_lines(start, resolved, end), "# EOF"]) + "\n")
    data = root / "data"
    backfill(source, data)
    policies = root / "policies"
    policies.mkdir()
    (policies / "shop-cache.yaml").write_text(shop_policy("5m", "10m") + ALERTS)
    with PrometheusServer(
        [], data_dir=data, retention="3650d", binary=prometheus_binary(request.param)
    ) as server:
        yield History(server, policies, start, end, resolved)


def _backtest(history: History, policies: Path) -> Outcome:
    return asyncio.run(run_backtest(Request(policies, history.server.url, history.start, history.end)))


def test_the_replayed_ramp_waits_for_the_alert_to_stop_firing(history: History, tmp_path: Path) -> None:
    outcome = _backtest(history, history.policies)
    assert outcome.problems == []
    (replayed,) = outcome.report["policies"]
    moves = [(datetime.fromisoformat(d["time"]), d["action"]) for d in replayed["decisions"]]
    first = moves[0]
    assert first[1] == "advance"
    assert history.resolved < first[0] <= history.resolved + LOOKBACK + timedelta(minutes=5), moves
    (alert,) = [c for c in replayed["checks"] if c["name"] == "shop-pages"]
    assert alert["counts"]["fail"] > 0
    assert alert["counts"]["error"] == 0
    assert alert["counts"]["pass"] > 0  # pending, then nothing: no hold

    quiet = tmp_path / "quiet"
    quiet.mkdir()
    (quiet / "shop-cache.yaml").write_text(shop_policy("5m", "10m"))
    (without,) = _backtest(history, quiet).report["policies"]
    assert datetime.fromisoformat(without["decisions"][0]["time"]) < history.start + timedelta(minutes=30)
