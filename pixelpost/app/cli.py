"""The `pixelpost` command line.

`main(argv)` returns the exit status; usage errors go through argparse (exit 2), and
every other error is printed as one clear line with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

from pipeline.jobs import catch_up
from pixelpost import __version__, aio, logs
from pixelpost.app import dkim, healthcheck, store_copy, suppression
from pixelpost.app.dkim_keys import dkim_keys
from pixelpost.config import Config, SnsConfig, SnsDestination, lint, load_config
from pixelpost.core import reputation
from pixelpost.core.passwords import hash_password
from pixelpost.core.stats import (
    StatsQuery,
    StatsQueryError,
    StatsTable,
    format_table,
    parse_query,
    report,
)
from pixelpost.core.suppression import REASONS, Reason
from pixelpost.core.values import format_duration, format_span
from pixelpost.errors import ConfigError, PixelpostError
from pixelpost.keys import generate_signing_key, generate_webhook_secret
from pixelpost.store import DeadLetter, open_store, store_description
from relay.outbound.spool import Spool
from tracker.pages import load_pages

log = logging.getLogger("pixelpost")

CONNECT_TIMEOUT = 10.0
"""Seconds each of `check-config --connect`'s attempts may take."""
_CONFIG_HELP = (
    "configuration file (default: $PIXELPOST_CONFIG, else ./pixelpost.toml, else built-in "
    "defaults); relative paths in it are read from its folder"
)
_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What `add_subparsers` returns: where a group of commands adds its parsers."""


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, environ=os.environ)


def _run(args: argparse.Namespace, *, relay: bool, tracker: bool, dispatch: str) -> int:
    from pixelpost.app import runtime  # noqa: PLC0415 (the servers load only when they run)

    config = _load(args)
    aio.run(
        runtime.run(config, relay=relay, tracker=tracker, dispatch=runtime.Dispatch(dispatch)),
        uvloop=not relay,  # measured: uvloop speeds the tracker, slows the relay
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return _run(args, relay=True, tracker=True, dispatch="inline")


def cmd_relay(args: argparse.Namespace) -> int:
    return _run(args, relay=True, tracker=False, dispatch="none")


def cmd_tracker(args: argparse.Namespace) -> int:
    return _run(args, relay=False, tracker=True, dispatch="process")


def cmd_dispatch(args: argparse.Namespace) -> int:
    return _run(args, relay=False, tracker=False, dispatch="inline")


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = _load(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    _, problems = dkim_keys(config.dkim)
    problems += _sns_key_problems(config)
    try:
        load_pages(config.tracker.templates)
    except ConfigError as exc:
        problems = [*problems, *exc.problems]
    if problems:
        for problem in problems:
            print(problem)
        return 1
    print(f"{config.source or 'built-in defaults'}: ok")
    for warning in lint.warnings(config):
        print(f"warning: {warning}")
    if not args.connect:
        return 0
    from pixelpost.app import probes  # noqa: PLC0415 (the network clients load only here)

    found = asyncio.run(probes.probe(config, seconds=args.timeout))
    for result in found:
        print(f"{result.key}: {'ok' if result.ok else 'FAILED'}: {result.detail}")
    return 0 if all(result.ok for result in found) else 1


def _destination(args: argparse.Namespace, config: Config) -> str | None:
    name: str | None = args.destination
    if name is not None and name not in config.destinations:
        known = ", ".join(sorted(config.destinations)) or "none"
        raise PixelpostError(f"--destination {name!r} is not a destination (configured: {known})")
    return name


def _read_dead_letters(
    config: Config, destination: str | None, *, limit: int
) -> tuple[list[DeadLetter], dict[str, str]]:
    """The dead letters (of `destination`, or of all) and the disabled destinations with
    their reasons, read together so that the listing and its warnings agree."""

    async def read() -> tuple[list[DeadLetter], dict[str, str]]:
        store = await open_store(config.store, create=False)
        try:
            return await store.dead_letters(destination, limit=limit), await store.disabled()
        finally:
            await store.close()

    return asyncio.run(read())


def _dead_letters_json(letters: Sequence[DeadLetter]) -> str:
    """`--json`: the fields under the names the tracker's API uses for them."""
    return json.dumps(
        [
            {
                "eventId": letter.event_id,
                "destination": letter.destination,
                "eventType": letter.event_type.value,
                "messageId": letter.message_id,
                "attempts": letter.attempts,
                "failedAt": letter.failed_at.isoformat(),
                "lastError": letter.last_error,
            }
            for letter in letters
        ],
        indent=2,
    )


