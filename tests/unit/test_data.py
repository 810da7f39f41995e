"""The DATA reader against RFC 5321's rules, fed in every way a socket can split it."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.frontdoor.data import TooMuchData, read_data, stuffed
from tests.conftest import until

LIMIT = 16
"""aiosmtpd's stream limit is 1001; a small one exercises the long-line paths too."""


def stuff(lines: list[bytes]) -> bytes:
    """What a client sends: dot-stuffed lines, then the end-of-data line."""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


async def read(wire: bytes, cuts: list[int], limit: int | None = None) -> tuple[bytes, bytes]:
    """Feed `wire` in pieces cut at `cuts`; what was read, and what the stream kept."""
    reader = asyncio.StreamReader(limit=LIMIT)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})

    async def feed() -> None:
        for start, end in itertools.pairwise(points):
            reader.feed_data(wire[start:end])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    data = await read_data(reader, limit)
    await feeder
    return data, await reader.read()


line_text = st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"\r"))


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.one_of(line_text, st.sampled_from([b"", b".", b"..", b".x", b"\n.", b"\r.\r"])),
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_the_message_comes_back_as_sent_and_the_next_command_stays(
    lines: list[bytes], cuts: list[int]
) -> None:
    wire = stuff(lines) + b".\r\nQUIT\r\n"
    data, rest = asyncio.run(read(wire, cuts))
    assert data == b"".join(line + b"\r\n" for line in lines)
    assert rest == b"QUIT\r\n"


async def test_an_empty_message() -> None:
    assert await read(b".\r\nQUIT\r\n", []) == (b"", b"QUIT\r\n")


@pytest.mark.parametrize(
    "marker", [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"]
)
async def test_only_crlf_dot_crlf_ends_the_message(marker: bytes) -> None:
    """SMTP smuggling (CVE-2023-51764 and kin): the bare markers are message text."""
    wire = b"Subject: a\r\n\r\nfirst" + marker + b"MAIL FROM:<evil@example.com>\r\n.\r\n"
    data, rest = await read(wire, [])
    # A dot that starts a line (after a CRLF) is unstuffed, as in any message.
    text = marker.replace(b"\r\n.", b"\r\n")
    assert data == b"Subject: a\r\n\r\nfirst" + text + b"MAIL FROM:<evil@example.com>\r\n"
    assert rest == b""


async def test_a_message_over_the_limit_is_read_to_its_end_and_refused() -> None:
    wire = b"x" * 100 + b"\r\n" + b"y" * 100 + b"\r\n.\r\nQUIT\r\n"
    with pytest.raises(TooMuchData):
        await read(wire, [7, 50, 150], limit=150)
    data, rest = await read(wire, [7, 50, 150], limit=204)
    assert len(data) == 204
    assert rest == b"QUIT\r\n"


async def test_a_message_is_read_in_a_few_calls_not_a_line_at_a_time() -> None:
    calls = 0

    class Counting(asyncio.StreamReader):
        async def readuntil(self, separator: bytes = b"\n") -> bytes:
            nonlocal calls
            calls += 1
            return await super().readuntil(separator)

    lines = [b"line %d of a long message" % n for n in range(1500)]
    reader = Counting(limit=1001)  # aiosmtpd's
    reader.feed_data(stuff(lines) + b".\r\n")
    reader.feed_eof()
    assert await read_data(reader, None) == b"".join(line + b"\r\n" for line in lines)
    assert calls <= 3


async def test_an_oversized_message_says_so_as_soon_as_it_is_over_the_limit() -> None:
    """So that the relay can give back its place for large messages while it drains."""
    told = []
    reader = asyncio.StreamReader(limit=1001)
    reader.feed_data(b"x" * 3000 + b"\r\n")
    reading = asyncio.create_task(read_data(reader, 1000, on_oversize=lambda: told.append(1)))
    await until(lambda: told, "told it is over")  # before the end of the data has even arrived
    assert told == [1]
    assert not reading.done()
    reader.feed_data(b"y" * 3000 + b"\r\n.\r\n")
    with pytest.raises(TooMuchData):
        await reading
    assert told == [1]


@given(st.lists(st.sampled_from([b"", b".", b"..", b".x", b"x.", b"text", b" . "]), min_size=1))
async def test_stuffed_is_what_read_data_undoes(lines: list[bytes]) -> None:
    """What the relay sends upstream (`stuffed`) reads back, on the other side, as the
    message itself: every line starting with a dot survives, and nothing ends early."""
    message = b"".join(line + b"\r\n" for line in lines)
    wire = stuffed(message)
    assert wire.endswith(b".\r\n")
    data, rest = await read(wire, [])
    assert data == message
    assert rest == b""
