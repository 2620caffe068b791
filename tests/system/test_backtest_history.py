"""``flagroll backtest`` against a real Prometheus (2.x and 3.x: ids prom2, prom3) serving real history:
three days of per-variant request and error counters, backfilled with ``promtool tsdb create-blocks-from openmetrics``, with a
known incident in the treatment arm at a known time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bench.history import Shape, backfill, shop_policy, write_openmetrics
from controller.adapters.promserver import PrometheusServer
from controller.cli import main
from controller.cli.backtest import Outcome, Request, run_backtest
from tests.conftest import PROMETHEUS_VERSIONS, prometheus_binary
from tests.core.test_backtest_html import markers, parsed, svgs

INTERVAL = timedelta(minutes=5)
RATE_WINDOW = timedelta(minutes=10)
# The history (bench/history.py's default shape): a sample a minute, 10 requests/s in each arm, 1 % of
# requests fail; 20 % of the treatment's during the incident.

POLICY = shop_policy("5m", "10m")


@dataclass(frozen=True)
class History:
    server: PrometheusServer
    policies: Path
    start: datetime
    end: datetime
    incident: datetime


@pytest.fixture(scope="module", params=PROMETHEUS_VERSIONS)
def history(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """The history backfilled into blocks of its own for each Prometheus version (prom2, prom3)."""
    root = tmp_path_factory.mktemp(f"history-{request.param}")
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    end -= timedelta(minutes=end.minute % 5)
    start = end - timedelta(days=3)
    incident = start + timedelta(days=2, minutes=2)  # between two evaluation times
    source = root / "history.om"
    write_openmetrics(source, start, end, incident, Shape())
    data = root / "data"
    backfill(source, data)
    policies = root / "policies"
    policies.mkdir()
    (policies / "shop-cache.yaml").write_text(POLICY)
    binary = prometheus_binary(request.param)
    with PrometheusServer([], data_dir=data, retention="3650d", binary=binary) as server:
        yield History(server, policies, start, end, incident)


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts the HTTP requests the backtest makes, by API path."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def backtest(
    history: History, start: datetime, end: datetime, **options: object
) -> tuple[Outcome, list[str]]:
    transport = CountingTransport()
    request = Request(history.policies, history.server.url, start, end, **options)  # type: ignore[arg-type]
    outcome = asyncio.run(run_backtest(request, transport))
    return outcome, transport.paths


def test_the_incident_is_rolled_back_within_one_interval_plus_the_rate_window(history: History) -> None:
    outcome, paths = backtest(history, history.start, history.end)
    assert outcome.problems == []
    (replayed,) = outcome.report["policies"]
    rollback = datetime.fromisoformat(replayed["first_rollback"])
    assert history.incident < rollback <= history.incident + INTERVAL + RATE_WINDOW
    before = [d for d in replayed["decisions"] if datetime.fromisoformat(d["time"]) < history.incident]
    assert [d["action"] for d in before] == ["advance", "advance", "advance", "complete"]
    (guard,) = [c for c in replayed["checks"] if c["name"] == "error-rate" and c["arm"] == "treatment"]
    assert guard["counts"]["fail"] > 0
    assert guard["counts"]["error"] == 0
    assert guard["first_fail"] == replayed["first_rollback"].replace("+00:00", "Z")
    assert guard["values"]["p50"] == pytest.approx(0.01, rel=0.05)
    # 4 distinct queries (traffic and error-rate, two arms each) × 1 chunk, whatever the 865 evaluations
    assert replayed["evaluations"] == 865
    assert paths == ["/api/v1/query_range"] * 4
    assert outcome.requests == 4


def test_a_healthy_window_has_no_rollback(history: History) -> None:
    outcome, _ = backtest(history, history.start, history.incident - timedelta(hours=1))
    (replayed,) = outcome.report["policies"]
    assert outcome.problems == []
    assert replayed["first_rollback"] is None
    assert replayed["final"]["status"] == "completed"
    (guard,) = [c for c in replayed["checks"] if c["name"] == "error-rate" and c["arm"] == "treatment"]
    assert guard["counts"]["fail"] == 0
    assert guard["counts"]["pass"] > 500


def test_a_long_range_is_chunked_and_replays_the_same(history: History) -> None:
    whole, _ = backtest(history, history.start, history.end)
    chunked, paths = backtest(history, history.start, history.end, max_points=200)
    (replayed,) = chunked.report["policies"]
    assert replayed["chunks"] == 5  # 865 points, 200 a chunk
    assert len(paths) == 4 * 5
    assert replayed["decisions"] == whole.report["policies"][0]["decisions"]
    assert replayed["checks"] == whole.report["policies"][0]["checks"]


def test_a_window_beyond_retention_is_reported_and_fails(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    start = (history.start - timedelta(days=60)).isoformat()
    end = (history.start - timedelta(days=50)).isoformat()
    code = main(
        [
            "backtest",
            "--policies",
            str(history.policies),
            "--prometheus",
            history.server.url,
            "--from",
            start,
            "--to",
            end,
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert json.loads(out)["policies"][0]["no_data_at_all"] is True
    assert "holds no data for any of its queries" in err


def test_a_query_prometheus_refuses_is_an_error_never_a_pass(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = POLICY.replace("sum(rate(shop_errors_total", "sum(rate(shop_errors_total[1m]")
    (tmp_path / "refused.yaml").write_text(refused)
    code = main(
        [
            "backtest",
            "--policies",
            str(tmp_path),
            "--prometheus",
            history.server.url,
            "--from",
            history.start.isoformat(),
            "--to",
            (history.start + timedelta(hours=6)).isoformat(),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1
    (replayed,) = json.loads(out)["policies"]
    (guard,) = [c for c in replayed["checks"] if c["name"] == "error-rate" and c["arm"] == "treatment"]
    assert guard["counts"]["pass"] == 0
    assert guard["counts"]["error"] == replayed["evaluations"]
    assert [d["action"] for d in replayed["decisions"]] == []  # never starts while it cannot see
    assert "query failed" in err


def test_the_human_report_and_exit_code_of_a_replay_that_ran(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "backtest",
            "--policies",
            str(history.policies),
            "--prometheus",
            history.server.url,
            "--from",
            history.start.isoformat(),
            "--to",
            history.end.isoformat(),
            "--flag",
            "shop-cache",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    assert "rollback" in out
    assert "first would-be rollback: " in out
    assert "error-rate treatment max ≤ 0.05 (max)" in out
    assert "4 HTTP requests" in out


def test_compare_a_looser_bound_rolls_back_later_on_one_fetch(history: History, tmp_path: Path) -> None:
    (tmp_path / "loose.yaml").write_text(POLICY.replace("max: 0.05", "max: 0.12"))
    outcome, paths = backtest(history, history.start, history.end, compare=tmp_path)
    assert outcome.problems == []
    (tight,) = outcome.report["policies"]
    (loose,) = outcome.report["compare_policies"]
    (flag,) = outcome.report["comparison"]
    first, later = (datetime.fromisoformat(r["first_rollback"]) for r in (tight, loose))
    assert history.incident < first < later <= history.incident + INTERVAL + RATE_WINDOW
    assert flag["policies"]["first_rollback"] == tight["first_rollback"]
    assert flag["compare"]["first_rollback"] == loose["first_rollback"]
    assert flag["verdict"].startswith("--policies rolled back 5m earlier than --compare: ")
    # the same four queries in both sets (only the bound differs): fetched once, 4 × 1 chunk
    assert len(paths) == outcome.requests == 4


def test_compare_only_one_rolling_back_and_the_union_of_queries_is_fetched(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a bound the incident (20 %) never reaches, and a traffic window of its own: two more queries
    looser = POLICY.replace("max: 0.05", "max: 0.5").replace(
        "[10m]))\n    minSamples", "[15m]))\n    minSamples"
    )
    assert looser.count("[15m]") == 1
    (tmp_path / "looser.yaml").write_text(looser)
    common = ["backtest", "--policies", str(history.policies), "--compare", str(tmp_path)]
    window = ["--prometheus", history.server.url, "--from", history.start.isoformat()]
    window += ["--to", history.end.isoformat()]
    assert main([*common, *window, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (flag,) = report["comparison"]
    assert flag["compare"]["first_rollback"] is None
    assert flag["verdict"] == f"only --policies rolled back, at {flag['policies']['first_rollback']}"
    # the union: traffic at 10m and at 15m, the error rate (the same text in both), two arms each
    assert report["http_requests"] == 6 * 1
    assert main([*common, *window]) == 0
    out = capsys.readouterr().out
    assert f"--policies {history.policies}:" in out
    assert f"--compare {tmp_path}:" in out
    assert "comparison (the same readings for both sets):" in out
    assert "only --policies rolled back, at " in out
    assert "6 HTTP requests" in out


# (how long before the incident the simulated rollout starts, how soon after it it must roll back):
# the counts since exposure began dilute a step change, and a completed rollout's trailing day most
# (measured: 35m, 55m and 2h33m after the incident).
STATISTICAL_DETECTION = [
    (timedelta(minutes=30), timedelta(minutes=40)),
    (timedelta(hours=3), timedelta(hours=1, minutes=5)),
    (timedelta(days=2, minutes=2), timedelta(hours=3)),
]


def test_a_statistical_guardrail_counts_since_the_simulated_exposure_began(
    history: History, tmp_path: Path
) -> None:
    """An errorRatio comparison with control and the sample-ratio check (the arms' requests as their
    exposures), replayed over windows with the incident: per-interval counts, fetched once."""
    (tmp_path / "statistical.yaml").write_text(shop_policy("5m", "10m", statistical=True))
    for before, bound in STATISTICAL_DETECTION:
        request = Request(tmp_path, history.server.url, history.incident - before, history.end)
        transport = CountingTransport()
        outcome = asyncio.run(run_backtest(request, transport))
        assert outcome.problems == []
        (replayed,) = outcome.report["policies"]
        rollback = datetime.fromisoformat(replayed["first_rollback"])
        assert history.incident < rollback <= history.incident + bound
        assert "confidence sequence" in replayed["first_rollback_reason"]
        (ratio,) = [c for c in replayed["checks"] if c["name"] == "sample-ratio"]
        assert ratio["counts"]["fail"] == ratio["counts"]["error"] == 0
        (guard,) = [c for c in replayed["checks"] if c["name"] == "error-rate"]
        assert guard["counts"]["error"] == 0
        # traffic, errors and requests per arm (the requests' query is also the exposures'): 6
        assert replayed["queries"] == outcome.requests == len(transport.paths) == 6


def test_a_healthy_window_never_rolls_back_a_statistical_guardrail(history: History, tmp_path: Path) -> None:
    (tmp_path / "statistical.yaml").write_text(shop_policy("5m", "10m", statistical=True))
    request = Request(tmp_path, history.server.url, history.start, history.incident - timedelta(hours=1))
    outcome = asyncio.run(run_backtest(request))
    assert outcome.problems == []
    (replayed,) = outcome.report["policies"]
    assert replayed["first_rollback"] is None
    assert replayed["final"]["status"] == "completed"
    (guard,) = [c for c in replayed["checks"] if c["name"] == "error-rate"]
    assert guard["counts"]["fail"] == 0
    assert guard["counts"]["pass"] > 500


def _recorded_rollout(path: Path, history: History, stopped: datetime) -> None:
    """A decision log of the real rollout: 5, 20 and 50 % an hour apart from the window's start,
    complete, and stopped by on-call at ``stopped``; other records around it."""

    def line(at: datetime, action: str, before: float, after: float, status: str, **more: object) -> str:
        record = {
            "time": at.isoformat().replace("+00:00", "Z"),
            "policy": "shop-cache",
            "flag": "shop-cache",
            "action": action,
            "from_percent": before,
            "to_percent": after,
            "status": status,
            "reason": f"{action} (recorded)",
            "actor": None,
        }
        return json.dumps(record | more)

    s = history.start
    lines = [
        line(s, "advance", 0, 5, "progressing"),
        line(s + timedelta(minutes=5), "hold", 5, 5, "progressing"),
        line(s + timedelta(hours=1), "advance", 5, 20, "progressing"),
        line(s + timedelta(hours=2), "advance", 20, 50, "progressing"),
        line(s + timedelta(hours=4), "complete", 50, 50, "completed"),
        line(s + timedelta(hours=5), "advance", 0, 10, "progressing", flag="other"),
        line(stopped, "stop", 50, 0, "stopped", actor="on-call"),
    ]
    path.write_text("\n".join(lines) + "\n")


def test_a_recorded_rollout_judged_by_a_policy_that_would_have_rolled_back_earlier(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "decisions.jsonl"
    stopped = history.incident + timedelta(minutes=45)
    _recorded_rollout(log, history, stopped)
    window = ["--from", history.start.isoformat(), "--to", history.end.isoformat()]
    common = ["backtest", "--policies", str(history.policies), "--prometheus", history.server.url]
    assert main([*common, *window, "--decision-log", str(log), "--json"]) == 0
    (replayed,) = json.loads(capsys.readouterr().out)["policies"]
    assert replayed["exposure"] == "decision_log"
    assert replayed["decisions"] == []
    assert [d["action"] for d in replayed["recorded_decisions"]] == [
        "advance",
        "advance",
        "advance",
        "complete",
        "stop",
    ]
    would = datetime.fromisoformat(replayed["first_rollback"])
    assert history.incident < would <= history.incident + INTERVAL + RATE_WINDOW
    stop = stopped.isoformat().replace("+00:00", "Z")
    assert replayed["recorded_rollback"] == {"time": stop, "action": "stop", "actor": "on-call"}
    assert replayed["verdict"].startswith("this policy would have rolled back ")
    assert replayed["verdict"].endswith(
        f"earlier than what happened: this policy at {replayed['first_rollback'].replace('+00:00', 'Z')}; the rollout was stopped by on-call at {stop}"
    )
    # a statistical comparison of the completed rollout counts over the trailing day, which dilutes
    # the incident: it would not have acted before on-call stopped the rollout 45 minutes in
    (tmp_path / "statistical").mkdir()
    (tmp_path / "statistical" / "p.yaml").write_text(shop_policy("5m", "10m", statistical=True))
    common[2] = str(tmp_path / "statistical")
    assert main([*common, *window, "--decision-log", str(log)]) == 0
    out = capsys.readouterr().out
    assert "recorded decisions (the exposure judged, from the decision log):" in out
    assert "stop     50% → 0% by on-call" in out
    assert "this policy would not have rolled back before the rollout was stopped by on-call" in out


def test_html_charts_the_exposure_and_the_guardrail_with_the_rollback_marked(
    history: History, tmp_path: Path
) -> None:
    page = tmp_path / "incident.html"
    outcome, paths = backtest(history, history.start, history.end, html=page)
    assert outcome.problems == []
    assert len(paths) == 4  # the page costs no query
    (replayed,) = outcome.report["policies"]
    rollback = replayed["first_rollback"]
    assert history.incident < datetime.fromisoformat(rollback) <= history.incident + INTERVAL + RATE_WINDOW
    text = page.read_text(encoding="utf-8")
    doc = parsed(text)
    assert len(doc.having("figure", class_="exposure")) == 1
    guardrails = doc.having("figure", class_="guardrail")
    assert [f["data-check"] for f in guardrails] == ["error-rate treatment max"]
    charts = svgs(text)
    assert len(charts) == 2
    for chart in charts:
        assert markers(chart) == [rollback]
    assert f"first would-be rollback: {rollback}" in doc.all_text
    assert "rolled_back at 0 %" in doc.all_text
