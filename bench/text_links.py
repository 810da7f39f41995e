"""Link tracking in text/plain parts: plan and render time per 100 KB of text.

    .venv/bin/python -m bench.text_links [--runs 30]

Times `plan_message(..., text_links=True)` and one recipient's `render` with real
signed click tokens, the way the relay plans a message once and renders each copy, on:
the project's own text fixtures (`tests/fixtures/text`), each a message of its own, and
strung together into one text part of about 100 KB (a long newsletter), 8bit and
quoted-printable; every corpus message with a text/plain part, when the corpus is
there; and synthetic bodies of one line each, 0.6, 1.2, 2.3 and 4.6 MB of prose with a
URL every 20 KB, quoted-printable, to show that the time grows linearly with the text.
Beside each: one regex pass over the same text (`re.findall` of http(s) URLs), the
cheapest way to find URLs at all. Goal: at most 2 ms per 100 KB of text, for the texts
of 100 KB and more (a small message costs mostly the reading of its MIME structure,
whatever its text). Reports medians; the exit status is 1 when a goal is MISSED.

Every copy timed is checked first: a copy that left a found URL untracked would be
timed doing less than its job, so the benchmark stops there, INVALID.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from email import policy
from email.message import EmailMessage

from bench.messages import CORPUS, FIXTURES
from bench.rewrite import measure
from pixelpost.core import mime, text
from pixelpost.core.ids import new_message_id
from pixelpost.core.rewrite import MAX_TRACKED_LINKS, RewriteFailure, plan_message
from pixelpost.core.splice import Link
from pixelpost.core.tokens import TokenCodec

BASE = "https://t.example.com"
GOAL_MS = 2.0
"""Plan and render, per 100 KB of text."""
SINGLE_LINE_MB = (0.6, 1.2, 2.3, 4.6)
URL_EVERY = 20_000
"""Characters of prose per URL in the single-line bodies (4.6 MB: 230 URLs, under the
cap of 250 a message, so that every one is tracked)."""
_URLS = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)


def plain_message(body: str, encoding: str) -> bytes:
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["To"] = "reader@example.org"
    message["Subject"] = "This week, in plain text"
    message.set_content(body, cte=encoding)
    return message.as_bytes(policy=policy.SMTP)


def single_line(size: int) -> str:
    prose = "The quick brown fox reads this week's newsletter, and then reads it again. "
    unit = (
        prose * (URL_EVERY // len(prose)) + "https://shop.example.com/item?id=42&utm_source=news "
    )
    return (unit * (size // len(unit) + 1))[:size]


def single_line_message(size: int) -> bytes:
    """A one-line text part, quoted-printable (its soft breaks keep it to 76 columns)."""
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["To"] = "reader@example.org"
    message["Subject"] = "One long line"
    message.set_content(single_line(size), cte="quoted-printable")
    return message.as_bytes(policy=policy.SMTP)


def texts(message: bytes) -> list[str]:
    """The message's text/plain bodies, decoded (undecodable bytes replaced)."""
    found = []
    for entity in mime.text_parts(mime.parse(message)):
        try:
            octets = mime.decode_body(
                message[entity.body_start : entity.end], entity.transfer_encoding
            )
            found.append(octets.decode(entity.charset or "ascii", "replace"))
        except (mime.TransferEncodingError, LookupError):
            continue
    return found


def plannable(message: bytes) -> bool:
    """Whether the message can be tracked (one that cannot goes out as it came)."""
    try:
        plan_message(message, links=False, pixel=False, text_links=True)
    except RewriteFailure:
        return False
    return True


