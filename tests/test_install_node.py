"""scripts/install-node, run for real with ``apt-get`` (and ``sudo``) replaced by recorders on a PATH
that holds only what the script needs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.paths import ROOT

SCRIPT = ROOT / "scripts" / "install-node"


def tool(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def bare_path(tmp_path: Path) -> Path:
    """A directory with the script's shell and ``id``, and nothing else."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("bash", "id", "sh"):
        real = shutil.which(name)
        assert real is not None
        (directory / name).symlink_to(real)
    return directory


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
    """``apt-get`` that logs its arguments and, for ``install``, puts ``node`` and ``npm`` on PATH."""
    chmod = shutil.which("chmod")
    make = f'tool() {{ printf "#!/bin/sh\\n" > "{directory}/$1"; {chmod} +x "{directory}/$1"; }}'
    installing = 'if [ "$1" = install ]; then tool node; tool npm; fi' if installs else ""
    tool(directory, "apt-get", f'echo "$@" >> "{log}"\n{make}\n{installing}')
    tool(directory, "sudo", 'exec "$@"')


def test_nothing_is_installed_when_node_and_npm_are_there(tmp_path: Path) -> None:
    directory = bare_path(tmp_path)
    log = tmp_path / "apt.log"
    recording_apt_get(directory, log, installs=True)
    tool(directory, "node", "")
    tool(directory, "npm", "")
    done = run(directory)
    assert done.returncode == 0, done.stderr
    assert not log.exists()


def test_missing_node_is_installed_with_apt_get(tmp_path: Path) -> None:
    directory = bare_path(tmp_path)
    log = tmp_path / "apt.log"
    recording_apt_get(directory, log, installs=True)
    tool(directory, "node", "")  # node without npm, as Debian's nodejs package alone leaves it
    done = run(directory)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        "update -qq",
        "install -y -qq --no-install-recommends nodejs npm",
    ]
    assert (directory / "npm").exists()


def test_an_install_that_leaves_no_node_fails(tmp_path: Path) -> None:
    directory = bare_path(tmp_path)
    recording_apt_get(directory, tmp_path / "apt.log", installs=False)
    assert run(directory).returncode != 0


def test_without_apt_get_it_says_what_to_do(tmp_path: Path) -> None:
    done = run(bare_path(tmp_path))
    assert done.returncode == 1
    assert "please install Node.js 18 or later with npm" in done.stderr
