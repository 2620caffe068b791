"""Git owns the base, flagroll owns the override: the base is never written, the override holds only
flagroll's flags, and the merged file serves what flagd would serve from base then override (checked
with the real flagd evaluator)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from structlog.testing import capture_logs

from controller import cli
from controller.adapters.decisionlog import DecisionLog
from controller.adapters.overlay import OverlayStore, merge
from controller.core.errors import FlagFileError, UsageError
from controller.reconciler import Reconciler
from tests.support.environment import Environment

BASE: dict[str, Any] = {
    "$evaluators": {"internal": {"in": ["@example.com", {"var": "email"}]}},
    "flags": {
        "cache": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"},
        "dark-mode": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
    },
}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_merge_lets_later_sources_win_per_key_and_keeps_evaluators() -> None:
    override = {"flags": {"cache": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"}}}
    merged = merge([BASE], override)
    assert merged["flags"]["cache"] == override["flags"]["cache"]
    assert merged["flags"]["dark-mode"] == BASE["flags"]["dark-mode"]
    assert merged["$evaluators"] == BASE["$evaluators"]


def test_merge_keeps_the_flag_set_metadata_of_the_bases_later_sources_winning_per_key() -> None:
    first = {**BASE, "metadata": {"team": "payments", "version": 3}}
    second = {"flags": {}, "metadata": {"version": 4, "env": "prod"}}
    merged = merge([first, second], {"flags": {}})
    assert merged["metadata"] == {"team": "payments", "version": 4, "env": "prod"}
    assert "metadata" not in merge([BASE], {"flags": {}})  # none to keep: none written


class Overlay:
    def __init__(self, env: Environment) -> None:
        self.env = env
        root = env.flags.parent
        self.base = root / "base.json"
        self.base.write_text(json.dumps(BASE, indent=2))
        self.merged = root / "merged.json"

    def store(self) -> OverlayStore:
        return OverlayStore(self.env.flags, [self.base], self.merged)

    def adopt_the_base_flag(self) -> None:
        """The base's ``cache`` is off for everyone: the policy adopts it (an ``adopt`` record), and the
        ramp starts at the next cycle."""
        self.run_once()
        records = [json.loads(line) for line in self.env.log.read_text().splitlines()]
        assert [(r["action"], r["to_percent"]) for r in records] == [("adopt", 0.0)]
        self.env.clock.now += timedelta(seconds=10)

    def run_once(self) -> None:
        reconciler = Reconciler(
            policies=self.env.policies,
            store=self.store(),
            prometheus=self.env.metrics,
            decision_log=DecisionLog(self.env.log),
            clock=self.env.clock,
        )
        asyncio.run(reconciler.run(once=True))

    def evaluate(self, key: str, user: str = "u1") -> Any:
        core = FlagdCore()
        core.set_flags(self.merged.read_text())
        return core.resolve_boolean_value(key, False, EvaluationContext(targeting_key=user)).value


@pytest.fixture
def overlay(tmp_path: Path) -> Overlay:
    return Overlay(Environment(tmp_path))


def test_the_base_is_never_written_and_the_override_holds_only_flagrolls_flags(overlay: Overlay) -> None:
    before = _digest(overlay.base)
    overlay.adopt_the_base_flag()
    overlay.run_once()
    overlay.env.clock.now += timedelta(minutes=1)
    overlay.run_once()
    assert _digest(overlay.base) == before
    override = json.loads(overlay.env.flags.read_text())
    assert list(override["flags"]) == ["cache"]
    assert override["flags"]["cache"]["metadata"]["flagroll.percent"] == 5
    merged = json.loads(overlay.merged.read_text())
    assert set(merged["flags"]) == {"cache", "dark-mode"}
    assert merged["flags"]["cache"] == override["flags"]["cache"]  # flagroll's definition wins
    assert overlay.evaluate("dark-mode") is True  # served from the base
    served = [overlay.evaluate("cache", f"user-{n}") for n in range(2000)]
    assert 0.02 < sum(served) / len(served) < 0.08  # 5 % treatment, through the real evaluator


def test_a_git_sync_of_the_base_refreshes_the_merged_file_without_a_decision(overlay: Overlay) -> None:
    overlay.run_once()
    base = json.loads(overlay.base.read_text())
    base["flags"]["dark-mode"]["defaultVariant"] = "off"
    overlay.base.write_text(json.dumps(base))
    store = overlay.store()
    assert store.refresh() is True
    assert overlay.evaluate("dark-mode") is False
    assert store.refresh() is False  # nothing changed since


def test_a_broken_base_leaves_the_merged_file_intact_and_is_reported(overlay: Overlay) -> None:
    overlay.adopt_the_base_flag()
    overlay.run_once()
    merged_before = overlay.merged.read_bytes()
    overlay.base.write_text('{"flags": ')
    with pytest.raises(FlagFileError, match=r"base\.json"):
        overlay.store().refresh(force=True)
    assert overlay.merged.read_bytes() == merged_before
    overlay.env.clock.now += timedelta(minutes=1)
    with capture_logs() as logs:
        overlay.run_once()  # the rollout goes on in the override file
    assert json.loads(overlay.env.flags.read_text())["flags"]["cache"]["metadata"]["flagroll.percent"] == 5
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["merged_file_not_written"]


def test_an_unmanaged_flag_in_both_base_and_override_is_refused(overlay: Overlay) -> None:
    overlay.env.flags.write_text(json.dumps({"flags": {"dark-mode": BASE["flags"]["dark-mode"]}}))
    with pytest.raises(FlagFileError, match="'dark-mode' is defined in a base and in the override"):
        overlay.store().refresh()


def test_the_override_base_and_merged_must_be_different_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="must be different files"):
        OverlayStore(tmp_path / "a.json", [tmp_path / "a.json"], None)
    with pytest.raises(UsageError, match="must be different files"):
        OverlayStore(tmp_path / "a.json", [tmp_path / "b.json"], tmp_path / "b.json")


def test_an_on_call_stop_updates_the_merged_file_too(
    overlay: Overlay, capsys: pytest.CaptureFixture[str]
) -> None:
    overlay.run_once()
    code = cli.main(
        [
            "stop",
            "cache",
            "--reason",
            "5xx",
            "--flags",
            str(overlay.env.flags),
            "--base",
            str(overlay.base),
            "--merged",
            str(overlay.merged),
        ]
    )
    assert code == 0
    merged = json.loads(overlay.merged.read_text())
    assert merged["flags"]["cache"]["metadata"]["flagroll.status"] == "stopped"
    assert not any(overlay.evaluate("cache", f"user-{n}") for n in range(500))


def test_a_base_number_json_cannot_hold_never_stops_the_loop(overlay: Overlay) -> None:
    overlay.adopt_the_base_flag()
    overlay.run_once()
    overlay.base.write_text(
        '{"flags": {"x": {"state": "ENABLED", "variants": {"a": 1e999}, "defaultVariant": "a"}}}'
    )
    overlay.env.clock.now += timedelta(minutes=1)
    with capture_logs() as logs:
        overlay.run_once()  # no exception: the rollout goes on in the override
    assert json.loads(overlay.env.flags.read_text())["flags"]["cache"]["metadata"]["flagroll.percent"] == 5
    assert "merged_file_not_written" in [e["event"] for e in logs]


def test_the_merged_file_keeps_the_bases_flag_set_metadata(overlay: Overlay) -> None:
    base = {**BASE, "metadata": {"team": "payments", "version": 3}}
    overlay.base.write_text(json.dumps(base, indent=2))
    overlay.adopt_the_base_flag()
    overlay.run_once()  # the ramp starts: the override changes, the merged file is rewritten
    merged = json.loads(overlay.merged.read_text())
    assert merged["metadata"] == {"team": "payments", "version": 3}
    core = FlagdCore()
    core.set_flags(overlay.merged.read_text())
    details = core.resolve_boolean_value("dark-mode", False, EvaluationContext(targeting_key="u1"))
    assert details.flag_metadata["team"] == "payments"  # what flagd serves with every evaluation


def test_the_merged_files_owner_group_and_mode_are_kept(overlay: Overlay) -> None:
    overlay.adopt_the_base_flag()
    os.chown(overlay.merged, 12345, 23456)
    overlay.merged.chmod(0o640)
    overlay.run_once()  # the ramp starts: the merged file is rewritten
    assert json.loads(overlay.merged.read_text())["flags"]["cache"]["metadata"]["flagroll.percent"] == 1
    after = overlay.merged.stat()
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (12345, 23456, 0o640)


def _run_once_cli(overlay: Overlay, *overlay_args: str) -> int:
    """``flagroll run --once`` as a CronJob runs it, against nobody answering (holds)."""
    from controller.adapters.promserver import free_port

    return cli.main(
        [
            "--log-format",
            "json",
            "run",
            "--once",
            "--policies",
            str(overlay.env.policies),
            "--flags",
            str(overlay.env.flags),
            "--prometheus",
            f"http://127.0.0.1:{free_port()}",
            "--query-timeout",
            "1s",
            *overlay_args,
        ]
    )


def test_an_on_call_stop_without_merged_reaches_the_merged_file_at_once(
    overlay: Overlay, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CronJob's run wrote the merged file; on-call types only --flags: the stop is served from the
    merged file at once, not at the next scheduled run."""
    overlay.adopt_the_base_flag()
    overlay.run_once()  # 1 % through the reconciler
    assert _run_once_cli(overlay, "--base", str(overlay.base), "--merged", str(overlay.merged)) == 0
    assert json.loads(overlay.merged.read_text())["flags"]["cache"]["metadata"]["flagroll.percent"] == 1
    capsys.readouterr()

    code = cli.main(["stop", "cache", "--reason", "5xx", "--flags", str(overlay.env.flags)])

    _, err = capsys.readouterr()
    assert code == 0
    merged = json.loads(overlay.merged.read_text())
    assert merged["flags"]["cache"]["metadata"]["flagroll.status"] == "stopped"
    assert not any(overlay.evaluate("cache", f"user-{n}") for n in range(500))
    assert str(overlay.merged) in err  # on-call is told the merged file was written too
    assert cli.main(["resume", "cache", "--flags", str(overlay.env.flags)]) == 0  # so does resume
    status = json.loads(overlay.merged.read_text())["flags"]["cache"]["metadata"]["flagroll.status"]
    assert status == "progressing"


