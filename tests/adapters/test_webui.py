"""The web UI over HTTP (controller/adapters/webui.py): the real server on 127.0.0.1, alone and beside
the controller's endpoints, asked with httpx."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from controller.adapters import policyfile, webui
from controller.adapters.endpoints import Endpoints
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.promserver import free_port
from controller.adapters.telemetry import Telemetry
from controller.adapters.webui import COLLECTOR_FIRST_THRESHOLD, UIServer, WebUI, tune_collector
from controller.core.state import Status
from controller.core.uipage import flag_href
from tests.support.policytext import edit
from tests.support.uidata import HOSTILE_AIM, HOSTILE_KEY, NOW, Page, document, ramp, record, state

WANTED_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def write_files(tmp_path: Path, flags: list[str], records: list[dict[str, Any]]) -> tuple[Path, Path]:
    path, log = tmp_path / "flags.json", tmp_path / "decisions.jsonl"
    path.write_text(json.dumps(document((key, state(key)) for key in flags)))
    log.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path, log


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    records = ramp("calm", NOW - timedelta(hours=1), 20)
    records.append(record(HOSTILE_KEY, NOW - timedelta(minutes=2), aim=HOSTILE_AIM))
    return write_files(tmp_path, ["calm", HOSTILE_KEY], records)


def ui_of(flags: Path, log: Path) -> WebUI:
    return WebUI(FileFlagStore(flags), log, lambda: NOW, prometheus_ui="http://prometheus.example:9090")


@pytest.fixture
def standalone(files: tuple[Path, Path]) -> Iterator[str]:
    with UIServer(ui_of(*files), "127.0.0.1", free_port()) as server:
        host, port = server.address
        yield f"http://{host}:{port}"


@pytest.fixture
def beside(files: tuple[Path, Path]) -> Iterator[str]:
    telemetry = Telemetry()
    with Endpoints(telemetry, "127.0.0.1", free_port(), ui=ui_of(*files)) as endpoints:
        host, port = endpoints.address
        yield f"http://{host}:{port}"


def assert_secure(response: httpx.Response) -> None:
    for name, value in WANTED_HEADERS.items():
        assert response.headers[name] == value
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script" not in policy
    assert response.headers["content-type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize("server", ["standalone", "beside"])
def test_every_page_answers_get_and_head(server: str, request: pytest.FixtureRequest) -> None:
    base = request.getfixturevalue(server)
    for path in ["/", flag_href("calm"), flag_href(HOSTILE_KEY), "/log", "/log?flag=calm&size=5&page=2"]:
        got = httpx.get(base + path)
        assert got.status_code == 200, (path, got.text)
        assert_secure(got)
        page = Page(got.text)
        assert not page.having("script")
        assert "<script" not in got.text.lower()
        head = httpx.head(base + path)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"]
        assert_secure(head)
    overview = Page(httpx.get(base + "/").text)
    assert [a["data-flag"] for a in overview.having("tr") if a.get("data-flag")] == ["calm", HOSTILE_KEY]
    assert HOSTILE_AIM in Page(httpx.get(base + flag_href(HOSTILE_KEY)).text).all_text()


@pytest.mark.parametrize("server", ["standalone", "beside"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"])
def test_nothing_but_get_and_head(server: str, method: str, request: pytest.FixtureRequest) -> None:
    base = request.getfixturevalue(server)
    paths = ["/", flag_href("calm"), "/log", "/healthz"] + (["/metrics"] if server == "beside" else [])
    for path in paths:
        got = httpx.request(method, base + path, content=b"{}")
        assert got.status_code == 405, (method, path)
        assert got.headers["allow"] == "GET, HEAD"
        assert "default-src 'none'" in got.headers["content-security-policy"]


@pytest.mark.parametrize("server", ["standalone", "beside"])
def test_unknown_flag_is_404_and_a_bad_filter_400(server: str, request: pytest.FixtureRequest) -> None:
    base = request.getfixturevalue(server)
    missing = httpx.get(base + flag_href("nobody"))
    assert missing.status_code == 404
    assert "'nobody' is not managed" in Page(missing.text).all_text()
    assert_secure(missing)
    bad = httpx.get(base + "/log?page=0")
    assert bad.status_code == 400
    assert "page 0 is out of range" in Page(bad.text).all_text()
    assert_secure(bad)
    assert httpx.get(base + "/log?since=soon").status_code == 400
    assert httpx.get(base + "/nowhere").status_code == 404


def test_the_endpoints_stay_as_they_were_beside_the_pages(beside: str) -> None:
    assert httpx.get(beside + "/metrics").status_code == 200
    assert httpx.get(beside + "/healthz").status_code in {200, 503}
    assert httpx.get(beside + "/readyz").text.startswith(("ready", "waiting"))
    assert httpx.post(beside + "/metrics").status_code == 405


def test_the_endpoints_without_a_ui_serve_no_pages() -> None:
    with Endpoints(Telemetry(), "127.0.0.1", free_port()) as endpoints:
        host, port = endpoints.address
        assert httpx.get(f"http://{host}:{port}/").status_code == 404
        assert httpx.get(f"http://{host}:{port}/metrics").status_code == 200


def test_each_request_reads_the_files_again(files: tuple[Path, Path], standalone: str) -> None:
    flags, log = files
    assert "newcomer" not in httpx.get(standalone + "/").text
    flags.write_text(
        json.dumps(
            document([("calm", state("calm", Status.ROLLED_BACK, 0.0)), ("newcomer", state("newcomer"))])
        )
    )
    with log.open("a") as handle:
        handle.write(json.dumps(record("newcomer", NOW - timedelta(seconds=5), "advance", 5.0, 1.0)) + "\n")
    overview = Page(httpx.get(standalone + "/").text)
    rows = {a["data-flag"]: a["data-attention"] for a in overview.having("tr") if a.get("data-flag")}
    assert rows == {"calm": "rolled_back", "newcomer": "progressing"}
    found = Page(httpx.get(standalone + "/log?flag=newcomer").text)
    assert [a["data-action"] for a in found.having("tr") if a.get("data-action")] == ["advance"]


def test_the_log_page_lists_verifications_and_an_unreadable_log_is_503(
    files: tuple[Path, Path], standalone: str
) -> None:
    _, log = files
    verification = record(
        "calm", NOW - timedelta(seconds=1), "verify", serving={"check": "rollback", "outcome": "confirmed"}
    )
    with log.open("a") as handle:
        handle.write(json.dumps(verification) + "\n")
    found = Page(httpx.get(standalone + "/log?action=verify").text)
    assert [a["data-action"] for a in found.having("tr") if a.get("data-action")] == ["verify"]
    rollout = Page(httpx.get(standalone + flag_href("calm")).text)
    assert "verify" not in [a.get("data-action") for a in rollout.having("tr")]
    log.unlink()
    log.mkdir()  # a directory where the log should be: it cannot be read
    broken = httpx.get(standalone + "/log")
    assert broken.status_code == 503
    assert str(log) in Page(broken.text).all_text()


def test_with_policies_the_files_say_who_is_unguarded_and_what_the_aim_is(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "demo.yaml").write_text(edit(("Cut p95 from 450ms to 250ms.", repr(HOSTILE_AIM))))
    flags, log = tmp_path / "flags.json", tmp_path / "decisions.jsonl"
    flags.write_text(
        json.dumps(document([("demo", state("demo", policy="demo")), ("orphan", state("orphan"))]))
    )
    log.write_text(json.dumps(record("demo", NOW - timedelta(minutes=1), aim="an older aim")) + "\n")
    ui = WebUI(FileFlagStore(flags), log, lambda: NOW, policies=policies)
    with UIServer(ui, "127.0.0.1", free_port()) as server:
        base = "http://{}:{}".format(*server.address)
        overview = Page(httpx.get(base + "/").text)
        rows = [(a["data-flag"], a["data-attention"]) for a in overview.having("tr") if a.get("data-flag")]
        assert rows == [("orphan", "unguarded"), ("demo", "progressing")]
        rollout = Page(httpx.get(base + flag_href("demo")).text)
        assert HOSTILE_AIM in rollout.all_text()
        assert "an older aim" not in rollout.all_text()


def _one_policy(tmp_path: Path, aim: str) -> tuple[Path, Path, Path, Path]:
    """A policy directory with one policy for flag ``demo`` (its aim ``aim``), its flag file and a log
    with one record: the directory, the policy file, the flag file and the log."""
    policies = tmp_path / "policies"
    policies.mkdir()
    policy = policies / "demo.yaml"
    policy.write_text(edit(("Cut p95 from 450ms to 250ms.", aim)))
    flags, log = tmp_path / "flags.json", tmp_path / "decisions.jsonl"
    flags.write_text(json.dumps(document([("demo", state("demo", policy="demo"))])))
    log.write_text(json.dumps(record("demo", NOW - timedelta(minutes=1))) + "\n")
    return policies, policy, flags, log


def test_the_policies_are_loaded_again_only_when_their_files_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policies, policy, flags, log = _one_policy(tmp_path, "'the first aim'")
    loads: list[int] = []
    real = policyfile.load_paths

    def counted(*args: Any, **kwargs: Any) -> policyfile.PolicySet:
        loads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(webui, "load_paths", counted)
    ui = WebUI(FileFlagStore(flags), log, lambda: NOW, policies=policies)
    assert "the first aim" in ui.reply("GET", "/flags/demo").body.decode()
    ui.reply("GET", "/")
    assert len(loads) == 1
    policy.write_text(edit(("Cut p95 from 450ms to 250ms.", "'an edited aim'")))
    assert "an edited aim" in ui.reply("GET", "/flags/demo").body.decode()
    assert len(loads) == 2
    flags.write_text(
        json.dumps(document([("demo", state("demo", policy="demo")), ("other", state("other"))]))
    )
    rows = Page(ui.reply("GET", "/").body.decode()).having("tr", data_flag="other")
    assert rows[0]["data-attention"] == "unguarded"  # the flag store changed: ownership judged again
    assert len(loads) == 3


def test_a_process_serving_only_pages_collects_young_garbage_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == (COLLECTOR_FIRST_THRESHOLD, before[1], before[2])
    finally:
        gc.set_threshold(*before)


def test_a_policy_edit_that_keeps_size_and_modification_time_is_seen(tmp_path: Path) -> None:
    policies, policy, flags, log = _one_policy(tmp_path, "'the first aim'")
    ui = WebUI(FileFlagStore(flags), log, lambda: NOW, policies=policies)
    assert "the first aim" in ui.reply("GET", "/flags/demo").body.decode()
    stamp = policy.stat()
    policy.write_text(edit(("Cut p95 from 450ms to 250ms.", "'the other aim'")))  # the same size
    os.utime(policy, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # as `cp -p` keeps it
    assert policy.stat().st_size == stamp.st_size
    assert "the other aim" in ui.reply("GET", "/flags/demo").body.decode()
