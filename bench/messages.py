"""Realistic test messages for the benchmarks, built from the shared corpus (the folder
PIXELPOST_CORPUS names, or `../shared/corpus`), else from the tests' own templates."""

from __future__ import annotations

import os
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("PIXELPOST_CORPUS") or _ROOT.parent / "shared" / "corpus")
FIXTURES = _ROOT / "tests" / "fixtures"


def newsletter_html(size: int = 100_000) -> str:
    """A newsletter of about `size` characters: the corpus templates' bodies one after
    another inside one document, placeholders filled with real links."""
    templates = sorted((CORPUS / "html").glob("*.html")) or sorted(
        (FIXTURES / "html").glob("*.html")
    )
    if not templates:
        raise SystemExit(f"no templates in {CORPUS / 'html'} or {FIXTURES / 'html'}")
    bodies = []
    for path in templates:
        text = path.read_text("utf-8")
        found = re.search(r"<body[^>]*>(.*)</body>", text, re.DOTALL | re.IGNORECASE)
        bodies.append(found[1] if found else text)
    head = templates[0].read_text("utf-8").split("<body", 1)[0]
    filled = []
    total = len(head)
    n = 0
    while total < size:
        body = re.sub(
            r"\{\{\s*(\w+)\s*\}\}",
            rf"https://shop.example.com/\1?utm_source=news&amp;id={n}",
            bodies[n % len(bodies)],
        )
        body = body.replace('href="#"', f'href="https://shop.example.com/item/{n}"')
        # Newsletters link much more than transactional templates: a link per paragraph.
        body = body.replace(
            "</p>",
            f' <a href="https://shop.example.com/read/{n}?utm_medium=email&amp;p=1">More</a></p>',
        )
        filled.append(body)
        total += len(body)
        n += 1
    return head + "<body>" + "".join(filled) + "</body></html>"


def text_message(size: int = 20_000) -> bytes:
    """A plain-text message of about `size` bytes."""
    line = "All work and no play makes Jack a dull boy, says the plain text part.\n"
    message = EmailMessage()
    message["From"] = "news@example.com"
    message["To"] = "reader@example.org"
    message["Subject"] = "Plain text"
    message.set_content(line * (size // len(line)))
    return message.as_bytes(policy=policy.SMTP)


def html_message(size: int = 100_000, *, config_set: str | None = None) -> bytes:
    """A multipart/alternative newsletter of about `size` bytes of HTML, quoted-printable."""
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["To"] = "reader@example.org"
    message["Subject"] = "This week's newsletter"
    if config_set is not None:
        message["X-Config-Set"] = config_set
    message.set_content("This week's newsletter, in plain text.\n")
    message.add_alternative(newsletter_html(size), subtype="html", cte="quoted-printable")
    return message.as_bytes(policy=policy.SMTP)