def test_a_run_without_merged_forgets_the_merged_file(
    overlay: Overlay, capsys: pytest.CaptureFixture[str]
) -> None:
    """The deployment stopped writing a merged file: a later stop does not write it either."""
    overlay.adopt_the_base_flag()
    overlay.run_once()
    assert _run_once_cli(overlay, "--base", str(overlay.base), "--merged", str(overlay.merged)) == 0
    assert _run_once_cli(overlay) == 0
    before = overlay.merged.read_bytes()
    assert cli.main(["stop", "cache", "--reason", "5xx", "--flags", str(overlay.env.flags)]) == 0
    assert overlay.merged.read_bytes() == before


def test_a_stop_whose_merged_file_cannot_follow_says_so_and_exits_1(
    overlay: Overlay, capsys: pytest.CaptureFixture[str]
) -> None:
    overlay.adopt_the_base_flag()
    overlay.run_once()
    assert _run_once_cli(overlay, "--base", str(overlay.base), "--merged", str(overlay.merged)) == 0
    overlay.base.write_text("{ not json")  # a bad Git sync
    capsys.readouterr()
    code = cli.main(["stop", "cache", "--reason", "5xx", "--flags", str(overlay.env.flags)])
    _, err = capsys.readouterr()
    assert code == 1
    assert "NOT" in err
    assert str(overlay.merged) in err
    override = json.loads(overlay.env.flags.read_text())
    assert override["flags"]["cache"]["metadata"]["flagroll.status"] == "stopped"  # the stop holds


