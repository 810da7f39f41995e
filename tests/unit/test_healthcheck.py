"""Where `pixelpost healthcheck` asks, from the configuration alone."""

from __future__ import annotations

import pytest

from pixelpost.app.healthcheck import readyz_url
from pixelpost.config import parse_config_text
from pixelpost.errors import PixelpostError


@pytest.mark.parametrize(
    ("listen", "asked"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080/readyz"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080/readyz"),
        ("[::]:8080", "http://[::1]:8080/readyz"),
        ("[fd00::7]:80", "http://[fd00::7]:80/readyz"),
        ("tracker.internal:8080", "http://tracker.internal:8080/readyz"),
    ],
)
def test_the_tracker_is_asked_where_it_listens_on_loopback_for_every_address(
    listen: str, asked: str
) -> None:
    config = parse_config_text(f'[tracker]\nlisten = "{listen}"\n', environ={})
    assert readyz_url(config) == asked


def test_a_relay_alone_is_asked_on_its_own_listener() -> None:
    config = parse_config_text('[relay]\nhttp_listen = "0.0.0.0:9102"\n', environ={})
    assert readyz_url(config, relay=True) == "http://127.0.0.1:9102/readyz"


def test_an_address_it_cannot_know_is_one_clear_line() -> None:
    with pytest.raises(PixelpostError, match=r"^relay\.http_listen is not set: "):
        readyz_url(parse_config_text("", environ={}), relay=True)
    port_zero = parse_config_text('[tracker]\nlisten = "127.0.0.1:0"\n', environ={})
    with pytest.raises(PixelpostError, match=r"^tracker\.listen is 127\.0\.0\.1:0: .*--url$"):
        readyz_url(port_zero)
