"""DKIM signing cost per copy, pixelpost's (`cryptography`) beside dkimpy's own.

    .venv/bin/python -m bench.dkim [--runs 300] [--large-mb 25]

Signs the 20 KB plain-text message and the 100 KB newsletter of bench/messages.py with
rsa-2048, ed25519 and both (dual), relaxed/relaxed, and as a baseline with dkimpy's
`dkim.sign` (its RSA is pure Python; its Ed25519 is PyNaCl's). The body's
canonicalisation and hash alone is timed too, and one large message shows that
signing grows with the size, no faster. Reports medians per copy.

Every signature timed is verified with dkimpy first: one that does not verify would be
timed doing less than its job, so the benchmark stops there, INVALID.
"""

from __future__ import annotations

import argparse
import base64
import functools
import statistics
import time
from collections.abc import Callable

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from bench.messages import html_message, text_message
from pixelpost.core.dkim import (
    SIGNED_HEADERS,
    DkimKey,
    Signer,
    dkim_signatures,
    load_key,
    relaxed_body_hash,
    txt_record,
)
from pixelpost.core.headers import parse_header_section

DOMAIN = "example.com"


def measure(run: Callable[[], object], runs: int) -> float:
    """Median seconds of `runs` calls, after a warm-up."""
    for _ in range(min(5, runs)):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def verify(what: str, signed: bytes, keys: list[DkimKey], count: int) -> None:
    """SystemExit, INVALID, unless dkimpy verifies `count` signatures on `signed`."""
    records = {
        f"{k.selector}._domainkey.{k.domain}.".encode(): txt_record(k).encode() for k in keys
    }

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    found = len(dkim_signatures(signed))
    results = [
        bool(dkim.DKIM(signed).verify(idx=index, dnsfunc=dnsfunc)) for index in range(found)
    ]
    if found != count or not all(results):
        raise SystemExit(f"INVALID: {what}: {found} signatures, verified {results}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument(
        "--large-mb", type=int, default=25, help="size of the large message (0: leave it out)"
    )
    args = parser.parse_args()

    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # dkimpy reads PKCS#1 only
        serialization.NoEncryption(),
    )
    ed_private = ed25519.Ed25519PrivateKey.generate()
    ed_pem = ed_private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ed_seed = base64.b64encode(
        ed_private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    )
    rsa_key = load_key(domain=DOMAIN, selector="s1", pem=rsa_pem)
    ed_key = load_key(domain=DOMAIN, selector="e1", pem=ed_pem)
    keys = [rsa_key, ed_key]
    ed_only = Signer(keys)
    # pixelpost never signs with Ed25519 alone (a receiver that does not know it would
    # see unsigned mail), so a Signer refuses it; timed alone, the RSA key is left out.
    ed_only._keys = {DOMAIN: ed_only._keys[DOMAIN][:1]}
    signers = {
        "rsa-2048": Signer([rsa_key]),
        "ed25519": ed_only,
        "dual (ed25519 + rsa-2048)": Signer(keys),
    }

    messages = {
        "20 KB text": text_message(20_000),
        "100 KB newsletter": html_message(100_000),
    }
    rows: list[tuple[str, str, float]] = []
    for label, message in messages.items():
        body = parse_header_section(message).body_offset
        present = [
            f.name.encode()
            for f in parse_header_section(message).fields
            if f.name.lower() in SIGNED_HEADERS
        ]
        include = [*present, b"From"]

        def dkimpy_rsa(message: bytes = message, include: list[bytes] = include) -> bytes:
            field = dkim.sign(
                message,
                b"s1",
                DOMAIN.encode(),
                rsa_pem,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
            return bytes(field) + message

        def dkimpy_ed25519(message: bytes = message, include: list[bytes] = include) -> bytes:
            field = dkim.sign(
                message,
                b"e1",
                DOMAIN.encode(),
                ed_seed,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
                signature_algorithm=b"ed25519-sha256",
            )
            return bytes(field) + message

        for name, signer in signers.items():
            count = 2 if name.startswith("dual") else 1
            verify(f"pixelpost {name}, {label}", signer.sign(message), keys, count)
        verify(f"dkimpy rsa-2048, {label}", dkimpy_rsa(), keys, 1)
        verify(f"dkimpy ed25519, {label}", dkimpy_ed25519(), keys, 1)

        rows.append(
            (
                label,
                "pixelpost: body canonicalisation + SHA-256 only",
                measure(functools.partial(relaxed_body_hash, message, body), args.runs),
            )
        )
        for name, signer in signers.items():
            rows.append(
                (
                    label,
                    f"pixelpost (cryptography): {name}",
                    measure(functools.partial(signer.sign, message), args.runs),
                )
            )
        slow = max(20, args.runs // 10)
        rows.append((label, "dkimpy dkim.sign: rsa-2048 (pure Python)", measure(dkimpy_rsa, slow)))
        rows.append((label, "dkimpy dkim.sign: ed25519 (PyNaCl)", measure(dkimpy_ed25519, slow)))

    if args.large_mb:
        line = b"All work and no play makes Jack a dull boy, says the plain text part.\r\n"
        head = text_message(1000).split(b"\r\n\r\n", 1)[0]
        large = head + b"\r\n\r\n" + line * (args.large_mb * 1_000_000 // len(line))
        signer = signers["dual (ed25519 + rsa-2048)"]
        verify(f"pixelpost dual, {args.large_mb} MB", signer.sign(large), keys, 2)
        rows.append(
            (
                f"{args.large_mb} MB text",
                "pixelpost (cryptography): dual (ed25519 + rsa-2048)",
                measure(lambda: signer.sign(large), 5),
            )
        )

    width = max(len(name) for _, name, _ in rows)
    size_width = max(len(label) for label, _, _ in rows)
    print(f"{'message':{size_width}}  {'signing':{width}}  {'median':>10}  {'copies/s':>9}")
    for label, name, seconds in rows:
        print(
            f"{label:{size_width}}  {name:{width}}  {seconds * 1000:8.3f}ms  {1 / seconds:9,.0f}"
        )


if __name__ == "__main__":
    main()
