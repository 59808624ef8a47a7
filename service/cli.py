"""The ``paperboy`` command: parse arguments, build the objects, run one stage or the cycle.

Exit codes: 0 ok, 1 runtime failure (a send failed, a file could not be
read), 2 usage or configuration error.

Each command is a ``cmd_<name>`` function in :mod:`service.commands`; this
module reads the arguments and turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .commands import COMMANDS, FAILURE, USAGE
from .errors import UsageError
from .log import event, setup
from .settings import DEFAULT_CONFIG, ConfigError, load_settings

log = logging.getLogger("paperboy")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="paperboy",
        description="Research-paper digests in; personal email digests and RSS/Atom feeds out.",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"the YAML configuration (default: {DEFAULT_CONFIG})",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.add_argument("--version", action="version", version=f"paperboy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the service: poll the inbox, deliver on schedule")
    run.add_argument(
        "--once", action="store_true", help="one full cycle (ingest, match, deliver, feeds), then exit"
    )

    worker = sub.add_parser(
        "worker",
        help="a delivery worker: send the due digests on schedule.deliver, beside one paperboy run "
        "(any number, on any host sharing the store)",
    )
    worker.add_argument("--once", action="store_true", help="send what is due now, then exit")

    ingest = sub.add_parser("ingest", help="ingest the named digest files now, and match them")
    ingest.add_argument("files", nargs="+", type=Path, metavar="FILE")

    check = sub.add_parser("check", help="validate the configuration, the rules and the templates")
    check.add_argument(
        "--connect",
        action="store_true",
        help="also open the store, try the folders and log in to the SMTP server (nothing is sent)",
    )

    send_test = sub.add_parser(
        "send-test",
        help="send a digest of the latest papers to one address, through the configured transport",
    )
    send_test.add_argument("email", metavar="EMAIL")

    preview = sub.add_parser("preview", help="render a subscriber's next digest without sending it")
    preview.add_argument("email", metavar="EMAIL")
    preview.add_argument(
        "--format",
        choices=("text", "html", "eml"),
        default="text",
        help="text part, HTML part, or the whole message (default: text)",
    )
    preview.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")

    db = sub.add_parser("db", help="the database schema: migrate it, or show where it stands")
    db.add_argument(
        "action",
        choices=("upgrade", "current"),
        help="upgrade: apply every pending migration (run also happens on start); current: show the revision",
    )

    explain = sub.add_parser("explain", help="why a paper did or did not match a subscriber")
    explain.add_argument("email", metavar="EMAIL")
    explain.add_argument("paper", metavar="TITLE", help="the paper's title, or enough of it to be unique")

    sub.add_parser(
        "learn",
        help="fit the learned tastes whose ratings or likes changed (each delivery run does it first)",
    )

    sub.add_parser("serve", help="only the web server: feeds, unsubscribe, status page (no scheduling)")

    forget = sub.add_parser(
        "forget", help="take papers out of every feed and the outbox (sent emails stay recorded)"
    )
    forget.add_argument(
        "papers", nargs="*", metavar="PAPER", help="a paper's title, or enough of it to be unique"
    )
    forget.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="FILE",
        help="everything this digest file brought that no other file also brought (a path, or the "
        "name it was ingested under)",
    )
    rematch = sub.add_parser(
        "rematch", help="match recent papers again and queue what was missed (a new or edited rule)"
    )
    rematch.add_argument(
        "--since", type=float, required=True, metavar="DAYS", help="papers first seen in the last DAYS days"
    )
    rematch.add_argument(
        "who", nargs="?", metavar="EMAIL|TOPIC", help="one subscriber or topic (default: everyone)"
    )
    forget.add_argument("--dry-run", action="store_true", help="say what would be forgotten, change nothing")

    sub.add_parser(
        "health", help="ask the running server's /healthz (at http.host/http.port); exit 0 when healthy"
    )

    unsub = sub.add_parser("unsubscribe", help="opt a subscriber out, as their one-click link would")
    unsub.add_argument("email", metavar="EMAIL")
    resub = sub.add_parser("resubscribe", help="undo a subscriber's unsubscribe")
    resub.add_argument("email", metavar="EMAIL")

    status = sub.add_parser("status", help="papers, files and deliveries in the store")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument(
        "--subscribers", action="store_true", help="also each subscriber: private feed and page URLs"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup(verbose=args.verbose, quiet=args.quiet)
    try:
        settings = load_settings(args.config)
        if args.command in COMMANDS:
            return COMMANDS[args.command](args, settings)
        from .reader_commands import COMMANDS as READER_COMMANDS

        return READER_COMMANDS[args.command](args, settings)
    except ConfigError as exc:
        print(f"paperboy: configuration error:\n{exc}", file=sys.stderr)
        return USAGE
    except UsageError as exc:  # NotFound, NewerDatabase
        print(f"paperboy: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        return FAILURE
    except Exception as exc:
        event(log, "failed", level=logging.ERROR, reason=f"{type(exc).__name__}: {exc}")
        log.debug("traceback", exc_info=True)
        return FAILURE
