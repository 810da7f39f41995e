"""OpenDKIM as an independent DKIM verifier for the tests: Debian's opendkim, a milter
in verify mode on loopback, looking keys up in a `tests.dns.local_dns` server.

    with local_dns(records) as ns, opendkim_milter(ns, workdir) as milter:
        with throwaway_postfix(..., settings={..., **milter.postfix_settings()}):
            ...  # every message Postfix receives gets "Authentication-Results:
            ...  # verifier.test; dkim=pass ..." (or fail, or none) on top

opendkim reaches the DNS server on its port through `Nameservers 127.0.0.1@PORT`:
Debian's opendkim resolves with libunbound, which takes each `Nameservers` address as
a forwarder (`ub_ctx_set_fwd`), and libunbound reads `ADDRESS@PORT` there. No
/etc/resolv.conf and no trust anchor is involved (the keys are "unprotected").
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.dns import Nameserver
from tests.net import free_port

HOST = "127.0.0.1"
AUTHSERV_ID = "verifier.test"
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
BIND_ATTEMPTS = 5
TCP_LISTEN = "0A"
"""The LISTEN state in /proc/net/tcp."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Milter:
    host: str
    port: int
    authserv_id: str
    config_file: Path
    log_file: Path

    def postfix_settings(self) -> dict[str, str]:
        """main.cf settings that put this milter in front of Postfix's smtpd; a milter
        that does not answer makes Postfix defer rather than accept unverified mail."""
        return {
            "smtpd_milters": f"inet:{self.host}:{self.port}",
            "milter_default_action": "tempfail",
        }


def opendkim_conf(nameserver: Nameserver, workdir: Path, *, authserv_id: str) -> str:
    """opendkim.conf for a verifier that asks `nameserver` for keys."""
    settings = {
        "Mode": "v",
        "Nameservers": f"{nameserver.host}@{nameserver.port}",
        "AuthservID": authserv_id,
        "AlwaysAddARHeader": "yes",
        "SoftwareHeader": "no",
        # No syslog in a test. opendkim logs nowhere else: what it says on stderr (why
        # it could not start) is all that its log file gets; the verdicts are in the
        # Authentication-Results it adds.
        "Syslog": "no",
        "Background": "no",
        "PidFile": str(workdir / "opendkim.pid"),
        "TemporaryDirectory": str(workdir),
    }
    return "".join(f"{name} {value}\n" for name, value in settings.items())


@contextlib.contextmanager
def opendkim_milter(
    nameserver: Nameserver, workdir: Path, *, authserv_id: str = AUTHSERV_ID
) -> Iterator[Milter]:
    """opendkim verifying as a milter on 127.0.0.1, a free port, its configuration and
    log in `workdir` (created if need be), stopped on exit."""
    opendkim = shutil.which("opendkim") or shutil.which("opendkim", path="/usr/sbin:/sbin")
    if opendkim is None:
        raise SystemExit("opendkim not found: install Debian's opendkim package")
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "opendkim.conf"
    config_file.write_text(opendkim_conf(nameserver, workdir, authserv_id=authserv_id))
    log_file = workdir / "opendkim.log"
    with log_file.open("ab") as log:
        process, port = _start(opendkim, config_file, log, log_file)
        try:
            yield Milter(
                host=HOST,
                port=port,
                authserv_id=authserv_id,
                config_file=config_file,
                log_file=log_file,
            )
        except BaseException:
            print(f"--- the end of {log_file}:", _tail(log_file), "---", sep="\n", file=sys.stderr)
            raise
        finally:
            _stop(process, port)


def _start(
    opendkim: str, config_file: Path, log: IO[bytes], log_file: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """opendkim started and accepting connections; a port taken meanwhile (opendkim
    must be told a number) makes it exit, and another port is tried."""
    for _ in range(BIND_ATTEMPTS):
        port = free_port()
        logged = log.tell()
        process = subprocess.Popen(
            [opendkim, "-f", "-x", str(config_file), "-p", f"inet:{port}@{HOST}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            if _wait_ready(process, port):
                return process, port
        except BaseException:
            _stop(process)
            raise
        with log_file.open("rb") as written:
            written.seek(logged)
            said = written.read().decode(errors="replace")
        # libmilter says no more than this when it cannot bind (or listen).
        if "smfi_opensocket() failed" not in said:
            raise SystemExit(f"opendkim exited ({process.returncode}): {said.strip()}")
    raise SystemExit(f"opendkim found no free port in {BIND_ATTEMPTS} attempts")


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once opendkim listens on `port`, False if it exited first. Its own socket
    is looked for, not any that accepts a connection: a listener that took the port
    meanwhile would accept for it while opendkim exits, unable to bind."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if _listens(process.pid, port):
            return True
        time.sleep(0.02)
    _stop(process)
    raise SystemExit(f"opendkim does not listen on {HOST}:{port} after {STARTUP_TIMEOUT}s")


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a TCP socket listening on 127.0.0.1:`port` (Linux's
    /proc/net/tcp names the socket's inode, /proc/PID/fd links to it)."""
    # The kernel prints the address's network-order bytes as one native integer.
    local = f"{int.from_bytes(socket.inet_aton(HOST), sys.byteorder):08X}:{port:04X}"
    with contextlib.suppress(OSError):
        inodes = {
            fields[9]
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if (fields := line.split())[1] == local and fields[3] == TCP_LISTEN
        }
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if fd.readlink().name.removeprefix("socket:[").removesuffix("]") in inodes:
                    return True
    return False


def _stop(process: subprocess.Popen[bytes], port: int | None = None) -> None:
    if process.poll() is None:
        process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                process.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
            else:
                return
            if port is not None:
                # libmilter sees that it is to stop when accept() returns or its poll
                # times out, every 5 s: a connection has it look sooner.
                with contextlib.suppress(OSError), socket.create_connection((HOST, port), 1):
                    pass
        process.kill()
        process.wait()


def _tail(log_file: Path, lines: int = 10) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    return ""
