"""Amazon SNS's HTTP(S) delivery as pixelpost imitates it: the messages an endpoint gets
(Notification, SubscriptionConfirmation), their signatures (SignatureVersion 1 and 2),
the URLs they send the endpoint to, and the RSA key and certificate they are signed with.

Pure: keys and certificates come in as PEM bytes, messages go out as dicts and bytes;
nothing here opens a file or a socket. The string to sign is AWS's documented one
(https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html):
"Name\\nvalue\\n" for each signed field, in byte order of the names, `Subject` only
when present. The tracker serves the URLs built here (tracker/sns.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pixelpost.errors import PixelpostError

SignatureVersion = Literal["1", "2"]
"""`"1"`: SHA1withRSA; `"2"`: SHA256withRSA (both PKCS#1 v1.5, base64)."""

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
"""What a Notification's signature covers, in the order signed (`Subject` if present)."""
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
"""What a SubscriptionConfirmation's (and an UnsubscribeConfirmation's) signature covers."""
OPTIONAL_FIELDS = frozenset({"Subject"})
CONTENT_TYPE = "text/plain; charset=UTF-8"
"""SNS's default for HTTP(S) deliveries: the body is JSON all the same."""
MIN_RSA_BITS = 2048
FINGERPRINT_HEX = 32
"""Hex digits of the certificate's SHA-256 that name its SigningCertURL."""
TOKEN_BYTES = 64
"""Random bytes of a subscription's token: 128 hex digits, like Amazon's."""
CERTIFICATE_PATH = "/sns/SimpleNotificationService-{fingerprint}.pem"
CONFIRM_PATH = "/sns/confirm"
UNSUBSCRIBE_PATH = "/sns/unsubscribe"

_HASHES: dict[str, type[hashes.SHA1] | type[hashes.SHA256]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}
_FIELDS = {
    NOTIFICATION: NOTIFICATION_FIELDS,
    SUBSCRIPTION_CONFIRMATION: CONFIRMATION_FIELDS,
    UNSUBSCRIBE_CONFIRMATION: CONFIRMATION_FIELDS,
}


class SnsKeyError(PixelpostError):
    """The SNS signing key or its certificate cannot be used: it does not load, is not
    RSA, is too short, or the certificate is not the key's."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SigningKey:
    """The private key SNS-compatible messages are signed with, and its certificate."""

    private_key: rsa.RSAPrivateKey = field(repr=False)
    """Kept out of repr, so that a logged record shows no secret."""
    certificate: bytes
    """PEM, as served at the SigningCertURL."""
    fingerprint: str

    @property
    def bits(self) -> int:
        return self.private_key.key_size


def _private_key(pem: bytes) -> rsa.RSAPrivateKey:
    if b"-----BEGIN CERTIFICATE" in pem:
        raise SnsKeyError("a certificate, not a private key: the key is the private key (PEM)")
    if b"-----BEGIN" not in pem:
        raise SnsKeyError("not a PEM private key (no -----BEGIN line)")
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise SnsKeyError("an encrypted private key: pixelpost reads unencrypted PEM") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SnsKeyError(f"not a PEM private key that can be read ({exc})") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise SnsKeyError("not an RSA key: SNS signatures are RSA (SHA1withRSA, SHA256withRSA)")
    if loaded.key_size < MIN_RSA_BITS:
        raise SnsKeyError(f"a {loaded.key_size}-bit RSA key: {MIN_RSA_BITS} bits or more needed")
    return loaded


def load_certificate(pem: bytes) -> x509.Certificate:
    """The certificate in `pem`; SnsKeyError if it is none."""
    if b"-----BEGIN CERTIFICATE" not in pem:
        raise SnsKeyError("not a PEM certificate (no -----BEGIN CERTIFICATE line)")
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise SnsKeyError(f"not a PEM X.509 certificate that can be read ({exc})") from None


def load_signing_key(key_pem: bytes, certificate_pem: bytes) -> SigningKey:
    """The signing key in `key_pem` with its certificate; SnsKeyError naming which of
    the two is wrong ("key: …", "certificate: …") and why."""
    try:
        private = _private_key(key_pem)
    except SnsKeyError as exc:
        raise SnsKeyError(f"key: {exc}") from None
    try:
        certificate = load_certificate(certificate_pem)
    except SnsKeyError as exc:
        raise SnsKeyError(f"certificate: {exc}") from None
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or (
        public.public_numbers() != private.public_key().public_numbers()
    ):
        raise SnsKeyError(
            "certificate: not the key's: it holds another public key (make both anew with "
            "`pixelpost sns keygen --force`)"
        )
    return SigningKey(
        private_key=private, certificate=certificate_pem, fingerprint=fingerprint(certificate_pem)
    )


def fingerprint(certificate_pem: bytes) -> str:
    """The first 32 hex digits of the SHA-256 of the certificate's DER: what its
    SigningCertURL is named by. SnsKeyError if `certificate_pem` is no certificate."""
    der = load_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()[:FINGERPRINT_HEX]


def certificate_url(public_url: str, certificate_pem: bytes) -> str:
    """The SigningCertURL: where the tracker at `public_url` serves the certificate."""
    return _certificate_url(public_url, fingerprint(certificate_pem))


def _certificate_url(public_url: str, fingerprint: str) -> str:
    return public_url.rstrip("/") + CERTIFICATE_PATH.format(fingerprint=fingerprint)


def subscribe_url(public_url: str, arn: str, token: str) -> str:
    """The SubscribeURL an endpoint visits to confirm the subscription `arn`."""
    return (
        f"{public_url.rstrip('/')}{CONFIRM_PATH}?SubscriptionArn={quote(arn, safe='')}"
        f"&Token={quote(token, safe='')}"
    )


def unsubscribe_url(public_url: str, arn: str) -> str:
    """The UnsubscribeURL an endpoint visits to end the subscription `arn`."""
    return f"{public_url.rstrip('/')}{UNSUBSCRIBE_PATH}?SubscriptionArn={quote(arn, safe='')}"


def new_subscription_arn(topic_arn: str) -> str:
    """A subscription's ARN, as Amazon makes them: the topic's, a colon, a UUID."""
    return f"{topic_arn}:{uuid.uuid4()}"


def new_token() -> str:
    """A subscription's confirmation token: 128 random hex digits."""
    return secrets.token_hex(TOKEN_BYTES)


def confirmation_id(subscription_arn: str) -> str:
    """The MessageId of a subscription's SubscriptionConfirmation: the same each time it
    is sent again, as Amazon keeps a message's id across retries."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, subscription_arn))


def timestamp(at: float) -> str:
    """`at` (a Unix time) as SNS writes times: 2026-12-05T08:00:00.000Z."""
    seconds, millis = divmod(int(at * 1000), 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def string_to_sign(message: Mapping[str, object]) -> bytes:
    """What a message's signature covers, for its `Type`; KeyError for a missing field
    (or an unknown Type), ValueError for a field that is not a string."""
    names = _FIELDS[str(message["Type"])]
    parts: list[str] = []
    for name in names:
        if name in OPTIONAL_FIELDS and name not in message:
            continue
        value = message[name]
        if not isinstance(value, str):
            raise ValueError(f"{name} is not a string")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


def sign(message: Mapping[str, object], key: SigningKey, version: SignatureVersion) -> str:
    """The base64 Signature of `message`."""
    raw = key.private_key.sign(string_to_sign(message), padding.PKCS1v15(), _HASHES[version]())
    return base64.b64encode(raw).decode("ascii")


def verify(message: Mapping[str, object], certificate: bytes | x509.Certificate) -> bool:
    """Whether `message` (a parsed SNS body) is signed by `certificate`'s key (PEM, or
    loaded), as its SignatureVersion says. False for anything missing or malformed."""
    version = message.get("SignatureVersion")
    signature = message.get("Signature")
    if not isinstance(version, str) or version not in _HASHES or not isinstance(signature, str):
        return False
    try:
        signed = string_to_sign(message)
        raw = base64.b64decode(signature, validate=True)
        loaded = load_certificate(certificate) if isinstance(certificate, bytes) else certificate
    except (KeyError, ValueError, binascii.Error, SnsKeyError):
        return False
    public = loaded.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        return False
    try:
        public.verify(raw, signed, padding.PKCS1v15(), _HASHES[version]())
    except InvalidSignature:
        return False
    return True


def notification(
    *,
    message_id: str,
    topic_arn: str,
    subscription_arn: str,
    message: str,
    at: float,
    public_url: str,
    key: SigningKey,
    version: SignatureVersion,
    subject: str | None = None,
) -> dict[str, str]:
    """A signed Notification of `message` (an SES event's JSON text, unchanged), its
    fields in Amazon's order."""
    body: dict[str, str] = {"Type": NOTIFICATION, "MessageId": message_id, "TopicArn": topic_arn}
    if subject is not None:
        body["Subject"] = subject
    body |= {"Message": message, "Timestamp": timestamp(at), "SignatureVersion": version}
    body["Signature"] = sign(body, key, version)
    body["SigningCertURL"] = _certificate_url(public_url, key.fingerprint)
    body["UnsubscribeURL"] = unsubscribe_url(public_url, subscription_arn)
    return body


def confirmation_text(topic_arn: str) -> str:
    """A SubscriptionConfirmation's Message."""
    return (
        f"You have chosen to subscribe to the topic {topic_arn}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message."
    )


def subscription_confirmation(
    *,
    topic_arn: str,
    subscription_arn: str,
    token: str,
    at: float,
    public_url: str,
    key: SigningKey,
    version: SignatureVersion,
) -> dict[str, str]:
    """The signed SubscriptionConfirmation of the subscription `subscription_arn`, its
    fields in Amazon's order."""
    body = {
        "Type": SUBSCRIPTION_CONFIRMATION,
        "MessageId": confirmation_id(subscription_arn),
        "Token": token,
        "TopicArn": topic_arn,
        "Message": confirmation_text(topic_arn),
        "SubscribeURL": subscribe_url(public_url, subscription_arn, token),
        "Timestamp": timestamp(at),
        "SignatureVersion": version,
    }
    body["Signature"] = sign(body, key, version)
    body["SigningCertURL"] = _certificate_url(public_url, key.fingerprint)
    return body


def encode(message: Mapping[str, str]) -> bytes:
    """The request body: the message as JSON, laid out as Amazon lays it out."""
    return json.dumps(message, ensure_ascii=False, indent=2, separators=(",", " : ")).encode()


def request_headers(
    message: Mapping[str, str], *, subscription_arn: str, user_agent: str
) -> dict[str, str]:
    """The headers SNS sends with `message`: a Notification names its subscription, a
    SubscriptionConfirmation (of a subscription not confirmed yet) does not."""
    headers = {
        "Content-Type": CONTENT_TYPE,
        "User-Agent": user_agent,
        "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-message-id": message["MessageId"],
        "x-amz-sns-topic-arn": message["TopicArn"],
    }
    if message["Type"] == NOTIFICATION:
        headers["x-amz-sns-subscription-arn"] = subscription_arn
    return headers
