"""nginx as the TLS-terminating reverse proxy in front of a tracker, as in production
(docs/deploy.md): HTTPS on 127.0.0.1 with a certificate from the tests' CA, the
request passed on over HTTP with X-Forwarded-For and X-Forwarded-Proto. Every file
nginx writes is under the test's folder."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.net import free_port
from tests.tools import need

READY_WITHIN = 10.0


@dataclass(frozen=True, kw_only=True, slots=True)
class TlsFront:
    """A running nginx: its HTTPS port on 127.0.0.1 and its error log."""

    port: int
    error_log: Path


def tls_front_config(
    *, upstream: str, port: int, certificate: Path, key: Path, folder: Path
) -> str:
    """A complete nginx.conf: HTTPS on 127.0.0.1:`port`, passed on to `upstream`
    (host:port), its files under `folder`."""
    return f"""
daemon off;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"};
events {{}}
http {{
    access_log off;
    client_body_temp_path {folder / "body"};
    proxy_temp_path {folder / "proxy"};
    fastcgi_temp_path {folder / "fastcgi"};
    uwsgi_temp_path {folder / "uwsgi"};
    scgi_temp_path {folder / "scgi"};
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost 127.0.0.1;
        ssl_certificate {certificate};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://{upstream};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def _listening(port: int, server: subprocess.Popen[bytes], error_log: Path) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
    except OSError:
        if server.poll() is not None:
            log = error_log.read_text() if error_log.exists() else ""
            raise AssertionError(f"nginx exited {server.returncode}: {log}") from None
        return False
    return True


@contextlib.contextmanager
def tls_front(
    *, upstream: str, ca: trustme.CA, folder: Path, port: int | None = None
) -> Iterator[TlsFront]:
    """nginx serving HTTPS for localhost and 127.0.0.1 with a certificate of `ca`, in
    front of `upstream` (host:port), on `port` (a free one unless given: nginx cannot
    say which port 0 gave it); stopped on leaving."""
    nginx = need("nginx")
    folder.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    certificate, key = folder / "server.pem", folder / "server.key"
    leaf.cert_chain_pems[0].write_to_path(str(certificate))
    leaf.private_key_pem.write_to_path(str(key))
    port = port or free_port()
    config = folder / "nginx.conf"
    config.write_text(
        tls_front_config(
            upstream=upstream, port=port, certificate=certificate, key=key, folder=folder
        )
    )
    error_log = folder / "error.log"
    server = subprocess.Popen(
        [nginx, "-p", str(folder), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + READY_WITHIN
        while not _listening(port, server, error_log):
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx not listening on {port} within {READY_WITHIN} s")
            time.sleep(0.02)
        yield TlsFront(port=port, error_log=error_log)
    finally:
        server.terminate()
        server.wait(10)
