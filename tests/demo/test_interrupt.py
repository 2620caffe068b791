"""Ctrl-C in the demo is honoured even when the cancellation it causes is swallowed on the way.

A cancellation that lands inside an HTTP call can come back as a connection error, which the demo's
loops tolerate (the service is still starting, Prometheus is still scraping); the signal handler
also sets an event that the loops look at, so the demo stops at once all the same.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from controller.adapters.promserver import free_port
from controller.demo.runner import wait_http


def test_waiting_for_the_service_stops_when_interrupted_though_no_cancellation_arrived() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stop = asyncio.Event()
        stop.set()  # the handler ran; its cancellation was lost inside an HTTP call

        async def wait() -> None:
            await wait_http(f"http://127.0.0.1:{free_port()}/metrics", 30, sleeper, stop)

        with pytest.raises(asyncio.CancelledError):
            asyncio.run(asyncio.wait_for(wait(), timeout=5))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_without_an_interruption_waiting_goes_on_until_the_deadline() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(RuntimeError, match="did not answer"):
            asyncio.run(wait_http(f"http://127.0.0.1:{free_port()}/metrics", 0.3, sleeper, asyncio.Event()))
    finally:
        sleeper.kill()
        sleeper.wait()
