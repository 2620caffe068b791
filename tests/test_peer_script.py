"""``scripts/peer NAME``: builds a real peer from the Go module proxy once, caches it by name and version,
and prints the binary's absolute path on its last line.

Most tests put a stand-in ``go`` first on PATH (the script's one seam to the outside: it runs ``go
install`` with GOBIN, or ``go mod download`` and ``go build``), which logs each call and makes a small
executable, so that caching, locking and the fall-back build are checked in seconds. The last tests run
the real build of ``prometheus3`` in the user's cache (the one ``make test`` builds and the ``prometheus``
fixture starts).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.paths import ROOT
from tests.support.waiting import wait_for

SCRIPT = ROOT / "scripts" / "peer"

FAKE_GO = r"""#!/usr/bin/env bash
# A stand-in for the Go toolchain: logs its arguments, and "builds" a script that answers --version.
set -euo pipefail
echo "$*" >>"$FAKE_GO_LOG"
make_binary() {
  mkdir -p "$(dirname "$1")"
  printf '#!/bin/sh\necho "%s built by the stand-in go"\n' "$(basename "$1")" >"$1"
  chmod +x "$1"
}
hold() {  # a build that lasts until the test releases it (if it asked to)
  if [ -n "${FAKE_GO_RELEASE:-}" ]; then
    for _ in $(seq 600); do [ -e "$FAKE_GO_RELEASE" ] && return; sleep 0.05; done
    echo "never released" >&2; exit 1
  fi
}
case "$1" in
  install)
    target="${*: -1}"
    package="${target%@*}"
    if [ -n "${FAKE_GO_REFUSE:-}" ]; then
      echo "go: $target (in ${package%%/cmd/*}): The go.mod file for the module providing named packages contains one or more replace directives. It must not contain directives that would cause it to be interpreted differently than if it were the main module." >&2
      exit 1
    fi
    if [ -n "${FAKE_GO_FAIL:-}" ]; then echo "go: cannot reach the module proxy" >&2; exit 1; fi
    hold
    make_binary "$GOBIN/${package##*/}"
    ;;
  mod)  # mod download -json MODULE@VERSION
    mkdir -p "$FAKE_GO_SOURCE"
    echo "module fake" >"$FAKE_GO_SOURCE/go.mod"
    chmod -R a-w "$FAKE_GO_SOURCE"
    printf '{\n\t"Path": "fake",\n\t"Dir": "%s",\n\t"Sum": "h1:x"\n}\n' "$FAKE_GO_SOURCE"
    ;;
  build)  # build [flags] -o OUT ./PACKAGE, in a writable copy of the module
    [ -f go.mod ] && [ -w go.mod ] && [ "$PWD" != "$FAKE_GO_SOURCE" ] || { echo "not in a copy" >&2; exit 1; }
    out=""
    while [ $# -gt 0 ]; do
      if [ "$1" = "-o" ]; then out=$2; fi
      shift
    done
    make_binary "$out"
    ;;
  *) echo "stand-in go: unexpected $*" >&2; exit 1 ;;
esac
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        lines = self.stdout.splitlines()
        return lines[-1] if lines else ""