_DEAD_LETTERS_HEADER = (
    "FAILED AT (UTC)",
    "DESTINATION",
    "TYPE",
    "EVENT ID",
    "MESSAGE ID",
    "TRIES",
    "LAST ERROR",
)


def _dead_letters_table(letters: Sequence[DeadLetter]) -> list[str]:
    """One line per letter under a header, in columns; the last one (the error, of any
    length) is left unpadded so that a long error does not widen every line."""
    rows = [
        (
            letter.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            letter.destination,
            letter.event_type.value,
            letter.event_id,
            letter.message_id,
            str(letter.attempts),
            letter.last_error,
        )
        for letter in letters
    ]
    table = [_DEAD_LETTERS_HEADER, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(_DEAD_LETTERS_HEADER) - 1)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in table
    ]


def cmd_events_dead_letters(args: argparse.Namespace) -> int:
    config = _load(args)
    destination = _destination(args, config)
    letters, disabled = _read_dead_letters(config, destination, limit=args.limit)
    if args.json:
        print(_dead_letters_json(letters))
        return 0
    for name, reason in sorted(disabled.items()):
        if destination in (None, name):
            print(f"destination {name} is disabled: {reason}")
    if not letters:
        print("no dead letters")
        return 0
    for line in _dead_letters_table(letters):
        print(line)
    print(f"{len(letters)} dead letters; `pixelpost events replay` queues them again")
    return 0


def cmd_events_replay(args: argparse.Namespace) -> int:
    config = _load(args)
    destination = _destination(args, config)

    async def replay() -> tuple[int, dict[str, str]]:
        store = await open_store(config.store, create=False)
        try:
            disabled = await store.disabled()
            return await store.replay(destination), disabled
        finally:
            await store.close()

    count, disabled = asyncio.run(replay())
    for name in sorted(disabled):
        if destination in (None, name):
            print(f"destination {name} enabled again")
    scope = f" for {destination}" if destination else ""
    print(f"queued {count} dead letters{scope} again; a running tracker delivers them")
    return 0


_STATS_OPTIONS = ("config_set", "tag", "since", "until", "by", "limit")
_REPUTATION_OPTIONS = ("config_set", "window")


def _options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, str]:
    """The options among `names` that were given, as the API's parameters."""
    return {name: str(value) for name in names if (value := getattr(args, name)) is not None}


def _option_error(exc: StatsQueryError) -> PixelpostError:
    """A query's error ("since: …") as the command line's ("--since: …")."""
    name, _, message = str(exc).partition(": ")
    return PixelpostError(f"--{name.replace('_', '-')}: {message}")


def _counted(config: Config, query: StatsQuery) -> StatsTable:
    """The counters `query` asks for, once every event is counted."""

    async def read() -> StatsTable:
        store = await open_store(config.store, create=False)
        try:
            # Events not counted yet (a tracker that is not running, or just behind)
            # are counted first, so that the answer is complete.
            await catch_up(store)
            return await store.stats(query)
        finally:
            await store.close()

    return asyncio.run(read())


def cmd_stats(args: argparse.Namespace) -> int:
    config = _load(args)
    now = time.time()
    try:
        query = parse_query(_options(args, _STATS_OPTIONS), now=now)
    except StatsQueryError as exc:
        raise _option_error(exc) from None
    data = report(query, _counted(config, query), now=now)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_table(data), end="")
    return 0


def cmd_reputation(args: argparse.Namespace) -> int:
    config = _load(args)
    now = time.time()
    try:
        query = reputation.parse_query(_options(args, _REPUTATION_OPTIONS))
    except StatsQueryError as exc:
        raise _option_error(exc) from None
    table = _counted(config, reputation.stats_query(query, now=now))
    data = reputation.report(query, table, now=now)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(reputation.format_table(data), end="")
    return 0


