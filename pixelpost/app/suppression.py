"""`pixelpost suppression list|add|remove|import|export`: the suppression list from the
command line (their options are in `pixelpost.app.cli`; the CSV format in
`suppression_csv`).

Each opens the configured store on an event loop of its own and runs the store's calls
there one by one, so that a list of a million addresses is read, written out and
imported a page at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TextIO

from pixelpost.app import suppression_csv
from pixelpost.config import Config, load_config
from pixelpost.core.suppression import (
    BadEntry,
    Reason,
    Suppressed,
    normalize,
    reason,
    suppressed_json,
)
from pixelpost.errors import PixelpostError
from pixelpost.store import Store, open_store

PAGE = 1000
"""Entries of the suppression list read at a time by `list` and `export`."""
IMPORT_BATCH = 5000
"""Entries of an import written in one transaction."""
BAD_ROWS_SHOWN = 20
"""Bad rows of an import named one by one; the rest are counted."""


@contextlib.contextmanager
def _store_session(config: Config, *, create: bool) -> Iterator[tuple[asyncio.Runner, Store]]:
    """The configured store on an event loop of this command's: each of its calls runs
    on the runner, so that what a command reads page by page is written out between
    them, off the loop."""
    with asyncio.Runner() as runner:
        store = runner.run(open_store(config.store, create=create))
        try:
            yield runner, store
        finally:
            runner.run(store.close())


def _pages(
    runner: asyncio.Runner, store: Store, why: Reason | None, config_set: str | None = None
) -> Iterator[list[Suppressed]]:
    """One scope's suppression list (of reason `why`, or all of it) a page at a time."""
    after = ""
    while True:
        page = runner.run(
            store.suppression_list(after=after, limit=PAGE, reason=why, config_set=config_set)
        )
        if page:
            yield page
        if len(page) < PAGE:
            return
        after = page[-1].address


def _scope(config: Config, name: str | None, *, new: bool = False) -> str | None:
    """The list `--config-set` names (None: the account's). Entries go only on the list
    of a configured set; one no longer configured can still be read and emptied."""
    if name is not None and new and name not in config.config_sets:
        known = ", ".join(sorted(config.config_sets)) or "none"
        raise PixelpostError(
            f"--config-set: no configuration set {name!r} (configured: {known}); nothing changed"
        )
    return name


def _scope_words(config_set: str | None) -> str:
    return "" if config_set is None else f" of configuration set {config_set}"


def reason_option(text: str) -> Reason:
    """A REASON option, in any case; a usage error naming the reasons there are."""
    try:
        return reason(text)
    except BadEntry as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _addresses(texts: Sequence[str]) -> list[str]:
    """`texts` as the suppression list keys them, each once; PixelpostError naming every
    one that is not an address."""
    found: dict[str, None] = {}
    bad = []
    for text in texts:
        try:
            found[normalize(text)] = None
        except BadEntry as exc:
            bad.append(str(exc))
    if bad:
        raise PixelpostError(f"not an address: {'; '.join(bad)}; nothing changed")
    return list(found)


def _counted(count: int) -> str:
    return "1 address" if count == 1 else f"{count} addresses"


_TABLE_COLUMNS = (("SINCE (UTC)", 19), ("REASON", 11), ("MESSAGE ID", 32))
"""The table's columns before the address (the last one, unpadded), and their widths."""


def _table_line(entry: Suppressed) -> str:
    cells = (
        entry.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        entry.reason.value,
        entry.message_id or "-",
    )
    padded = (cell.ljust(width) for cell, (_, width) in zip(cells, _TABLE_COLUMNS, strict=True))
    return "  ".join((*padded, entry.address))


