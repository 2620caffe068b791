"""Tell people when it matters: rollback, stop, completion, a stale rollout, a rejected policy, an
exposed flag that no policy judges (unguarded), a flag adopted or handed over, a flag server that
does not serve what flagroll wrote (serving_unverified), and a rollout that begins to wait for a
human's approval (awaiting_approval, once per wait).

Events are derived from decision records (:func:`events_from`), so a notification says exactly what
the decision log says. Two payloads:

- ``webhook``: the event as JSON (``{"event": "rollback", "flag": …, "record": {…}}``);
- ``slack``: an incoming-webhook message (``{"text": …}``), readable in a channel.

Delivery never blocks the reconcile loop: events go into a bounded queue (oldest dropped, and counted,
when it is full) that a background thread drains, retrying each delivery with exponential backoff on
connection errors, timeouts, 429 and 5xx. A 4xx other than 429 is not retried (the URL or payload is
wrong: retrying cannot help). Webhook URLs may hold secrets: they are shown redacted.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from controller.adapters.prometheus import redact
from controller.core.compaction import is_heartbeat
from controller.core.errors import UsageError
from controller.core.records import POLICY_REJECTED_PREFIX
from controller.core.serving import is_verification, unverified

QUEUE_SIZE = 1000
ATTEMPTS = 5
FIRST_BACKOFF_SECONDS = 0.5
TIMEOUT_SECONDS = 5.0
KINDS = ("webhook", "slack")


@dataclass(frozen=True)
class Target:
    kind: str  # "webhook" or "slack"
    url: str

    @property
    def shown(self) -> str:
        return f"{self.kind} {_redacted(self.url)}"


def _redacted(url: str) -> str:
    """Slack-style URLs carry their secret in the path: show scheme and host only."""
    try:
        parsed = httpx.URL(redact(url))
    except httpx.InvalidURL:
        return "<invalid URL>"
    return f"{parsed.scheme}://{parsed.host}{':' + str(parsed.port) if parsed.port else ''}/…"


@dataclass(frozen=True)
class Event:
    kind: str  # rollback, stop, complete, stale, policy_rejected, unguarded, adopt, serving_unverified,
    # awaiting_approval
    flag: str
    summary: str
    record: Mapping[str, Any] = field(default_factory=dict)


def events_from(
    records: Iterable[Mapping[str, Any]],
    stale_seen: set[str] | None = None,
    dry_waits: set[str] | None = None,
) -> list[Event]:
    """The events worth telling people about in these records. ``stale_seen`` remembers which flags
    were already reported stale (once per process and flag, until the rollout is no longer stale);
    ``dry_waits`` the flags whose dry-run records said they wait for approval: a dry run writes no
    state, so each of its records would begin the wait again (told once per process and wait)."""
    events = []
    for record in records:
        if is_heartbeat(record):  # a hold going on (never handed on by the loop): nothing new to tell
            continue
        told = dry_waits is not None and _told_dry_wait(record, dry_waits)
        flag = str(record.get("flag", "?"))
        action = record.get("action")
        reason = str(record.get("reason", ""))
        percent = f"{record.get('from_percent')}% → {record.get('to_percent')}%"
        if is_verification(record):  # not a decision: loud only when the server does not serve it
            if unverified(record):
                events.append(Event("serving_unverified", flag, f"{flag}: {reason}", record))
            continue
        if action == "rollback":
            events.append(Event("rollback", flag, f"{flag} rolled back ({percent}): {reason}", record))
        elif action == "stop":
            events.append(Event("stop", flag, f"{flag} stopped by {record.get('actor')}: {reason}", record))
        elif action in {"complete", "promote"}:
            events.append(
                Event("complete", flag, f"{flag} {action}d at {record.get('to_percent')}%: {reason}", record)
            )
        elif action == "hold" and record.get("guarded") is False:
            if not record.get("reminder"):  # a reminder repeats what was told: not told again
                events.append(Event("unguarded", flag, f"{flag}: {reason}", record))
        elif action == "reject" or (action == "hold" and reason.startswith(POLICY_REJECTED_PREFIX)):
            events.append(Event("policy_rejected", flag, f"{flag}: {reason}", record))
        elif action == "adopt":
            events.append(Event("adopt", flag, f"{flag}: {reason}", record))
        elif action in {"hold", "recover"} and _approval_begins(record) and not told:
            events.append(Event("awaiting_approval", flag, f"{flag}: {reason}", record))
        if stale_seen is not None:
            if record.get("stale") is True and flag not in stale_seen:
                stale_seen.add(flag)
                events.append(
                    Event(
                        "stale",
                        flag,
                        f"{flag} is still at {record.get('to_percent')}% past its review date "
                        f"{record.get('review')}: decide (promote, change, or stop); "
                        f"owner {record.get('owner')}",
                        record,
                    )
                )
            elif record.get("stale") is False:
                stale_seen.discard(flag)
    return events


def _told_dry_wait(record: Mapping[str, Any], dry_waits: set[str]) -> bool:
    """Whether this dry-run record begins a wait for approval already told; remembers those told and
    forgets a flag whose record no longer waits for approval."""
    if not record.get("dry_run") or is_verification(record):
        return False
    flag = str(record.get("flag", "?"))
    waiting = record.get("waiting")
    if not (isinstance(waiting, Mapping) and waiting.get("reason") == "approval"):
        dry_waits.discard(flag)
        return False
    if flag in dry_waits:
        return True
    dry_waits.add(flag)
    return False


def _approval_begins(record: Mapping[str, Any]) -> bool:
    """The record of the decision with which a rollout begins to wait for an approval."""
    waiting = record.get("waiting")
    return (
        isinstance(waiting, Mapping) and waiting.get("reason") == "approval" and waiting.get("began") is True
    )


def payload(target: Target, event: Event) -> dict[str, Any]:
    if target.kind == "slack":
        icon = {
            "rollback": ":rotating_light:",
            "unguarded": ":rotating_light:",
            "serving_unverified": ":rotating_light:",
            "stop": ":octagonal_sign:",
            "complete": ":white_check_mark:",
            "awaiting_approval": ":raised_hand:",
        }
        return {"text": f"{icon.get(event.kind, ':warning:')} flagroll: {slack_escaped(event.summary)}"}
    return {"event": event.kind, "flag": event.flag, "summary": event.summary, "record": dict(event.record)}


def slack_escaped(text: str) -> str:
    """``text`` as Slack shows it literally: ``&``, ``<`` and ``>`` escaped, so that a reason carrying
    outside text (an alert's labels, a stop's reason) cannot mention ``<!channel>`` or make a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


