"""Tracking rewrite alone, side by side with the usual ways to touch every link.

    .venv/bin/python -m bench.rewrite [--size 100000] [--runs 200]

Times, on a newsletter of about 100 KB built from the corpus: pixelpost's rewrite of
the HTML (scan, plan, render with real signed tokens), the same for a whole MIME message
(quoted-printable decoded and encoded again), and one more recipient's copy of an
already planned message; and as baselines one regex pass over the HTML,
BeautifulSoup with html.parser parsing and serializing it, and lxml-backed
BeautifulSoup and selectolax when they are installed. Reports medians and ratios.

The rewrites timed are checked first: a rewrite that left a link or the pixel out
would be timed doing less than its job, so the benchmark stops there, INVALID.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage

from bench.messages import html_message, newsletter_html
from pixelpost.core import html
from pixelpost.core.ids import new_message_id
from pixelpost.core.rewrite import plan_message
from pixelpost.core.tokens import TokenCodec

BASE = "https://t.example.com"


def measure(run: Callable[[], object], runs: int) -> float:
    """Median seconds of `runs` calls, after a warm-up."""
    for _ in range(min(10, runs)):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def html_part(message: bytes) -> str:
    parsed = message_from_bytes(message, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    part = parsed.get_body(("html",))
    return "" if part is None else str(part.get_content())


def check(what: str, rewritten: str, links: int) -> None:
    """SystemExit, INVALID, unless `rewritten` has `links` tracked links and a pixel."""
    clicks, pixels = rewritten.count(f"{BASE}/c/"), rewritten.count(f"{BASE}/o/")
    if clicks != links or pixels != 1:
        raise SystemExit(
            f"INVALID: {what} made {clicks} tracked links of {links} and {pixels} pixels"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="HTML size in characters")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    doc = newsletter_html(args.size)
    message = html_message(args.size)
    codec = TokenCodec([os.urandom(32)])

    def urls(message_id: str) -> dict[str, object]:
        return {
            "open_url": f"{BASE}/o/{codec.open_token(message_id)}",
            "click_url": lambda link: (
                f"{BASE}/c/" + codec.click_token(message_id, link.link_index, link.url, link.tags)
            ),
        }

    def rewrite_html() -> str:
        changes = html.edits(html.scan(doc), links=True, pixel=True)
        return html.plan(doc, changes).render(**urls(new_message_id()))  # type: ignore[arg-type]

    def rewrite_message() -> bytes:
        planned = plan_message(message, links=True, pixel=True)
        return planned.render(**urls(new_message_id()))  # type: ignore[arg-type]

    planned = plan_message(message, links=True, pixel=True)

    def another_recipient() -> bytes:
        return planned.render(**urls(new_message_id()))  # type: ignore[arg-type]

    links = len(html.scan(doc).links)
    check("the HTML rewrite", rewrite_html(), links)
    check("the MIME rewrite", html_part(rewrite_message()), links)
    check("another recipient's copy", html_part(another_recipient()), links)

    href = re.compile(r"""href\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
    results: list[tuple[str, float]] = [
        ("pixelpost: rewrite the HTML (scan, plan, render)", measure(rewrite_html, args.runs)),
        ("pixelpost: rewrite the MIME message (+ QP)", measure(rewrite_message, args.runs)),
        ("pixelpost: one more recipient's copy", measure(another_recipient, args.runs)),
        ("baseline: one regex pass (findall href)", measure(lambda: href.findall(doc), args.runs)),
    ]
    from bs4 import BeautifulSoup

    slow_runs = max(5, args.runs // 20)
    results.append(
        (
            "baseline: BeautifulSoup html.parser, parse+serialize",
            measure(lambda: str(BeautifulSoup(doc, "html.parser")), slow_runs),
        )
    )
    try:
        import lxml  # noqa: F401

        results.append(
            (
                "baseline: BeautifulSoup lxml, parse+serialize",
                measure(lambda: str(BeautifulSoup(doc, "lxml")), slow_runs),
            )
        )
    except ImportError:
        print("(lxml not installed: pip install lxml to compare)")
    try:
        from selectolax.parser import HTMLParser

        results.append(
            (
                "baseline: selectolax, parse+serialize",
                measure(lambda: HTMLParser(doc).html, args.runs),
            )
        )
    except ImportError:
        print("(selectolax not installed: pip install selectolax to compare)")

    print(f"HTML: {len(doc):,} characters, {links} tracked links; message {len(message):,} bytes")
    ours = results[0][1]
    width = max(len(name) for name, _ in results)
    print(f"{'':{width}}  {'median':>9}  {'vs rewrite':>10}")
    for name, seconds in results:
        print(f"{name:{width}}  {seconds * 1000:7.3f}ms  {seconds / ours:9.2f}x")


if __name__ == "__main__":
    main()
