"""Asking Prometheus: every plan's queries at once, the answers handed on in waves as they come back,
so that one slow query never holds back the rollouts that do not ask it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

from controller.core.queries import MetricsSource, QueryKey, Reading
from controller.core.readings import Readings
from controller.reconciler.plan import Plan

WAVE_GATHER_SECONDS = 0.05  # how long a commit waits for answers landing just after the first one


async def answered(
    prometheus: MetricsSource, plans: Sequence[Plan]
) -> AsyncIterator[tuple[list[Plan], Readings]]:
    """The plans with their readings, in waves: those whose answers came back together. Always
    yields at least once, so that a cycle with nothing to ask still commits its notices."""

    async def ask(group: list[Plan]) -> tuple[list[Plan], Mapping[QueryKey, Reading]]:
        queries = [q for plan in group for q in plan.queries]
        return group, await prometheus.query_all(queries) if queries else {}

    # Plans asking the same queries (those reading only templates) get their answers at the same
    # moment anyway: one call for the lot, not one task and one dict per rollout.
    groups: dict[frozenset[str], list[Plan]] = {}
    for plan in plans:
        groups.setdefault(frozenset(q.promql for q in plan.queries), []).append(plan)
    tasks = [asyncio.ensure_future(ask(group)) for group in groups.values()]
    order = {task: index for index, task in enumerate(tasks)}  # a wave is committed in plan order
    pending = set(tasks)
    if not pending:
        yield [], {}
        return
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if pending:  # answers that land a moment later join this wave
                more, pending = await asyncio.wait(pending, timeout=WAVE_GATHER_SECONDS)
                done |= more
            wave = [task.result() for task in sorted(done, key=order.__getitem__)]
            readings: dict[QueryKey, Reading] = {}
            for _, answers in wave:
                readings.update(answers)
            yield [plan for group, _ in wave for plan in group], readings
    finally:
        for task in pending:
            task.cancel()