class Notifier:
    """A bounded queue drained by one background thread."""

    def __init__(
        self,
        targets: Sequence[Target],
        *,
        log: Any,
        transport: httpx.BaseTransport | None = None,
        queue_size: int = QUEUE_SIZE,
        attempts: int = ATTEMPTS,
        first_backoff_seconds: float = FIRST_BACKOFF_SECONDS,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.targets = list(targets)
        self.log = log
        self.attempts = attempts
        self.first_backoff_seconds = first_backoff_seconds
        self._queue: queue.Queue[tuple[Target, Event] | None] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._sleep = sleep or self._pause
        self._client = httpx.Client(timeout=TIMEOUT_SECONDS, transport=transport, follow_redirects=False)
        self._thread = threading.Thread(target=self._drain, name="flagroll-notify", daemon=True)
        self._stale_seen: set[str] = set()
        self._dry_waits: set[str] = set()
        self.dropped = 0
        self.delivered = 0
        self.failed = 0

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # cut short when closing

    def start(self) -> Notifier:
        self._thread.start()
        return self

    def records(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Queue the events in these records; never blocks."""
        for event in events_from(records, self._stale_seen, self._dry_waits):
            self.send(event)

    def send(self, event: Event) -> None:
        for target in self.targets:
            while True:
                try:
                    self._queue.put_nowait((target, event))
                    break
                except queue.Full:
                    try:
                        self._queue.get_nowait()  # drop the oldest: the newest news matters most
                        self.dropped += 1
                        self.log.warning("notification_dropped", reason="queue full", dropped=self.dropped)
                    except queue.Empty:
                        pass

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._deliver(*item)

    def _deliver(self, target: Target, event: Event) -> bool:
        delay = self.first_backoff_seconds
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self._client.post(target.url, json=payload(target, event))
                if response.status_code < 300:
                    self.delivered += 1
                    self.log.info(
                        "notification_sent", to=target.shown, notification=event.kind, flag=event.flag
                    )
                    return True
                problem = f"HTTP {response.status_code}"
                if not _retryable(response.status_code):
                    break
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}"
            if attempt < self.attempts and not self._stopping.is_set():
                self._sleep(delay)
                delay *= 2
        self.failed += 1
        self.log.error(
            "notification_failed", to=target.shown, notification=event.kind, flag=event.flag, error=problem
        )
        return False

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Deliver what is queued for up to ``timeout_seconds`` (no more retries after that), then stop."""
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout_seconds)
            self._thread.join(timeout_seconds)
            self._stopping.set()
            self._thread.join(timeout_seconds)
        self._client.close()

    def send_now(self, event: Event) -> None:
        """Deliver synchronously (for one-shot commands such as ``flagroll stop``)."""
        for target in self.targets:
            self._deliver(target, event)


def parse_targets(webhooks: Iterable[str], slack: Iterable[str]) -> list[Target]:
    targets = []
    for kind, urls in (("webhook", webhooks), ("slack", slack)):
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise UsageError(f"--notify-{kind} {_redacted(url)}: give an http:// or https:// URL")
            targets.append(Target(kind, url))
    return targets
