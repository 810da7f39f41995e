"""A DNS server on loopback for the tests: Debian's dnsmasq, serving the TXT records a
test gives it (DKIM keys) and nothing else, so that verifiers do real DNS lookups.

    with local_dns({"s1._domainkey.example.com": "v=DKIM1; k=rsa; p=MIIB..."}) as ns:
        dkim.verify(message, dnsfunc=txt_lookup(ns))

dnsmasq runs in the foreground as the invoking user, with no upstream servers, no
/etc/hosts, no configuration file of its own (Debian's /etc/dnsmasq.conf is not read)
and its pid file and log in a temporary directory.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import dkim
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

HOST = "127.0.0.1"
TXT_STRING_MAX = 255
"""The longest character-string a TXT record holds (RFC 1035 3.3); longer values are
served as several strings, which a DKIM verifier joins (RFC 6376 3.6.2.2)."""
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
BIND_ATTEMPTS = 5
READY_DOMAIN = "ready.invalid"
"""Where the record lives that tells the server is up (.invalid: never a real name)."""

DnsFunc = Callable[..., bytes | None]
"""dkimpy's `dnsfunc`: `(name: bytes, timeout=...) -> the joined TXT strings or None`."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Nameserver:
    host: str
    port: int
    log_file: Path

    def resolver(self, *, lifetime: float = 5.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this server only (not /etc/resolv.conf's)."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.host]
        resolver.port = self.port
        resolver.lifetime = lifetime
        return resolver


def txt_strings(value: str) -> list[str]:
    """`value` cut into the character-strings of one TXT record, 255 characters each."""
    if not value:
        return [""]
    return [value[i : i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)]


def txt_record_line(name: str, value: str) -> str:
    """dnsmasq's `txt-record` configuration line for one record.

    Its strings are cut here, not left to dnsmasq (whose man page says it cuts a long
    one into 255-character chunks), so that what the verifiers join does not depend on
    dnsmasq's version. It is a configuration file line, not a command-line option,
    because only the file's parser reads quotes (and backslash escapes in them): on the
    command line a quote is a character of the record and every comma starts a string."""
    if not name or any(c in name for c in ',"\\ #') or not name.isascii():
        raise ValueError(f"TXT record name {name!r} is not a plain DNS name")
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"TXT record value {value!r} is not printable ASCII")
    strings = (part.replace("\\", "\\\\").replace('"', '\\"') for part in txt_strings(value))
    return "txt-record=" + ",".join([name, *(f'"{part}"' for part in strings)]) + "\n"


def dnsmasq_command(dnsmasq: str, port: int, workdir: Path) -> list[str]:
    """dnsmasq answering on 127.0.0.1:`port` from `workdir`'s dnsmasq.conf only."""
    user = pwd.getpwuid(os.geteuid())
    return [
        dnsmasq,
        "--keep-in-foreground",
        f"--conf-file={workdir / 'dnsmasq.conf'}",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        f"--port={port}",
        f"--listen-address={HOST}",
        "--bind-interfaces",
        # Run as who started it: dnsmasq drops root to its compiled-in user otherwise.
        f"--user={user.pw_name}",
        f"--group={grp.getgrgid(user.pw_gid).gr_name}",
        f"--pid-file={workdir / 'dnsmasq.pid'}",
        f"--log-facility={workdir / 'dnsmasq.log'}",
        "--log-queries",
    ]


@contextlib.contextmanager
def local_dns(records: Mapping[str, str]) -> Iterator[Nameserver]:
    """dnsmasq on 127.0.0.1, a free port, answering TXT queries for `records` (name to
    value, the value as a verifier sees it once joined), stopped on exit."""
    dnsmasq = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if dnsmasq is None:
        raise SystemExit("dnsmasq not found: install Debian's dnsmasq package")
    with tempfile.TemporaryDirectory(prefix="pixelpost-dns-") as directory:
        workdir = Path(directory)
        # A record of its own that says the server answering is this dnsmasq, not
        # one that took the port meanwhile while this one exits, unable to bind.
        token = secrets.token_hex(8)
        served = {**records, f"{token}.{READY_DOMAIN}": token}
        (workdir / "dnsmasq.conf").write_text(
            "".join(txt_record_line(name, value) for name, value in served.items())
        )
        process, nameserver = _start(dnsmasq, workdir, token)
        try:
            yield nameserver
        finally:
            _stop(process)


def txt_lookup(nameserver: Nameserver) -> DnsFunc:
    """A `dnsfunc` for `dkim.verify` that asks `nameserver` over the network."""

    def lookup(name: bytes, timeout: float = 5.0) -> bytes | None:
        resolver = nameserver.resolver(lifetime=timeout)
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT", raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers):
            return None
        except dns.exception.Timeout as exc:
            raise dkim.DnsTimeoutError(f"{name!r} at {nameserver.host}:{nameserver.port}") from exc
        if answer.rrset is None:
            return None
        return b"".join(next(iter(answer.rrset)).strings)

    return lookup


def _start(dnsmasq: str, workdir: Path, token: str) -> tuple[subprocess.Popen[bytes], Nameserver]:
    """dnsmasq started and answering; a port taken meanwhile by someone else (dnsmasq
    must be told a number) makes it exit, and another port is tried."""
    log_file = workdir / "dnsmasq.log"
    for _ in range(BIND_ATTEMPTS):
        port = _free_udp_and_tcp_port()
        process = subprocess.Popen(
            dnsmasq_command(dnsmasq, port, workdir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        nameserver = Nameserver(host=HOST, port=port, log_file=log_file)
        try:
            if _wait_ready(process, nameserver, token):
                return process, nameserver
        except BaseException:
            _stop(process)
            raise
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        _stop(process)
        if "Address already in use" not in stderr:
            raise SystemExit(f"dnsmasq exited ({process.returncode}): {stderr.strip()}")
    raise SystemExit(f"dnsmasq found no free port in {BIND_ATTEMPTS} attempts")


def _wait_ready(process: subprocess.Popen[bytes], nameserver: Nameserver, token: str) -> bool:
    """True once dnsmasq serves its `token` record, False if it exited first."""
    query = dns.message.make_query(f"{token}.{READY_DOMAIN}.", dns.rdatatype.TXT)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            # Until dnsmasq binds, a query to its port goes unanswered (no ICMP error
            # reaches an unconnected socket): a short wait for each one.
            response = dns.query.udp(query, nameserver.host, port=nameserver.port, timeout=0.05)
        except dns.exception.Timeout:
            continue
        if any(token.encode() in rdata.strings for rrset in response.answer for rdata in rrset):
            return True
        time.sleep(0.02)
    _stop(process)
    raise SystemExit(f"dnsmasq does not answer on {nameserver.host}:{nameserver.port}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()


def _free_udp_and_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
