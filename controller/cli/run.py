"""``flagroll run``: the reconcile loop, with its endpoints, notifications and optional leader Lease."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from controller import __version__
from controller.adapters.decisionlog import DecisionLog
from controller.adapters.endpoints import Endpoints, parse_listen
from controller.adapters.flagstore import FlagStore
from controller.adapters.notify import Notifier, parse_targets
from controller.adapters.ofrep import TOKEN_ENV, OfrepClient, bearer_token
from controller.adapters.overlay import remember
from controller.adapters.promauth import PrometheusAuth, Secret
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.telemetry import Telemetry
from controller.adapters.webui import WebUI
from controller.cli import common, kubernetes, ui
from controller.cli.common import EXIT_FAIL, EXIT_OK, file_store, need, optional_decision_log
from controller.cli.options import (
    Commands,
    decision_log_heartbeat_option,
    decision_log_option,
    decision_log_rotation_options,
    duration_arg,
    env,
    flags_option,
    notify_options,
    overlay_options,
    positive_int,
    prometheus_auth,
    prometheus_auth_options,
)
from controller.core.errors import FlagrollError, UsageError
from controller.core.guarding import Grace
from controller.core.records import Record
from controller.core.serving import DEFAULT_SAMPLE
from controller.core.state import RolloutState
from controller.reconciler import Reconciler
from controller.reconciler.verify import ServingSettings

if TYPE_CHECKING:
    from controller.adapters.kube.lease import LeaseElector


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "run",
        help="reconcile policies against Prometheus and the flag file",
        description="Each policy is checked at its own interval: Prometheus is queried, a decision "
        "is taken, the flag file is written atomically and the decision is appended to the log.",
    )
    p.add_argument(
        "--policies",
        type=Path,
        default=env("FLAGROLL_POLICIES"),
        metavar="DIR",
        help="directory (or file) of rollout policies [env FLAGROLL_POLICIES]",
    )
    flags_option(p)
    p.add_argument(
        "--prometheus",
        default=env("FLAGROLL_PROMETHEUS"),
        metavar="URL",
        help="Prometheus base URL, e.g. http://prometheus:9090 [env FLAGROLL_PROMETHEUS]",
    )
    p.add_argument("--once", action="store_true", help="run one cycle of every policy and exit (CronJob)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and log to stdout, but write neither the flag file nor the decision log",
    )
    decision_log_option(p)
    decision_log_rotation_options(p)
    decision_log_heartbeat_option(p)
    _loop_options(p)
    _verify_options(p)
    prometheus_auth_options(p)
    notify_options(p)
    overlay_options(p)
    kubernetes.add_store_options(p)
    kubernetes.add_leader_option(p)
    p.set_defaults(handler=cmd_run)


def _loop_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--query-timeout",
        type=duration_arg,
        default=env("FLAGROLL_QUERY_TIMEOUT", "10s"),
        metavar="DURATION",
        help="timeout of one Prometheus query (default 10s) [env FLAGROLL_QUERY_TIMEOUT]",
    )
    p.add_argument(
        "--max-concurrent-queries",
        type=positive_int,
        default=env("FLAGROLL_MAX_CONCURRENT_QUERIES", "8"),
        metavar="N",
        help="Prometheus queries in flight at once (default 8) [env FLAGROLL_MAX_CONCURRENT_QUERIES]",
    )
    p.add_argument(
        "--lock-timeout",
        type=duration_arg,
        default=env("FLAGROLL_LOCK_TIMEOUT", "30s"),
        metavar="DURATION",
        help="how long to wait for another writer's lock (default 30s) [env FLAGROLL_LOCK_TIMEOUT]",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=duration_arg,
        default=env("FLAGROLL_SHUTDOWN_TIMEOUT", "10s"),
        metavar="DURATION",
        help="on SIGTERM or SIGINT, how long the cycle in progress may take to finish before it is "
        "abandoned (default 10s; nothing half-written is ever left) [env FLAGROLL_SHUTDOWN_TIMEOUT]",
    )
    p.add_argument(
        "--on-delete-grace",
        type=duration_arg,
        default=env("FLAGROLL_ON_DELETE_GRACE", "2m"),
        metavar="DURATION",
        help="how long a flag's policy must be gone (every policy file read, none holding it) before "
        "its flag is rolled back (onDelete: rollback) or taken over by the policy that names it now "
        "(default 2m) [env FLAGROLL_ON_DELETE_GRACE]",
    )
    p.add_argument(
        "--on-delete-grace-cycles",
        type=positive_int,
        default=env("FLAGROLL_ON_DELETE_GRACE_CYCLES", "3"),
        metavar="N",
        help="… and for at least this many cycles in a row, whichever ends later (default 3) "
        "[env FLAGROLL_ON_DELETE_GRACE_CYCLES]",
    )
    p.add_argument(
        "--listen",
        default=env("FLAGROLL_LISTEN"),
        metavar="HOST:PORT",
        help="serve /healthz, /readyz and /metrics here, and the read-only web UI at /, /flags/KEY "
        "and /log (docs/ui.md), e.g. 0.0.0.0:8080 (default: off) [env FLAGROLL_LISTEN]",
    )
    p.add_argument(
        "--ui",
        action=argparse.BooleanOptionalAction,
        default=(env("FLAGROLL_UI") or "").lower() in {"1", "true", "yes"},
        help="with --listen, also serve the read-only web UI at /, /flags/KEY and /log. Off by "
        "default: the pages keep an index of the decision log in the controller's process (about a "
        "fifth of the log's size; the first request reads every generation once), and have no "
        "log-in; flagroll ui serves them apart [env FLAGROLL_UI]",
    )
    ui.ui_options(p)


def _verify_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "Verified serving",
        "After a write that takes a flag to 0 % (or changes its shares), ask the flag server over OFREP "
        "whether it serves what the flag file says. It never moves a flag: a server that does not is a "
        "record (action verify), a metric and a notification. See docs/verified-serving.md.",
    )
    group.add_argument(
        "--verify-ofrep",
        default=env("FLAGROLL_VERIFY_OFREP"),
        metavar="URL",
        help="the flag server's OFREP base URL, e.g. http://127.0.0.1:8016 (flagd's OFREP port); "
        "default: off [env FLAGROLL_VERIFY_OFREP]",
    )
    group.add_argument(
        "--verify-timeout",
        type=duration_arg,
        default=env("FLAGROLL_VERIFY_TIMEOUT", "30s"),
        metavar="DURATION",
        help="how long to keep asking before the serving is reported NOT verified (default 30s) "
        "[env FLAGROLL_VERIFY_TIMEOUT]",
    )
    group.add_argument(
        "--verify-sample",
        type=positive_int,
        default=env("FLAGROLL_VERIFY_SAMPLE", str(DEFAULT_SAMPLE)),
        metavar="N",
        help=f"targeting keys asked each round (default {DEFAULT_SAMPLE}) [env FLAGROLL_VERIFY_SAMPLE]",
    )
    group.add_argument(
        "--verify-share",
        action=argparse.BooleanOptionalAction,
        default=env("FLAGROLL_VERIFY_SHARE", "true") not in {"0", "false", "no"},
        help="also check, after an advance, that the served shares are plausible for the new percent "
        "(default: on) [env FLAGROLL_VERIFY_SHARE=false turns it off]",
    )
    group.add_argument(
        "--verify-ofrep-bearer-token-file",
        default=env("FLAGROLL_VERIFY_OFREP_BEARER_TOKEN_FILE"),
        metavar="FILE",
        help="send 'Authorization: Bearer <token>' to the flag server with the token in FILE "
        f"[env FLAGROLL_VERIFY_OFREP_BEARER_TOKEN_FILE, or the token itself in {TOKEN_ENV}]",
    )


@dataclass(frozen=True)
class _Setup:
    """Everything ``flagroll run`` opens before its loop starts."""

    policies: Path
    url: str
    auth: PrometheusAuth
    log: Any
    store: FlagStore
    elector: LeaseElector | None
    decision_log: DecisionLog | None
    telemetry: Telemetry
    notifier: Notifier | None
    endpoints: Endpoints | None
    verify_token: Secret | None


def cmd_run(args: argparse.Namespace) -> int:
    setup = _set_up(args)
    try:
        with setup.endpoints if setup.endpoints is not None else contextlib.nullcontext():
            ok = asyncio.run(_main_loop(args, setup))
    finally:
        if setup.notifier is not None:
            setup.notifier.close()
    return EXIT_OK if ok or not args.once else EXIT_FAIL


def _checked_arguments(args: argparse.Namespace) -> tuple[Path, bool, Path | None, str]:
    """The policies, whether Kubernetes is used, the flag file (None for a Kubernetes store), the URL."""
    policies = Path(need(args.policies, "--policies", "FLAGROLL_POLICIES"))
    in_kubernetes = kubernetes.uses_kubernetes(args)
    flags = Path(need(args.flags, "--flags", "FLAGROLL_FLAGS")) if args.flag_store == "file" else None
    url = need(args.prometheus, "--prometheus", "FLAGROLL_PROMETHEUS")
    if not policies.exists():
        raise UsageError(f"--policies {policies}: no such file or directory")
    if flags is not None and not flags.parent.is_dir():
        raise UsageError(f"--flags {flags}: directory {flags.parent} does not exist")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--prometheus {url!r}: give an http:// or https:// URL")
    if args.verify_ofrep is not None and not args.verify_ofrep.startswith(("http://", "https://")):
        raise UsageError(f"--verify-ofrep {args.verify_ofrep!r}: give an http:// or https:// URL")
    return policies, in_kubernetes, flags, url


def _set_up(args: argparse.Namespace) -> _Setup:
    policies, in_kubernetes, flags, url = _checked_arguments(args)
    auth = prometheus_auth(args)
    log = structlog.get_logger("flagroll")
    store, elector = _store_and_elector(args, in_kubernetes, flags, log)
    log_path = optional_decision_log(args)
    decision_log = (
        None
        if args.dry_run or log_path is None
        else DecisionLog(log_path, max_bytes=args.decision_log_max_bytes, keep=args.decision_log_keep)
    )
    telemetry = Telemetry(leading=elector.is_leader if elector is not None else None)
    targets = parse_targets(args.notify_webhook, args.notify_slack)
    notifier = Notifier(targets, log=log).start() if targets else None
    endpoints = None
    if args.listen:
        pages = None
        if args.ui:
            pages = WebUI(
                store,
                log_path,
                common.utc_now,
                policies=policies,
                prometheus_ui=ui.checked_ui_url(args),
                refresh_seconds=args.ui_refresh,
            )
        endpoints = Endpoints(telemetry, *parse_listen(args.listen), ui=pages)
    token = bearer_token(args.verify_ofrep_bearer_token_file) if args.verify_ofrep else None
    return _Setup(
        policies, url, auth, log, store, elector, decision_log, telemetry, notifier, endpoints, token
    )


def _store_and_elector(
    args: argparse.Namespace, in_kubernetes: bool, flags: Path | None, log: Any
) -> tuple[FlagStore, LeaseElector | None]:
    client = kubernetes.connect(args) if in_kubernetes else None
    store: FlagStore
    if flags is not None:
        _refuse_git_owned(flags)
        if args.merged is not None:
            _refuse_git_owned(args.merged)
        store = file_store(flags, args)
        if not args.dry_run:
            try:  # for an on-call stop typed with --flags only
                remember(flags, args.base or [], args.merged)
            except FlagrollError as exc:
                log.error("merged_file_not_remembered", error=str(exc), note="stop needs --merged then")
    else:
        store = kubernetes.open_store(args, client)
    elector = kubernetes.open_elector(args, client, log) if args.leader_election_lease else None
    return store, elector


def _refuse_git_owned(path: Path) -> None:
    """flagroll never writes a file that Git tracks: Git would fight it on the next sync."""
    git = shutil.which("git")
    if git is None or not path.exists():
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            [git, "-C", str(path.parent.resolve()), "ls-files", "--error-unmatch", path.name],
            capture_output=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0:
            raise UsageError(
                f"{path} is tracked by Git; flagroll does not write files Git owns. Point --flags at "
                "a file outside the repository (the one flagd reads)"
            )


async def _main_loop(args: argparse.Namespace, setup: _Setup) -> bool:
    stop_event = asyncio.Event()
    _stop_on_signals(stop_event, setup.log, args.shutdown_timeout)
    async with contextlib.AsyncExitStack() as stack:
        prometheus = await stack.enter_async_context(
            PrometheusClient(
                setup.url,
                timeout_seconds=args.query_timeout,
                max_concurrency=args.max_concurrent_queries,
                auth=setup.auth,
            )
        )
        serving = await _serving(stack, args, setup.verify_token)
        reconciler = Reconciler(
            policies=setup.policies,
            store=setup.store,
            prometheus=prometheus,
            decision_log=setup.decision_log,
            dry_run=args.dry_run,
            lock_timeout_seconds=args.lock_timeout,
            log=setup.log,
            leader=setup.elector,
            observer=_Observers(setup.telemetry, setup.notifier),
            keep_records=False,
            grace=Grace(cycles=args.on_delete_grace_cycles, seconds=args.on_delete_grace),
            serving=serving,
            heartbeat_seconds=args.decision_log_heartbeat,
        )
        endpoints = setup.endpoints
        setup.log.info(
            "started",
            version=__version__,
            policies=str(setup.policies),
            flags=setup.store.location,
            prometheus=prometheus.url,
            prometheus_auth=setup.auth.describe(),
            listen=f"{endpoints.address[0]}:{endpoints.address[1]}" if endpoints else None,
            once=args.once,
            dry_run=args.dry_run,
            verify_ofrep=serving.server.url if serving is not None else None,
        )
        async with _leading(setup.elector, once=args.once):
            ok = await run_until_stopped(reconciler, stop_event, args.once, args.shutdown_timeout, setup.log)
            await asyncio.to_thread(reconciler.close)  # the cycles of holds compacted away, counted
            if reconciler.verifier is not None:  # those a shutdown left running
                await reconciler.verifier.close(wait=False)
        setup.log.info("stopped", ok=ok)
        return ok


async def _serving(
    stack: contextlib.AsyncExitStack, args: argparse.Namespace, token: Secret | None
) -> ServingSettings | None:
    """What --verify-ofrep verifies, with its client (closed with ``stack``); None without it."""
    if not args.verify_ofrep:
        return None
    server = await stack.enter_async_context(OfrepClient(args.verify_ofrep, bearer_token=token))
    return ServingSettings(
        server, sample=args.verify_sample, timeout_seconds=args.verify_timeout, share=args.verify_share
    )


def _stop_on_signals(stop_event: asyncio.Event, log: Any, shutdown_timeout: float) -> None:
    """SIGTERM and SIGINT set ``stop_event`` (the first one is logged)."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop_event.is_set():
            log.info("shutting_down", signal=sig.name, shutdown_timeout_seconds=shutdown_timeout)
        stop_event.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


