"""The README's nginx configuration in front of `pixelpost tracker`: links work through
it byte for byte, and the recipient's address arrives through X-Forwarded-For."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
from pathlib import Path

from pixelpost.core.sns import fingerprint
from pixelpost.core.tokens import TokenCodec
from pixelpost.keys import decode_signing_key
from tests.e2e.conftest import BIN, Running, readme_block, start, until
from tests.net import free_port
from tests.tools import need

MESSAGE_ID = "01a229384a7e0d36bd3897bb329eede0"


def test_the_readme_nginx_example_proxies_the_tracker(
    tmp_path: Path, processes: list[Running]
) -> None:
    nginx = need("nginx")
    need("curl")
    tracker_port, nginx_port = free_port(), free_port()
    keys = tmp_path / "sns"
    subprocess.run(
        [str(BIN / "pixelpost"), "sns", "keygen", "--out", str(keys)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    certificate = (keys / "signing-cert.pem").read_bytes()
    config = tmp_path / "pixelpost.toml"
    config.write_text(
        f"""
[sns]
key = "{keys / "signing-key.pem"}"
certificate = "{keys / "signing-cert.pem"}"
[destinations.app]
type = "sns"
url = "https://app.example.net/ses/"
confirm = false
[tracker]
listen = "127.0.0.1:{tracker_port}"
trusted_proxies = ["127.0.0.1/32"]
api_token = "nginx-test-token-0123456789"
[store]
url = "sqlite:///{tmp_path / "pixelpost.db"}"
[signing]
key_file = "{tmp_path / "signing.key"}"
"""
    )
    site = readme_block("nginx")
    site = site.replace("127.0.0.1:8080", f"127.0.0.1:{tracker_port}")
    site = re.sub(r"listen 80;", f"listen 127.0.0.1:{nginx_port};", site)
    site = re.sub(r"\n\s*listen 443[^\n]*|\n\s*ssl_certificate[^\n]*", "", site)
    temp = tmp_path / "nginx"
    temp.mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"""
daemon off;
pid {temp / "nginx.pid"};
error_log {temp / "error.log"};
events {{}}
http {{
    access_log off;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
{site}
}}
"""
    )
    tracker = start([str(BIN / "pixelpost"), "tracker", "-c", str(config)], cwd=tmp_path)
    processes.append(tracker)
    server = subprocess.Popen(
        [nginx, "-p", str(temp), "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", nginx_port), 0.2).close()
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                return False
            return True

        until(listening, "nginx listening", within=10)
        certificate_name = f"SimpleNotificationService-{fingerprint(certificate)}.pem"

        codec = TokenCodec([decode_signing_key((tmp_path / "signing.key").read_text().strip())])
        destination = "https://shop.example.com/a//b/%2F?q=%20x&y=1"
        link = f"http://127.0.0.1:{nginx_port}/c/" + codec.click_token(
            MESSAGE_ID, 0, destination, {}
        )
        result = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
                "-H",
                "X-Forwarded-For: 203.0.113.9",
                link,
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        assert result.stdout == f"302 {destination}"
        pixel = f"http://127.0.0.1:{nginx_port}/o/{codec.open_token(MESSAGE_ID)}"
        status = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", pixel],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        assert status == "200"
        other = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"http://127.0.0.1:{nginx_port}/metrics",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        assert other == "404"  # only the pixel, the links and /healthz are public
        # The sns destinations' certificate is public: SNS consumers fetch it.
        served = subprocess.run(
            ["curl", "-s", "-f", f"http://127.0.0.1:{nginx_port}/sns/{certificate_name}"],
            capture_output=True,
            timeout=20,
            check=True,
        ).stdout
        assert served == certificate
        stats = subprocess.run(
            [
                "curl",
                "-s",
                "-w",
                "\n%{http_code}",
                "-H",
                "Authorization: Bearer nginx-test-token-0123456789",
                f"http://127.0.0.1:{nginx_port}/api/v1/stats?by=day",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        body, _, code = stats.rpartition("\n")
        assert code == "200"
        assert json.loads(body)["totals"]["sent"] == 0
        dashboard = subprocess.run(
            ["curl", "-s", f"http://127.0.0.1:{nginx_port}/dashboard"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        assert 'name="token"' in dashboard  # the login form, through the proxy
    finally:
        server.terminate()
        server.wait(10)
        if server.stderr is not None:
            server.stderr.close()

    with sqlite3.connect(tmp_path / "pixelpost.db") as connection:
        rows = connection.execute("SELECT type, detail FROM events ORDER BY seq").fetchall()
    assert [kind for kind, _ in rows] == ["click", "open"]
    assert '"ipAddress":"203.0.113.9"' in rows[0][1]
    assert '"ipAddress":"127.0.0.1"' in rows[1][1]
