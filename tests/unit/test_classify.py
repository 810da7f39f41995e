"""The classification table: people, proxies, machines and bots, and rules from config."""

from __future__ import annotations

import pytest

from pixelpost.config import ClassifyConfig, parse_config_text
from pixelpost.core.classify import Classification, Facts, RecentClicks
from pixelpost.errors import ConfigError
from tracker.classifier import classifier_for

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
APPLE_MAIL = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
GMAIL_PROXY_NEW = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/42.0.2311.135 Safari/537.36 Edge/12.246"
)
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"

default = classifier_for(ClassifyConfig())


def machine(reason: str) -> Classification:
    return Classification(machine=True, reason=reason)


PERSON = Classification(machine=False)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (Facts("open", "GET", APPLE_MAIL, "198.51.100.7"), PERSON),
        (Facts("open", "GET", CHROME, "198.51.100.7"), PERSON),
        (Facts("open", "GET", "Mozilla/5.0", "17.58.1.1"), machine("apple_mpp")),
        (Facts("open", "GET", GMAIL_PROXY, "66.249.84.1"), Classification(False, proxy="gmail")),
        (
            Facts("open", "GET", GMAIL_PROXY_NEW, "66.249.84.1"),
            Classification(False, proxy="gmail"),
        ),
        (Facts("open", "GET", YAHOO_PROXY, "98.136.1.1"), Classification(False, proxy="yahoo")),
        (Facts("open", "HEAD", CHROME, "198.51.100.7"), machine("head_request")),
        (Facts("open", "GET", "", "198.51.100.7"), machine("no_user_agent")),
        (
            Facts("open", "GET", "Mozilla/5.0 (compatible; BingPreview/1.0b)", "x"),
            machine("security_scanner"),
        ),
        (Facts("click", "GET", "Barracuda Sentinel (EE)", "x"), machine("security_scanner")),
        (Facts("click", "GET", "python-requests/2.32", "x"), machine("automated_client")),
        (
            Facts(
                "click",
                "GET",
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "x",
            ),
            machine("security_scanner"),
        ),
        # A phone whose model ends in "bot" is a person's.
        (
            Facts("click", "GET", "Mozilla/5.0 (Linux; Android 9; CUBOT X19) Chrome/120", "x"),
            PERSON,
        ),
        (Facts("click", "GET", "curl/8.5.0", "x"), machine("automated_client")),
        (Facts("click", "GET", f"{CHROME} HeadlessChrome", "x"), machine("automated_client")),
        (Facts("click", "HEAD", CHROME, "x"), machine("head_request")),
        # Safe Links and its kind look like a browser; only the timing gives them away.
        (Facts("click", "GET", CHROME, "x", since_delivery=3.0), machine("click_after_delivery")),
        (Facts("click", "GET", CHROME, "x", since_delivery=10.0), PERSON),
        (Facts("click", "GET", CHROME, "x", since_delivery=None), PERSON),
        (Facts("click", "GET", CHROME, "x", since_other_link=0.2), machine("link_burst")),
        (Facts("click", "GET", CHROME, "x", since_other_link=4.0), PERSON),
        # Opens are not judged by timing: people open mail the moment it arrives.
        (Facts("open", "GET", CHROME, "x", since_delivery=1.0), PERSON),
        # A proxy's open is a person's, even through an address nothing else knows.
        (Facts("open", "GET", "Mozilla/5.0", "x"), machine("apple_mpp")),
    ],
)
def test_builtin_table(facts: Facts, expected: Classification) -> None:
    assert default.classify(facts) == expected


def test_the_windows_are_configurable_and_zero_turns_a_rule_off() -> None:
    slow = classifier_for(ClassifyConfig(click_after_delivery=60.0, link_burst=0.0))
    assert slow.classify(Facts("click", "GET", CHROME, "x", since_delivery=30.0)) == machine(
        "click_after_delivery"
    )
    assert slow.classify(Facts("click", "GET", CHROME, "x", since_other_link=0.1)) == PERSON
    off = classifier_for(ClassifyConfig(click_after_delivery=0.0))
    assert not off.needs_delivery("click")
    assert off.classify(Facts("click", "GET", CHROME, "x", since_delivery=0.5)) == PERSON
    assert default.needs_delivery("click")
    assert not default.needs_delivery("open")
    assert default.needs_burst
    assert not slow.needs_burst  # link_burst = 0: clicks need not be remembered


