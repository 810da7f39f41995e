"""The suppression list's CSV (`pixelpost suppression import` and `export`): what reads,
what is refused and on which line, bounded lines, and writing what reading takes back."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import pytest

from pixelpost.app.suppression_csv import (
    LINE_LIMIT,
    BadRow,
    bounded_lines,
    read_csv,
    write_header,
    write_rows,
)
from pixelpost.core.suppression import Reason, Suppressed

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def read(text: bytes) -> list[Suppressed | BadRow]:
    return list(read_csv(bounded_lines(io.BytesIO(text)), now=NOW))


def problems(text: bytes) -> list[str]:
    return [str(found) for found in read(text) if isinstance(found, BadRow)]


def test_rows_read_in_any_column_order_case_and_line_ending() -> None:
    found = read(
        b"\xef\xbb\xbfReason, Address ,created_at\r\n"  # a spreadsheet's BOM and CRLF
        b"bounce,Jane@Example.COM,2026-12-01T09:30:00Z\r\n"
        b"\r\n"
        b'COMPLAINT,"<bob@example.org>",2026-12-01T10:30:00+01:00\n'
        b"manual,x@example.net,\n"
        b"UNSUBSCRIBE,naive@example.net,2026-12-02 08:00"  # no final newline, no offset
    )
    assert found == [
        Suppressed(
            address="jane@example.com",
            reason=Reason.BOUNCE,
            created_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        ),
        Suppressed(
            address="bob@example.org",
            reason=Reason.COMPLAINT,
            created_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        ),
        Suppressed(address="x@example.net", reason=Reason.MANUAL, created_at=NOW),
        Suppressed(
            address="naive@example.net",
            reason=Reason.UNSUBSCRIBE,
            created_at=datetime(2026, 12, 2, 8, 0, tzinfo=UTC),
        ),
    ]


def test_without_a_created_at_column_every_row_is_from_now() -> None:
    [entry] = read(b"address,reason\na@example.com,BOUNCE\n")
    assert entry == Suppressed(address="a@example.com", reason=Reason.BOUNCE, created_at=NOW)


def test_every_bad_row_is_named_by_its_line_with_every_problem() -> None:
    found = read(
        b"address,reason,created_at\n"
        b"ok@example.com,BOUNCE,\n"
        b"jane,SPAM,yesterday\n"
        b"\n"
        b'"open quote@example.com,BOUNCE,\n'
        b"two@example.com,BOUNCE\n"
        b"caf\xe9@example.com,BOUNCE,\n"
        b"ok2@example.com,MANUAL,0001-01-01T00:00:00+01:00\n"
    )
    assert [str(f) for f in found if isinstance(f, BadRow)] == [
        "line 3: address 'jane': no local part and domain; unknown reason 'SPAM': one of "
        "BOUNCE, COMPLAINT, UNSUBSCRIBE, MANUAL; created_at 'yesterday' is not an ISO 8601 "
        "time (2026-12-01T09:30:00Z)",
        "line 5: not a CSV row: unexpected end of data",
        "line 6: 2 fields where the header names 3",
        "line 7: not UTF-8 (byte 4 of the line)",
        "line 8: created_at '0001-01-01T00:00:00+01:00' is not an ISO 8601 time "
        "(2026-12-01T09:30:00Z)",
    ]
    assert [f.address for f in found if isinstance(f, Suppressed)] == ["ok@example.com"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"", "line 1: no header: the first line names the columns"),
        (b"\n  \n", "line 1: no header"),
        (b"jane@example.com,BOUNCE\n", "line 1: unknown column 'jane@example.com'"),
        (b"address\nx@example.com\n", "line 1: no reason column"),
        (b"address,reason,reason\n", "line 1: column 'reason' twice"),
        (b"\naddress;reason\nx@example.com;BOUNCE\n", "line 2: unknown column 'address;reason'"),
    ],
)
def test_a_header_that_does_not_read_is_the_one_problem(text: bytes, problem: str) -> None:
    [found] = problems(text)
    assert found.startswith(problem)


def test_a_line_past_the_limit_is_refused_and_the_next_one_read() -> None:
    long_address = b"x" * (LINE_LIMIT + 1) + b"@example.com"
    found = read(
        b"address,reason\n"
        + long_address
        + b",BOUNCE\n"
        + b"y" * 10_000_000  # a line of 10 MB is never read whole
        + b"\nok@example.com,BOUNCE\n"
    )
    assert [str(f) for f in found if isinstance(f, BadRow)] == [
        f"line 2: longer than {LINE_LIMIT} bytes",
        f"line 3: longer than {LINE_LIMIT} bytes",
    ]
    assert [f.address for f in found if isinstance(f, Suppressed)] == ["ok@example.com"]


def test_lines_are_read_to_the_limit_only() -> None:
    source = io.BytesIO(b"a" * 5000 + b"\n" + b"b" * 10 + b"\r\n" + b"c" * 2000)
    lines = list(bounded_lines(source, limit=100))
    assert [len(line) for line in lines] == [102, 12, 102]
    assert lines[1] == b"b" * 10 + b"\r\n"
    # A line of the limit exactly (its end not counted) is read whole: its address is
    # what is wrong with it.
    local = "a" * (LINE_LIMIT - len("@example.com,BOUNCE"))
    at_limit = f"address,reason\n{local}@example.com,BOUNCE\r\n".encode()
    assert len(at_limit.splitlines()[1]) == LINE_LIMIT
    assert problems(at_limit) == [f"line 2: address '{local}@example.com': address too long"]


def test_what_is_written_reads_back_the_same() -> None:
    entries = [
        Suppressed(
            address='"odd,local"@example.com',  # a quoted local part, with a comma
            reason=Reason.COMPLAINT,
            created_at=datetime(2026, 12, 1, 9, 30, 15, 123000, tzinfo=UTC),
            message_id="m1",  # not written
        ),
        Suppressed(
            address="jürgen@bücher.example",
            reason=Reason.UNSUBSCRIBE,
            created_at=datetime(2026, 12, 1, 11, 0, tzinfo=timezone(timedelta(hours=2))),
        ),
    ]
    out = io.StringIO()
    write_header(out)
    write_rows(out, entries)
    text = out.getvalue()
    assert text.splitlines()[0] == "address,reason,created_at"
    assert text.splitlines()[1] == '"""odd,local""@example.com",COMPLAINT,2026-12-01T09:30:15.123Z'
    assert text.splitlines()[2] == "jürgen@bücher.example,UNSUBSCRIBE,2026-12-01T09:00:00.000Z"
    again = read(text.encode())
    assert again == [
        Suppressed(address=e.address, reason=e.reason, created_at=e.created_at.astimezone(UTC))
        for e in entries
    ]
