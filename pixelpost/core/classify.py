"""Opens by machines and clicks by bots, told from a person's, by one table of rules.

Apple Mail Privacy Protection fetches every pixel when a message arrives; security
gateways (Microsoft Safe Links, Mimecast, Proofpoint …) follow every link seconds after
delivery; Gmail and Yahoo fetch images through proxies of their own when a person opens
the message. Counted as they come, opens and clicks lie. Each open is therefore marked
`machine` (with a `machineReason`) or not, and may name the `proxy` it came through;
each click is marked `bot` (with a `botReason`) or not.

The rules are checked in order and the first that matches decides; a hit no rule
matches is a person's. Configuration (`[[classify.rules]]`) puts its own rules before
the built-in ones, so an operator can add a scanner, or declare a false positive human.
A rule matches when all of its conditions hold:

    user_agent       a regular expression found in the User-Agent (case-insensitive)
    networks         the client's address is in one of these networks
    method           the request's method ("HEAD": a prefetch or a link check)
    after_delivery   the hit came sooner than this many seconds after the copy was
                     delivered (or, while no delivery is known yet, accepted)
    burst            a click on another link of the same copy, by the same client,
                     came less than this many seconds before (built in only; its
                     window is `link_burst`)

The built-in table (`BUILTIN_RULES`), with where each fact comes from:

    reason               verdict  on      condition
    gmail                proxy    open    UA "GoogleImageProxy", or the Chrome/42 Edge/12.246
                                          UA Gmail's proxy sends (mautic#7884, #10245)
    yahoo                proxy    open    UA "YahooMailProxy" (Yahoo's help page SLN28749)
    apple_mpp            machine  open    UA exactly "Mozilla/5.0": Apple's MPP proxy sends
                                          nothing more (SendGrid's sg_machine_open precedent)
    head_request         machine  both    method HEAD: mail clients GET images and people
                                          follow links with GET; link checkers send HEAD
    security_scanner     machine  both    UA of a mail security gateway, link preview or
                                          crawler (BingPreview, Barracuda, Mimecast,
                                          Proofpoint, Googlebot/2.1 …)
    automated_client     machine  both    UA of an HTTP library or headless browser
    no_user_agent        machine  both    no User-Agent at all: every mail client and
                                          browser sends one
    click_after_delivery machine  click   within `click_after_delivery` (10 s) of delivery:
                                          Safe Links and its kind check links on arrival
                                          (mautic#9400, gophish#2357)
    link_burst           machine  click   another link of the copy, same client, within
                                          `link_burst` (1 s): no person clicks that fast

Classification is pure: `Classifier.classify` looks only at the `Facts` it is given.
Where a rule needs the delivery time, the caller looks it up first
(`Classifier.needs_delivery`), and `RecentClicks` remembers each client's last click.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from pixelpost.core.values import IPNetwork

Kind = Literal["open", "click"]
BOTH: frozenset[Kind] = frozenset(("open", "click"))
_UA_CACHE = 4096


class Verdict(enum.Enum):
    """What a matching rule makes of a hit."""

    MACHINE = "machine"
    """A machine's open, or a bot's click."""
    HUMAN = "human"
    """A person's, whatever else would match later in the table."""
    PROXY = "proxy"
    """A person's, fetched through a mailbox provider's proxy (named by the reason)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Rule:
    """One row of the table. Conditions left at None (or empty) always hold."""

    reason: str
    verdict: Verdict = Verdict.MACHINE
    kinds: frozenset[Kind] = BOTH
    user_agent: re.Pattern[str] | None = None
    networks: tuple[IPNetwork, ...] = ()
    method: str | None = None
    after_delivery: float | None = None
    burst: float | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """What is known about one hit when it arrives."""

    kind: Kind
    method: str
    user_agent: str
    ip: str
    """The client's full address (classification comes before any anonymizing)."""
    since_delivery: float | None = None
    """Seconds since the copy was delivered (or accepted); None when unknown."""
    since_other_link: float | None = None
    """Seconds since the same client clicked another link of the same copy."""


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict on one hit, as its event carries it."""

    machine: bool
    reason: str | None = None
    """Why it is a machine's (None for a person's)."""
    proxy: str | None = None
    """The proxy a person's open came through."""


PERSON = Classification(machine=False)

_SCANNERS = (
    r"BingPreview|Barracuda|Mimecast|Proofpoint|MessageLabs|TrendMicro|Trend Micro|"
    r"Forcepoint|FortiGuard|SophosLabs|Cisco-IronPort|urldefense|Safe ?Links|"
    r"LinkChecker|SpamAssassin|Slackbot|Twitterbot|facebookexternalhit|"
    r"\b(?:crawler|spider|bot)\b|bot/\d"
)
_GMAIL = r"GoogleImageProxy|Chrome/42\.0\.2311\.135 Safari/537\.36 Edge/12\.246"
_AUTOMATED = (
    r"^(?:curl|Wget|python-requests|python-urllib|Python/|aiohttp|Go-http-client|Java/|"
    r"okhttp|Apache-HttpClient|libwww-perl|node-fetch|axios|undici)|HeadlessChrome|PhantomJS"
)


