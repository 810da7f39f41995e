"""`pixelpost dkim keygen|check`: the key file and the record keygen prints, and check
asking a real (tiny) DNS server on loopback, answering from dnspython's own message
parsing, for the record that keygen printed."""

from __future__ import annotations

import io
import re
import socket
import socketserver
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from pixelpost.app.dkim import TXT_STRING_MAX, check, keygen
from pixelpost.core.dkim import (
    DkimError,
    load_key,
    public_key_matches,
    record_tags,
    txt_record,
)
from pixelpost.errors import KeyFileError, PixelpostError

Records = Mapping[str, Sequence[str] | str]
"""Per name (with its final dot): TXT records in zone file form (`"a" "b"`), or an
rcode name ("SERVFAIL") to answer with instead."""


class _Handler(socketserver.BaseRequestHandler):
    server: _DnsServer

    def handle(self) -> None:
        data, sock = self.request
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text().lower()
        self.server.asked.append(name)
        found = self.server.records.get(name)
        if found is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif isinstance(found, str):
            response.set_rcode(dns.rcode.from_text(found))
        elif question.rdtype == dns.rdatatype.TXT and found:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 300, "IN", "TXT", list(found))
            )
        sock.sendto(response.to_wire(), self.client_address)


class _DnsServer(socketserver.UDPServer):
    def __init__(self, records: Records) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.records = records
        self.asked: list[str] = []


@contextmanager
def dns_server(records: Records) -> Iterator[_DnsServer]:
    """A DNS server on 127.0.0.1, a port of its own, answering TXT queries from
    `records` and NXDOMAIN for any other name. Its socket is bound before it is
    yielded, so that a query sent at once waits in the socket's queue."""
    server = _DnsServer(records)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def address(server: _DnsServer) -> str:
    host, port = server.server_address[:2]
    return f"{host!s}:{port}"


def run_keygen(
    out: Path,
    *,
    domain: str = "example.com",
    selector: str = "s1",
    algorithm: str = "rsa",
    bits: int = 2048,
    force: bool = False,
) -> str:
    stdout = io.StringIO()
    code = keygen(
        domain=domain,
        selector=selector,
        algorithm=algorithm,
        bits=bits,
        out=out,
        force=force,
        stdout=stdout,
    )
    assert code == 0
    return stdout.getvalue()


def published(output: str) -> tuple[str, list[str]]:
    """The name and the strings of the record keygen printed."""
    found = re.search(r"^(\S+) IN TXT ((?:\"[^\"]*\" ?)+)$", output, re.MULTILINE)
    assert found is not None, output
    return found[1], re.findall(r'"([^"]*)"', found[2])


def run_check(key: Path, server: _DnsServer, *, selector: str = "s1") -> tuple[int, str]:
    stdout = io.StringIO()
    code = check(
        domain="example.com",
        selector=selector,
        key=key,
        nameserver=address(server),
        stdout=stdout,
    )
    return code, stdout.getvalue()


# keygen


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    out = tmp_path / "s1.pem"
    output = run_keygen(out)

    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pem = out.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    key = load_key(domain="example.com", selector="s1", pem=pem)
    assert key.algorithm == "rsa-sha256"
    assert f"Wrote a new 2048-bit RSA key to {out.resolve()} (mode 0600)." in output
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left


def test_keygen_prints_a_record_that_publishes_the_key(tmp_path: Path) -> None:
    out = tmp_path / "s1.pem"
    output = run_keygen(out)
    key = load_key(domain="example.com", selector="s1", pem=out.read_bytes())

    name, strings = published(output)
    assert name == "s1._domainkey.example.com."
    assert len(strings) == 2  # a 2048-bit key's record is longer than one string holds
    assert all(len(s) <= TXT_STRING_MAX for s in strings)
    assert "".join(strings) == txt_record(key)
    assert record_tags("".join(strings))["k"] == "rsa"
    assert public_key_matches(key, "".join(strings))
    assert '[dkim.domains."example.com"]\nselector = "s1"\n' in output
    assert f'key = "{out.resolve()}"' in output


def test_keygen_ed25519_prints_its_own_config_keys(tmp_path: Path) -> None:
    out = tmp_path / "e1.pem"
    output = run_keygen(out, algorithm="ed25519", selector="e1", domain="Example.COM.")
    key = load_key(domain="example.com", selector="e1", pem=out.read_bytes())

    assert key.algorithm == "ed25519-sha256"
    name, strings = published(output)
    assert name == "e1._domainkey.example.com."
    assert strings == [txt_record(key)]
    assert record_tags(strings[0])["k"] == "ed25519"
    assert 'ed25519_selector = "e1"\ned25519_key = ' in output