def test_a_merged_file_changed_by_someone_else_is_rewritten_at_the_next_refresh(overlay: Overlay) -> None:
    """The loop's merged file is its own: one rewritten by another writer (a stale command, a copy
    step) is put back at the next refresh, not only when the override or a base changes."""
    overlay.adopt_the_base_flag()
    store = overlay.store()
    assert store.refresh(force=True)
    served = overlay.merged.read_bytes()
    overlay.merged.write_text(json.dumps({"flags": {}}))  # every flag gone for the merged file's readers
    assert store.refresh()
    assert overlay.merged.read_bytes() == served
    assert not store.refresh()  # and nothing more once it serves the override again


def test_a_command_leaves_alone_a_merged_file_that_another_override_now_writes(
    overlay: Overlay, capsys: pytest.CaptureFixture[str]
) -> None:
    """The deployment moved to another override file with the same merged file; the old override and
    its FLAGFILE.overlay.json are still there. A command typed on the old one must not rewrite the
    merged file from it (that would serve its stale flags to everyone): it says so and exits 1."""
    overlay.adopt_the_base_flag()
    overlay.run_once()  # 1 %
    assert _run_once_cli(overlay, "--base", str(overlay.base), "--merged", str(overlay.merged)) == 0
    moved = overlay.env.flags.with_name("override-now.json")
    moved.write_bytes(overlay.env.flags.read_bytes())
    common = ["--flags", str(moved), "--base", str(overlay.base), "--merged", str(overlay.merged)]
    assert cli.main(["stop", "cache", "--reason", "5xx", *common]) == 0
    served = overlay.merged.read_bytes()
    capsys.readouterr()

    code = cli.main(["pause", "cache", "--flags", str(overlay.env.flags)])  # the old override

    _, err = capsys.readouterr()
    assert code == 1
    assert overlay.merged.read_bytes() == served  # still stopped for everyone
    assert not any(overlay.evaluate("cache", f"user-{n}") for n in range(500))
    assert str(overlay.merged) in err
    assert "NOT" in err


