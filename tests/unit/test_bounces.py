"""SES's bounce types from one table (pixelpost/core/bounces.py, docs/bounces.md): every
row is reached, the documents show the table the code uses, and the relay's refusals
keep the types they had."""

from __future__ import annotations

from pathlib import Path

import pytest

import pixelpost.core.bounces as bounces
from pixelpost.core.bounces import (
    RULES,
    bounce_kind,
    classify,
    diagnostic_status,
    find_status,
    matching_rule,
    rules_table,
)

ROOT = Path(__file__).resolve().parents[2]

# (status, diagnostic, "bounceType/bounceSubType", the row that decides); the status
# shown is the one given.
CASES = [
    ("5.1.1", "smtp; 550 5.1.1 <a@example.net>: User unknown", "Permanent/NoEmail", 0),
    ("5.1.10", "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound", "Permanent/NoEmail", 0),
    ("5.1.2", "smtp; 550 5.1.2 Host unknown", "Permanent/NoEmail", 0),
    ("5.0.0", "smtp; 550 No such user here", "Permanent/NoEmail", 1),
    ("", "Sorry, no mailbox here by that name.", "Permanent/NoEmail", 1),
    ("5.2.2", "smtp; 552 5.2.2 Mailbox full", "Transient/MailboxFull", 2),
    ("4.2.2", "smtp; 452 4.2.2 Over quota", "Transient/MailboxFull", 2),
    ("5.0.0", "smtp; 552 Quota exceeded", "Transient/MailboxFull", 3),
    ("", "The users mailfolder is over the allowed quota", "Transient/MailboxFull", 3),
    ("5.3.4", "smtp; 552 5.3.4 Message too big for system", "Transient/MessageTooLarge", 4),
    ("5.2.3", "smtp; 552 5.2.3 Exceeded the size limits", "Transient/MessageTooLarge", 4),
    ("5.0.0", "smtp; 552 Message too large", "Transient/MessageTooLarge", 5),
    ("5.7.1", "smtp; 554 5.7.1 Attachment not allowed", "Transient/AttachmentRejected", 6),
    ("5.7.0", "smtp; 554 5.7.0 Blocked attachment", "Transient/AttachmentRejected", 6),
    ("5.7.1", "smtp; 554 5.7.1 Message rejected as spam", "Transient/ContentRejected", 7),
    ("5.6.0", "smtp; 554 5.6.0 Content rejected", "Transient/ContentRejected", 7),
    ("5.7.1", "smtp; 554 5.7.1 Client host [192.0.2.9] blocked", "Transient/ContentRejected", 7),
    ("4.4.1", "X-Postfix; connect to mx[192.0.2.1]:25: timed out", "Transient/General", 8),
    ("4.7.0", "smtp; 421 4.7.0 Try again later", "Transient/General", 8),
    ("5.7.1", "smtp; 554 5.7.1 Relay access denied", "Permanent/General", 9),
    ("5.1.7", "smtp; 553 5.1.7 Bad sender address syntax", "Permanent/General", 9),
    ("5.4.5", "smtp; 550 5.4.5 Daily user sending quota exceeded", "Permanent/General", 9),
    ("5.0.0", None, "Permanent/General", 9),
    ("", None, "Undetermined/Undetermined", 10),
    ("", "The recipient could not be reached", "Undetermined/Undetermined", 10),
    ("2.0.0", "smtp; 250 2.0.0 OK", "Undetermined/Undetermined", 10),
]


@pytest.mark.parametrize(("status", "diagnostic", "kind", "row"), CASES)
def test_each_row_of_the_table(status: str, diagnostic: str | None, kind: str, row: int) -> None:
    found = classify(status, diagnostic)

    assert (f"{found.type}/{found.subtype}", found.status) == (kind, status)
    assert matching_rule(status, diagnostic) is RULES[row]


def test_every_row_is_reached_and_every_subtype_a_report_can_give() -> None:
    assert {row for *_, row in CASES} == set(range(len(RULES)))
    assert {kind.split("/")[1] for _, _, kind, _ in CASES} == {
        "NoEmail",
        "MailboxFull",
        "MessageTooLarge",
        "AttachmentRejected",
        "ContentRejected",
        "General",
        "Undetermined",
    }
    # Suppressed and OnAccountSuppressionList are pixelpost's own decisions, not a report's.
    assert {rule.subtype for rule in RULES} & {"Suppressed", "OnAccountSuppressionList"} == set()


def test_without_a_status_the_diagnostic_gives_one() -> None:
    from_enhanced = classify("", "smtp; 550 5.1.1 <a@example.net>: Recipient address rejected")
    from_reply_code = classify("", "smtp; 554 Transaction failed")

    assert (from_enhanced.subtype, from_enhanced.status) == ("NoEmail", "5.1.1")
    assert (from_reply_code.type, from_reply_code.status) == ("Permanent", "5.0.0")


def test_a_status_in_the_field_wins_over_the_one_in_the_diagnostic() -> None:
    # Exim writes Status 5.0.0 and the upstream's 5.1.1 in the diagnostic only.
    kind = classify("5.0.0", "smtp; 550 5.1.1 <a@example.net>: Recipient address rejected")

    assert (kind.type, kind.subtype, kind.status) == ("Permanent", "General", "5.0.0")


def test_the_documents_show_the_table_the_code_uses() -> None:
    table = rules_table()

    assert table in (bounces.__doc__ or "")
    assert table in (ROOT / "docs" / "bounces.md").read_text(encoding="utf-8")
    assert table.count("\n") == len(RULES) + 2


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (550, "5.1.1 <x@example.com>: User unknown", ("Permanent", "NoEmail", "5.1.1")),
        (550, "No such user here", ("Permanent", "NoEmail", "5.0.0")),
        (553, "Mailbox unavailable", ("Permanent", "NoEmail", "5.0.0")),
        (552, "Mailbox full", ("Transient", "MailboxFull", "5.0.0")),
        (552, "5.2.2 Mailbox full", ("Transient", "MailboxFull", "5.2.2")),
        (554, "5.7.1 Message rejected as spam", ("Transient", "ContentRejected", "5.7.1")),
        (550, "5.01.01 Unknown user", ("Permanent", "NoEmail", "5.01.01")),
        (451, "4.3.0 Try again", ("Transient", "General", "4.3.0")),
        (500, "what?", ("Permanent", "General", "5.0.0")),
    ],
)
def test_a_refusal_by_its_code_and_text(code: int, text: str, kind: tuple[str, str, str]) -> None:
    found = bounce_kind(code, text)

    assert (found.type, found.subtype, found.status) == kind


@pytest.mark.parametrize(
    ("text", "found", "derived"),
    [
        ("smtp; 550 5.1.1 <a@b>: no", "5.1.1", "5.1.1"),
        ("over quota (#5.2.2)", "5.2.2", "5.2.2"),
        ("said: 550 5.1.1.", "5.1.1", "5.1.1"),
        ("smtp; 554 Transaction failed", None, "5.0.0"),
        ("host 192.0.2.1 refused", None, None),
        ("host 4.2.1.5 refused", None, None),
        ("a 5.01.001 status", "5.1.1", "5.1.1"),
        ("", None, None),
    ],
)
def test_statuses_found_in_text(text: str, found: str | None, derived: str | None) -> None:
    assert find_status(text) == found
    assert diagnostic_status(text) == derived
