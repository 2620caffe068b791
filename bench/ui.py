"""The web UI on a large decision log: the overview of 1,000 flags and the rollout page of a flag with
10,000 records in a 1 GB log, each answered in at most 300 ms, warm (the issue's target).

What it does: it writes a flag store of ``--flags`` managed rollouts (default 1,000) and a decision
log of about ``--size-mb`` (default 1,000 MB): gzipped generations of 64 MB, as rotation leaves them,
and a live file. The records have the controller's shape (three guardrails and traffic, each with its
PromQL, about 2 kB a line); one flag, ``big``, has ``--big`` records (default 10,000) spread over the
whole log, the others share the rest. Lines are written directly, not through ``DecisionLog``.

Then, through ``WebUI.reply`` in-process: the first request (the index built cold: every file read
once) and its memory (the process's resident set before and after, and the index's compressed
lines); then ``--requests`` warm requests each (default 20) of ``/``, ``/flags/big``, ``/log`` and
``/log`` filtered by flag and by action (median and max; the targets are judged on the max: each
answer); then one request after a cycle's records (one a flag) were
appended. The baseline, the full read of every request, is measured on a log of ``--baseline-mb``
(default 64 MB, the default rotation size) with the same flags, since on the 1 GB log it would take
minutes and gigabytes a request; its pages are checked identical to the index's. ``--json`` writes
the figures (bench/results/ui.json). Everything is written to a temporary directory, deleted after.

    .venv/bin/python -m bench.ui --json bench/results/ui.json       # a few minutes
    .venv/bin/python -m bench.ui --size-mb 20 --flags 50 --big 500 --baseline-mb 5
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.targets import finish
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.logindex import index_size_bytes
from controller.adapters.webui import WebUI, tune_collector
from controller.core.flagd import empty_document, write_flag
from controller.core.state import RolloutState, Status

TARGET_SECONDS = 0.300
GENERATION_BYTES = 64 * 1000 * 1000
BIG = "big"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SELECTOR = 'feature_flag_key="{flag}",feature_flag_result_variant="{variant}"'
REQUESTS = f"sum(rate(http_server_requests_total{{{SELECTOR}}}[5m]))"
QUERIES = {
    "error-ratio": f'sum(rate(http_server_requests_total{{code=~"5..",{SELECTOR}}}[5m])) / {REQUESTS}',
    "p95-latency": "histogram_quantile(0.95, sum by (le) "
    f"(rate(http_server_request_duration_seconds_bucket{{{SELECTOR}}}[5m])))",
    "saturation": f'max(rate(process_cpu_seconds_total{{job="api",{SELECTOR}}}[5m]))',
}


def flag_key(index: int) -> str:
    return BIG if index == 0 else f"svc-{index:05d}-cache"


def flag_document(flags: int) -> dict[str, Any]:
    document = empty_document()
    for index in range(flags):
        one = RolloutState(
            policy=flag_key(index),
            revision="rev1",
            status=Status.PROGRESSING,
            step=2,
            steps=5,
            percent=10.0,
            control=True,
            step_started_at=NOW - timedelta(minutes=10),
            updated_at=NOW - timedelta(minutes=10),
            owner=f"team-{index % 40}",
            review=date(2027, 3, 1),
        )
        document = write_flag(document, flag_key(index), one, variants={"on": True, "off": False})
    return document


def promql(template: str, flag: str, variant: str) -> str:
    return template.replace("{flag}", flag).replace("{variant}", variant)


def _check(name: str, flag: str, value: float, rng: random.Random) -> dict[str, Any]:
    query = QUERIES[name]
    control = {"value": value * rng.uniform(0.9, 1.1), "query": promql(query, flag, "off")}
    return {
        "name": name,
        "kind": "guardrail",
        "rule": "maxIncrease" if name == "p95-latency" else "max",
        "arm": "treatment",
        "value": value,
        "bound": 0.9 if name == "saturation" else 0.02,
        "limit": 0.25 if name == "p95-latency" else 0.02,
        "samples": rng.randint(200, 5000),
        "verdict": "pass",
        "query": promql(query, flag, "on"),
        **({"control": control} if name == "p95-latency" else {}),
    }


def record(flag: str, at: datetime, n: int, rng: random.Random) -> dict[str, Any]:
    """A decision record of the controller's shape: a hold mostly, an advance now and then."""
    percent = float([1, 5, 10, 25, 50][min(4, n // 2000)])
    action = "advance" if n % 200 == 199 else "hold"
    checks = [_check(name, flag, rng.uniform(0.001, 0.01), rng) for name in QUERIES]
    checks.append(
        {
            "name": "traffic",
            "kind": "traffic",
            "rule": "minSamples",
            "arm": "treatment",
            "value": rng.randint(200, 5000),
            "bound": 200,
            "limit": 200,
            "samples": rng.randint(200, 5000),
            "verdict": "pass",
            "query": f"{promql(REQUESTS, flag, 'on')} * 300",
        }
    )
    return {
        "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "policy": flag,
        "flag": flag,
        "revision": "rev1",
        "action": action,
        "from_percent": percent,
        "to_percent": percent,
        "from_step": 2,
        "to_step": 2,
        "steps": 5,
        "status": "progressing",
        "reason": "all checks pass; hold 1h0m0s at step 3 (12m30s left)",
        "notes": [],
        "checks": checks,
        "aim": f"Cut p95 of /api/{flag} from 450ms to 250ms without more errors.",
        "mechanism": "A read-through cache removes repeated database reads on the hot path.",
        "owner": "team-a",
        "actor": "controller",
        "guarded": True,
    }


def write_log(log: Path, flags: int, size_bytes: int, big: int, seed: int) -> tuple[int, int]:
    """Write the log: generations of about :data:`GENERATION_BYTES` (gzipped, the oldest the highest
    number) and a live file. Returns the records and bytes written (uncompressed)."""
    rng = random.Random(seed)
    line_bytes = len(json.dumps(record("svc-00001-cache", NOW, 0, rng))) + 1
    total = max(big + flags, size_bytes // line_bytes)
    per_file = max(1, GENERATION_BYTES // line_bytes)
    files = -(-total // per_file)
    every = total / big  # the big flag's records spread over the whole log
    start = NOW - timedelta(seconds=30 * total / max(1, flags - 1))
    counts = [0] * flags
    written = 0
    for file in range(files):
        last = file == files - 1
        where = log if last else log.with_name(f"{log.name}.{files - 1 - file}.gz")
        with where.open("wb") if last else gzip.open(where, "wb", compresslevel=1) as handle:
            lines = []
            for n in range(file * per_file, min(total, (file + 1) * per_file)):
                index = 0 if counts[0] < big and n >= counts[0] * every else 1 + n % (flags - 1)
                at = start + timedelta(seconds=30 * n / max(1, flags - 1))
                lines.append((json.dumps(record(flag_key(index), at, counts[index], rng)) + "\n").encode())
                counts[index] += 1
            data = b"".join(lines)
            handle.write(data)
            written += len(data)
    return total, written


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


TARGETS = {
    "overview": "/",
    "rollout": f"/flags/{BIG}",
    "log": "/log",
    "log_filtered": f"/log?flag={BIG}&page=3",
    "log_by_action": "/log?action=advance&page=2",  # a filter that looks at every record
}


def warm(ui: WebUI, requests: int) -> dict[str, dict[str, float]]:
    found = {}
    for name, target in TARGETS.items():
        seconds = []
        for _ in range(requests):
            seconds.append(timed(lambda target=target: _ok(ui.reply("GET", target).status)))  # type: ignore[misc]
        found[name] = {"median_seconds": statistics.median(seconds), "max_seconds": max(seconds)}
    return found


def _ok(status: int) -> None:
    if status != 200:
        raise RuntimeError(f"the UI answered {status}")


def append_cycle(log: Path, flags: int, seed: int) -> None:
    rng = random.Random(seed)
    at = NOW + timedelta(seconds=30)
    with log.open("ab") as handle:
        handle.write(
            b"".join((json.dumps(record(flag_key(i), at, 9999, rng)) + "\n").encode() for i in range(flags))
        )


def measure(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    flags_path = root / "flags.json"
    flags_path.write_text(json.dumps(flag_document(args.flags)))
    big_log = root / "big" / "decisions.jsonl"
    big_log.parent.mkdir()
    began = time.perf_counter()
    records, written = write_log(big_log, args.flags, args.size_mb * 1000 * 1000, args.big, args.seed)
    figures: dict[str, Any] = {
        "flags": args.flags,
        "big_flag_records": args.big,
        "log_records": records,
        "log_bytes": written,
        "log_bytes_on_disk": sum(p.stat().st_size for p in big_log.parent.iterdir()),
        "generate_seconds": time.perf_counter() - began,
    }
    gc.collect()
    before = rss_bytes()
    tune_collector()  # as `flagroll ui` does
    ui = WebUI(FileFlagStore(flags_path), big_log, lambda: NOW)
    figures["cold_seconds"] = timed(lambda: _ok(ui.reply("GET", "/").status))
    gc.collect()
    figures["index_rss_bytes"] = rss_bytes() - before
    assert ui.index is not None
    figures["index_compressed_bytes"] = index_size_bytes(ui.index.view())
    figures["warm"] = warm(ui, args.requests)
    append_cycle(big_log, args.flags, args.seed)
    figures["after_a_cycle_seconds"] = timed(lambda: _ok(ui.reply("GET", "/").status))
    figures["baseline"] = baseline(root, args, flags_path)
    return figures


def baseline(root: Path, args: argparse.Namespace, flags_path: Path) -> dict[str, Any]:
    """The full read of every request, and the index, on a smaller log; their pages compared."""
    log = root / "small" / "decisions.jsonl"
    log.parent.mkdir()
    records, written = write_log(log, args.flags, args.baseline_mb * 1000 * 1000, args.big // 10, args.seed)
    indexed = WebUI(FileFlagStore(flags_path), log, lambda: NOW)
    full = WebUI(FileFlagStore(flags_path), log, lambda: NOW, indexed=False)
    cold = timed(lambda: indexed.reply("GET", "/"))
    found: dict[str, Any] = {"log_records": records, "log_bytes": written, "index_cold_seconds": cold}
    identical = True
    for name, target in TARGETS.items():
        found[f"full_read_{name}_seconds"] = timed(lambda target=target: full.reply("GET", target))  # type: ignore[misc]
        found[f"index_{name}_seconds"] = timed(lambda target=target: indexed.reply("GET", target))  # type: ignore[misc]
        identical = identical and full.reply("GET", target).body == indexed.reply("GET", target).body
    found["pages_identical"] = identical
    return found


def verdicts(figures: dict[str, Any]) -> list[tuple[str, bool]]:
    """The targets, judged on the slowest of the warm requests: each answer within the target."""
    warm_figures = figures["warm"]
    target_ms = f"{TARGET_SECONDS * 1000:.0f} ms"
    return [
        (
            f"the overview of {figures['flags']:,} flags in <= {target_ms} (every warm request; "
            f"median {warm_figures['overview']['median_seconds'] * 1000:.0f} ms)",
            warm_figures["overview"]["max_seconds"] <= TARGET_SECONDS,
        ),
        (
            f"the rollout page of {figures['big_flag_records']:,} records in <= {target_ms} (every warm "
            f"request; median {warm_figures['rollout']['median_seconds'] * 1000:.0f} ms)",
            warm_figures["rollout"]["max_seconds"] <= TARGET_SECONDS,
        ),
        ("the pages from the index equal the full read's", figures["baseline"]["pages_identical"]),
    ]


def report(figures: dict[str, Any]) -> str:
    ms = 1000.0
    base = figures["baseline"]
    lines = [
        f"web UI on a {figures['log_bytes'] / 1e9:.2f} GB decision log ({figures['log_records']:,} records, "
        f"{figures['log_bytes_on_disk'] / 1e6:,.0f} MB on disk), {figures['flags']:,} flags, "
        f"'{BIG}' with {figures['big_flag_records']:,} records "
        f"(written in {figures['generate_seconds']:.0f} s)",
        f"first request (index built cold): {figures['cold_seconds']:.1f} s",
        f"index memory: {figures['index_rss_bytes'] / 2**20:,.0f} MiB resident "
        f"({figures['index_compressed_bytes'] / 2**20:,.0f} MiB of it compressed lines)",
        "",
        f"{'page (warm)':<14} {'median ms':>10} {'max ms':>8}",
        *(
            f"{name:<14} {v['median_seconds'] * ms:>10.0f} {v['max_seconds'] * ms:>8.0f}"
            for name, v in figures["warm"].items()
        ),
        f"the overview after a cycle's {figures['flags']:,} records appended: "
        f"{figures['after_a_cycle_seconds'] * ms:.0f} ms",
        "",
        f"baseline on a {base['log_bytes'] / 1e6:.0f} MB log ({base['log_records']:,} records; the full read "
        "at 1 GB takes minutes a request): one request each",
        f"{'page':<14} {'full read ms':>12} {'index ms':>9}",
        *(
            f"{name:<14} {base[f'full_read_{name}_seconds'] * ms:>12.0f} "
            f"{base[f'index_{name}_seconds'] * ms:>9.0f}"
            for name in TARGETS
        ),
        f"index built cold on it: {base['index_cold_seconds']:.1f} s; "
        f"pages identical: {base['pages_identical']}",
        "",
    ]
    lines += [f"{'MET   ' if met else 'MISSED'}  {text}" for text, met in verdicts(figures)]
    return "\n".join(lines)


def options(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.split("\n")[0])
    p.add_argument("--size-mb", type=int, default=1000, help="the big log's size (default 1000 MB)")
    p.add_argument("--flags", type=int, default=1000, help="managed flags (default 1000)")
    p.add_argument("--big", type=int, default=10_000, help="records of the flag 'big' (default 10000)")
    p.add_argument("--baseline-mb", type=int, default=64, help="the baseline's log (default 64 MB)")
    p.add_argument("--requests", type=int, default=20, help="warm requests a page (default 20)")
    p.add_argument("--seed", type=int, default=20261204)
    p.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = options(argv)
    threshold = gc.get_threshold()
    try:
        with tempfile.TemporaryDirectory(prefix="flagroll-bench-ui-") as root:
            figures = measure(Path(root), args)
    finally:
        gc.set_threshold(*threshold)  # measure tunes it as `flagroll ui` does
    print(report(figures))
    results = verdicts(figures)
    return finish(args.json, figures, results)


if __name__ == "__main__":
    sys.exit(main())
