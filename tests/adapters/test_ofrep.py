"""The OFREP client (controller.adapters.ofrep): the request it sends, and every answer judged for shape
(a variant, "disabled", or a failure saying why; never an exception). ``parse_answer`` is pure and
tested directly; ``OfrepClient`` over faked HTTP (respx) for the protocol's edge cases, and against
the in-process fake server and a closed port. The shapes are the OFREP specification's and those the
flagd daemon answers (docs/verified-serving.md cites both)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import respx

from controller.adapters.ofrep import MAX_BODY_BYTES, TOKEN_ENV, OfrepClient, bearer_token, parse_answer
from controller.adapters.promauth import Secret
from controller.adapters.promserver import free_port
from controller.core.commands import stop
from controller.core.errors import UsageError
from controller.core.flagd import read_state, write_flag
from controller.core.serving import Answer
from tests.support.environment import Environment
from tests.support.ofrepfake import OfrepFake

BASE = "http://flagd.example:8016"
ENDPOINT = f"{BASE}/ofrep/v1/evaluate/flags/cache"

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


async def _evaluate(flag: str = "cache", key: str = "user-1", **options: Any) -> Answer:
    async with OfrepClient(options.pop("url", BASE), **options) as client:
        return await client.evaluate(flag, key)


# parse_answer -----------------------------------------------------------------------------------


def test_a_served_variant_is_read() -> None:
    body = _body(key="cache", value=False, reason="TARGETING_MATCH", variant="off", metadata={"a": 1})
    assert parse_answer("cache", 200, body) == Answer.served("off")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, _body(key="cache", errorCode="FLAG_DISABLED", errorDetails="flag `cache` is disabled")),
        (404, _body(key="cache", errorCode="FLAG_NOT_FOUND", errorDetails="flag `cache` is disabled")),
        (200, _body(key="cache", reason="DISABLED", metadata={})),
    ],
    ids=["older-daemons", "current-daemons", "reason-disabled"],
)
def test_a_disabled_flag_is_read_as_disabled_whichever_way_the_server_says_it(
    status: int, body: bytes
) -> None:
    assert parse_answer("cache", status, body) == Answer.flag_disabled()


def test_an_answer_that_defers_to_the_callers_default_names_no_variant() -> None:
    assert parse_answer("cache", 200, _body(key="cache", reason="DEFAULT", metadata={})) == Answer.served(
        None
    )
    assert parse_answer("cache", 200, _body(key="cache", value=True)) == Answer.served(None)


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (200, b"<html>proxy</html>", "HTTP 200 but not a JSON object: '<html>proxy</html>'"),
        (200, b'{"key": "cache", "variant": ', "HTTP 200 but not a JSON object"),
        (200, b"[1, 2]", "HTTP 200 but not a JSON object"),
        (200, _body(key="other", variant="off"), "answered for flag 'other', not 'cache'"),
        (200, _body(key="cache", variant=1), "'variant' is 1, not text"),
        (200, _body(key="cache", variant="off", reason=["x"]), "'reason' is ['x'], not text"),
        (200, _body(key="cache", reason="TARGETING_MATCH"), "neither a variant nor a value"),
        (200, _body(key="cache", errorCode="GENERAL", errorDetails="boom"), "HTTP 200 GENERAL: boom"),
        (
            404,
            _body(key="cache", errorCode="FLAG_NOT_FOUND", errorDetails="flag `cache` does not exist"),
            "the flag server does not know the flag (HTTP 404 FLAG_NOT_FOUND: flag `cache` does not exist)",
        ),
        (
            400,
            _body(key="cache", errorCode="PARSE_ERROR", errorDetails="bad rule"),
            "HTTP 400 PARSE_ERROR: bad rule",
        ),
        (400, _body(key="cache", errorCode="INVALID_CONTEXT"), "HTTP 400 INVALID_CONTEXT"),
        (401, b"", "HTTP 401: not allowed to evaluate"),
        (403, b"{}", "HTTP 403: not allowed to evaluate"),
        (429, b"", "HTTP 429: rate limited"),
        (500, _body(errorDetails="evaluator crashed"), "HTTP 500: evaluator crashed"),
        (503, b"upstream connect error", "HTTP 503: upstream connect error"),
        (502, b"", "HTTP 502: (empty body)"),
        (404, b"404 page not found\n", "HTTP 404: 404 page not found"),
    ],
)
def test_every_other_answer_is_a_failure_saying_why(status: int, body: bytes, said: str) -> None:
    answer = parse_answer("cache", status, body)
    assert answer.error is not None
    assert said in answer.error
    assert answer.variant is None


# The client over faked HTTP ----------------------------------------------------------------------


def test_it_posts_the_targeting_key_as_the_context_to_the_flags_endpoint() -> None:
    with respx.mock() as router:
        route = router.post(ENDPOINT).mock(
            return_value=httpx.Response(200, content=_body(key="cache", variant="on"))
        )
        assert _run(_evaluate(key="flagroll-verify-7")) == Answer.served("on")
    request = route.calls.last.request
    assert json.loads(request.content) == {"context": {"targetingKey": "flagroll-verify-7"}}
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers


def test_the_flag_key_is_one_path_segment_and_the_base_may_have_a_path() -> None:
    with respx.mock() as router:
        route = router.post("http://gw.example/flags/ofrep/v1/evaluate/flags/team%2Fcache%20v2").mock(
            return_value=httpx.Response(200, content=_body(key="team/cache v2", variant="off"))
        )
        answer = _run(_evaluate("team/cache v2", url="http://gw.example/flags/"))
    assert answer == Answer.served("off")
    assert route.call_count == 1


def test_a_bearer_token_is_sent_and_never_shown() -> None:
    with respx.mock() as router:
        route = router.post(ENDPOINT).mock(return_value=httpx.Response(401))
        answer = _run(_evaluate(bearer_token=Secret("s3cret")))
    assert route.calls.last.request.headers["authorization"] == "Bearer s3cret"
    assert answer.error is not None
    assert "s3cret" not in answer.error


@pytest.mark.parametrize("exc", [httpx.ReadTimeout, httpx.ConnectTimeout, TimeoutError])
def test_a_timeout_is_a_failure_saying_so(exc: type[Exception]) -> None:
    with respx.mock() as router:
        router.post(ENDPOINT).mock(side_effect=exc)
        answer = _run(_evaluate(timeout_seconds=1.5))
    assert answer.error == f"timed out after 1.5s ({BASE})"


def test_transport_failures_and_a_huge_answer_are_failures_naming_the_server() -> None:
    with respx.mock() as router:
        router.post(ENDPOINT).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
        refused = _run(_evaluate())
        router.post(ENDPOINT).mock(side_effect=httpx.RemoteProtocolError("peer closed"))
        cut = _run(_evaluate())
        router.post(ENDPOINT).mock(return_value=httpx.Response(200, content=b" " * (MAX_BODY_BYTES + 1)))
        huge = _run(_evaluate())
    assert refused.error == f"cannot connect to {BASE}: [Errno 111] Connection refused"
    assert cut.error == f"request to {BASE} failed: RemoteProtocolError: peer closed"
    assert huge.error == f"answer larger than {MAX_BODY_BYTES} bytes"


def test_a_password_in_the_url_is_never_shown() -> None:
    with respx.mock() as router:
        router.post("http://flagd.example:8016/ofrep/v1/evaluate/flags/cache").mock(
            side_effect=httpx.ConnectError("x")
        )
        answer = _run(_evaluate(url="http://me:hunter2@flagd.example:8016"))
    assert answer.error is not None
    assert "hunter2" not in answer.error


def test_a_round_stops_asking_at_the_first_failure() -> None:
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 3:
            return httpx.Response(503, content=b"overloaded")
        return httpx.Response(200, content=_body(key="cache", variant="off"))

    async def ask() -> list[Answer]:
        async with OfrepClient(BASE, max_concurrency=1) as client:
            return await client.evaluate_all("cache", [f"k{i}" for i in range(100)])

    with respx.mock() as router:
        router.post(ENDPOINT).mock(side_effect=answer)
        answers = _run(ask())
    assert [a.variant for a in answers[:2]] == ["off", "off"]
    assert answers[-1].error == "HTTP 503: overloaded"
    assert len(answers) == 3
    assert calls <= 4  # the keys not asked yet were dropped


# Against real sockets --------------------------------------------------------------------------


def test_a_closed_port_is_a_failure_at_once() -> None:
    started = time.monotonic()
    answer = _run(_evaluate(url=f"http://127.0.0.1:{free_port()}"))
    assert answer.error is not None
    assert answer.error.startswith("cannot connect to http://127.0.0.1:")
    assert time.monotonic() - started < 2


def test_the_fake_server_answers_as_the_daemon_does(tmp_path: Path) -> None:
    env = Environment(tmp_path)
    env.cycle()  # the policy's flag, at its first step
    document = json.loads(env.flags.read_text())
    exposed = read_state(document, "cache")
    assert exposed is not None
    document = write_flag(
        document, "cache", stop(exposed, "test", exposed.updated_at).after, keep_segment=True
    )
    document["flags"]["dark"] = {**document["flags"]["cache"], "state": "DISABLED"}
    env.flags.write_text(json.dumps(document))

    async def ask(url: str) -> list[Answer]:
        async with OfrepClient(url) as client:
            return [
                await client.evaluate("cache", "user-1"),
                await client.evaluate("dark", "user-1"),
                await client.evaluate("nope", "user-1"),
            ]

    with OfrepFake(env.flags) as fake:
        served, dark, unknown = _run(ask(fake.url))
    assert served == Answer.served("off")
    assert dark == Answer.flag_disabled()
    assert unknown.error == (
        "the flag server does not know the flag (HTTP 404 FLAG_NOT_FOUND: flag `nope` does not exist)"
    )


def test_the_token_comes_from_a_file_or_the_environment_never_an_argument(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert bearer_token(str(token_file), {TOKEN_ENV: "from-env"}) == Secret("from-file")
    assert bearer_token(None, {TOKEN_ENV: "from-env"}) == Secret("from-env")
    assert bearer_token(None, {}) is None
    with pytest.raises(UsageError, match=f"{TOKEN_ENV}: contains a line break"):
        bearer_token(None, {TOKEN_ENV: "two\nlines"})
    with pytest.raises(UsageError, match=r"--verify-ofrep-bearer-token-file .*: cannot read"):
        bearer_token(str(tmp_path / "missing"), {})
