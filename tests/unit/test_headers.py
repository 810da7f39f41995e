"""Header handling on raw bytes: find fields, read and remove control headers, and add
`Received:` without touching anything else."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixelpost.core.headers import (
    extract_controls,
    message_start,
    parse_header_section,
    parse_tags,
    protocol_name,
    received_field,
    remove_fields,
)


def test_fields_with_folding_and_the_body_offset() -> None:
    data = b"Subject: one\r\n two\r\nFrom: a@b\r\n\r\nbody\r\nX: not a header\r\n"
    section = parse_header_section(data)

    assert [f.name for f in section.fields] == ["Subject", "From"]
    assert section.fields[0].value(data) == "one two"
    assert data[section.body_offset :] == b"body\r\nX: not a header\r\n"


def test_lf_only_messages_and_headers_without_a_body() -> None:
    data = b"Subject: hi\nTo: x@y\n\nbody\n"
    section = parse_header_section(data)
    assert [f.name for f in section.fields] == ["Subject", "To"]
    assert data[section.body_offset :] == b"body\n"

    headers_only = b"Subject: hi\r\nTo: x@y"
    section = parse_header_section(headers_only)
    assert [f.value(headers_only) for f in section.fields] == ["hi", "x@y"]
    assert section.body_offset == len(headers_only)


def test_a_line_that_is_not_a_field_ends_the_header_section() -> None:
    data = b"Subject: hi\r\nthis is not a header\r\nX-Config-Set: marketing\r\n"
    section = parse_header_section(data)

    assert [f.name for f in section.fields] == ["Subject"]
    assert section.body_offset == len(b"Subject: hi\r\n")
    assert extract_controls(data).config_set is None


def test_obsolete_blank_before_colon_is_a_field() -> None:
    data = b"X-Config-Set : marketing\r\n\r\n"
    assert extract_controls(data).config_set == "marketing"


def test_controls_are_read_and_removed_case_insensitively() -> None:
    data = (
        b"From: a@example.com\r\n"
        b"x-config-set: marketing\r\n"
        b"X-SES-MESSAGE-TAGS: campaign=spring,\r\n\tteam=growth\r\n"
        b"X-Config-Set: ignored-second\r\n"
        b"X-Message-Tags: campaign=summer, bad tag=x, ses:reserved=1, =v, k=\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"X-Config-Set: body text\r\n"
    )
    controls = extract_controls(data)

    assert controls.config_set == "marketing"
    assert controls.tags == {"campaign": ("spring", "summer"), "team": ("growth",)}
    assert controls.rejected_tags == tuple(
        ("X-Message-Tags", entry) for entry in ("bad tag=x", "ses:reserved=1", "=v", "k=")
    )
    assert controls.content == (
        b"From: a@example.com\r\nSubject: hi\r\n\r\nX-Config-Set: body text\r\n"
    )


def test_a_message_without_controls_is_returned_as_is() -> None:
    data = b"Subject: hi\r\n\r\nbody\r\n"
    controls = extract_controls(data)
    assert controls.content is data
    assert (controls.config_set, controls.tags) == (None, {})


@pytest.mark.parametrize(
    "before",
    [
        b"From news@example.com Fri Dec  4 08:00:00 2026\r\n",
        b"From news@example.com Fri Dec  4 08:00:00 2026\n\n",
        b"\r\n",
        b"\n\r\n",
    ],
)
def test_what_an_archive_put_before_the_header_section_is_left_out(before: bytes) -> None:
    message = b"X-Config-Set: marketing\r\nFrom: a@example.com\r\n\r\nbody\r\n"
    assert message_start(before + message) == len(before)
    controls = extract_controls(before + message)
    assert controls.config_set == "marketing"
    assert controls.dropped == before
    assert controls.original == message
    assert controls.content == b"From: a@example.com\r\n\r\nbody\r\n"


@pytest.mark.parametrize(
    "data",
    [
        b"From: a@example.com\r\n\r\nbody",
        b"\r\nbody without a header section\r\nX: y\r\n",
        b"From a friend, with no header after\r\nhello\r\n",
        b"",
    ],
)
def test_a_message_that_starts_otherwise_starts_at_its_first_byte(data: bytes) -> None:
    assert message_start(data) == 0
    assert extract_controls(data).content == data


def test_tag_syntax() -> None:
    assert parse_tags("a=1, b=two,c=3") == ({"a": ["1"], "b": ["two"], "c": ["3"]}, [])
    assert parse_tags(" , ") == ({}, [])
    assert parse_tags("a=1=2") == ({}, ["a=1=2"])


def test_received_field_layout() -> None:
    when = datetime(2026, 11, 29, 18, 56, 5, tzinfo=UTC)
    field = received_field(
        helo="client.example\x00<script>",
        client_ip="192.0.2.7",
        hostname="relay.example.com",
        protocol="ESMTPS",
        queue_id="ABC123",
        recipient="rcpt@example.org",
        when=when,
    )
    assert field == (
        b"Received: from client.example??script? ([192.0.2.7])\r\n"
        b"\tby relay.example.com (pixelpost) with ESMTPS id ABC123\r\n"
        b"\tfor <rcpt@example.org>; Sun, 29 Nov 2026 18:56:05 +0000\r\n"
    )
    several = received_field(
        helo=None,
        client_ip="::1",
        hostname="r",
        protocol="SMTP",
        queue_id="Q",
        recipient=None,
        when=when,
    )
    parsed = message_from_bytes(several + b"\r\n", policy=policy.SMTP)
    assert " ".join(parsed["Received"].split()) == (
        "from unknown ([::1]) by r (pixelpost) with SMTP id Q; Sun, 29 Nov 2026 18:56:05 +0000"
    )


def test_protocol_names() -> None:
    assert protocol_name(esmtp=False, tls=True, authenticated=True, smtputf8=False) == "SMTP"
    assert protocol_name(esmtp=True, tls=False, authenticated=False, smtputf8=False) == "ESMTP"
    assert protocol_name(esmtp=True, tls=True, authenticated=True, smtputf8=False) == "ESMTPSA"
    assert protocol_name(esmtp=True, tls=True, authenticated=False, smtputf8=True) == "UTF8SMTPS"


_NAMES = st.sampled_from(
    [
        "From",
        "To",
        "Subject",
        "X-Config-Set",
        "x-ses-configuration-set",
        "X-Message-Tags",
        "X-SES-MESSAGE-TAGS",
        "Received",
        "DKIM-Signature",
        "X-Other",
    ]
)
_VALUES = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
_FIELDS = st.lists(
    st.tuples(
        _NAMES, st.lists(_VALUES, min_size=1, max_size=3), st.sampled_from([b"\r\n", b"\n"])
    ),
    max_size=12,
)


@given(fields=_FIELDS, body=st.binary(max_size=200))
def test_removing_controls_keeps_every_other_byte(
    fields: list[tuple[str, list[str], bytes]], body: bytes
) -> None:
    kept = b""
    data = b""
    for name, folds, eol in fields:
        raw = (
            f"{name}: {folds[0]}".encode()
            + b"".join(eol + b"\t" + fold.encode() for fold in folds[1:])
            + eol
        )
        data += raw
        if name.lower() not in {
            "x-config-set",
            "x-ses-configuration-set",
            "x-message-tags",
            "x-ses-message-tags",
        }:
            kept += raw
    data += b"\r\n" + body
    kept += b"\r\n" + body

    controls = extract_controls(data)

    assert controls.content == kept
    section = parse_header_section(data)
    assert len(section.fields) == len(fields)
    assert remove_fields(data, section.fields) == b"\r\n" + body
