"""Tracking tokens: round trips, tampering, key rotation, size."""

from __future__ import annotations

import base64
import hmac
import os
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixelpost.core.ids import new_message_id
from pixelpost.core.tokens import InvalidToken, TokenCodec

KEY = os.urandom(32)
OLD_KEY = os.urandom(32)
codec = TokenCodec([KEY])

message_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)
tag_names = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)
tags = st.dictionaries(
    tag_names, st.lists(tag_names, min_size=1, max_size=3).map(tuple), max_size=4
)
urls = st.builds(
    lambda scheme, host, rest: f"{scheme}://{host}{rest}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.from_regex(r"[a-z0-9.-]{1,30}(:[0-9]{1,5})?", fullmatch=True),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80).map(
        lambda text: "/" + text
    ),
)
BASE64URL = string.ascii_letters + string.digits + "-_"


@given(message_id=message_ids)
def test_open_round_trip_and_size(message_id: str) -> None:
    token = codec.open_token(message_id)
    assert len(token) <= 60
    assert set(token) <= set(BASE64URL)
    assert codec.read_open(token).message_id == message_id


@given(message_id=message_ids, index=st.integers(0, 100_000), url=urls, link_tags=tags)
def test_click_round_trip(
    message_id: str, index: int, url: str, link_tags: dict[str, tuple[str, ...]]
) -> None:
    token = codec.click_token(message_id, index, url, link_tags)
    read = codec.read_click(token)
    assert read.message_id == message_id
    assert read.link_index == index
    assert read.url.split("://", 1)[1] == url.split("://", 1)[1]
    assert read.url.split("://", 1)[0] == url.split("://", 1)[0].lower()
    assert read.tags == link_tags
    assert token.isascii()
    assert not set(token) & set('?#"<> \\\t\n')


def test_click_token_is_the_url_plus_a_small_overhead() -> None:
    url = "https://shop.example.com/spring/sale/shoes-and-boots"
    token = codec.click_token(new_message_id(), 12, url, {})
    assert len(token) - len(url) <= 48
    assert token.endswith("/shop.example.com/spring/sale/shoes-and-boots")


@given(message_id=message_ids, position=st.data())
def test_any_changed_character_of_an_open_token_fails(
    message_id: str, position: st.DataObject
) -> None:
    token = codec.open_token(message_id)
    at = position.draw(st.integers(0, len(token) - 1))
    replacement = position.draw(
        st.sampled_from(BASE64URL + "=+/.!%").filter(lambda c: c != token[at])
    )
    with pytest.raises(InvalidToken):
        codec.read_open(token[:at] + replacement + token[at + 1 :])


@given(message_id=message_ids, url=urls, link_tags=tags, position=st.data())
def test_any_changed_character_of_a_click_token_fails(
    message_id: str, url: str, link_tags: dict[str, tuple[str, ...]], position: st.DataObject
) -> None:
    token = codec.click_token(message_id, 3, url, link_tags)
    at = position.draw(st.integers(0, len(token) - 1))
    replacement = position.draw(
        st.sampled_from(BASE64URL + "=+/.!%~:").filter(lambda c: c != token[at])
    )
    with pytest.raises(InvalidToken):
        codec.read_click(token[:at] + replacement + token[at + 1 :])


@given(message_id=message_ids, cut=st.integers(1, 10))
def test_truncated_or_extended_tokens_fail(message_id: str, cut: int) -> None:
    token = codec.open_token(message_id)
    for bad in (token[:-cut], token + "A" * cut, ""):
        with pytest.raises(InvalidToken):
            codec.read_open(bad)
    click = codec.click_token(message_id, 0, "https://example.com/a", {})
    for bad in (click[:-cut], click + "x", click.replace("/", "", 1)):
        with pytest.raises(InvalidToken):
            codec.read_click(bad)


def test_an_open_token_is_not_a_click_token_and_the_other_way_round() -> None:
    message_id = new_message_id()
    with pytest.raises(InvalidToken):
        codec.read_click(codec.open_token(message_id) + "/example.com")
    signature = codec.click_token(message_id, 0, "https://example.com", {}).split("/", 1)[0]
    with pytest.raises(InvalidToken):
        codec.read_open(signature)


def test_key_rotation() -> None:
    message_id = new_message_id()
    old = TokenCodec([OLD_KEY])
    rotated = TokenCodec([KEY, OLD_KEY])
    old_open = old.open_token(message_id)
    old_click = old.click_token(message_id, 1, "https://example.com/x", {"a": ("b",)})

    assert rotated.read_open(old_open).message_id == message_id
    assert rotated.read_click(old_click).url == "https://example.com/x"
    assert codec.read_open(rotated.open_token(message_id)).message_id == message_id
    for removed in (codec, TokenCodec([os.urandom(32)])):
        with pytest.raises(InvalidToken):
            removed.read_open(old_open)
        with pytest.raises(InvalidToken):
            removed.read_click(old_click)


def test_destination_escaping_is_exact() -> None:
    url = "https://example.com//a b/%2F?q=ü&x=%20#frag"
    token = codec.click_token(new_message_id(), 0, url, {})
    assert token.split("/", 1)[1] == "example.com/%2Fa%20b/%252F%3Fq=%C3%BC&x=%2520%23frag"
    assert codec.read_click(token).url == url


