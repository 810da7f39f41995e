"""The pages a recipient sees at /u/<token>: HTML templates with `$placeholders`, each
value HTML-escaped, chosen by the request's Accept-Language.

The built-in templates are in tracker/templates/. `tracker.templates` names a folder
whose files replace them by name, with translations in folders named by language:

    <folder>/unsubscribe.html        replaces the built-in page
    <folder>/de/unsubscribe.html     for readers who prefer German (de, de-CH, de-AT …)

A page is looked up in each language the reader accepts, best first (q-values; `de-CH`
falls back to `de`, RFC 4647's lookup), then in the folder, then among the built-ins.
A page outside the language folders is in the language its `<html lang>` names (the
built-in ones are in English): a reader who prefers that one to a translation gets it.
Every template is read and checked when the tracker starts: a template missing a
placeholder its page needs, or naming one it does not know, stops the start with a
line that names the file.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from pixelpost.errors import ConfigError

KEY = "tracker.templates"
"""The configuration key that names the folder, for error messages."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Spec:
    """What a template may, and must, use."""

    needs: frozenset[str]
    allows: frozenset[str]


_PAGE_VALUES = frozenset(("address", "list", "config_set"))
_FRAGMENT_VALUES = frozenset(("config_set",))
SPECS: Mapping[str, Spec] = {
    # The pages. `$list` is one of the two fragments below, already rendered.
    "unsubscribe.html": Spec(needs=frozenset(("address", "list")), allows=_PAGE_VALUES),
    "unsubscribed.html": Spec(needs=frozenset(("address", "list")), allows=_PAGE_VALUES),
    "resubscribed.html": Spec(needs=frozenset(("address", "list")), allows=_PAGE_VALUES),
    "suppressed.html": Spec(needs=frozenset(("address",)), allows=_PAGE_VALUES),
    "unavailable.html": Spec(needs=frozenset(), allows=_PAGE_VALUES),
    # What the recipient is unsubscribed from, as the pages' sentences name it.
    "list_config_set.html": Spec(needs=_FRAGMENT_VALUES, allows=_FRAGMENT_VALUES),
    "list_account.html": Spec(needs=frozenset(), allows=_FRAGMENT_VALUES),
}
MAX_RANGES = 20
"""Language ranges of an Accept-Language read at most (browsers send a handful)."""
_TAG = re.compile(r"[a-z]{1,8}(?:-[a-z0-9]{1,8})*")
_HTML_LANG = re.compile(r"<html\b[^>]*?\blang=[\"']?([A-Za-z0-9-]{1,35})", re.IGNORECASE)


def declared_language(text: str) -> str | None:
    """The language a page's `<html lang>` names, lowercase; None without one."""
    found = _HTML_LANG.search(text)
    return found[1].lower() if found else None


def accepted_languages(header: str | None) -> list[str]:
    """The language tags to look pages up in, best first: the header's ranges by
    q-value (in their order when equal; q=0 and `*` left out), each followed by its
    shorter forms (`de-ch`, then `de`). Lowercase."""
    if not header:
        return []
    ranges: list[tuple[float, int, str]] = []
    for index, item in enumerate(header.split(",")[:MAX_RANGES]):
        tag, *parameters = item.split(";")
        tag = tag.strip().lower()
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = -1.0
        if _TAG.fullmatch(tag) and 0 < quality <= 1:
            ranges.append((-quality, index, tag))
    found: list[str] = []
    for _, _, tag in sorted(ranges):
        subtags = tag.split("-")
        for length in range(len(subtags), 0, -1):
            candidate = "-".join(subtags[:length])
            if candidate not in found:
                found.append(candidate)
    return found


def check_template(name: str, text: str, where: str) -> Template:
    """`text` as the template `name`; ConfigError naming `where` unless it uses the
    placeholders that page needs, and only those it knows."""
    template = Template(text)
    spec = SPECS[name]
    if not template.is_valid():
        raise ConfigError([f"{where}: a $ that starts no placeholder (write $$ for a $ sign)"])
    used = set(template.get_identifiers())
    problems = [
        f"{where}: unknown placeholder ${unknown} (this template knows "
        f"{', '.join('$' + known for known in sorted(spec.allows)) or 'none'})"
        for unknown in sorted(used - spec.allows)
    ]
    problems += [
        f"{where}: the placeholder ${missing} is missing" for missing in sorted(spec.needs - used)
    ]
    if problems:
        raise ConfigError(problems)
    return template