class Case:
    """Messages timed together: their text, and the copy of each checked."""

    def __init__(
        self, name: str, messages: list[bytes], codec: TokenCodec, *, goal: bool = True
    ) -> None:
        self.name = name
        self.goal = goal
        """Whether the goal applies: not to small messages, whose cost is mostly their
        MIME structure's reading, whatever their text."""
        self.messages = messages
        self.bodies = [body for message in messages for body in texts(message)]
        self.size = sum(len(body.encode("utf-8")) for body in self.bodies)
        self.codec = codec
        self.links = 0

    def click_url(self, message_id: str) -> Callable[[Link], str]:
        signer = self.codec.signer(message_id)
        return lambda link: f"{BASE}/c/{signer.click_token(link.link_index, link.url, link.tags)}"

    def plan(self) -> None:
        for message in self.messages:
            plan_message(message, links=False, pixel=False, text_links=True)

    def run(self) -> None:
        for message in self.messages:
            plan = plan_message(message, links=False, pixel=False, text_links=True)
            plan.render(open_url=None, click_url=self.click_url(new_message_id()))

    def baseline(self) -> None:
        for body in self.bodies:
            _URLS.findall(body)

    def check(self) -> None:
        """SystemExit, INVALID, unless each copy tracks every URL found (to the cap)."""
        for message in self.messages:
            plan = plan_message(message, links=False, pixel=False, text_links=True)
            found = sum(len(text.scan(body).links) for body in texts(message))
            out = plan.render(open_url=None, click_url=self.click_url(new_message_id()))
            tracked = sum(body.count(f"{BASE}/c/") for body in texts(out))
            expected = min(found, MAX_TRACKED_LINKS)
            if len(plan.links) != expected or tracked != expected:
                raise SystemExit(
                    f"INVALID: {self.name}: {tracked} tracked links in the copy, "
                    f"{len(plan.links)} planned, of {expected}"
                )
            self.links += expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    codec = TokenCodec([os.urandom(32)])

    fixtures = [path.read_text("utf-8") for path in sorted((FIXTURES / "text").glob("*.txt"))]
    joined = "\n".join(fixtures)
    long_text = "\n".join([joined] * (100_000 // len(joined.encode()) + 1))
    cases = [
        Case(
            "own texts, a message each",
            [plain_message(t, "8bit") for t in fixtures],
            codec,
            goal=False,
        ),
        Case("own texts strung to 100 KB, 8bit", [plain_message(long_text, "8bit")], codec),
        Case(
            "own texts strung to 100 KB, QP", [plain_message(long_text, "quoted-printable")], codec
        ),
    ]
    corpus = sorted((CORPUS / "mime").glob("*.eml"))
    if corpus:
        with_text = [
            message
            for message in (path.read_bytes() for path in corpus)
            if mime.text_parts(mime.parse(message)) and plannable(message)
        ]
        cases.append(Case(f"corpus, {len(with_text)} messages", with_text, codec, goal=False))
    else:
        print(f"(no corpus at {CORPUS}: its messages are left out)")
    single = len(cases)
    for megabytes in SINGLE_LINE_MB:
        size = int(megabytes * 1_000_000)
        cases.append(Case(f"one line of {megabytes} MB, QP", [single_line_message(size)], codec))

    for case in cases:
        case.check()

    name_width = max(len(case.name) for case in cases)
    print(
        f"{'text':{name_width}}  {'KB':>6}  {'links':>5}  {'plan':>9}  {'plan+render':>11}  "
        f"{'per message':>11}  {'per 100 KB':>10}  {'regex pass':>10}  goal"
    )
    verdicts = []
    for number, case in enumerate(cases):
        runs = args.runs if case.size < 1_000_000 else max(3, args.runs // 6)
        planning = measure(case.plan, runs)
        seconds = measure(case.run, runs)
        regex = measure(case.baseline, runs)
        per_100kb = seconds * 1000 * 100_000 / case.size
        verdict = "-"
        if case.goal:
            verdicts.append(per_100kb <= GOAL_MS)
            verdict = "met" if verdicts[-1] else "MISSED"
        if number == single:
            print()
        print(
            f"{case.name:{name_width}}  {case.size / 1000:6,.0f}  {case.links:5}  "
            f"{planning * 1000:7.2f}ms  {seconds * 1000:9.2f}ms  "
            f"{seconds * 1000 / len(case.messages):9.2f}ms  "
            f"{per_100kb:8.2f}ms  {regex * 1000:8.2f}ms  {verdict}"
        )
    print(f"\ngoal: at most {GOAL_MS} ms per 100 KB of text, planned and rendered")
    if not all(verdicts):
        sys.exit(1)


if __name__ == "__main__":
    main()
