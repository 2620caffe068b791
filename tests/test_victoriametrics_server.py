"""The VictoriaMetrics single-node the tests run (``tests/support/victoriametrics.py``): it starts at a
free port on 127.0.0.1, says its own version, and is stopped with its directory removed; a start that
fails says why and leaves nothing behind. (That it scrapes and answers as the tests expect is what the
tests marked ``victoriametrics`` show.)"""

from __future__ import annotations

import pytest

from tests.support.victoriametrics import VictoriaMetricsServer

pytestmark = [pytest.mark.prometheus, pytest.mark.victoriametrics]


def test_it_starts_says_its_version_and_is_gone_after_stop() -> None:
    server = VictoriaMetricsServer(["127.0.0.1:9"]).start()
    try:
        workdir, process = server.workdir, server.process
        assert server.url.startswith("http://127.0.0.1:")
        assert server.version() == "1.151.0"
    finally:
        server.stop()
    assert process is not None
    assert process.poll() is not None
    assert workdir is not None
    assert not workdir.exists()
    assert server.workdir is None


def test_a_start_that_fails_names_the_server_and_its_complaint_and_leaves_nothing() -> None:
    server = VictoriaMetricsServer(["127.0.0.1:9"])
    server.job = "bad: [job"  # the scrape configuration no longer parses
    with pytest.raises(RuntimeError, match="victoria-metrics exited early") as failed:
        server.start(ready_timeout_seconds=30)
    assert "cannot parse Prometheus config" in str(failed.value), failed.value
    assert server.workdir is None
    assert server.process is None
