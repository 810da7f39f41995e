"""A minimal SNS HTTP(S) endpoint for tests, written the way AWS documents one and apart
from pixelpost's own code: it fetches the SigningCertURL over https (from the one host
it trusts), builds the string to sign for the message's Type, checks the signature
(SHA1withRSA for SignatureVersion 1, SHA256withRSA for 2), refuses what does not verify,
and confirms a SubscriptionConfirmation by visiting its SubscribeURL. It answers as the
test tells it: a status, a Retry-After, a redirect, or not at all until released."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    message: dict[str, str]
    verified: bool


@dataclass
class SnsConsumer:
    trusted_host: str
    """The only host a SigningCertURL may name (as a consumer allows only Amazon's)."""
    tls: ssl.SSLContext
    """Trusts the CA of the tracker's certificate."""
    status: int = 200
    retry_after: str | None = None
    redirect_to: str | None = None
    confirm: bool = True
    """Visit the SubscribeURL of a SubscriptionConfirmation that verifies."""
    hold: asyncio.Event | None = None
    """While set and not yet released, requests wait (an endpoint that hangs)."""
    received: list[Received] = field(default_factory=list)
    confirmations_visited: list[int] = field(default_factory=list)
    """The HTTP status of each SubscribeURL visited."""
    redirected: int = 0
    """Requests that followed a redirect here."""
    _certificates: dict[str, x509.Certificate] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None

    @property
    def notifications(self) -> list[Received]:
        return [r for r in self.received if r.message.get("Type") == "Notification"]

    @property
    def confirmations(self) -> list[Received]:
        return [r for r in self.received if r.message.get("Type") == "SubscriptionConfirmation"]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        message = json.loads(body)
        verified = await self.verify(message)
        self.received.append(
            Received(headers=dict(request.headers), body=body, message=message, verified=verified)
        )
        if self.hold is not None:
            await self.hold.wait()
        if self.redirect_to is not None:
            raise web.HTTPFound(self.redirect_to)
        if self.status != 200:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.Response(status=self.status, text="consumer says no", headers=headers)
        if not verified:
            return web.Response(status=403, text="signature does not verify")
        if message["Type"] == "SubscriptionConfirmation" and self.confirm:
            self.confirmations_visited.append(await self.visit(message["SubscribeURL"]))
        return web.Response(text="ok")

    async def redirected_here(self, request: web.Request) -> web.Response:
        self.redirected += 1
        return web.Response(text="followed")

    async def visit(self, url: str) -> int:
        """GET a SubscribeURL or UnsubscribeURL; its status."""
        async with self._client().get(url) as response:
            await response.read()
            return response.status

    async def verify(self, message: dict[str, str]) -> bool:
        url = message.get("SigningCertURL", "")
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.netloc != self.trusted_host:
            return False
        certificate = self._certificates.get(url)
        if certificate is None:
            async with self._client().get(url) as response:
                if response.status != 200:
                    return False
                certificate = x509.load_pem_x509_certificate(await response.read())
            self._certificates[url] = certificate
        names: tuple[str, ...]
        if message.get("Type") == "Notification":
            names = NOTIFICATION_FIELDS
        elif message.get("Type") in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            names = CONFIRMATION_FIELDS
        else:
            return False
        signed = "".join(f"{name}\n{message[name]}\n" for name in names if name in message)
        digest = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(
            message.get("SignatureVersion", "")
        )
        public = certificate.public_key()
        if digest is None or not isinstance(public, rsa.RSAPublicKey):
            return False
        try:
            signature = base64.b64decode(message["Signature"], validate=True)
            public.verify(signature, signed.encode(), padding.PKCS1v15(), digest)
        except (InvalidSignature, binascii.Error, KeyError):
            return False
        return True

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.tls))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def start_consumer(consumer: SnsConsumer) -> tuple[web.AppRunner, int]:
    """Serve `consumer` at http://127.0.0.1:<port>/sns (and /elsewhere, where a followed
    redirect would land)."""
    app = web.Application()
    app.router.add_post("/sns", consumer.handle)
    app.router.add_route("*", "/elsewhere", consumer.redirected_here)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]