def test_keygen_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "s1.pem"
    run_keygen(out, algorithm="ed25519")
    first = out.read_bytes()
    with pytest.raises(KeyFileError, match="exists: refusing to overwrite a key"):
        run_keygen(out, algorithm="ed25519")
    assert out.read_bytes() == first

    out.chmod(0o644)
    run_keygen(out, algorithm="ed25519", force=True)
    assert out.read_bytes() != first
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["s1.pem"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bits": 1024}, "--bits 1024: a new RSA key has 2048 to 4096 bits"),
        ({"bits": 8192}, "--bits 8192"),
        ({"algorithm": "dsa"}, "--type 'dsa' is not one of rsa, ed25519"),
        ({"domain": "localhost"}, "--domain 'localhost' is not a domain name"),
        ({"selector": "s 1"}, "--selector 's 1' is not a selector"),
    ],
)
def test_keygen_refuses_bad_options(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    out = tmp_path / "k.pem"
    with pytest.raises(PixelpostError, match=re.escape(message)):
        run_keygen(out, **options)
    assert not out.exists()


def test_keygen_names_a_folder_it_cannot_write_to(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot create"):
        run_keygen(tmp_path / "missing" / "k.pem", algorithm="ed25519")


# check


@pytest.fixture
def rsa_key_file(tmp_path: Path) -> tuple[Path, str]:
    """A key made by keygen, and the strings of the record it printed, as a zone file
    writes them."""
    out = tmp_path / "s1.pem"
    _, strings = published(run_keygen(out))
    return out, " ".join(f'"{s}"' for s in strings)


def test_check_says_the_published_record_matches(rsa_key_file: tuple[Path, str]) -> None:
    path, record = rsa_key_file
    with dns_server({"s1._domainkey.example.com.": [record]}) as server:
        code, output = run_check(path, server)
    assert code == 0
    assert output == f"s1._domainkey.example.com.: matches {path} (rsa-sha256, 2048 bits)\n"
    assert server.asked == ["s1._domainkey.example.com."]


def test_check_an_ed25519_key_among_other_records(tmp_path: Path) -> None:
    out = tmp_path / "e1.pem"
    _, strings = published(run_keygen(out, algorithm="ed25519", selector="e1"))
    records = {"e1._domainkey.example.com.": ['"v=spf1 -all"', f'"{strings[0]}"']}
    with dns_server(records) as server:
        code, output = run_check(out, server, selector="e1")
    assert code == 0
    assert "matches" in output
    assert "(ed25519-sha256, 256 bits)" in output


@pytest.mark.parametrize(
    ("records", "verdict"),
    [
        ({}, "missing: no such name"),
        ({"s1._domainkey.example.com.": []}, "missing: no TXT record at the name"),
        ({"s1._domainkey.example.com.": ['"v=DKIM1; k=rsa; p="']}, "is revoked (empty p=)"),
        ({"s1._domainkey.example.com.": ['"v=DKIM1; k=rsa"']}, "has no p= tag"),
        (
            {"s1._domainkey.example.com.": ['"v=DKIM1; k=ed25519; p=MCowBQYDK2VwAyEA"']},
            "is for k=ed25519, the key is rsa",
        ),
    ],
)
def test_check_names_what_is_wrong(
    rsa_key_file: tuple[Path, str], records: Records, verdict: str
) -> None:
    path, _ = rsa_key_file
    with dns_server(records) as server:
        code, output = run_check(path, server)
    assert code == 1
    assert output.startswith("s1._domainkey.example.com.: ")
    assert verdict in output
    assert output.count("\n") == 1


def test_check_says_another_key_does_not_match(
    rsa_key_file: tuple[Path, str], tmp_path: Path
) -> None:
    path, _ = rsa_key_file
    other = tmp_path / "other.pem"
    _, strings = published(run_keygen(other, algorithm="rsa"))
    with dns_server({"s1._domainkey.example.com.": [" ".join(f'"{s}"' for s in strings)]}) as ns:
        code, output = run_check(path, ns)
    assert code == 1
    assert "the published record does not match the key" in output
    with dns_server(
        {"s1._domainkey.example.com.": ['"v=DKIM1; p="', " ".join(f'"{s}"' for s in strings)]}
    ) as ns:
        code, output = run_check(path, ns)
    assert code == 1
    assert "none of 2 TXT records publishes the key in" in output
    assert "is revoked (empty p=)" in output  # the records in the DNS's order
    assert "does not match the key" in output


def test_check_fails_loudly_when_dns_cannot_be_asked(rsa_key_file: tuple[Path, str]) -> None:
    path, _ = rsa_key_file
    with (
        dns_server({"s1._domainkey.example.com.": "SERVFAIL"}) as server,
        pytest.raises(PixelpostError, match=r"cannot look up s1\._domainkey\.example\.com\."),
    ):
        run_check(path, server)

    # A server that never answers: a bound socket nobody reads.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with pytest.raises(PixelpostError, match=r"no answer from 127\.0\.0\.1 within 0\.3 s"):
            check(
                domain="example.com",
                selector="s1",
                key=path,
                nameserver=f"127.0.0.1:{port}",
                stdout=io.StringIO(),
                timeout=0.3,
            )


def test_check_refuses_a_nameserver_that_is_no_address(rsa_key_file: tuple[Path, str]) -> None:
    path, _ = rsa_key_file
    for bad in ("dns.example:53", "127.0.0.1:99999"):
        with pytest.raises(PixelpostError, match="--nameserver"):
            check(
                domain="example.com",
                selector="s1",
                key=path,
                nameserver=bad,
                stdout=io.StringIO(),
            )


def test_check_names_a_key_file_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read the DKIM key"):
        check(
            domain="example.com",
            selector="s1",
            key=tmp_path / "missing.pem",
            nameserver="127.0.0.1:53",
            stdout=io.StringIO(),
        )
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")
    with pytest.raises(DkimError, match="not a PEM private key"):
        check(
            domain="example.com",
            selector="s1",
            key=garbage,
            nameserver="127.0.0.1:53",
            stdout=io.StringIO(),
        )
