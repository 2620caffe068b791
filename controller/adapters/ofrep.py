"""Ask a flag server what it serves, over OFREP (the OpenFeature Remote Evaluation Protocol).

One evaluation is ``POST {base}/ofrep/v1/evaluate/flags/{key}`` with ``{"context": {"targetingKey":
…}}``; the server answers 200 with ``{"key", "value", "reason", "variant", "metadata"}``, or an error
object ``{"key", "errorCode", "errorDetails"}`` (400, 404), or 401/403/429/5xx. Every answer becomes
an :class:`~controller.core.serving.Answer`: a variant, "disabled", or a failure saying why (not
JSON, the wrong flag, a wrong type, unreachable, timed out…). Nothing here raises into the caller
for a bad answer. A disabled flag is answered differently by server versions: 400 ``FLAG_DISABLED``,
404 ``FLAG_NOT_FOUND`` whose details say it is disabled, or 200 with reason ``DISABLED`` and no
variant; each is read as "disabled". The transport is injectable for tests.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from controller.adapters.promauth import Secret, read_secret_file
from controller.adapters.prometheus import redact
from controller.core.errors import UsageError
from controller.core.serving import Answer

REQUEST_TIMEOUT_SECONDS = 2.0  # one evaluation; a sidecar answers in milliseconds
MAX_CONCURRENCY = 16  # evaluations in flight at once, over every flag verified
MAX_BODY_BYTES = 64 * 1024
EVALUATE_PATH = "/ofrep/v1/evaluate/flags/"
_SNIPPET = 120


def _snippet(body: bytes) -> str:
    text = " ".join(body[:_SNIPPET].decode("utf-8", errors="replace").split())
    return text + ("…" if len(body) > _SNIPPET else "")


def _text(value: Any) -> str:
    shown = repr(value)
    return shown[:60] + ("…" if len(shown) > 60 else "")


def parse_answer(flag: str, status_code: int, body: bytes) -> Answer:
    """Judge one evaluation response for ``flag``. Pure: bytes in, answer out."""
    try:
        document = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError):
        document = None
    if status_code == 200:
        if not isinstance(document, dict):
            return Answer.failed(f"HTTP 200 but not a JSON object: {_snippet(body)!r}")
        return _success(flag, document)
    if (
        status_code in (400, 404)
        and isinstance(document, dict)
        and isinstance(document.get("errorCode"), str)
    ):
        return _error_object(status_code, document)
    if status_code in (401, 403):
        return Answer.failed(
            f"HTTP {status_code}: not allowed to evaluate (a token? --verify-ofrep-bearer-token-file)"
        )
    if status_code == 429:
        return Answer.failed("HTTP 429: rate limited by the flag server")
    details = document.get("errorDetails") if isinstance(document, dict) else None
    shown = details if isinstance(details, str) and details else _snippet(body) or "(empty body)"
    return Answer.failed(f"HTTP {status_code}: {shown}")


def _success(flag: str, document: dict[str, Any]) -> Answer:
    if isinstance(document.get("errorCode"), str):  # an error object with status 200
        return _error_object(200, document)
    key = document.get("key")
    if key is not None and key != flag:
        return Answer.failed(f"answered for flag {_text(key)}, not {flag!r}")
    variant = document.get("variant")
    if variant is not None and not isinstance(variant, str):
        return Answer.failed(f"'variant' is {_text(variant)}, not text")
    reason = document.get("reason")
    if reason is not None and not isinstance(reason, str):
        return Answer.failed(f"'reason' is {_text(reason)}, not text")
    if reason == "DISABLED" and variant is None:
        return Answer.flag_disabled()
    if variant is None and "value" not in document and reason not in ("DEFAULT", None):
        return Answer.failed(f"neither a variant nor a value (reason {reason!r})")
    return Answer.served(variant or None)


def _error_object(status_code: int, document: dict[str, Any]) -> Answer:
    code = document["errorCode"]
    details = document.get("errorDetails")
    said = f": {details}" if isinstance(details, str) and details else ""
    if code == "FLAG_DISABLED" or (code == "FLAG_NOT_FOUND" and "disabled" in said.lower()):
        return Answer.flag_disabled()
    if code == "FLAG_NOT_FOUND":
        return Answer.failed(f"the flag server does not know the flag (HTTP {status_code} {code}{said})")
    return Answer.failed(f"HTTP {status_code} {code}{said}")


class OfrepClient:
    """Evaluations over OFREP, ``max_concurrency`` at a time, each within ``timeout_seconds``."""

    def __init__(
        self,
        url: str,
        *,
        bearer_token: Secret | None = None,
        timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
        max_concurrency: int = MAX_CONCURRENCY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = url.rstrip("/")
        self.url = redact(self._base)  # what logs and records show: never a password
        self.timeout_seconds = timeout_seconds
        self.requests = 0  # evaluations sent, for tests and benchmarks
        self._semaphore = asyncio.Semaphore(max_concurrency)
        headers = {"Accept": "application/json"}
        if bearer_token is not None:
            headers["Authorization"] = f"Bearer {bearer_token.reveal()}"
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            headers=headers,
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> OfrepClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def evaluate(self, flag: str, targeting_key: str) -> Answer:
        endpoint = f"{self._base}{EVALUATE_PATH}{quote(flag, safe='')}"
        body = {"context": {"targetingKey": targeting_key}}
        async with self._semaphore:
            self.requests += 1
            try:
                return await asyncio.wait_for(self._post(flag, endpoint, body), self.timeout_seconds + 1)
            except (httpx.TimeoutException, TimeoutError):
                return Answer.failed(f"timed out after {self.timeout_seconds:g}s ({self.url})")
            except httpx.ConnectError as exc:
                return Answer.failed(f"cannot connect to {self.url}: {_reason(exc)}")
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                return Answer.failed(f"request to {self.url} failed: {type(exc).__name__}: {_reason(exc)}")

    async def _post(self, flag: str, endpoint: str, body: dict[str, Any]) -> Answer:
        async with self._client.stream("POST", endpoint, json=body) as response:
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received.extend(chunk)
                if len(received) > MAX_BODY_BYTES:
                    return Answer.failed(f"answer larger than {MAX_BODY_BYTES} bytes")
            return parse_answer(flag, response.status_code, bytes(received))

    async def evaluate_all(self, flag: str, keys: Sequence[str]) -> list[Answer]:
        """Every key's answer (in the order they come); at the first failure the keys not answered
        yet are dropped (the round has failed): the answers so far and that failure are returned."""
        pending = {asyncio.ensure_future(self.evaluate(flag, key)) for key in keys}
        answers: list[Answer] = []
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                answers.extend(task.result() for task in done)
                if any(answer.error is not None for answer in answers):
                    break
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return answers


TOKEN_ENV = "FLAGROLL_VERIFY_OFREP_BEARER_TOKEN"


def bearer_token(token_file: str | None, environ: Mapping[str, str] | None = None) -> Secret | None:
    """The flag server's bearer token: from ``token_file`` (a mounted Secret), else from the
    environment (TOKEN_ENV); never from an argument. Errors name the file, never the token."""
    if token_file:
        return read_secret_file(Path(token_file), "--verify-ofrep-bearer-token-file")
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "")
    if not value:
        return None
    if any(ch in value for ch in "\r\n\0"):
        raise UsageError(f"{TOKEN_ENV}: contains a line break or NUL; one line expected")
    return Secret(value)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]