def _spool(args: argparse.Namespace) -> Spool:
    config = _load(args)
    spool = Spool(config.relay.spool)
    if not spool.exists():
        raise PixelpostError(
            f"no spool at {config.relay.spool} (relay.outbound.spool): the relay has not run with "
            "this configuration"
        )
    return spool


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_queue(args: argparse.Namespace) -> int:
    spool = _spool(args)
    try:
        now = time.time()
        summary = spool.summary(now)
    finally:
        spool.close()
    if args.json:
        print(
            json.dumps(
                {
                    "spool": str(spool.path),
                    "messages": summary.queued,
                    "due": summary.due,
                    "deferred": summary.queued - summary.due,
                    "oldest": summary.oldest
                    and {
                        "id": summary.oldest[0],
                        "spooledAt": datetime.fromtimestamp(summary.oldest[1], UTC).isoformat(),
                    },
                    "nextRetry": summary.next_retry
                    and datetime.fromtimestamp(summary.next_retry, UTC).isoformat(),
                    "corrupt": summary.corrupt,
                },
                indent=2,
            )
        )
        return 0
    print(f"spool {spool.path}")
    print(
        f"  messages    {summary.queued} ({summary.due} due now, "
        f"{summary.queued - summary.due} deferred until a retry)"
    )
    if summary.oldest is not None:
        message_id, spooled_at = summary.oldest
        age = format_span(now - spooled_at)
        print(f"  oldest      {message_id}, spooled {_when(spooled_at)} ({age} ago)")
    if summary.next_retry is not None:
        wait = format_span(summary.next_retry - now)
        print(f"  next retry  {_when(summary.next_retry)} (in {wait})")
    if summary.corrupt:
        print(
            f"  corrupt     {summary.corrupt} damaged files set aside in {spool.path / 'corrupt'}"
        )
    return 0