class _Observers:
    """Each cycle goes to the metrics and, when configured, to the notifier (which never blocks)."""

    def __init__(self, telemetry: Telemetry, notifier: Notifier | None) -> None:
        self.telemetry = telemetry
        self.notifier = notifier

    def beat(self) -> None:
        self.telemetry.beat()

    def recorded(self, records: Sequence[Record]) -> None:
        self.telemetry.recorded(records)
        if self.notifier is not None:
            self.notifier.records(records)

    def cycle_done(
        self,
        *,
        ok: bool,
        policy_errors: int,
        prometheus_answered: bool,
        duration_seconds: float,
        states: Mapping[str, RolloutState] | None = None,
        unguarded: Collection[str] = (),
        unjudged: Collection[str] = (),
    ) -> None:
        self.telemetry.cycle_done(
            ok=ok,
            policy_errors=policy_errors,
            prometheus_answered=prometheus_answered,
            duration_seconds=duration_seconds,
            states=states,
            unguarded=unguarded,
            unjudged=unjudged,
        )

    def cycle_failed(self, duration_seconds: float) -> None:
        self.telemetry.cycle_failed(duration_seconds)

    def follower(self) -> None:
        self.telemetry.follower()


async def run_until_stopped(
    reconciler: Reconciler, stop_event: asyncio.Event, once: bool, shutdown_timeout_seconds: float, log: Any
) -> bool:
    """Run the loop; once ``stop_event`` is set, give the cycle in progress ``shutdown_timeout_seconds``
    to finish, then abandon it. Abandoning is safe at any point: queries are simply dropped, and a
    flag-file write is atomic (a write already under way is completed, never cut in half)."""
    task = asyncio.create_task(reconciler.run(once=once, stop=stop_event))
    stopping = asyncio.create_task(stop_event.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not task.done():
        try:
            return await asyncio.wait_for(asyncio.shield(task), shutdown_timeout_seconds)
        except TimeoutError:
            reconciler.abandon()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.warning(
                "cycle_abandoned",
                note=f"the cycle in progress did not finish within {shutdown_timeout_seconds:g}s; its "
                "queries were dropped and its decisions not taken (a write already under way completes)",
            )
            return False
    return task.result()


@contextlib.asynccontextmanager
async def _leading(elector: Any, *, once: bool) -> AsyncIterator[None]:
    """Run the Lease elector beside the loop (one attempt with --once); give the Lease up after."""
    if elector is None:
        yield
        return
    done = asyncio.Event()
    renewing = None
    if once:
        await asyncio.to_thread(elector.try_acquire_or_renew)
    else:
        renewing = asyncio.create_task(elector.run(done))
    try:
        yield
    finally:
        done.set()
        if renewing is not None:
            await renewing
        await asyncio.to_thread(elector.release)
