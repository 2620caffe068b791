"""``flagroll backtest``: what each policy would have done over a past window, from Prometheus's
history. Nothing is written to any flag file or decision log."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from controller.adapters.decisionlog import exists, read_records
from controller.adapters.flagstore import atomic_write
from controller.adapters.policyfile import LoadedPolicy, load_paths
from controller.adapters.promauth import PrometheusAuth
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promrange import fetch_ranges
from controller.cli import common
from controller.cli.common import EXIT_FAIL, EXIT_OK, need
from controller.cli.options import (
    Commands,
    duration_arg,
    env,
    positive_int,
    prometheus_auth,
    prometheus_auth_options,
)
from controller.core.backtest import (
    MAX_POINTS_PER_CHUNK,
    Replay,
    chunks,
    evaluation_times,
    fetched_promqls,
    parse_time,
    replay,
    step_ms,
)
from controller.core.backtestcompare import as_dict as compare_dict
from controller.core.backtestcompare import compare
from controller.core.backtestcompare import render_text as compare_text
from controller.core.backtesthtml import PolicySet, render_html
from controller.core.backtestlog import Recorded, recorded_flags
from controller.core.backtestranges import RangeAnswer
from controller.core.backtestreport import as_dict, render_text
from controller.core.errors import UsageError, WriteError


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "backtest",
        help="replay policies over a past window of Prometheus data; writes nothing",
        description="For each policy, replay its decision loop over [--from, --to] at the policy's "
        "interval, with the readings Prometheus's history gives at each evaluation time, through the "
        "controller's own decision core. The simulated rollout starts at --from and its own decisions "
        "move it. Readings come in bulk from /api/v1/query_range: distinct queries × chunks of at most "
        "11,000 points; statistical guardrails count since the simulated exposure began, from each "
        "interval's counter growth. Nothing is written to any flag file or decision log. With --html "
        "FILE the report is also written as one self-contained HTML page with charts. Exit 0 when "
        "the replay ran (whatever it decided), 1 when a policy is invalid or refused, a query failed or "
        "the window holds no data, 2 on a usage error. See docs/backtest.md.",
    )
    p.add_argument(
        "--policies",
        type=Path,
        default=env("FLAGROLL_POLICIES"),
        metavar="DIR",
        help="directory (or file) of rollout policies [env FLAGROLL_POLICIES]",
    )
    p.add_argument(
        "--prometheus",
        default=env("FLAGROLL_PROMETHEUS"),
        metavar="URL",
        help="Prometheus base URL, e.g. http://prometheus:9090 [env FLAGROLL_PROMETHEUS]",
    )
    p.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="TIME",
        help="start of the window: RFC 3339 (2026-11-27T09:00:00Z) or a duration before now (7d, 36h)",
    )
    p.add_argument(
        "--to",
        dest="end",
        default="0s",
        metavar="TIME",
        help="end of the window, as --from (default: now)",
    )
    p.add_argument("--flag", metavar="KEY", help="replay only the policy of this flag")
    p.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="a second directory (or file) of policies, replayed on the same readings (one fetch of "
        "both sets' distinct queries) and compared per flag with --policies",
    )
    p.add_argument(
        "--decision-log",
        type=Path,
        metavar="FILE",
        help="judge the exposure recorded in this decision log (a real past rollout) instead of a "
        "simulated one, and say when each policy would have rolled it back against when it was",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object with the same content")
    p.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write the report as one self-contained HTML page with charts (exposure over time, "
        "each guardrail's values against its bound, rollbacks marked), even when problems are reported",
    )
    p.add_argument(
        "--query-timeout",
        type=duration_arg,
        default=env("FLAGROLL_QUERY_TIMEOUT", "60s"),
        metavar="DURATION",
        help="timeout of one range query (default 60s) [env FLAGROLL_QUERY_TIMEOUT]",
    )
    p.add_argument(
        "--max-concurrent-queries",
        type=positive_int,
        default=env("FLAGROLL_MAX_CONCURRENT_QUERIES", "4"),
        metavar="N",
        help="range queries in flight at once (default 4) [env FLAGROLL_MAX_CONCURRENT_QUERIES]",
    )
    prometheus_auth_options(p)
    p.set_defaults(handler=cmd_backtest)


@dataclass
class Request:
    """What a backtest replays, checked."""

    policies: Path
    url: str
    start: datetime
    end: datetime
    flag: str | None = None
    auth: PrometheusAuth = field(default_factory=PrometheusAuth)
    timeout_seconds: float = 60.0
    max_concurrency: int = 4
    max_points: int = MAX_POINTS_PER_CHUNK  # per range query; lower only to test the chunking
    compare: Path | None = None  # a second policy set, replayed on the same readings
    decision_log: Path | None = None  # judge the recorded exposure instead of a simulated one
    html: Path | None = None  # also write the report as a page with charts


@dataclass
class Outcome:
    """The replays and everything that went wrong."""

    report: dict[str, Any]
    text: list[str]
    problems: list[str]
    requests: int


def checked_request(args: argparse.Namespace, now: datetime) -> Request:
    policies = Path(need(args.policies, "--policies", "FLAGROLL_POLICIES"))
    url = need(args.prometheus, "--prometheus", "FLAGROLL_PROMETHEUS")
    if not policies.exists():
        raise UsageError(f"--policies {policies}: no such file or directory")
    if args.compare is not None and not args.compare.exists():
        raise UsageError(f"--compare {args.compare}: no such file or directory")
    if args.decision_log is not None and not exists(args.decision_log):
        raise UsageError(f"--decision-log {args.decision_log}: no such file")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--prometheus {url!r}: give an http:// or https:// URL")
    _check_html(args.html)
    start, end = parse_time(args.start, now), parse_time(args.end, now)
    if end <= start:
        raise UsageError(
            f"--from {start.isoformat()} must be before --to {end.isoformat()}: the window is empty"
        )
    auth = prometheus_auth(args)
    return Request(
        policies,
        url,
        start,
        end,
        args.flag,
        auth,
        args.query_timeout,
        args.max_concurrent_queries,
        compare=args.compare,
        decision_log=args.decision_log,
        html=args.html,
    )


def cmd_backtest(args: argparse.Namespace) -> int:
    outcome = asyncio.run(run_backtest(checked_request(args, common.utc_now())))
    if args.json:
        print(json.dumps(outcome.report, indent=2, ensure_ascii=False))
    else:
        print("\n".join(outcome.text))
    for problem in outcome.problems:
        print(f"flagroll backtest: {problem}", file=sys.stderr)
    return EXIT_FAIL if outcome.problems else EXIT_OK


def _selected(request: Request, path: Path, problems: list[str]) -> list[LoadedPolicy]:
    loaded = load_paths([path])
    problems.extend(str(issue) for issue in loaded.errors)
    chosen = [p for p in loaded.policies if request.flag is None or p.policy.flag_key == request.flag]
    if not chosen and not problems:
        which = f" for flag {request.flag!r}" if request.flag is not None else ""
        raise UsageError(f"no valid policy{which} in {path}")
    return chosen


async def run_backtest(request: Request, transport: httpx.AsyncBaseTransport | None = None) -> Outcome:
    """Load, fetch in bulk, replay and report. ``transport`` is for tests. With ``--compare``, both
    sets are replayed on one fetch: the union of their distinct queries, per interval."""
    problems: list[str] = []
    sets = [_selected(request, request.policies, problems)]
    if request.compare is not None:
        sets.append(_selected(request, request.compare, problems))
    recorded = _recorded(request, [p for chosen in sets for p in chosen], problems)
    judged = [
        p
        for chosen in sets
        for p in chosen
        if recorded is None or recorded[p.policy.flag_key].moves  # a policy not replayed asks nothing
    ]
    async with PrometheusClient(
        request.url,
        timeout_seconds=request.timeout_seconds,
        max_concurrency=request.max_concurrency,
        auth=request.auth,
        transport=transport,
    ) as client:
        fetched = await _fetch_all(client, request, judged, problems)
        requests = client.requests
    report: dict[str, Any] = {"from": request.start.isoformat(), "to": request.end.isoformat()}
    text: list[str] = []
    replays: list[list[Replay]] = []
    labelled = [
        ("policies", "--policies", request.policies),
        ("compare_policies", "--compare", request.compare),
    ]
    for (key, option, path), chosen in zip(labelled, sets, strict=False):
        if request.compare is not None:
            text.append(f"{option} {path}:")
        entries, done = _replayed(request, chosen, fetched, recorded, problems, text)
        report[key] = entries
        replays.append(done)
    if request.compare is not None:
        comparisons = compare(replays[0], replays[1])
        report["comparison"] = compare_dict(comparisons)
        text.extend([*compare_text(comparisons), ""])
    report["http_requests"] = requests
    report["problems"] = problems
    text.append(f"{requests} HTTP requests to {client.url}")
    if request.html is not None:
        try:
            _write_html(request, replays, problems, requests)
        except WriteError as exc:  # the replays stand: the report is printed, the old page kept
            problems.append(f"--html: {exc}")
    return Outcome(report, text, problems, requests)


@dataclass
class Fetched:
    """One interval's readings: the union of the distinct queries of every policy with that interval."""

    times: list[datetime]
    windows: list[tuple[datetime, datetime]]
    answers: dict[str, RangeAnswer]