@given(
    key=st.binary(min_size=1, max_size=200),
    header=st.binary(max_size=80),
    rest=st.binary(max_size=200),
)
def test_the_mac_is_hmac_sha256(key: bytes, header: bytes, rest: bytes) -> None:
    from pixelpost.core.tokens import _DOMAIN, _Hmac  # noqa: PLC0415

    expected = hmac.digest(key, _DOMAIN + header + b"\x00" + rest, "sha256")[:16]
    assert _Hmac(key).mac(header, rest) == expected


@given(message_id=message_ids)
def test_return_paths_name_their_copy_in_any_case(message_id: str) -> None:
    address = codec.return_address(message_id, "bounces.example.com")
    local, _, domain = address.partition("@")
    assert domain == "bounces.example.com"
    assert len(local) <= 64  # RFC 5321's limit on a local part
    assert set(local[2:]) <= set(string.ascii_lowercase + "234567")
    assert codec.read_return_address(address) == message_id
    assert codec.read_return_address(address.upper()) == message_id  # a case-folding MTA


def test_return_paths_verify_only_as_signed_and_survive_rotation() -> None:
    message_id = new_message_id()
    token = TokenCodec([OLD_KEY]).return_token(message_id)
    assert TokenCodec([KEY, OLD_KEY]).read_return(token) == message_id
    with pytest.raises(InvalidToken):
        codec.read_return(token)  # the old key no longer configured
    mine = codec.return_token(message_id)
    for position in range(len(mine)):
        changed = mine[:position] + ("a" if mine[position] != "a" else "b") + mine[position + 1 :]
        with pytest.raises(InvalidToken):
            codec.read_return(changed)
    for bad in ("", mine[:-1], mine + "a", mine[:-1] + "9", "é" * 45):
        with pytest.raises(InvalidToken):
            codec.read_return(bad)
    with pytest.raises(InvalidToken):
        codec.read_return_address(f"x-{mine}@bounces.example.com")  # not the prefix
    # An open token's header and (truncated) MAC verify under the same key: only its
    # kind tells it from a return path's.
    raw = base64.urlsafe_b64decode(codec.open_token(message_id) + "==")
    as_return = base64.b32encode(raw[:18] + raw[18:28]).decode().rstrip("=").lower()
    with pytest.raises(InvalidToken):
        codec.read_return(as_return)


addresses = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(string.ascii_letters + string.digits + "._+-", min_size=1, max_size=64),
    st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z]{2,6}){1,2}", fullmatch=True),
) | st.sampled_from(["jürgen@bücher.example", "用户@例子.广告"])


@given(message_id=message_ids, address=addresses, config_set=tag_names, account=st.booleans())
def test_unsubscribe_tokens_carry_copy_scope_and_address(
    message_id: str, address: str, config_set: str, account: bool
) -> None:
    token = codec.unsubscribe_token(
        message_id, address=address, config_set=config_set, account=account
    )
    assert set(token) <= set(BASE64URL)
    read = codec.read_unsubscribe(token)
    assert (read.message_id, read.address, read.config_set, read.account) == (
        message_id,
        address,
        config_set,
        account,
    )
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    if len(address) >= 8:  # sealed: the address is nowhere in the token, as text or bytes
        assert address not in token
        assert address.encode() not in raw
    # The same copy's token is the same each time (a copy rendered again, after a crash).
    assert token == codec.unsubscribe_token(
        message_id, address=address, config_set=config_set, account=account
    )


def test_unsubscribe_tokens_refuse_any_change_and_rotate() -> None:
    message_id = new_message_id()
    made = {"address": "jane@example.com", "config_set": "news", "account": False}
    token = TokenCodec([OLD_KEY]).unsubscribe_token(message_id, **made)  # type: ignore[arg-type]
    assert TokenCodec([KEY, OLD_KEY]).read_unsubscribe(token).address == "jane@example.com"
    with pytest.raises(InvalidToken):
        codec.read_unsubscribe(token)  # the old key no longer configured
    mine = codec.unsubscribe_token(message_id, **made)  # type: ignore[arg-type]
    for position in range(len(mine) - 1):  # (the last character's unused bits aside)
        for other in ("A", "b"):
            if mine[position] == other:
                continue
            with pytest.raises(InvalidToken):
                codec.read_unsubscribe(mine[:position] + other + mine[position + 1 :])
    for bad in ("", mine[:-1], mine + "A", mine[:40], "é" * 80, codec.open_token(message_id)):
        with pytest.raises(InvalidToken):
            codec.read_unsubscribe(bad)
    with pytest.raises(InvalidToken):
        codec.read_open(mine)


def test_unsubscribe_addresses_fit_a_local_part_and_are_no_return_paths() -> None:
    message_id = new_message_id()
    address = codec.unsubscribe_address(message_id, "bounces.example.com")
    local = address.partition("@")[0]
    assert local.startswith("u-")
    assert len(local) <= 64
    assert codec.read_unsubscribe_address(address) == message_id
    assert codec.read_unsubscribe_address(address.upper()) == message_id
    with pytest.raises(InvalidToken):
        codec.read_return_address(address.replace("u-", "b-", 1))  # another kind
    with pytest.raises(InvalidToken):
        codec.read_unsubscribe_address(codec.return_address(message_id, "b.example.com"))
    with pytest.raises(InvalidToken):
        TokenCodec([OLD_KEY]).read_unsubscribe_address(address)
