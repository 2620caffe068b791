"""Verified serving in the loop: after the flag file changes, ask the flag server whether it serves
what the file now says (``flagroll run --verify-ofrep URL``; the checks are
:mod:`controller.core.serving`'s).

The loop tells the verifier the states it reads and writes (:meth:`ServingVerifier.seen`): after each
plan (a change made by someone else since the last cycle, such as ``flagroll stop``) and after each
commit (the loop's own writes). A change that takes a flag's exposure to 0, or (with ``share``)
changes its shares, starts one task for that flag beside the cycles. The task reads the flag file
once (a newer change supersedes it; a share cannot be checked on a segment), then asks the flag
server about every sampled key, a round every ``poll_seconds``, until a round fits or
``timeout_seconds`` have passed, and records the outcome. A task never moves a flag and never holds
a cycle up; a newer change of the same flag cancels it. What the flag file holds when the process
starts is not verified (no change was seen); a flag that appears later is (from nothing, 0 %).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from controller.core.errors import FlagrollError
from controller.core.serving import (
    DEFAULT_SAMPLE,
    Answer,
    Expectation,
    Outcome,
    Tally,
    Verdict,
    Verification,
    against_file,
    expectation,
    judge,
    sample_keys,
    serves_differently,
    tally,
    verification_record,
)
from controller.core.state import RolloutState
from controller.reconciler.shared import Clock

POLL_SECONDS = 0.5  # between two rounds of questions
DEFAULT_TIMEOUT_SECONDS = 30.0

Record = dict[str, Any]


class FlagServer(Protocol):
    """Where the served variants come from: an OFREP client in production."""

    url: str

    async def evaluate_all(self, flag: str, keys: Sequence[str]) -> list[Answer]: ...


@dataclass(frozen=True)
class ServingSettings:
    """What ``flagroll run --verify-ofrep`` verifies, against which server, how long."""

    server: FlagServer
    sample: int = DEFAULT_SAMPLE
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    poll_seconds: float = POLL_SECONDS
    share: bool = True


@dataclass
class _Progress:
    rounds: int = 0
    last: Tally | None = None
    verdict: Verdict | None = None
    error: str | None = None


class ServingVerifier:
    def __init__(
        self,
        settings: ServingSettings,
        *,
        read: Callable[[], Mapping[str, Any]],
        record: Callable[[Sequence[Record]], None],
        clock: Clock,
        log: Any,
    ) -> None:
        """``read``: the flag document now (from a worker thread); ``record``: append, print and hand
        on records (from a worker thread)."""
        self.settings = settings
        self.keys = sample_keys(settings.sample)
        self._read = read
        self._record = record
        self._clock = clock
        self._log = log
        self._last: dict[str, RolloutState] = {}
        self._primed = False  # the flag file has been seen once: a flag new after that is a change
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def running(self) -> list[str]:
        """The flags being verified now."""
        return sorted(flag for flag, task in self._tasks.items() if not task.done())

    def seen(self, states: Mapping[str, RolloutState]) -> None:
        """Every managed flag as just read or written: a change starts a verification (in the loop's
        event loop). A state older than the one already seen (an overlapping cycle's earlier read)
        changes nothing."""
        for flag in set(self._last) - set(states):
            del self._last[flag]  # it left the flag file
        primed, self._primed = self._primed, True
        for flag, state in states.items():
            before = self._last.get(flag)
            if before is not None and state.updated_at < before.updated_at:
                continue
            self._last[flag] = state
            if before is None and not primed:
                continue  # as the process found it: no change seen
            if before is not None and not serves_differently(before, state):
                continue
            running = self._tasks.pop(flag, None)
            if running is not None and not running.done():
                running.cancel()
                self._log.info("serving_verification_superseded", flag=flag, note="it moved again")
            wanted = expectation(flag, before, state, share=self.settings.share)
            if wanted is not None:
                task = asyncio.get_running_loop().create_task(self._verify(wanted))
                self._tasks[flag] = task
                task.add_done_callback(functools.partial(self._finished, flag))

    def _finished(self, flag: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(flag) is task:
            del self._tasks[flag]
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self._log.error("serving_verification_crashed", flag=flag, error=f"{type(exc).__name__}: {exc}")

    async def close(self, *, wait: bool) -> None:
        """Wait for the verifications under way (``wait``: a run with ``--once``), or abandon them."""
        tasks = list(self._tasks.values())
        if not wait:
            for flag in self.running:
                self._log.warning("serving_verification_abandoned", flag=flag, note="shutting down")
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _verify(self, wanted: Expectation) -> None:
        try:
            document = await asyncio.to_thread(self._read)
        except FlagrollError as exc:
            problem = f"cannot read the flag file: {exc}"
            self._log.error("serving_not_verified", flag=wanted.flag, error=problem)
            return
        prepared, why = against_file(wanted, document)
        if prepared is None:
            self._log.info("serving_not_verified", flag=wanted.flag, note=why)
            return
        started = time.monotonic()
        progress = await self._ask(prepared, started + self.settings.timeout_seconds)
        confirmed = progress.verdict is not None and progress.verdict.ok
        seconds = None
        if confirmed:
            seconds = max(0.0, (self._clock() - prepared.written_at).total_seconds())
        verification = Verification(
            wanted=prepared,
            outcome=Outcome.CONFIRMED if confirmed else Outcome.UNVERIFIED,
            url=self.settings.server.url,
            keys=len(self.keys),
            rounds=progress.rounds,
            waited_seconds=time.monotonic() - started,
            deadline_seconds=self.settings.timeout_seconds,
            last=progress.last,
            verdict=progress.verdict,
            seconds=seconds,
            error=progress.error,
        )
        record = verification_record(verification, self._clock())
        if not confirmed:
            self._log.error("serving_unverified", flag=wanted.flag, reason=record["reason"])
        await asyncio.to_thread(self._record, [record])

    async def _ask(self, wanted: Expectation, deadline: float) -> _Progress:
        """Rounds of questions until one fits or ``deadline`` (monotonic) passes."""
        progress = _Progress()
        server, poll = self.settings.server, self.settings.poll_seconds
        while True:
            try:
                answers = await asyncio.wait_for(
                    server.evaluate_all(wanted.flag, self.keys), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                progress.error = (
                    f"a round of {len(self.keys)} questions was still unanswered at the deadline "
                    f"({self.settings.timeout_seconds:g}s)"
                )
                return progress
            progress.rounds += 1
            progress.last = tally(answers, len(self.keys))
            progress.verdict = judge(wanted, progress.last)
            progress.error = progress.last.first_error
            if progress.verdict.ok or time.monotonic() + poll >= deadline:
                return progress
            await asyncio.sleep(poll)
