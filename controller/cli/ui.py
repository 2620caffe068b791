"""``flagroll ui``: the read-only web UI alone, for reading without running a controller."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from controller.adapters.endpoints import parse_listen
from controller.adapters.webui import UIServer, WebUI, tune_collector
from controller.cli import common, kubernetes
from controller.cli.common import EXIT_OK, need, open_store, optional_decision_log
from controller.cli.options import Commands, decision_log_option, env, flags_option, positive_int
from controller.core.errors import FlagrollError, UsageError
from controller.core.uipage import REFRESH_SECONDS


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "ui",
        help="serve the read-only web UI",
        description="Serve the read-only web UI: / lists every managed flag (what needs a human "
        "first), /flags/KEY tells one rollout's story (timeline, guardrails against their bounds, "
        "moves, the last checks and their queries), /log the decision log with filters. Pages are "
        "server-rendered HTML with inline SVG, no script; only GET and HEAD are answered, and nothing "
        "changes a flag. The flag store and the decision log are read on each request. See docs/ui.md.",
    )
    flags_option(p)
    decision_log_option(p)
    p.add_argument(
        "--listen",
        default=env("FLAGROLL_LISTEN"),
        metavar="HOST:PORT",
        help="where to serve, e.g. 127.0.0.1:8080 [env FLAGROLL_LISTEN]",
    )
    p.add_argument(
        "--policies",
        type=Path,
        default=env("FLAGROLL_POLICIES"),
        metavar="DIR",
        help="the policies: aim, mechanism, owner and review from the files, and which flags no policy "
        "judges as of now [env FLAGROLL_POLICIES]",
    )
    ui_options(p)
    kubernetes.add_store_options(p)
    p.set_defaults(handler=cmd_ui)


def ui_options(p: argparse.ArgumentParser) -> None:
    """The options the UI shares with ``flagroll run --listen``."""
    p.add_argument(
        "--prometheus-ui-url",
        default=env("FLAGROLL_PROMETHEUS_UI_URL"),
        metavar="URL",
        help="link each query on a rollout page to this Prometheus's graph page (the URL people open "
        "in a browser, e.g. https://prometheus.example.com) [env FLAGROLL_PROMETHEUS_UI_URL]",
    )
    p.add_argument(
        "--ui-refresh",
        type=positive_int,
        default=env("FLAGROLL_UI_REFRESH", str(REFRESH_SECONDS)),
        metavar="SECONDS",
        help=f"how often the pages reload themselves (default {REFRESH_SECONDS}) [env FLAGROLL_UI_REFRESH]",
    )


def checked_ui_url(args: argparse.Namespace) -> str | None:
    url: str | None = args.prometheus_ui_url
    if url is not None and not url.startswith(("http://", "https://")):
        raise UsageError(f"--prometheus-ui-url {url!r}: give an http:// or https:// URL")
    return url


def _warm(ui: WebUI) -> None:
    """Index the decision log before the first page is asked for, and say how long it took."""
    began = time.monotonic()
    try:
        ui.warm()
    except (FlagrollError, OSError) as exc:  # each page says it again, with a 503
        print(f"flagroll ui: cannot read the decision log yet: {exc}", file=sys.stderr, flush=True)
        return
    print(f"flagroll ui: decision log indexed in {time.monotonic() - began:.1f}s", flush=True)


def cmd_ui(args: argparse.Namespace) -> int:
    host, port = parse_listen(need(args.listen, "--listen", "FLAGROLL_LISTEN"))
    if args.policies is not None and not args.policies.exists():
        raise UsageError(f"--policies {args.policies}: no such file or directory")
    ui = WebUI(
        open_store(args),
        optional_decision_log(args),
        common.utc_now,
        policies=args.policies,
        prometheus_ui=checked_ui_url(args),
        refresh_seconds=args.ui_refresh,
    )
    tune_collector()  # this process serves pages only
    server = UIServer(ui, host, port)
    shown_host, shown_port = server.address
    print(f"flagroll ui: serving http://{shown_host}:{shown_port}/ (read-only; Ctrl-C stops)", flush=True)

    threading.Thread(target=_warm, args=(ui,), name="flagroll-ui-index", daemon=True).start()

    def on_term(signum: int, frame: FrameType | None) -> None:  # a pod being stopped: end cleanly
        threading.Thread(target=server.shutdown, name="flagroll-ui-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return EXIT_OK
