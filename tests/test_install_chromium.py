"""scripts/install-chromium, run for real with ``apt-get`` (and ``sudo``) replaced by recorders on a PATH
that holds only what the script needs (as tests/test_install_node.py does for scripts/install-node)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.paths import ROOT
from tests.test_install_node import bare_path, tool

SCRIPT = ROOT / "scripts" / "install-chromium"


def run(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)],
        env={**os.environ, "PATH": str(directory)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def recording_apt_get(directory: Path, log: Path, *, installs: bool) -> None:
    """``apt-get`` that logs its arguments and, for ``install``, puts ``chromium`` and ``chromedriver``
    on PATH."""
    chmod = shutil.which("chmod")
    make = f'tool() {{ printf "#!/bin/sh\\n" > "{directory}/$1"; {chmod} +x "{directory}/$1"; }}'
    installing = 'if [ "$1" = install ]; then tool chromium; tool chromedriver; fi' if installs else ""
    tool(directory, "apt-get", f'echo "$@" >> "{log}"\n{make}\n{installing}')
    tool(directory, "sudo", 'exec "$@"')


def test_nothing_is_installed_when_chromium_and_chromedriver_are_there(tmp_path: Path) -> None:
    directory = bare_path(tmp_path)
    log = tmp_path / "apt.log"
    recording_apt_get(directory, log, installs=True)
    tool(directory, "chromium", "")
    tool(directory, "chromedriver", "")
    done = run(directory)
    assert done.returncode == 0, done.stderr
    assert not log.exists()


def test_missing_chromedriver_is_installed_with_apt_get(tmp_path: Path) -> None:
    directory = bare_path(tmp_path)
    log = tmp_path / "apt.log"
    recording_apt_get(directory, log, installs=True)
    tool(directory, "chromium", "")  # the browser without its driver
    done = run(directory)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        "update -qq",
        "install -y -qq --no-install-recommends chromium chromium-driver",
    ]
    assert (directory / "chromedriver").exists()


def test_an_install_that_leaves_no_chromium_fails(tmp_path: Path) -> None:
    directory = bare_path(tmp_path)
    recording_apt_get(directory, tmp_path / "apt.log", installs=False)
    assert run(directory).returncode != 0


def test_without_apt_get_it_says_what_to_do(tmp_path: Path) -> None:
    done = run(bare_path(tmp_path))
    assert done.returncode == 1
    assert "please install Chromium and its ChromeDriver" in done.stderr