def peer(*args: str, env: dict[str, str] | None = None, timeout_seconds: float = 60) -> Run:
    done = subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=timeout_seconds,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, str]:
    """The environment of a call with the stand-in go first on PATH and the cache in ``tmp_path``."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    go = bindir / "go"
    go.write_text(FAKE_GO)
    go.chmod(go.stat().st_mode | stat.S_IXUSR)
    return {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_GO_LOG": str(tmp_path / "go.log"),
        "FAKE_GO_SOURCE": str(tmp_path / "modcache" / "module@v1"),
        "FLAGROLL_PEERS_DIR": str(tmp_path / "peers"),
    }


def go_calls(env: dict[str, str], verb: str) -> list[str]:
    log = Path(env["FAKE_GO_LOG"])
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.split(" ", 1)[0] == verb]


def test_help_lists_the_peers_and_exits_0() -> None:
    done = peer("--help")

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: scripts/peer NAME")
    assert "prometheus3 victoriametrics" in done.stdout


@pytest.mark.parametrize("args", [(), ("kafka",), ("prometheus3", "victoriametrics"), ("--bogus",)])
def test_no_name_an_unknown_name_or_a_stray_argument_prints_the_usage_and_exits_2(
    args: tuple[str, ...], fake: dict[str, str]
) -> None:
    done = peer(*args, env=fake)

    assert done.returncode == 2
    assert "usage: scripts/peer NAME" in done.stderr
    assert done.stdout == ""
    if args == ("kafka",):
        assert "unknown peer 'kafka'" in done.stderr
    assert go_calls(fake, "install") == []


def test_flagd_is_refused_in_one_line_saying_its_module_is_not_served(fake: dict[str, str]) -> None:
    done = peer("flagd", env=fake)

    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert "flagd daemon's module" in done.stderr
    assert "not served by the Go module proxy" in done.stderr
    assert not Path(fake["FAKE_GO_LOG"]).exists()


def test_without_go_on_path_the_error_names_what_is_missing(tmp_path: Path) -> None:
    path = "/usr/bin:/bin"
    assert shutil.which("go", path=path) is None, "this test needs a PATH without go"
    env = {**os.environ, "PATH": path, "FLAGROLL_PEERS_DIR": str(tmp_path / "peers")}

    done = peer("prometheus3", env=env)

    assert done.returncode == 1
    assert done.stdout == ""
    assert "not on PATH: go (the Go toolchain" in done.stderr
    assert "github.com/prometheus/prometheus/cmd/prometheus@v0." in done.stderr
    assert not (tmp_path / "peers" / "prometheus3").exists()


@pytest.mark.parametrize(
    ("name", "binary"), [("prometheus3", "prometheus"), ("victoriametrics", "victoria-metrics")]
)
def test_the_last_line_is_the_cached_executable_built_with_the_pinned_flags(
    name: str, binary: str, fake: dict[str, str], tmp_path: Path
) -> None:
    done = peer(name, env=fake)

    assert done.returncode == 0, done.stderr
    path = Path(done.last_line)
    assert path.is_absolute()
    assert path.name == binary
    assert path.parent.parent == tmp_path / "peers" / name
    assert path.parent.name.startswith("v")
    assert os.access(path, os.X_OK)
    assert subprocess.run([path, "--version"], capture_output=True, check=False).returncode == 0
    (install,) = go_calls(fake, "install")
    assert "-trimpath" in install
    assert install.endswith(f"@{path.parent.name}")
    assert "building" in done.stderr  # progress goes to stderr, the path alone to stdout
    assert done.stdout == f"{path}\n"
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", binary]  # no build leftovers


def test_a_second_call_uses_the_cache_without_building(fake: dict[str, str]) -> None:
    first = peer("victoriametrics", env=fake)
    path = Path(first.last_line)
    built_ns = path.stat().st_mtime_ns

    start = time.monotonic()
    second = peer("victoriametrics", env=fake)
    elapsed_seconds = time.monotonic() - start

    assert second.returncode == 0, second.stderr
    assert second.stdout == f"{path}\n"
    assert path.stat().st_mtime_ns == built_ns
    assert len(go_calls(fake, "install")) == 1
    assert elapsed_seconds < 5


def test_a_cached_binary_that_does_not_run_is_built_again(fake: dict[str, str]) -> None:
    path = Path(peer("prometheus3", env=fake).last_line)
    path.write_bytes(b"\x7fELF\x00\x00 truncated by a full disk")

    done = peer("prometheus3", env=fake)

    assert done.returncode == 0, done.stderr
    assert "does not run: building it again" in done.stderr
    assert len(go_calls(fake, "install")) == 2
    assert subprocess.run([path, "--version"], capture_output=True, check=False).returncode == 0


def test_a_failed_build_leaves_no_binary_and_says_so(fake: dict[str, str], tmp_path: Path) -> None:
    done = peer("prometheus3", env={**fake, "FAKE_GO_FAIL": "1"})

    assert done.returncode == 1
    assert done.stdout == ""
    assert "cannot reach the module proxy" in done.stderr
    assert "building prometheus3 failed" in done.stderr
    (version,) = (tmp_path / "peers" / "prometheus3").iterdir()
    assert [p.name for p in version.iterdir()] == [".lock"]


def test_a_module_with_replace_directives_is_built_inside_a_copy_of_the_downloaded_module(
    fake: dict[str, str],
) -> None:
    done = peer("victoriametrics", env={**fake, "FAKE_GO_REFUSE": "1"})

    assert done.returncode == 0, done.stderr
    assert "replace directives" in done.stderr
    (build,) = go_calls(fake, "build")
    assert "-trimpath" in build
    assert build.endswith("./app/victoria-metrics")
    assert Path(done.last_line).name == "victoria-metrics"
    assert os.access(done.last_line, os.X_OK)


def test_concurrent_callers_build_once_and_all_get_the_path(fake: dict[str, str], tmp_path: Path) -> None:
    """The first caller builds (held until released); the others wait on the lock meanwhile, then
    find the cached binary."""
    release = tmp_path / "release"
    env = {**fake, "FAKE_GO_RELEASE": str(release)}
    callers = []
    for index in range(4):
        out, err = (tmp_path / f"caller{index}.out").open("w"), (tmp_path / f"caller{index}.err").open("w")
        callers.append(
            (subprocess.Popen([str(SCRIPT), "prometheus3"], stdout=out, stderr=err, env=env), out, err)
        )

    def waiting() -> bool:
        texts = [(tmp_path / f"caller{i}.err").read_text() for i in range(4)]
        return (
            sum("waiting for another build" in t for t in texts) == 3 and len(go_calls(env, "install")) == 1
        )

    try:
        wait_for(waiting, timeout_seconds=30, what="one caller building and three waiting on the lock")
        release.touch()
        codes = [process.wait(timeout=30) for process, _, _ in callers]
    finally:
        for process, out, err in callers:
            if process.poll() is None:
                process.kill()
                process.wait()
            out.close()
            err.close()

    assert codes == [0, 0, 0, 0]
    paths = {(tmp_path / f"caller{i}.out").read_text() for i in range(4)}
    assert len(paths) == 1
    assert len(go_calls(env, "install")) == 1
    assert os.access(paths.pop().strip(), os.X_OK)


@pytest.mark.prometheus
def test_the_real_prometheus3_is_an_absolute_executable_path_reporting_3_x() -> None:
    done = peer("prometheus3", timeout_seconds=3600)

    assert done.returncode == 0, done.stderr
    path = Path(done.last_line)
    assert path.is_absolute()
    assert os.access(path, os.X_OK)
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("prometheus, version 3.")


@pytest.mark.prometheus
def test_the_real_prometheus3_second_call_is_fast_and_does_not_rebuild() -> None:
    path = Path(peer("prometheus3", timeout_seconds=3600).last_line)
    built_ns = path.stat().st_mtime_ns

    start = time.monotonic()
    again = peer("prometheus3")
    elapsed_seconds = time.monotonic() - start

    assert again.returncode == 0, again.stderr
    assert Path(again.last_line) == path
    assert path.stat().st_mtime_ns == built_ns
    assert elapsed_seconds < 5
    assert again.stderr == ""


@pytest.mark.parametrize(
    ("name", "package", "stamp"),
    [
        ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", "version.gitVersion=v1.37.2"),
        ("etcd", "go.etcd.io/etcd/server/v3", "version.GitSHA=module-proxy"),
    ],
)
def test_a_peer_with_a_build_module_of_ours_is_built_inside_it(
    name: str, package: str, stamp: str, fake: dict[str, str]
) -> None:
    done = peer(name, env=fake)

    assert done.returncode == 0, done.stderr
    assert go_calls(fake, "install") == []
    (build,) = go_calls(fake, "build")
    assert "-mod=readonly" in build  # the versions are those our go.mod and go.sum pin
    assert stamp in build
    assert build.endswith(f" {package}")
    assert Path(done.last_line).name in {"kube-apiserver", "etcd"}
    assert os.access(done.last_line, os.X_OK)


def module_requirements(path: Path) -> dict[str, str]:
    """Module -> version of every requirement and replacement in a go.mod (replacements win)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        words = line.split("//")[0].split()
        if words[:1] in (["require"], ["replace"]):
            words = words[1:]
        if len(words) == 2 and words[1].startswith("v"):
            found.setdefault(words[0], words[1])
        if len(words) == 4 and words[1] == "=>":
            found[words[0]] = words[3]
    return found