@dataclass(frozen=True, kw_only=True, slots=True)
class Rendered:
    """A page, and its language (None: its template does not say)."""

    html: str
    language: str | None


class Pages:
    """The templates, checked, with their translations by (lowercase) language tag."""

    def __init__(
        self,
        templates: Mapping[str, Template],
        translations: Mapping[str, Mapping[str, Template]] | None = None,
    ) -> None:
        missing = set(SPECS) - set(templates)
        if missing:
            raise ValueError(f"no template for {', '.join(sorted(missing))}")
        self._templates = dict(templates)
        self._own = {name: declared_language(page.template) for name, page in templates.items()}
        """The language each untranslated page is in, as its `<html lang>` says."""
        self._translations = {lang: dict(pages) for lang, pages in (translations or {}).items()}

    def _pick(self, name: str, languages: list[str]) -> tuple[Template, str | None, bool]:
        """The template of page `name` for a reader who accepts `languages`, its
        language, and whether it is a translation."""
        own = self._own[name]
        for language in languages:
            translated = self._translations.get(language, {}).get(name)
            if translated is not None:
                return translated, language, True
            if own is not None and (own == language or own.startswith(f"{language}-")):
                break  # the reader prefers the untranslated page's language
        return self._templates[name], own, False

    def render(
        self,
        name: str,
        *,
        accept_language: str | None,
        address: str,
        config_set: str,
        account: bool,
    ) -> Rendered:
        """The page `name` for a reader who sent `accept_language`, about `address`'s
        subscription to `config_set`'s mail (or, `account`, to all mail)."""
        languages = accepted_languages(accept_language)
        page, language, translated = self._pick(name, languages)
        # The fragment in the page's language where there is one, else the default.
        fragment_name = "list_account.html" if account else "list_config_set.html"
        fragment = None
        if translated and language is not None:
            fragment = self._translations[language].get(fragment_name)
        if fragment is None:
            fragment = self._templates[fragment_name]
        set_name = html.escape(config_set)
        listed = fragment.substitute(config_set=set_name).strip()
        text = page.substitute(address=html.escape(address), config_set=set_name, list=listed)
        return Rendered(html=text, language=language)


def _read(path: Path, where: str) -> str:
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{where}: cannot read it ({exc})"]) from None


def _folder(folder: Path, where: str) -> dict[str, Template]:
    """The templates of one folder (not its subfolders), checked."""
    found: dict[str, Template] = {}
    problems: list[str] = []
    for path in sorted(folder.glob("*.html")):
        shown = f"{where}/{path.name}"
        if path.name not in SPECS:
            known = ", ".join(sorted(SPECS))
            problems.append(f"{shown}: not a template pixelpost uses ({known})")
            continue
        try:
            found[path.name] = check_template(path.name, _read(path, shown), shown)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return found


def builtin_templates() -> dict[str, Template]:
    """The templates in tracker/templates/, checked."""
    folder = resources.files(__package__) / "templates"
    return {
        name: check_template(name, (folder / name).read_text("utf-8"), f"built-in {name}")
        for name in SPECS
    }


def load_pages(folder: Path | None) -> Pages:
    """The built-in templates, replaced by those in `folder` (`tracker.templates`) and
    with its translations; ConfigError, one line per file, for any that is wrong."""
    templates = builtin_templates()
    if folder is None:
        return Pages(templates)
    translations: dict[str, dict[str, Template]] = {}
    problems: list[str] = []
    try:
        templates.update(_folder(folder, f"{KEY}: {folder}"))
    except ConfigError as exc:
        problems += exc.problems
    for sub in sorted(path for path in folder.iterdir() if path.is_dir()):
        if sub.name.startswith("."):
            continue  # .git and its kind
        language = sub.name.lower().replace("_", "-")
        where = f"{KEY}: {sub}"
        if not _TAG.fullmatch(language):
            problems.append(f"{where}: not a language tag (de, pt-BR …) for translations")
            continue
        try:
            translations[language] = _folder(sub, where)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return Pages(templates, translations)