def cmd_queue_flush(args: argparse.Namespace) -> int:
    spool = _spool(args)
    try:
        flushed = spool.request_flush()
        queued = len(spool.ids())
    finally:
        spool.close()
    print(
        f"{queued} messages in {spool.path}, {flushed} of them waiting for a retry: "
        "running relays try them all within seconds"
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _load(args)

    async def migrate() -> None:
        # Opening creates the store and applies what is missing (on PostgreSQL under an
        # advisory lock: processes that start together migrate once).
        store = await open_store(config.store)
        await store.close()

    asyncio.run(migrate())
    print(f"store {store_description(config.store)}: migrated to this version's schema")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.signing_key:
        print(generate_signing_key())
    elif args.webhook_secret:
        print(generate_webhook_secret())
    else:
        print(f"signing key:    {generate_signing_key()}")
        print(f"webhook secret: {generate_webhook_secret()}")
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise PixelpostError("the passwords differ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise PixelpostError("empty password: write it on standard input")
    print(hash_password(password))
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    url = args.url or healthcheck.readyz_url(_load(args), relay=args.relay)
    print(healthcheck.ask(url, within=args.timeout))
    return 0


def _config_option(parser: argparse.ArgumentParser, *, default: object = None) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, metavar="FILE", help=_CONFIG_HELP, default=default
    )


def _log_level(parser: argparse.ArgumentParser, *, default: str) -> None:
    """--log-level and --log-format, together wherever one of them goes; `default` is
    the level's, or SUPPRESS for both after the command (the top level's stand)."""
    parser.add_argument(
        "--log-level",
        default=default,
        choices=["debug", "info", "warning", "error"],
        help="how much to log on standard error (default: info)",
    )
    parser.add_argument(
        "--log-format",
        default=argparse.SUPPRESS if default == argparse.SUPPRESS else "text",
        choices=logs.FORMATS,
        help="text (default), or json: one object per line, the message id and peer as fields",
    )


def _command(
    commands: _Commands, name: str, func: object, help_text: str
) -> argparse.ArgumentParser:
    """A (sub)command whose help in its parent's list is also its own description."""
    sub = commands.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(func=func)
    return sub


def _add_service_commands(commands: _Commands) -> None:
    """serve, relay, tracker and check-config: the commands that run (or check) a
    configuration, and so take the log options after the command too."""
    for name, func, help_text in (
        ("serve", cmd_serve, "run the relay and the tracker in one process"),
        ("relay", cmd_relay, "run only the SMTP relay"),
        ("tracker", cmd_tracker, "run only the HTTP tracker and the event dispatcher"),
        (
            "dispatch",
            cmd_dispatch,
            "run only the event dispatcher and the roll-up (more of them share a PostgreSQL"
            " store's outbox)",
        ),
        (
            "check-config",
            cmd_check_config,
            "validate a configuration: exit 0, or 1 with one line per problem",
        ),
    ):
        sub = _command(commands, name, func, help_text)
        _config_option(sub)
        _log_level(sub, default=argparse.SUPPRESS)  # after the command too
        if name == "check-config":
            sub.add_argument(
                "--connect",
                action="store_true",
                help="also reach the upstream, each webhook and the store (sends nothing)",
            )
            sub.add_argument(
                "--timeout",
                type=float,
                default=CONNECT_TIMEOUT,
                metavar="SECONDS",
                help=f"for each of --connect's attempts ({CONNECT_TIMEOUT:g})",
            )


def _add_events_commands(commands: _Commands) -> None:
    """`events dead-letters` and `events replay`."""
    events = _command(commands, "events", None, "inspect and replay undeliverable events")
    events_commands = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    for name, func, help_text in (
        ("dead-letters", cmd_events_dead_letters, "list events whose delivery gave up"),
        (
            "replay",
            cmd_events_replay,
            "queue dead letters again (and enable destinations an endpoint disabled)",
        ),
    ):
        sub = _command(events_commands, name, func, help_text)
        _config_option(sub)
        sub.add_argument("--destination", metavar="NAME", help="only this destination")
        if name == "dead-letters":
            sub.add_argument("--json", action="store_true", help="print JSON")
            sub.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")


def _add_queue_commands(commands: _Commands) -> None:
    """`queue` (which runs without an action too) and `queue flush`."""
    queue = _command(
        commands, "queue", cmd_queue, "show the relay's spool: counts, oldest, next retry"
    )
    _config_option(queue)
    queue.add_argument("--json", action="store_true", help="print JSON")
    queue_commands = queue.add_subparsers(dest="queue_command", metavar="ACTION")
    flush = _command(queue_commands, "flush", cmd_queue_flush, "retry every spooled message now")
    _config_option(flush, default=argparse.SUPPRESS)  # `queue -c F flush` works too


def _add_stats_command(commands: _Commands) -> None:
    stats = _command(
        commands,
        "stats",
        cmd_stats,
        "the funnel: sent, delivered, bounced, opened, clicked (people and machines apart),"
        " engaged and unsubscribed",
    )
    _config_option(stats)
    stats.add_argument("--config-set", metavar="NAME", help="only this configuration set")
    stats.add_argument("--tag", metavar="NAME:VALUE", help="only mail with this message tag")
    stats.add_argument(
        "--since", metavar="WHEN", help="from a date or time (2026-11-29), or a duration ago (7d)"
    )
    stats.add_argument("--until", metavar="WHEN", help="to, exclusive (default: now)")
    stats.add_argument(
        "--by", choices=["hour", "day", "link", "tag", "config_set"], help="one row per group"
    )
    stats.add_argument("--limit", type=int, metavar="N", help="at most N groups (100)")
    stats.add_argument("--json", action="store_true", help="print the API's JSON")


def _add_reputation_command(commands: _Commands) -> None:
    sub = _command(
        commands,
        "reputation",
        cmd_reputation,
        "bounce and complaint rates per configuration set over a rolling window, against "
        "SES's thresholds",
    )
    _config_option(sub)
    sub.add_argument("--config-set", metavar="NAME", help="only this configuration set")
    sub.add_argument(
        "--window",
        metavar="DURATION",
        help=f"how far back, from 1h to 90d ({format_duration(reputation.WINDOW_DEFAULT)})",
    )
    sub.add_argument("--json", action="store_true", help="print the API's JSON")


def _add_suppression_commands(commands: _Commands) -> None:
    """`suppression list|add|remove|import|export`."""
    group = _command(
        commands,
        "suppression",
        None,
        "the suppression list: addresses no copy is sent to (any case is the same address)",
    )
    actions = group.add_subparsers(dest="suppression_command", required=True, metavar="ACTION")
    listing = _command(actions, "list", suppression.cmd_list, "list the addresses, by address")
    listing.add_argument(
        "--reason",
        type=suppression.reason_option,
        metavar="REASON",
        help=f"only this reason ({REASONS})",
    )
    listing.add_argument("--json", action="store_true", help="print the API's JSON")
    add = _command(actions, "add", suppression.cmd_add, "put addresses on the list")
    add.add_argument("addresses", nargs="+", metavar="ADDRESS")
    add.add_argument(
        "--reason",
        type=suppression.reason_option,
        default=Reason.MANUAL,
        metavar="REASON",
        help=f"why ({REASONS}; default MANUAL); an address on the list already takes it",
    )
    remove = _command(actions, "remove", suppression.cmd_remove, "take addresses off the list")
    remove.add_argument("addresses", nargs="+", metavar="ADDRESS")
    load = _command(
        actions,
        "import",
        suppression.cmd_import,
        "put the addresses of a CSV file on the list: all of them, or none if a row is bad",
    )
    load.add_argument(
        "file",
        metavar="FILE.csv",
        help="columns address,reason and optionally created_at (ISO 8601, UTC if no offset; "
        "default now), named on the first line; - reads standard input",
    )
    export = _command(
        actions, "export", suppression.cmd_export, "write the list as CSV, as import reads it"
    )
    export.add_argument(
        "file", nargs="?", metavar="FILE.csv", help="where to (default: standard output)"
    )
    for sub in (listing, add, remove, load, export):
        _config_option(sub)
    for sub in (listing, add, remove, export):
        sub.add_argument(
            "--config-set",
            metavar="NAME",
            help="the list of one configuration set's unsubscribes (unsubscribe_scope = "
            '"config_set"); default: the account\'s list, which stops all mail',
        )


def _add_store_commands(commands: _Commands) -> None:
    """`store copy`."""
    group = _command(commands, "store", None, "the store itself: copy it to PostgreSQL")
    actions = group.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    copy = _command(
        actions,
        "copy",
        store_copy.cmd_copy,
        "copy a SQLite store (read only, while pixelpost runs if need be) into a new, empty "
        "PostgreSQL store in one transaction, and compare every table's rows",
    )
    copy.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="URL",
        help="sqlite:///PATH, the log (pixelpost.db); its outbox is read beside it",
    )
    copy.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="URL",
        help="postgresql://user@host/db (the password from PGPASSWORD or ~/.pgpass, or in the "
        "URL): created and migrated as needed, and refused unless it is empty",
    )


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    out = args.out or Path(f"{args.domain}.{args.selector}.pem")
    return dkim.keygen(
        domain=args.domain,
        selector=args.selector,
        algorithm=args.type,
        bits=args.bits,
        out=out,
        force=args.force,
        stdout=sys.stdout,
    )