def cmd_list(args: argparse.Namespace) -> int:
    config = load_config(args.config, environ=os.environ)
    why: Reason | None = args.reason
    config_set = _scope(config, args.config_set)
    count = 0
    with _store_session(config, create=False) as (runner, store):
        if args.json:
            # One entry a line, written as it is read: valid JSON however long.
            print("[")
            last: str | None = None
            for page in _pages(runner, store, why, config_set):
                for entry in page:
                    if last is not None:
                        print(f"{last},")
                    last = f"  {json.dumps(suppressed_json(entry))}"
            if last is not None:
                print(last)
            print("]")
            return 0
        for page in _pages(runner, store, why, config_set):
            if not count:
                header = (name.ljust(width) for name, width in _TABLE_COLUMNS)
                print("  ".join((*header, "ADDRESS")))
            for entry in page:
                print(_table_line(entry))
            count += len(page)
    scope = f" for reason {why.value}" if why is not None else ""
    print(
        f"{_counted(count) if count else 'no addresses'} on the suppression list"
        f"{_scope_words(config_set)}{scope}"
    )
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    config = load_config(args.config, environ=os.environ)
    why: Reason = args.reason
    config_set = _scope(config, args.config_set, new=True)
    now = datetime.now(UTC)
    entries = [
        Suppressed(address=address, reason=why, created_at=now, config_set=config_set)
        for address in _addresses(args.addresses)
    ]
    # A list can be loaded before pixelpost first runs: this makes the store.
    with _store_session(config, create=True) as (runner, store):
        added = runner.run(store.suppress(entries))
    line = (
        f"added {_counted(added)} to the suppression list{_scope_words(config_set)} as {why.value}"
    )
    if already := len(entries) - added:
        line += f"; {_counted(already)} already on it (reason now {why.value})"
    print(line)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    config = load_config(args.config, environ=os.environ)
    addresses = _addresses(args.addresses)
    config_set = _scope(config, args.config_set)
    with _store_session(config, create=False) as (runner, store):
        missing = [
            address
            for address in addresses
            if not runner.run(store.unsuppress(address, config_set))
        ]
    line = (
        f"removed {_counted(len(addresses) - len(missing))} from the suppression list"
        f"{_scope_words(config_set)}"
    )
    if missing:
        line += f"; not on it: {', '.join(missing)}"
    print(line)
    return 0


@contextlib.contextmanager
def _csv_source(name: str) -> Iterator[IO[bytes]]:
    """The file `name` (`-`: standard input, kept in a temporary file so that it can be
    read twice), open for reading bytes."""
    if name != "-":
        with Path(name).open("rb") as source:
            yield source
        return
    with tempfile.TemporaryFile() as copy:
        shutil.copyfileobj(sys.stdin.buffer, copy)
        copy.seek(0)
        yield copy


def _import_batches(source: IO[bytes], *, now: datetime, name: str) -> Iterator[list[Suppressed]]:
    batch: list[Suppressed] = []
    for found in suppression_csv.read_csv(suppression_csv.bounded_lines(source), now=now):
        if isinstance(found, suppression_csv.BadRow):
            raise PixelpostError(
                f"{name}: {found}: the file changed while it was read; the rows before "
                "this one were imported, the others not"
            )
        batch.append(found)
        if len(batch) == IMPORT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def cmd_import(args: argparse.Namespace) -> int:
    config = load_config(args.config, environ=os.environ)
    name = "standard input" if args.file == "-" else args.file
    now = datetime.now(UTC)
    with _csv_source(args.file) as source:
        # The file is read twice, so that a million rows need no memory: every row is
        # checked first, and none is imported unless all of them can be.
        rows, bad = 0, []
        for found in suppression_csv.read_csv(suppression_csv.bounded_lines(source), now=now):
            if isinstance(found, suppression_csv.BadRow):
                bad.append(found)
            else:
                rows += 1
        if bad:
            for row in bad[:BAD_ROWS_SHOWN]:
                print(f"pixelpost: {name}: {row}", file=sys.stderr)
            more = (
                f" ({len(bad) - BAD_ROWS_SHOWN} more not shown)"
                if len(bad) > BAD_ROWS_SHOWN
                else ""
            )
            rows_word = "row" if len(bad) == 1 else "rows"
            print(
                f"pixelpost: {name}: {len(bad)} bad {rows_word}{more}; nothing imported",
                file=sys.stderr,
            )
            return 1
        if not rows:
            print(f"no addresses in {name}: nothing imported")
            return 0
        source.seek(0)
        added = 0
        with _store_session(config, create=True) as (runner, store):
            for batch in _import_batches(source, now=now, name=name):
                added += runner.run(store.suppress(batch))
    line = f"imported {rows} rows of {name}: added {_counted(added)} to the suppression list"
    if already := rows - added:
        line += f", {already} already on it (their reason and time replaced)"
    print(line)
    return 0


def _export(runner: asyncio.Runner, store: Store, out: TextIO, config_set: str | None) -> int:
    count = 0
    suppression_csv.write_header(out)
    for page in _pages(runner, store, None, config_set):
        suppression_csv.write_rows(out, page)
        count += len(page)
    return count


def cmd_export(args: argparse.Namespace) -> int:
    config = load_config(args.config, environ=os.environ)
    config_set = _scope(config, args.config_set)
    with _store_session(config, create=False) as (runner, store):
        if args.file in (None, "-"):
            count = _export(runner, store, sys.stdout, config_set)
            # Standard output holds the CSV: the summary goes beside it.
            print(f"exported {_counted(count)}", file=sys.stderr)
            return 0
        path = Path(args.file)
        # Written beside the file, which it replaces once complete: an export that
        # fails half-way leaves the file as it was.
        partial = path.with_name(f"{path.name}.partial")
        try:
            with partial.open("w", encoding="utf-8", newline="") as out:
                count = _export(runner, store, out, config_set)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
    print(f"exported {_counted(count)} to {path}")
    return 0
