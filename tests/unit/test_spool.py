"""The spool file format, the spool's bookkeeping and the retry schedule."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import random
import time
import zlib
from pathlib import Path

import pytest

from pixelpost.core.retry import next_attempt_at
from relay.outbound.spool import Spool, State, depth
from relay.outbound.spoolfile import (
    Copy,
    CorruptSpoolFile,
    Envelope,
    Tracking,
    Unsubscribe,
    decode,
    encode,
)

ENVELOPE = Envelope(
    id="0193a1b2c3d4e5f60718293a4b5c6d7e",
    mail_from="sender@example.com",
    copies=(
        Copy(id="0193a1b2c3d4e5f60718293a4b5c6d7e", recipients=("a@example.org",)),
        Copy(id="0193a1b2c3d4e5f60718293a4b5c6d70", recipients=("jörg@bücher.example",)),
    ),
    mail_options=("SMTPUTF8",),
    config_set="marketing",
    received_at=1_764_000_000.5,
    expires_at=1_764_172_800.5,
    mail='{"messageId":"0193a1b2c3d4e5f60718293a4b5c6d7e"}',
)
CONTENT = b"Subject: hi\r\n\r\nEND 12 00000000\r\nbody ending in the trailer's marker\r\nEND "


def test_a_spool_file_decodes_to_what_was_encoded() -> None:
    assert decode(encode(ENVELOPE, CONTENT)) == (ENVELOPE, CONTENT)


@pytest.mark.parametrize(
    "tracking",
    [
        Tracking(base_url="https://t.example", open=True, click=False),
        Tracking(base_url="https://t.example", open=False, click=True, text_click=True),
        Tracking(
            base_url="https://t.example",
            open=True,
            click=True,
            unsubscribe=Unsubscribe(account=True, mailto_domain="b.example", headers=False),
        ),
        Tracking(
            base_url="https://t.example",
            open=False,
            click=False,
            text_click=True,
            unsubscribe=Unsubscribe(account=False, mailto_domain=None, headers=True),
        ),
    ],
)
def test_how_copies_are_tracked_reads_back(tracking: Tracking) -> None:
    envelope = dataclasses.replace(ENVELOPE, tracking=tracking)
    assert decode(encode(envelope, CONTENT)) == (envelope, CONTENT)


def test_a_file_from_before_text_links_and_unsubscribes_reads() -> None:
    """Tracking as [base URL, opens, clicks], as files written before text links and
    unsubscribes have it."""
    old = dataclasses.replace(
        ENVELOPE, tracking=Tracking(base_url="https://t.example", open=True, click=True)
    )
    data = encode(old, CONTENT)
    assert b'"tracking":["https://t.example",true,true]' in data
    assert decode(data)[0].tracking == Tracking(
        base_url="https://t.example", open=True, click=True, text_click=False, unsubscribe=None
    )


def test_every_truncation_is_detected() -> None:
    data = encode(ENVELOPE, CONTENT)
    for length in range(len(data)):
        with pytest.raises(CorruptSpoolFile):
            decode(data[:length])


@pytest.mark.parametrize("position", [0, 20, 200, -40, -3])
def test_a_changed_byte_is_detected(position: int) -> None:
    data = bytearray(encode(ENVELOPE, CONTENT))
    data[position] ^= 0x01
    with pytest.raises(CorruptSpoolFile):
        decode(bytes(data))


def _checksummed(body: bytes) -> bytes:
    """`body` as a whole spool file: trailer, length and checksum right."""
    return body + f"\nEND {len(body)} {zlib.crc32(body):08x}\n".encode()


@pytest.mark.parametrize(
    "envelope",
    [
        b"not json",
        b"[1, 2]",
        b'{"id": "x"}',
        b'{"id": "0193a1b2c3d4e5f60718293a4b5c6d7e", "mail_from": "a@b", "copies": 5,'
        b' "received_at": 1, "expires_at": 2}',
        b'{"id": "0193a1b2c3d4e5f60718293a4b5c6d7e", "mail_from": "a@b", "copies": [],'
        b' "received_at": 1, "expires_at": 2}',
        b'{"id": "0193a1b2c3d4e5f60718293a4b5c6d7e", "mail_from": "a@b",'
        b' "copies": [["../../etc/passwd", ["r@x"]]], "received_at": 1, "expires_at": 2}',
        b'{"id": "0193a1b2c3d4e5f60718293a4b5c6d7e", "mail_from": 7,'
        b' "copies": [["0193a1b2c3d4e5f60718293a4b5c6d7e", ["r@x"]]], "received_at": 1,'
        b' "expires_at": 2}',
        b'{"id": "0193a1b2c3d4e5f60718293a4b5c6d7e", "mail_from": "a@b",'
        b' "copies": [["0193a1b2c3d4e5f60718293a4b5c6d7e", ["r@x"]]], "received_at": "soon",'
        b' "expires_at": 2}',
    ],
)
def test_a_checksummed_file_whose_envelope_does_not_read_is_corrupt(envelope: bytes) -> None:
    with pytest.raises(CorruptSpoolFile, match="envelope"):
        decode(_checksummed(b"pixelpost-spool 2\n" + envelope + b"\nSubject: x\r\n\r\n"))


def test_a_file_of_version_1_reads_as_one_copy() -> None:
    """Spooled by the version before: one file per copy, the copy as it goes out."""
    values = (
        b'{"id":"0193a1b2c3d4e5f60718293a4b5c6d7e","mail_from":"s@example.com",'
        b'"recipients":["a@example.org"],"mail_options":[],"config_set":"default",'
        b'"received_at":1.5,"expires_at":2.5,"mail":"{}","notification":false,'
        b'"rendering_failure":null}'
    )
    envelope, content = decode(_checksummed(b"pixelpost-spool 1\n" + values + b"\n" + CONTENT))
    assert content == CONTENT
    assert envelope.copies == (
        Copy(id="0193a1b2c3d4e5f60718293a4b5c6d7e", recipients=("a@example.org",)),
    )
    assert (envelope.tracking, envelope.trace) == (None, None)


async def test_commit_makes_files_that_read_back_and_leaves_nothing_in_tmp(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    try:
        assert spool.open() == []
        second = Envelope(**{**_fields(ENVELOPE), "id": "0193a1b2c3d4e5f60718293a4b5c6d7f"})
        await spool.commit([(ENVELOPE, CONTENT), (second, b"two")])

        assert spool.ids() == [ENVELOPE.id, second.id]
        assert list(spool.tmp.iterdir()) == []
        lock = spool.lock(ENVELOPE.id)
        assert lock is not None
        assert spool.lock(ENVELOPE.id) is None  # held: nobody else delivers it
        assert spool.read(lock) == (ENVELOPE, CONTENT)
        lock.release()
    finally:
        spool.close()


def test_open_removes_what_a_dead_writer_left_and_nothing_in_progress(tmp_path: Path) -> None:
    """With relay.workers > 1 a relay starts while others are writing to the spool."""
    spool = Spool(tmp_path / "spool")
    spool.open()
    abandoned = spool.tmp / "half-written"
    abandoned.write_bytes(b"pixelpost-spool 1\n{")
    recent = spool.tmp / "just-created"
    recent.write_bytes(b"")
    in_progress = spool.tmp / "being-written"
    in_progress.write_bytes(b"pixelpost-spool 1\n")
    an_hour_ago = time.time() - 3600
    os.utime(abandoned, (an_hour_ago, an_hour_ago))
    os.utime(in_progress, (an_hour_ago, an_hour_ago))
    writer = os.open(in_progress, os.O_WRONLY)
    fcntl.flock(writer, fcntl.LOCK_EX)
    try:
        assert Spool(tmp_path / "spool").open() == []
        assert sorted(p.name for p in spool.tmp.iterdir()) == ["being-written", "just-created"]
    finally:
        os.close(writer)
    spool.close()


def test_state_summary_flush_and_removal(tmp_path: Path) -> None:
    now = time.time()
    spool = Spool(tmp_path / "spool")
    spool.open()
    for number, content in enumerate((b"a", b"b", b"c")):
        envelope = Envelope(**{**_fields(ENVELOPE), "id": f"{number:032x}"})
        spool._write(envelope, content)
    spool.save_state(f"{1:032x}", State(attempts=2, next_attempt_at=now + 2000, done=["a@x"]))
    spool.save_state(f"{2:032x}", State(attempts=1, next_attempt_at=now + 1000))
    (spool.states / f"{0:032x}").write_text("{torn")

    assert spool.state(f"{0:032x}") == State()  # a torn state starts over
    assert spool.state(f"{1:032x}").done == ["a@x"]
    summary = spool.summary(now)
    assert (summary.queued, summary.due, summary.next_retry) == (3, 1, now + 1000)
    assert summary.oldest is not None
    assert summary.oldest[0] == f"{0:032x}"
    assert depth(spool.path) is not None

    (spool.states / f"{0:032x}").write_text('{"attempts": 1, "from_the_future": true}')
    assert spool.state(f"{0:032x}") == State()  # a state of another version starts over

    held = spool.lock(f"{2:032x}")  # being delivered: flush leaves its state alone
    assert held is not None
    assert spool.request_flush() == 1
    held.release()
    assert spool.summary(time.time()).due == 2
    assert spool.request_flush() == 1
    assert spool.summary(time.time()).due == 3
    assert spool.flush_requested_at() > 0

    spool.remove(f"{1:032x}")
    assert spool.ids() == [f"{0:032x}", f"{2:032x}"]
    assert not (spool.states / f"{1:032x}").exists()
    spool.close()


def test_depth_of_a_missing_spool_is_none(tmp_path: Path) -> None:
    assert depth(tmp_path / "nowhere") is None


def test_retry_schedule_follows_the_delays_and_the_last_repeats() -> None:
    rng = random.Random(7)
    delays = [60.0, 300.0, 900.0]
    for attempts, delay in [(1, 60.0), (2, 300.0), (3, 900.0), (4, 900.0), (9, 900.0)]:
        at = next_attempt_at(attempts=attempts, delays=delays, now=1000.0, expires_at=1e9, rng=rng)
        assert delay * 0.9 <= at - 1000.0 <= delay * 1.1


def test_retry_schedule_never_goes_past_expiry() -> None:
    at = next_attempt_at(
        attempts=1, delays=[3600.0], now=1000.0, expires_at=1500.0, rng=random.Random(1)
    )
    assert at == 1500.0


def test_retries_of_a_burst_spread_out() -> None:
    rng = random.Random(3)
    times = {
        next_attempt_at(attempts=1, delays=[60.0], now=0.0, expires_at=1e9, rng=rng)
        for _ in range(50)
    }
    assert len(times) == 50
    assert max(times) - min(times) > 6


def _fields(envelope: Envelope) -> dict[str, object]:
    return {name: getattr(envelope, name) for name in envelope.__dataclass_fields__}
