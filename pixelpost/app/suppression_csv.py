"""The suppression list as CSV, for `pixelpost suppression import` and `export`: a header
naming the columns (`address` and `reason`, `created_at` optionally, in any order), then
one address a line.

Reading is pure and bounded: each line is read to at most `LINE_LIMIT` bytes, and every
bad row is named by its line number, so that the command imports a file whole or not at
all.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TextIO

from pixelpost.core.mail import timestamp
from pixelpost.core.suppression import BadEntry, Suppressed, normalize, reason

COLUMNS = ("address", "reason", "created_at")
"""In the order `write_rows` writes them."""
REQUIRED = ("address", "reason")
LINE_LIMIT = 1024
"""Bytes of a line, its end not counted: an address (254 at most), a reason and a time,
quoted, with room to spare."""
_SHOWN = 80
"""Characters of a field quoted back in a problem."""
_HEADER_HELP = "the first line names the columns: address,reason[,created_at]"


@dataclass(frozen=True, kw_only=True, slots=True)
class BadRow:
    """A line that cannot be imported, and why."""

    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


def bounded_lines(source: IO[bytes], limit: int = LINE_LIMIT) -> Iterator[bytes]:
    """The lines of `source` with their ends, each read to at most `limit` + 2 bytes: a
    longer one is cut there (`read_csv` refuses it) and the rest of it skipped unread."""
    while line := source.readline(limit + 2):
        if len(line) == limit + 2 and not line.endswith(b"\n"):
            while (rest := source.readline(limit)) and not rest.endswith(b"\n"):
                pass
        yield line


def read_csv(lines: Iterable[bytes], *, now: datetime) -> Iterator[Suppressed | BadRow]:
    """An entry for each row of `lines` (a row without `created_at` is from `now`), or
    a BadRow naming every problem of the row; blank lines are skipped. A header that
    does not read is the one BadRow: no row can be read without it."""
    columns: tuple[str, ...] | None = None
    for number, raw in enumerate(lines, start=1):
        found: Suppressed | BadRow
        try:
            fields = _fields(raw, first=number == 1)
            if fields is None:
                continue
            if columns is None:
                columns = _header(fields)
                continue
            found = _entry(fields, columns, now=now)
        except BadEntry as exc:
            found = BadRow(line=number, problem=str(exc))
        yield found
        if columns is None:
            return
    if columns is None:
        yield BadRow(line=1, problem=f"no header: {_HEADER_HELP}")


def _fields(raw: bytes, *, first: bool) -> list[str] | None:
    """The fields of one line, or None for a blank one; BadEntry naming its problem."""
    text = raw.removesuffix(b"\n").removesuffix(b"\r")
    if len(text) > LINE_LIMIT:
        raise BadEntry(f"longer than {LINE_LIMIT} bytes")
    if first:
        text = text.removeprefix(b"\xef\xbb\xbf")  # a spreadsheet's byte order mark
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadEntry(f"not UTF-8 (byte {exc.start + 1} of the line)") from None
    if not decoded.strip():
        return None
    try:
        return next(csv.reader([decoded], strict=True))
    except csv.Error as exc:
        raise BadEntry(f"not a CSV row: {exc}") from None


def _header(fields: list[str]) -> tuple[str, ...]:
    names = tuple(field.strip().lower() for field in fields)
    for name in names:
        if name not in COLUMNS:
            raise BadEntry(f"unknown column {name[:_SHOWN]!r}: {_HEADER_HELP}")
        if names.count(name) > 1:
            raise BadEntry(f"column {name!r} twice: {_HEADER_HELP}")
    for name in REQUIRED:
        if name not in names:
            raise BadEntry(f"no {name} column: {_HEADER_HELP}")
    return names


def _entry(fields: list[str], columns: tuple[str, ...], *, now: datetime) -> Suppressed:
    """The entry of a row; BadEntry naming every problem with it."""
    if len(fields) != len(columns):
        raise BadEntry(f"{len(fields)} fields where the header names {len(columns)}")
    values = dict(zip(columns, fields, strict=True))
    problems = []
    try:
        address = normalize(values["address"])
    except BadEntry as exc:
        problems.append(f"address {exc}")
    try:
        why = reason(values["reason"])
    except BadEntry as exc:
        problems.append(str(exc))
    try:
        created_at = parse_time(values.get("created_at", ""), now=now)
    except BadEntry as exc:
        problems.append(str(exc))
    if problems:
        raise BadEntry("; ".join(problems))
    return Suppressed(address=address, reason=why, created_at=created_at)


def parse_time(text: str, *, now: datetime) -> datetime:
    """A created_at as written: ISO 8601, UTC when it names no offset; `now` when empty."""
    text = text.strip()
    if not text:
        return now
    try:
        when = datetime.fromisoformat(text)
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: before year 1 in UTC
        raise BadEntry(
            f"created_at {text[:_SHOWN]!r} is not an ISO 8601 time (2026-12-01T09:30:00Z)"
        ) from None


def write_header(out: TextIO) -> None:
    csv.writer(out, lineterminator="\n").writerow(COLUMNS)


def write_rows(out: TextIO, entries: Iterable[Suppressed]) -> None:
    """`entries` as CSV rows, in `COLUMNS`' order (a message id is not written)."""
    csv.writer(out, lineterminator="\n").writerows(
        (entry.address, entry.reason.value, timestamp(entry.created_at)) for entry in entries
    )