def test_a_stop_recreates_a_merged_file_that_is_gone(
    overlay: Overlay, capsys: pytest.CaptureFixture[str]
) -> None:
    overlay.adopt_the_base_flag()
    overlay.run_once()
    assert _run_once_cli(overlay, "--base", str(overlay.base), "--merged", str(overlay.merged)) == 0
    overlay.merged.unlink()
    assert cli.main(["stop", "cache", "--reason", "5xx", "--flags", str(overlay.env.flags)]) == 0
    assert not any(overlay.evaluate("cache", f"user-{n}") for n in range(500))
    assert overlay.evaluate("dark-mode") is True  # the base's flags are served again too


@pytest.mark.parametrize("merged_is", ["the flag file", "a base", "not JSON"])
def test_a_stop_holds_when_the_remembered_files_were_edited_into_nonsense(
    overlay: Overlay, capsys: pytest.CaptureFixture[str], merged_is: str
) -> None:
    """FLAGFILE.overlay.json edited by hand so that it names the flag file (or a base) as the merged
    file, or is not JSON: the stop is written to the flag file all the same, and exits 1 saying the
    merged file was not updated."""
    overlay.adopt_the_base_flag()
    overlay.run_once()
    assert _run_once_cli(overlay, "--base", str(overlay.base), "--merged", str(overlay.merged)) == 0
    remembered = overlay.env.flags.with_name(overlay.env.flags.name + ".overlay.json")
    target = overlay.env.flags if merged_is == "the flag file" else overlay.base
    remembered.write_text(json.dumps({"base": [str(overlay.base)], "merged": str(target.resolve())}))
    if merged_is == "not JSON":
        remembered.write_text('{"base": [')
    base_before = overlay.base.read_bytes()
    capsys.readouterr()

    code = cli.main(["stop", "cache", "--reason", "5xx", "--flags", str(overlay.env.flags)])

    _, err = capsys.readouterr()
    assert code == 1
    override = json.loads(overlay.env.flags.read_text())
    assert override["flags"]["cache"]["metadata"]["flagroll.status"] == "stopped"
    assert overlay.base.read_bytes() == base_before  # a base is never written
    assert str(remembered) in err
    assert "NOT updated" in err