def test_the_build_modules_pin_the_versions_the_script_names() -> None:
    script = SCRIPT.read_text()
    kube = module_requirements(ROOT / "scripts" / "peers" / "kube-apiserver" / "go.mod")
    assert "K8S_VERSION=v1.37.2" in script
    assert kube["k8s.io/kubernetes"] == "v1.37.2"
    staging = {module: version for module, version in kube.items() if module.startswith("k8s.io/")}
    for module in ("k8s.io/api", "k8s.io/apiserver", "k8s.io/apimachinery", "k8s.io/client-go"):
        assert staging[module] == "v0.37.2", module  # each staging module at the release's own minor
    etcd = module_requirements(ROOT / "scripts" / "peers" / "etcd" / "go.mod")
    assert "|go.etcd.io/etcd/server/v3|.|v3.7.3|" in script
    assert {etcd[m] for m in etcd if m.startswith("go.etcd.io/etcd/")} == {"v3.7.3"}


@pytest.mark.parametrize(
    ("name", "reports"), [("kube-apiserver", "Kubernetes v1.37.2"), ("etcd", "etcd Version: 3.7.3")]
)
def test_the_real_kubernetes_peers_report_their_pinned_versions(name: str, reports: str) -> None:
    done = peer(name, timeout_seconds=3600)

    assert done.returncode == 0, done.stderr
    version = subprocess.run([done.last_line, "--version"], capture_output=True, text=True, check=True)
    assert reports in version.stdout


def test_the_featureflag_crd_is_generated_from_the_operators_api_module() -> None:
    done = peer("featureflag-crd", timeout_seconds=3600)

    assert done.returncode == 0, done.stderr
    path = Path(done.last_line)
    assert path.parent == Path(path.parent.parent, "v0.2.45")
    crd = yaml.safe_load(path.read_text())
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "featureflags.core.openfeature.dev"
    assert [v["name"] for v in crd["spec"]["versions"]] == ["v1beta1"]
    flag = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    flags = flag["flagSpec"]["properties"]["flags"]["additionalProperties"]
    assert sorted(flags["properties"]) == ["defaultVariant", "state", "targeting", "variants"]