def user_agent_pattern(pattern: str) -> re.Pattern[str]:
    """A rule's User-Agent expression, searched case-insensitively."""
    return re.compile(pattern, re.IGNORECASE)


def builtin_rules(*, click_after_delivery: float, link_burst: float) -> tuple[Rule, ...]:
    """The built-in table (see the module's docstring), with the windows of
    `[classify]` (pixelpost.config.ClassifyConfig); a window of 0 leaves its rule out."""
    rules = [
        Rule(
            reason="gmail",
            verdict=Verdict.PROXY,
            kinds=frozenset(("open",)),
            user_agent=user_agent_pattern(_GMAIL),
        ),
        Rule(
            reason="yahoo",
            verdict=Verdict.PROXY,
            kinds=frozenset(("open",)),
            user_agent=user_agent_pattern(r"YahooMailProxy"),
        ),
        Rule(
            reason="apple_mpp",
            kinds=frozenset(("open",)),
            user_agent=re.compile(r"\AMozilla/5\.0\Z"),
        ),
        Rule(reason="head_request", method="HEAD"),
        Rule(reason="security_scanner", user_agent=user_agent_pattern(_SCANNERS)),
        Rule(reason="automated_client", user_agent=user_agent_pattern(_AUTOMATED)),
        Rule(reason="no_user_agent", user_agent=re.compile(r"\A\s*\Z")),
    ]
    if click_after_delivery > 0:
        rules.append(
            Rule(
                reason="click_after_delivery",
                kinds=frozenset(("click",)),
                after_delivery=click_after_delivery,
            )
        )
    if link_burst > 0:
        rules.append(Rule(reason="link_burst", kinds=frozenset(("click",)), burst=link_burst))
    return tuple(rules)


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


class Classifier:
    """Applies a table of rules to hits, first match wins."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self._by_kind: dict[Kind, tuple[Rule, ...]] = {
            kind: tuple(rule for rule in self.rules if kind in rule.kinds) for kind in BOTH
        }
        self._needs_delivery = {
            kind: any(rule.after_delivery is not None for rule in self._by_kind[kind])
            for kind in BOTH
        }
        self.needs_burst = any(rule.burst is not None for rule in self._by_kind["click"])
        """Whether a rule looks at other links clicked just before (`RecentClicks`)."""
        self._needs_address = {
            kind: any(rule.networks for rule in self._by_kind[kind]) for kind in BOTH
        }
        # Most hits come from a few user agents: which rules' patterns a user agent
        # matches is worked out once per user agent, not once per hit.
        self._candidates = lru_cache(maxsize=_UA_CACHE)(self._rules_for)

    def needs_delivery(self, kind: Kind) -> bool:
        """Whether a rule for `kind` looks at the time since delivery."""
        return self._needs_delivery[kind]

    def _rules_for(self, kind: Kind, user_agent: str) -> tuple[Rule, ...]:
        return tuple(
            rule
            for rule in self._by_kind[kind]
            if rule.user_agent is None or rule.user_agent.search(user_agent) is not None
        )

    def classify(self, facts: Facts) -> Classification:
        """The verdict of the first rule that matches `facts`; a person's if none does."""
        address = _address(facts.ip) if self._needs_address[facts.kind] else None
        for rule in self._candidates(facts.kind, facts.user_agent):
            if rule.method is not None and rule.method != facts.method:
                continue
            if rule.networks and (
                address is None or not any(address in network for network in rule.networks)
            ):
                continue
            if rule.after_delivery is not None and (
                facts.since_delivery is None or facts.since_delivery >= rule.after_delivery
            ):
                continue
            if rule.burst is not None and (
                facts.since_other_link is None or facts.since_other_link >= rule.burst
            ):
                continue
            if rule.verdict is Verdict.MACHINE:
                return Classification(machine=True, reason=rule.reason)
            if rule.verdict is Verdict.PROXY:
                return Classification(machine=False, proxy=rule.reason)
            return PERSON
        return PERSON


class RecentClicks:
    """Each client's last click per copy, for the `burst` rule: at most `limit` entries,
    the oldest forgotten first (a burst is over within seconds anyway)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        # The link's hash, not the link: a URL may be kilobytes long.
        self._last: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    def since_other_link(self, message_id: str, ip: str, link: str, now: float) -> float | None:
        """Seconds since this client clicked a different link of this copy (None if it
        did not), and remember this click."""
        key = (message_id, ip)
        link_hash = hash(link)
        previous = self._last.pop(key, None)
        self._last[key] = (link_hash, now)
        if len(self._last) > self._limit:
            self._last.popitem(last=False)
        if previous is None or previous[0] == link_hash:
            return None
        return max(0.0, now - previous[1])