def cmd_dkim_check(args: argparse.Namespace) -> int:
    config = _load(args)
    domain = args.domain.lower().rstrip(".")
    entry = config.dkim.domains.get(domain)
    if entry is None:
        known = ", ".join(sorted(config.dkim.domains)) or "none"
        raise PixelpostError(
            f"--domain {domain!r} has no [dkim.domains] entry (configured: {known})"
        )
    pairs = [(entry.selector, entry.key)]
    if entry.ed25519_selector is not None and entry.ed25519_key is not None:
        pairs.append((entry.ed25519_selector, entry.ed25519_key))
    results = [
        dkim.check(
            domain=domain,
            selector=selector,
            key=key,
            nameserver=args.nameserver,
            stdout=sys.stdout,
        )
        for selector, key in pairs
    ]
    return max(results)


def _add_dkim_commands(commands: _Commands) -> None:
    """`dkim keygen|check`."""
    group = _command(
        commands,
        "dkim",
        None,
        "DKIM keys: make one and print the DNS record to publish, or check the published one",
    )
    actions = group.add_subparsers(dest="dkim_command", required=True, metavar="ACTION")
    keygen = _command(
        actions,
        "keygen",
        cmd_dkim_keygen,
        "write a new private key (mode 0600) and print its DNS TXT record and configuration",
    )
    keygen.add_argument("--domain", required=True, help="the signing domain (d=)")
    keygen.add_argument("--selector", required=True, help="the selector (s=), e.g. s1")
    keygen.add_argument(
        "--type", choices=["rsa", "ed25519"], default="rsa", help="the key's kind (rsa)"
    )
    keygen.add_argument(
        "--bits", type=int, default=2048, metavar="N", help="an RSA key's size (2048 or more)"
    )
    keygen.add_argument(
        "--out", type=Path, metavar="FILE", help="where (default: DOMAIN.SELECTOR.pem here)"
    )
    keygen.add_argument("--force", action="store_true", help="replace a file that exists")
    check = _command(
        actions,
        "check",
        cmd_dkim_check,
        "look up a configured domain's published DNS records and say whether they match its keys",
    )
    _config_option(check)
    check.add_argument("--domain", required=True, help="a domain of [dkim.domains]")
    check.add_argument(
        "--nameserver", metavar="HOST[:PORT]", help="ask this DNS server (default: the system's)"
    )


def _sns_key_problems(config: Config) -> list[str]:
    if not any(isinstance(d, SnsDestination) for d in config.destinations.values()):
        return []  # the HTTP client loads only where an SNS destination needs the check
    from pixelpost.app import sns  # noqa: PLC0415

    return sns.sns_key_problems(config)


