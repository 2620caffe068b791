"""``flagroll ui`` and ``flagroll run --listen`` serving the web UI, as child processes asked over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from controller.adapters.promserver import free_port
from controller.core.uipage import flag_href
from tests.support.controller import ControllerProcess
from tests.support.policytext import BASE
from tests.support.uidata import HOSTILE_KEY, Page, document, record, state
from tests.support.waiting import wait_for


def flagroll(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args], capture_output=True, text=True, timeout=60, check=False
    )


def answering(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def test_ui_help_and_usage_errors() -> None:
    shown = flagroll("ui", "--help")
    assert shown.returncode == 0
    assert "--prometheus-ui-url" in shown.stdout
    assert "--flag-store" in shown.stdout
    assert "ui" in flagroll("--help").stdout
    missing = flagroll("ui", "--flags", "flags.json")
    assert missing.returncode == 2
    assert "--listen is required" in missing.stderr
    bad = flagroll("ui", "--flags", "flags.json", "--listen", "127.0.0.1:1", "--prometheus-ui-url", "prom")
    assert bad.returncode == 2
    assert "--prometheus-ui-url" in bad.stderr


@pytest.fixture
def ui_process(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path, Path]]:
    flags, log = tmp_path / "flags.json", tmp_path / "decisions.jsonl"
    flags.write_text(json.dumps(document([(HOSTILE_KEY, state(HOSTILE_KEY))])))
    now = datetime.now(UTC)
    log.write_text(json.dumps(record(HOSTILE_KEY, now - timedelta(minutes=1)), ensure_ascii=False) + "\n")
    port = free_port()
    out = tmp_path / "ui.out"
    with out.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "controller", "ui", "--flags", str(flags), "--decision-log", str(log),
                "--listen", f"127.0.0.1:{port}", "--ui-refresh", "10",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: answering(base + "/healthz"), timeout_seconds=30, what="flagroll ui to answer")
        wait_for(  # indexed at its start, before any page was asked for
            lambda: "flagroll ui: decision log indexed in" in out.read_text(errors="replace"),
            timeout_seconds=30,
            what="the decision log indexed",
        )
        yield base, flags, log
    finally:
        if process.poll() is None:
            process.send_signal(getattr(request, "param", signal.SIGTERM))
        assert process.wait(timeout=30) == 0, out.read_text(errors="replace")


@pytest.mark.parametrize("ui_process", [signal.SIGTERM, signal.SIGINT], indirect=True)
def test_flagroll_ui_serves_the_pages_read_only(ui_process: tuple[str, Path, Path]) -> None:
    base, flags, log = ui_process
    before = flags.read_bytes(), log.read_bytes()
    overview = httpx.get(base + "/")
    assert overview.status_code == 200
    assert "default-src 'none'" in overview.headers["content-security-policy"]
    assert Page(overview.text).having("meta", http_equiv="refresh")[0]["content"] == "10"
    rollout = httpx.get(base + flag_href(HOSTILE_KEY))
    assert rollout.status_code == 200
    assert HOSTILE_KEY in Page(rollout.text).all_text()
    assert httpx.head(base + "/log").status_code == 200
    assert httpx.delete(base + flag_href(HOSTILE_KEY)).status_code == 405
    assert httpx.post(base + "/log").headers["allow"] == "GET, HEAD"
    assert httpx.get(base + "/log?action=nope").status_code == 400
    assert httpx.get(base + flag_href("nobody")).status_code == 404
    assert (flags.read_bytes(), log.read_bytes()) == before  # nothing was written
    flags.write_text(json.dumps(document([(HOSTILE_KEY, state(HOSTILE_KEY)), ("second", state("second"))])))
    listed = Page(httpx.get(base + "/").text)
    assert {a["data-flag"] for a in listed.having("tr") if a.get("data-flag")} == {HOSTILE_KEY, "second"}


def test_run_listen_serves_the_pages_beside_its_endpoints(tmp_path: Path) -> None:
    port = free_port()
    controller = ControllerProcess(tmp_path, "http://127.0.0.1:9", "--listen", f"127.0.0.1:{port}", "--ui")
    controller.add_policy("demo", BASE)
    base = f"http://127.0.0.1:{port}"
    with controller:
        wait_for(lambda: answering(base + "/metrics"), timeout_seconds=30, what="flagroll run to listen")
        overview = httpx.get(base + "/")
        assert overview.status_code == 200, overview.text
        assert overview.headers["x-content-type-options"] == "nosniff"
        assert httpx.put(base + "/").status_code == 405
        assert httpx.get(base + "/log?size=0").status_code == 400
        with controller.log.open("a") as handle:
            handle.write(json.dumps(record("visitor", datetime.now(UTC), "stop", 0.0, actor="alice")) + "\n")
        found = Page(httpx.get(base + "/log?flag=visitor").text)
        assert [a["data-action"] for a in found.having("tr") if a.get("data-action")] == ["stop"]
        assert httpx.get(base + flag_href("visitor")).status_code == 200  # its records remain
        assert httpx.get(base + "/healthz").status_code in {200, 503}


def test_run_listen_serves_no_pages_unless_asked(tmp_path: Path) -> None:
    """Each page reads the whole decision log in the controller's process: off unless --ui."""
    port = free_port()
    controller = ControllerProcess(tmp_path, "http://127.0.0.1:9", "--listen", f"127.0.0.1:{port}")
    controller.add_policy("demo", BASE)
    base = f"http://127.0.0.1:{port}"
    with controller:
        wait_for(lambda: answering(base + "/metrics"), timeout_seconds=30, what="flagroll run to listen")
        assert httpx.get(base + "/").status_code == 404
        assert httpx.get(base + "/log").status_code == 404
        assert httpx.get(base + "/metrics").status_code == 200