async def _fetch_all(
    client: PrometheusClient, request: Request, policies: Sequence[LoadedPolicy], problems: list[str]
) -> dict[int, Fetched]:
    """Per interval (milliseconds), every distinct query of the policies with that interval, once."""
    promqls: dict[int, set[str]] = {}
    for loaded in policies:
        promqls.setdefault(step_ms(loaded.policy), set()).update(
            fetched_promqls(loaded.policy, loaded.templates)
        )
    fetched: dict[int, Fetched] = {}
    for interval_ms, wanted in promqls.items():
        times = evaluation_times(request.start, request.end, interval_ms / 1000)
        windows = chunks(times, request.max_points)
        answers = await fetch_ranges(client, sorted(wanted), windows, interval_ms)
        problems.extend(_fetch_problems(answers))
        fetched[interval_ms] = Fetched(times, windows, answers)
    return fetched


def _recorded(
    request: Request, policies: Sequence[LoadedPolicy], problems: list[str]
) -> dict[str, Recorded] | None:
    """With ``--decision-log``: each selected flag's recorded exposure. A record that
    cannot be read is named (file and line) and passed over; a flag the log never mentions is a
    problem: its exposure is unknown, so its policy is not replayed."""
    if request.decision_log is None:
        return None
    flags = sorted({p.policy.flag_key for p in policies})
    found = recorded_flags(flags, read_records(request.decision_log, problems.append))
    for flag, history in found.items():
        if not history.moves:
            dry = f" (only {history.dry_runs} of a dry run, which exposed nobody)" if history.dry_runs else ""
            problems.append(
                f"--decision-log {request.decision_log} holds no decision of flag {flag!r}{dry}: "
                "its exposure is unknown, so its policy is not replayed"
            )
    return found


