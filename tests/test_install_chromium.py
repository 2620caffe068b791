"""scripts/install-chromium, run for real with ``apt-get`` (and ``sudo``) replaced by recorders on a PATH
that holds only what the script needs (tests/support/installscripts.py)."""

from __future__ import annotations

from pathlib import Path

from tests.support.installscripts import bare_path, recording_apt_get, run_script, tool
from tests.support.paths import ROOT

SCRIPT = ROOT / "scripts" / "install-chromium"


def test_nothing_is_installed_when_chromium_and_chromedriver_are_there(tmp_path: Path) -> None:
    directory = bare_path(tmp_path)
    log = tmp_path / "apt.log"
    recording_apt_get(directory, log, ("chromium", "chromedriver"))
    tool(directory, "chromium", "")
    tool(directory, "chromedriver", "")
    done = run_script(SCRIPT, directory)
    assert done.returncode == 0, done.stderr
    assert not log.exists()


def test_missing_chromedriver_is_installed_with_apt_get(tmp_path: Path) -> None:
    directory = bare_path(tmp_path)
    log = tmp_path / "apt.log"
    recording_apt_get(directory, log, ("chromium", "chromedriver"))
    tool(directory, "chromium", "")  # the browser without its driver
    done = run_script(SCRIPT, directory)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        "update -qq",
        "install -y -qq --no-install-recommends chromium chromium-driver",
    ]
    assert (directory / "chromedriver").exists()


def test_an_install_that_leaves_no_chromium_fails(tmp_path: Path) -> None:
    directory = bare_path(tmp_path)
    recording_apt_get(directory, tmp_path / "apt.log", ())
    assert run_script(SCRIPT, directory).returncode != 0


def test_without_apt_get_it_says_what_to_do(tmp_path: Path) -> None:
    done = run_script(SCRIPT, bare_path(tmp_path))
    assert done.returncode == 1
    assert "please install Chromium and its ChromeDriver" in done.stderr