RULES = """
[[classify.rules]]
reason = "acme_gateway"
events = ["click"]
networks = ["203.0.113.0/24"]

[[classify.rules]]
reason = "office_printer"
verdict = "human"
user_agent = "curl/7\\\\.29"

[[classify.rules]]
reason = "acme_webmail"
verdict = "proxy"
events = ["open"]
user_agent = "AcmeImageFetcher"
"""


def test_configured_rules_come_before_the_builtin_ones() -> None:
    config = parse_config_text(RULES, environ={})
    rules = classifier_for(config.classify)
    assert rules.classify(Facts("click", "GET", CHROME, "203.0.113.9")) == machine("acme_gateway")
    assert rules.classify(Facts("open", "GET", CHROME, "203.0.113.9")) == PERSON  # clicks only
    assert rules.classify(Facts("click", "GET", CHROME, "198.51.100.1")) == PERSON
    # A false positive of the built-in table declared human.
    assert rules.classify(Facts("click", "GET", "curl/7.29.0", "x")) == PERSON
    assert rules.classify(Facts("click", "GET", "curl/8.5.0", "x")) == machine("automated_client")
    assert rules.classify(Facts("open", "GET", "AcmeImageFetcher/2", "x")) == Classification(
        False, proxy="acme_webmail"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[classify.rules]]\nreason = "x"\n', "classify.rules[0]: a rule needs a condition"),
        (
            '[[classify.rules]]\nreason = "Bad Name"\nmethod = "HEAD"\n',
            'classify.rules[0].reason: "Bad Name" is not a reason',
        ),
        (
            '[[classify.rules]]\nreason = "x"\nuser_agent = "("\n',
            'classify.rules[0].user_agent: "(" is not a regular expression',
        ),
        (
            '[[classify.rules]]\nreason = "x"\nmethod = "POST"\n',
            'classify.rules[0].method: "POST" is not one of GET, HEAD',
        ),
        (
            '[[classify.rules]]\nreason = "x"\nmethod = "HEAD"\nverdict = "maybe"\n',
            'classify.rules[0].verdict: "maybe" is not one of machine, human, proxy',
        ),
        (
            '[[classify.rules]]\nreason = "x"\nmethod = "HEAD"\nverdict = "proxy"\n',
            'classify.rules[0].verdict: "proxy" names the image proxy of a person\'s open',
        ),
        (
            '[[classify.rules]]\nreason = "x"\nmethod = "HEAD"\nevents = ["send"]\n',
            'classify.rules[0].events[0]: "send" is not one of open, click',
        ),
        (
            '[[classify.rules]]\nreason = "x"\nnetworks = ["10.0.0.300/8"]\n',
            'classify.rules[0].networks[0]: "10.0.0.300/8" is',
        ),
        ('[classify]\nclick_after_delivery = "soon"\n', 'classify.click_after_delivery: "soon"'),
        ("[classify]\nfoo = 1\n", "classify.foo: unknown key"),
    ],
)
def test_bad_rules_are_named(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config_text(text, environ={})
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems


def test_recent_clicks_tell_a_burst_over_other_links() -> None:
    recent = RecentClicks(limit=2)
    assert recent.since_other_link("m1", "ip", "a", 100.0) is None
    assert recent.since_other_link("m1", "ip", "a", 100.1) is None  # the same link again
    assert recent.since_other_link("m1", "ip", "b", 100.3) == pytest.approx(0.2)
    assert recent.since_other_link("m1", "other ip", "c", 100.4) is None
    assert recent.since_other_link("m2", "ip", "c", 100.5) is None  # another copy
    # The limit forgets the oldest: m1/ip is gone.
    assert recent.since_other_link("m1", "ip", "d", 100.6) is None