def _replayed(
    request: Request,
    policies: Sequence[LoadedPolicy],
    fetched: dict[int, Fetched],
    recorded: dict[str, Recorded] | None,
    problems: list[str],
    text: list[str],
) -> tuple[list[dict[str, Any]], list[Replay]]:
    """Replay each policy on the fetched readings: its report entries and its replays."""
    entries: list[dict[str, Any]] = []
    done: list[Replay] = []
    for loaded in policies:
        policy = loaded.policy
        history = recorded.get(policy.flag_key) if recorded is not None else None
        if recorded is not None and (history is None or not history.moves):
            continue
        readings = fetched[step_ms(policy)]
        own = fetched_promqls(policy, loaded.templates)
        answers = {q: a for q, a in readings.answers.items() if q in own}
        points = sum(a.points for a in answers.values())
        if points == 0:
            problems.append(
                f"{policy.name}: Prometheus holds no data for any of its queries between "
                f"{request.start.isoformat()} and {request.end.isoformat()} (beyond its retention?)"
            )
        result = replay(
            policy, readings.times, answers, loaded.templates, history, request.end, loaded.freezes
        )
        entry = as_dict(result, points)
        entry["queries"] = len(answers)
        entry["chunks"] = len(readings.windows)
        entries.append(entry)
        done.append(result)
        text.extend(render_text(result, points))
        text.append(f"  {len(answers)} distinct queries × {len(readings.windows)} chunks")
        text.append("")
    return entries, done


def _fetch_problems(answers: dict[str, RangeAnswer]) -> Sequence[str]:
    found = []
    for promql, answer in answers.items():
        for failure in answer.failures[:1]:
            more = f" (and {len(answer.failures) - 1} more chunks)" if len(answer.failures) > 1 else ""
            found.append(f"query failed{more}: {failure.detail}: {' '.join(promql.split())[:200]}")
    return found


def _check_html(path: Path | None) -> None:
    """``--html FILE``: its directory must exist and be writable (checked before any query), and it
    is no directory."""
    if path is None:
        return
    if not path.parent.is_dir():
        raise UsageError(f"--html {path}: no such directory {path.parent}")
    if path.is_dir():
        raise UsageError(f"--html {path}: is a directory; give a file name")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"--html {path}: cannot write in {path.parent}")


def _write_html(
    request: Request, replays: Sequence[Sequence[Replay]], problems: Sequence[str], requests: int
) -> None:
    """The page, written atomically (a temporary file in the same directory, then renamed): a
    failed run never leaves half a page."""
    assert request.html is not None
    paths = [("--policies", request.policies), ("--compare", request.compare)]
    sets = [PolicySet(option, str(path), done) for (option, path), done in zip(paths, replays, strict=False)]
    comparisons = compare(replays[0], replays[1]) if len(replays) == 2 else []
    page = render_html(request.start, request.end, sets, comparisons, problems, requests)
    atomic_write(request.html, page)
