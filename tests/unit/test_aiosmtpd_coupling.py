"""What relay/frontdoor/server.py takes from aiosmtpd beyond its documented API: the members its
`_Connection` overrides or calls, the attributes it reads, and their signatures as
aiosmtpd 1.4 has them. pyproject.toml keeps aiosmtpd below 1.5 because of these; a
newer aiosmtpd that renames or reshapes one fails here, naming it, rather than in a
connection."""

from __future__ import annotations

import ast
import asyncio
import inspect
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

import relay.frontdoor.server
from relay.frontdoor.server import _Connection


@dataclass(frozen=True, kw_only=True, slots=True)
class Coupled:
    """A method of aiosmtpd's `SMTP` that relay/frontdoor/server.py overrides or calls, and its
    shape there: parameter names and kinds, `=` for a default, `async` in front when it
    is a coroutine function."""

    shape: str
    overridden: bool


OVERRIDES = (
    "relay/frontdoor/server.py overrides it: re-check the override before raising aiosmtpd's bound"
)
CALLS = "relay/frontdoor/server.py calls it: re-check the call before raising aiosmtpd's bound"

METHODS = {
    # Private: no promise from aiosmtpd that these stay.
    "_create_session": Coupled(shape="(self)", overridden=True),
    "_authenticate": Coupled(shape="(self, mechanism, auth_data)", overridden=True),
    "_timeout_cb": Coupled(shape="(self)", overridden=True),
    "_set_post_data_state": Coupled(shape="(self)", overridden=False),
    "_call_handler_hook": Coupled(shape="async (self, command, *args)", overridden=False),
    # Public, but overridden: the override relies on what aiosmtpd's does around it.
    "connection_made": Coupled(shape="(self, transport)", overridden=True),
    "connection_lost": Coupled(shape="(self, error)", overridden=True),
    "data_received": Coupled(shape="(self, data)", overridden=True),
    "eof_received": Coupled(shape="(self)", overridden=True),
    "push": Coupled(shape="async (self, status)", overridden=True),
    "handle_exception": Coupled(shape="async (self, error)", overridden=True),
    "auth_PLAIN": Coupled(shape="async (self, _, args)", overridden=True),
    "auth_LOGIN": Coupled(shape="async (self, _, args)", overridden=True),
    "smtp_STARTTLS": Coupled(shape="async (self, arg)", overridden=True),
    "smtp_DATA": Coupled(shape="async (self, arg)", overridden=True),
    "check_helo_needed": Coupled(shape="async (self, helo=)", overridden=False),
    "check_auth_needed": Coupled(shape="async (self, caller_method)", overridden=False),
}

CALLED_BY_ASYNCIO = {"connection_made", "connection_lost", "data_received", "eof_received"}
"""Overrides whose caller is asyncio, not aiosmtpd: their parameters are named as
asyncio.Protocol names them (aiosmtpd's connection_lost says `error`, asyncio `exc`)."""

ATTRIBUTES = {
    # Private state that _start_tls and connection_made read or set as STARTTLS does.
    "_original_transport",
    "_tls_protocol",
    "_proxy_timeout",
    "_reader",  # set once connected; its `_buffer` holds what came after PROXY
    # Public.
    "loop",
    "session",
    "envelope",
    "transport",
    "data_size_limit",
    "tls_context",  # @syntax("STARTTLS", when="tls_context")
}
"""Attributes of a connected aiosmtpd `SMTP` that relay/frontdoor/server.py reads or sets."""

INIT_KEYWORDS = {
    "auth_require_tls",
    "proxy_protocol_timeout",
    "timeout",
    "tls_context",
    "auth_exclude_mechanism",
    "hostname",
    "ident",
    "data_size_limit",
    "enable_SMTPUTF8",
    "decode_data",
    "loop",
}
"""What `_Connection` passes on to `SMTP.__init__`."""

