"""The Makefile's set-up rules, run for real on a copy of the Makefile with the package installs left out
(``PIP=:``): the virtual environment they make must run, also when the one found is broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT


def make(directory: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(directory),
            "VENV=venv",
            "PIP=:",
            f"PYTHON={sys.executable}",
            *targets,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def runs(python: Path) -> bool:
    try:
        return subprocess.run([str(python), "-c", ""], capture_output=True, check=False).returncode == 0
    except OSError:  # a dangling link
        return False


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Makefile and the files its stamps depend on, older than any stamp."""
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy2(ROOT / name, tmp_path / name)
        os.utime(tmp_path / name, (1_000_000_000, 1_000_000_000))
    return tmp_path


def test_a_venv_whose_python_was_removed_is_made_anew_though_its_stamps_are_fresh(project: Path) -> None:
    """The python a venv was made with is gone (upgraded, or its installation removed): its links
    dangle, and every command of the venv fails. Its stamps are newer than pyproject.toml, so by their
    dates alone it is up to date; the set-up must still see that it cannot run, and make it anew."""
    venv = project / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").symlink_to(project / "removed" / "bin" / "python3")
    (venv / "bin" / "python").symlink_to("python3")
    for stamp in (".installed-runtime", ".installed-dev"):
        (venv / stamp).touch()
    assert not runs(venv / "bin" / "python")

    done = make(project, "venv/.installed-dev")

    assert done.returncode == 0, done.stdout + done.stderr
    assert runs(venv / "bin" / "python"), done.stdout + done.stderr
    assert (venv / ".installed-runtime").exists()
    assert (venv / ".installed-dev").exists()


def test_a_working_venv_with_fresh_stamps_is_left_as_it_is(project: Path) -> None:
    assert make(project, "venv/.installed-dev").returncode == 0
    python = project / "venv" / "bin" / "python"
    assert runs(python)

    again = make(project, "venv/.installed-dev")

    assert again.returncode == 0, again.stdout + again.stderr
    assert "is up to date" in again.stdout, again.stdout


def test_the_test_setup_builds_every_peer_with_the_peer_script(project: Path) -> None:
    """`make test` (its `setup`) runs the tests against Prometheus 3, VictoriaMetrics and a real
    Kubernetes API server too: it builds them first."""
    planned = make(project, "-n", "setup")

    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "scripts/peer prometheus3" in planned.stdout
    assert "scripts/peer victoriametrics" in planned.stdout
    for peer in ("etcd", "kube-apiserver", "featureflag-crd"):
        assert f"scripts/peer {peer}" in planned.stdout
    assert "scripts/install-prometheus" in planned.stdout


def test_the_test_setup_installs_node_and_chromium(project: Path) -> None:
    """The JavaScript evaluator's tests need Node.js; the browser tests Chromium and chromedriver."""
    planned = make(project, "-n", "setup")

    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "scripts/install-node" in planned.stdout
    assert "scripts/install-chromium" in planned.stdout
