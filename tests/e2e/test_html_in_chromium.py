"""The acceptance of the HTML scan in a real browser: Chromium's own parser (DOMParser,
which is the page parser without scripts, as in a mail client) finds the same http(s)
links as pixelpost tracks, pixelpost's URLs lead where Chromium's would, and the pixel
is an image Chromium loads.

Links compare as sets: a browser's tree can hold an element twice (the adoption agency
clones a misnested `<a>`) or out of source order (foster parenting out of tables). By
design, pixelpost also tracks links inside Outlook's conditional comments, which Outlook
renders and Chromium reads as comments: the page parses those comments' content too.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest

from pixelpost.core.html import edits, pixel_html, plan, scan
from tests import html5
from tests.browser import Chromium
from tests.conftest import FIXTURES
from tracker.views import location

OPEN_URL = "https://t.example/o/OPENTOKEN"

# Each document's links and images, as Chromium reads them.
READ = """
(docs) => {
  const parser = new DOMParser();
  const links = (html) => {
    const doc = parser.parseFromString(html, "text/html");
    const found = [...doc.querySelectorAll("a[href], area[href]")]
      .filter((element) => !element.hasAttribute("ses:no-track"))
      .map((element) => element.href);
    const comments = doc.createTreeWalker(doc, NodeFilter.SHOW_COMMENT);
    for (let node = comments.nextNode(); node; node = comments.nextNode()) {
      const conditional = /^\\[if[^\\]]*\\]>([\\s\\S]*)<!\\[endif\\]$/.exec(node.data);
      if (conditional) found.push(...links(conditional[1]));
    }
    return found;
  };
  const images = (html) =>
    [...parser.parseFromString(html, "text/html").images].map((i) => i.getAttribute("src"));
  return docs.map(([doc, rewritten]) => ({links: links(doc), images: images(rewritten)}));
}
"""

# What real mail holds that a tokenizer can get wrong, each beside a link after it.
CASES = [
    '<td valign="top" "><a href="https://a.example/1">x</a></td><a href="https://a.example/2">y</a>',
    "<td a'b><a href=https://a.example/3>x</a><td ='x><a href=https://a.example/4>y</a>",
    '<td a=">"><a href="https://a.example/5">x</a><td a= "><a href="https://a.example/6">',
    "<!-- a --!><a href=https://b.example/1><!--><a href=https://b.example/2>",
    "<!---><a href=https://b.example/3><!-- a --!-- <a href=https://b.example/4> -->",
    "<![CDATA[ x ]> <a href=https://b.example/5><!x y><a href=https://b.example/6>",
    "<?x ?><a href=https://b.example/7></ 3><a href=https://b.example/8></><a href=https://b.example/9>",
    "<xmp><a href=https://c.example/1></xmp><iframe><a href=https://c.example/2></iframe>",
    "<noembed><a href=https://c.example/3></noembed><noframes><a href=https://c.example/4></noframes>",
    "<textarea><a href=https://c.example/5></textarea><title><a href=https://c.example/6></title>",
    "<script><!--<script></script><a href=https://c.example/7>--></script><a href=https://c.example/8>",
    "<p>x</p><plaintext><a href=https://c.example/9>",
    "<p>x</p></html><a href=https://d.example/1>",
    '<p>x</p><a href="https://d.example/2">x</a><td valign="top',
    "<p>x</p><!-- never closed <a href=https://d.example/3>",
    '<a href="https://e.example/a\u00a0b">1</a><a href="https://e.example/?q=1\u200b">2</a>',
    '<a href="https://e.ex\u00adample/pa\u00adge">3</a><a href="https://e.example/#\u00a0">4</a>',
    '<a href="http:/e.example/5">5</a><a href="http:\\\\e.example\\6\\b?c=\\d">6</a>',
    '<a href="HTTPS:///e.example/7">7</a><a href="https:e.example">8</a>',
    '<a href="https://bücher.example/straße">9</a><a href="https://e.ex\u00a0ample/">10</a>',
    '<a href="https:">11</a><a href="https:///">12</a><a href="javascript:x">13</a>',
    '<a href=" \n https://e.example/trim \t">14</a><a href="https://exa\nmple.com/">15</a>',
]


def where(url: str) -> str:
    """A URL compared by where it leads: scheme and host lowercased, an empty path as
    "/", percent-encoding undone."""
    parts = urlsplit(url)
    return unquote(
        urlunsplit(
            parts._replace(
                scheme=parts.scheme.lower(), netloc=parts.netloc.lower(), path=parts.path or "/"
            )
        )
    )


def navigable(url: str) -> bool:
    """An http(s) URL that Chromium resolved (`href` gives back what it cannot parse, such
    as "https:///", as written), but for one it keeps although no server can have its
    name: a host with a percent-encoded space or control in it (a no-break space in the
    host becomes "%20"), which pixelpost leaves alone."""
    host = urlsplit(url).netloc
    return url.startswith(("http://", "https://")) and bool(host) and "%" not in host


def documents(corpus_dir: Path | None) -> list[tuple[str, str]]:
    docs = [(f"case {number}", doc) for number, doc in enumerate(CASES)]
    templates = sorted((FIXTURES / "html").glob("*.html"))
    if corpus_dir is not None:
        templates += sorted((corpus_dir / "html").glob("*.html"))
    for path in templates:
        text = path.read_text("utf-8")
        docs += [(path.name, text), (f"{path.name}, filled", html5.filled(text))]
    return docs


def filled_documents(corpus_dir: Path | None) -> list[tuple[str, str]]:
    """`documents`, but for the templates only as filled in (their links real)."""
    return [(name, doc) for name, doc in documents(corpus_dir) if not name.endswith(".html")]


async def test_chromium_finds_the_links_pixelpost_tracks_and_loads_its_pixel(
    corpus_or_none: Path | None,
) -> None:
    docs = documents(corpus_or_none)
    pairs = []
    for _, doc in docs:
        found = scan(doc)
        rewritten = plan(doc, edits(found, links=False, pixel=True)).render(
            open_url=OPEN_URL, click_url=None
        )
        pairs.append((doc, rewritten))

    async with Chromium() as browser:
        page = await browser.new_page()
        await page.goto("about:blank")
        read = await page.evaluate(f"({READ})({json.dumps(pairs)})")

    assert len(read) == len(docs)
    for (name, doc), seen in zip(docs, read, strict=True):
        ours = {
            where(location(link.url)) for link in scan(doc).links if link.element in ("a", "area")
        }
        chromium = {where(url) for url in seen["links"] if navigable(url)}
        assert ours == chromium, name
        assert seen["images"].count(OPEN_URL) == 1, name
        assert pixel_html(OPEN_URL) not in doc


async def test_a_rewritten_document_looks_the_same_in_chromium(
    corpus_or_none: Path | None, tmp_path: Path
) -> None:
    """Each template, and each case above, rendered before and after the rewrite (every
    link tracked, the pixel in), gives the same screenshot of the whole page. Nothing is
    fetched: http(s) is blocked, so images fail alike in both."""
    docs = filled_documents(corpus_or_none)
    async with Chromium() as browser:
        page = await browser.new_page()
        await page.send("Network.enable")
        await page.send("Network.setBlockedURLs", {"urls": ["http://*", "https://*"]})
        for number, (name, doc) in enumerate(docs):
            rewritten = plan(doc, edits(scan(doc), links=True, pixel=True)).render(
                open_url=OPEN_URL,
                click_url=lambda link: f"https://t.example/c/TOKEN/{link.link_index}",
            )
            shots = []
            for kind, text in (("original", doc), ("rewritten", rewritten)):
                path = tmp_path / f"{number}-{kind}.html"
                path.write_text(text, "utf-8")
                await page.goto(path.as_uri())
                shots.append(await page.screenshot(full_page=True))
            if shots[0] != shots[1]:
                before, after = (
                    tmp_path / f"{number}-original.png",
                    tmp_path / f"{number}-rewritten.png",
                )
                before.write_bytes(shots[0])
                after.write_bytes(shots[1])
                pytest.fail(f"{name} looks different after the rewrite: {before}, {after}")