SESSION_ATTRIBUTES = {
    "_login_data",  # behind _Session's login_data, which has no deprecation warning
    "peer",
    "proxy_data",
    "ssl",
    "auth_data",
    "authenticated",
    "host_name",
    "extended_smtp",
}
ENVELOPE_ATTRIBUTES = {
    "mail_from",
    "mail_options",
    "rcpt_tos",
    "rcpt_options",
    "smtp_utf8",
    "content",  # smtp_DATA sets these two itself, as aiosmtpd's does
    "original_content",
}


class _Default:
    """Shown as nothing after `=`: that a parameter has a default is what counts."""

    def __repr__(self) -> str:
        return ""


def shape(function: Callable[..., Any]) -> str:
    """`function`'s parameters as METHODS records them."""
    signature = inspect.signature(function)
    parameters = [
        parameter.replace(
            annotation=parameter.empty,
            default=parameter.empty if parameter.default is parameter.empty else _Default(),
        )
        for parameter in signature.parameters.values()
    ]
    bare = signature.replace(parameters=parameters, return_annotation=signature.empty)
    return f"{'async ' if inspect.iscoroutinefunction(function) else ''}{bare}"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_aiosmtpd_still_has_the_method_relay_couples_to(name: str) -> None:
    coupled = METHODS[name]
    why = OVERRIDES if coupled.overridden else CALLS
    found = getattr(SMTP, name, None)
    assert callable(found), f"aiosmtpd's SMTP.{name} is gone; {why}"
    assert shape(found) == coupled.shape, (
        f"aiosmtpd's SMTP.{name}: expected {coupled.shape}, found {shape(found)}; {why}"
    )


@pytest.mark.parametrize("name", sorted(name for name in METHODS if METHODS[name].overridden))
def test_each_override_takes_what_its_caller_passes(name: str) -> None:
    override = _Connection.__dict__.get(name)
    assert callable(override), f"_Connection.{name} is no override any more: update METHODS"
    base = asyncio.Protocol if name in CALLED_BY_ASYNCIO else SMTP
    found = getattr(base, name, None)
    assert callable(found), f"{base.__name__}.{name} is gone; {OVERRIDES}"
    expected = shape(found)
    assert shape(override) == expected, (
        f"_Connection.{name} is {shape(override)}, {base.__name__}.{name} is {expected}; "
        f"{OVERRIDES}"
    )


def test_aiosmtpd_still_takes_the_keywords_relay_passes() -> None:
    parameters = inspect.signature(SMTP.__init__).parameters
    takes = {
        name
        for name, parameter in parameters.items()
        if parameter.kind in {parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY}
    }
    assert not INIT_KEYWORDS - takes, (
        f"aiosmtpd's SMTP.__init__ no longer takes {sorted(INIT_KEYWORDS - takes)}; {OVERRIDES}"
    )


async def test_a_connected_aiosmtpd_protocol_has_the_attributes_relay_reads() -> None:
    found = await _connected_attributes()

    missing = ATTRIBUTES - found - set(dir(SMTP))
    assert not missing, f"aiosmtpd's SMTP has no {sorted(missing)} any more; {OVERRIDES}"


def test_aiosmtpd_session_and_envelope_have_the_attributes_relay_reads() -> None:
    loop = asyncio.new_event_loop()
    try:
        session = vars(Session(loop))
    finally:
        loop.close()
    assert not SESSION_ATTRIBUTES - set(session), (
        f"aiosmtpd's Session has no {sorted(SESSION_ATTRIBUTES - set(session))} any more; "
        f"{OVERRIDES}"
    )
    assert shape(Session.__init__) == "(self, loop)", (
        f"aiosmtpd's Session.__init__: expected (self, loop), found {shape(Session.__init__)}; "
        f"{OVERRIDES}"
    )
    login_data = inspect.getattr_static(Session, "login_data", None)
    assert isinstance(login_data, property), (
        f"aiosmtpd's Session.login_data is no property any more; {OVERRIDES}"
    )
    envelope = set(vars(Envelope()))
    assert not ENVELOPE_ATTRIBUTES - envelope, (
        f"aiosmtpd's Envelope has no {sorted(ENVELOPE_ATTRIBUTES - envelope)} any more; "
        f"{OVERRIDES}"
    )