def cmd_sns_keygen(args: argparse.Namespace) -> int:
    from pixelpost.app import sns  # noqa: PLC0415 (it loads the HTTP client)

    config = _load(args)
    paths = config.sns
    if args.out is not None:
        names = SnsConfig()
        paths = SnsConfig(
            key=args.out / names.key.name, certificate=args.out / names.certificate.name
        )
    return sns.keygen(
        paths=paths,
        public_url=config.tracker.public_url,
        bits=args.bits,
        days=args.days,
        common_name=args.common_name,
        force=args.force,
        stdout=sys.stdout,
    )


def _add_sns_commands(commands: _Commands) -> None:
    """`sns keygen`."""
    group = _command(
        commands,
        "sns",
        None,
        "the key SNS-compatible destinations sign with: make it and its certificate",
    )
    actions = group.add_subparsers(dest="sns_command", required=True, metavar="ACTION")
    keygen = _command(
        actions,
        "keygen",
        cmd_sns_keygen,
        "write a new RSA key (mode 0600) and its self-signed certificate, and print the "
        "SigningCertURL and the [sns] configuration",
    )
    _config_option(keygen)
    keygen.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write signing-key.pem and signing-cert.pem in DIR (default: the files [sns] names)",
    )
    keygen.add_argument(
        "--bits", type=int, default=2048, metavar="N", help="the key's size (2048 to 4096)"
    )
    keygen.add_argument(
        "--days", type=int, default=3650, metavar="N", help="the certificate's validity (3650)"
    )
    keygen.add_argument(
        "--common-name",
        default="pixelpost-sns",
        metavar="NAME",
        help="the certificate's subject CN (pixelpost-sns)",
    )
    keygen.add_argument("--force", action="store_true", help="replace files that exist")


def _add_secret_commands(commands: _Commands) -> None:
    """keygen and hash-password: they make secrets and read no configuration."""
    keygen = _command(
        commands,
        "keygen",
        cmd_keygen,
        "print a fresh signing key and a fresh webhook secret (whsec_)",
    )
    only = keygen.add_mutually_exclusive_group()
    only.add_argument("--signing-key", action="store_true", help="print only a signing key")
    only.add_argument("--webhook-secret", action="store_true", help="print only a webhook secret")
    _command(
        commands,
        "hash-password",
        cmd_hash_password,
        "read a password on standard input and print its scrypt hash for [[relay.users]]",
    )


def _add_healthcheck_command(commands: _Commands) -> None:
    check = _command(
        commands,
        "healthcheck",
        cmd_healthcheck,
        "ask the running pixelpost's /readyz: exit 0 when ready, or 1 with one line "
        "naming what is not (for container and systemd probes)",
    )
    _config_option(check)
    check.add_argument(
        "--relay",
        action="store_true",
        help="ask the relay's own listener (relay.http_listen) rather than tracker.listen",
    )
    check.add_argument(
        "--url", metavar="URL", help="ask this URL instead (http://127.0.0.1:8080/readyz)"
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=healthcheck.TIMEOUT_DEFAULT,
        metavar="SECONDS",
        help=f"how long to wait for the answer ({healthcheck.TIMEOUT_DEFAULT:g})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each group of commands adds its parsers in turn, which is
    the order `--help` lists them in."""
    parser = argparse.ArgumentParser(
        prog="pixelpost",
        description="SMTP relay with SES-style open and click tracking and event publishing.",
    )
    parser.add_argument("--version", action="version", version=f"pixelpost {__version__}")
    _log_level(parser, default="info")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_service_commands(commands)
    _add_events_commands(commands)
    _add_queue_commands(commands)
    migrate = _command(
        commands,
        "migrate",
        cmd_migrate,
        "create the store, or bring its schema up to this version (pixelpost also does at start)",
    )
    _config_option(migrate)
    _add_store_commands(commands)
    _add_stats_command(commands)
    _add_reputation_command(commands)
    _add_suppression_commands(commands)
    _add_dkim_commands(commands)
    _add_sns_commands(commands)
    _add_secret_commands(commands)
    _add_healthcheck_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(logging.getLevelName(args.log_level.upper()), args.log_format)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"pixelpost: {problem}", file=sys.stderr)
        return 1
    except (PixelpostError, OSError) as exc:
        print(f"pixelpost: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
