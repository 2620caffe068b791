"""Installing the JavaScript evaluator (tests/support/jsevaluator.py) with ``npm`` replaced by a recorder:
once per package lock however many sessions ask at once, never half an installation, and a clear error
when node is missing or ``npm ci`` fails."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import jsevaluator
from tests.support.jsevaluator import MissingNode, install, installed_version


def fake_tools(tmp_path: Path, npm_body: str) -> str:
    """A PATH whose ``node`` and ``npm`` are fakes, before the system's other tools."""
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "node").write_text("#!/bin/sh\n")
    (directory / "npm").write_text(f"#!/bin/sh\n{npm_body}\n")
    for name in ("node", "npm"):
        (directory / name).chmod(0o755)
    return f"{directory}{os.pathsep}{os.defpath}"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "flagroll" / "jsflagd"


def test_concurrent_sessions_install_once(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "npm.log"
    manifest = "node_modules/@openfeature/flagd-core"
    body = (
        f'echo "$PWD $*" >> {log}\nsleep 0.2  # long enough for the others to arrive\n'
        f'mkdir -p {manifest} && echo \'{{"version": "4.0.1"}}\' > {manifest}/package.json'
    )
    monkeypatch.setenv("PATH", fake_tools(tmp_path, body))
    with ThreadPoolExecutor(4) as pool:
        directories = set(pool.map(lambda _: install(), range(4)))
    (directory,) = directories
    calls = log.read_text().splitlines()
    assert len(calls) == 1
    assert calls[0].endswith("ci --ignore-scripts --no-audit --no-fund")
    assert directory.parent == cache
    assert installed_version(directory, "@openfeature/flagd-core") == "4.0.1"
    assert sorted(p.name for p in cache.iterdir()) == sorted([directory.name, f"{directory.name}.lock"])
    assert install() == directory  # a later session finds it
    assert len(log.read_text().splitlines()) == 1


def test_a_failed_npm_ci_is_an_error_and_leaves_nothing_behind(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "PATH", fake_tools(tmp_path, "mkdir node_modules; echo 'registry unreachable' >&2; exit 7")
    )
    with pytest.raises(RuntimeError, match=r"npm ci in .* failed \(7\): registry unreachable"):
        install()
    assert [p.name for p in cache.iterdir()] == [f"{jsevaluator._digest()}.lock"]


def test_without_node_the_error_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingNode, match=r"need `npm` on PATH: run `make setup`"):
        install()