async def test_everything_connection_shares_with_aiosmtpd_is_recorded_here() -> None:
    """A member of `_Connection` that aiosmtpd's SMTP also has is either a coupling
    recorded above, or a name of relay's own that a newer aiosmtpd took: an override by
    accident."""
    aiosmtpd = set(dir(SMTP)) | await _connected_attributes()
    used, keywords = _used_by_connection()

    recorded = set(METHODS) | ATTRIBUTES
    unrecorded = (used & aiosmtpd) - recorded - {"__init__"}
    assert not unrecorded, (
        f"_Connection defines or uses {sorted(unrecorded)}, which aiosmtpd's SMTP has too: "
        "record each in METHODS (with its shape) or ATTRIBUTES, or rename relay's own"
    )
    assert not recorded - used, f"no longer used by _Connection: {sorted(recorded - used)}"
    assert keywords == INIT_KEYWORDS, (
        f"_Connection passes {sorted(keywords)} to SMTP.__init__, INIT_KEYWORDS records "
        f"{sorted(INIT_KEYWORDS)}"
    )


async def _connected_attributes() -> set[str]:
    """The instance attributes of aiosmtpd's SMTP once a client is connected (some, like
    `_reader`, are set only then), over a socket pair."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    protocol = SMTP(object(), hostname="coupling.test", loop=loop)
    await loop.connect_accepted_socket(lambda: protocol, ours)
    reader, writer = await asyncio.open_connection(sock=theirs)
    try:
        # Bounded: an aiosmtpd that fails in connection_made never greets.
        async with asyncio.timeout(5):
            greeting = await reader.readline()
            assert greeting.startswith(b"220 coupling.test"), (
                f"aiosmtpd's SMTP did not greet ({greeting!r}); {OVERRIDES}"
            )
            found = set(vars(protocol))
            writer.write(b"QUIT\r\n")
            assert (await reader.readline()).startswith(b"221")
            assert await reader.read() == b""  # aiosmtpd closed the connection
    finally:
        writer.close()
        await writer.wait_closed()
    return found


def _used_by_connection() -> tuple[set[str], set[str]]:
    """Every name `_Connection` defines or reaches on `self` or `super()`, with the
    `when=` of its @syntax; and the keywords that reach aiosmtpd's `SMTP.__init__`, from
    `_Connection(…)` (past its own parameters) and from its `super().__init__(…)`."""
    module = ast.parse(inspect.getsource(relay.frontdoor.server))
    cls = next(
        node
        for node in module.body
        if isinstance(node, ast.ClassDef) and node.name == _Connection.__name__
    )
    used: set[str] = set()
    keywords: set[str] = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node in cls.body:
            used.add(node.name)
        elif isinstance(node, ast.Attribute) and _is_self_or_super(node.value):
            used.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg == "when":
            assert isinstance(node.value, ast.Constant)
            assert isinstance(node.value.value, str)
            used.add(node.value.value)
        elif isinstance(node, ast.Call) and _is_super_init(node):
            keywords |= {keyword.arg for keyword in node.keywords if keyword.arg}
    own = set(inspect.signature(_Connection.__init__).parameters)
    for node in ast.walk(module):
        if isinstance(node, ast.Call) and _is_name(node.func, _Connection.__name__):
            keywords |= {keyword.arg for keyword in node.keywords if keyword.arg} - own
    return used, keywords


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _is_super(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and _is_name(node.func, "super")


def _is_self_or_super(node: ast.expr) -> bool:
    return _is_name(node, "self") or _is_super(node)


def _is_super_init(node: ast.Call) -> bool:
    function = node.func
    return (
        isinstance(function, ast.Attribute)
        and function.attr == "__init__"
        and _is_super(function.value)
    )
