"""SNS-compatible messages (pixelpost.core.sns): the string to sign exactly as AWS
documents it, signatures of versions 1 and 2 checked by a verifier written here from
AWS's steps, the URLs, the key and certificate, and `pixelpost sns keygen` and
`check-config` around them."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from pipeline.destinations.sns import read_signing_key
from pixelpost.app.cli import main
from pixelpost.app.sns import keygen, new_key_and_certificate
from pixelpost.config import SnsConfig, parse_config_text
from pixelpost.config.lint import warnings
from pixelpost.core import sns
from pixelpost.errors import ConfigError, KeyFileError, PixelpostError

TOPIC = "arn:aws:sns:eu-west-1:123456789012:mail-events"
SUBSCRIPTION = f"{TOPIC}:c9135db0-26c4-47ec-8998-413945fb5a96"
PUBLIC = "https://t.pixelpost.dev"
AT = datetime.datetime(2026, 12, 5, 8, 0, tzinfo=datetime.UTC).timestamp()
EVENT = '{"eventType":"Open","mail":{"messageId":"m1"},"open":{"ipAddress":"192.0.2.1"}}'


def _certificate(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def _pem(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def material() -> tuple[bytes, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pem(private), _certificate(private)


@pytest.fixture(scope="module")
def key(material: tuple[bytes, bytes]) -> sns.SigningKey:
    return sns.load_signing_key(*material)


def aws_verify(message: Mapping[str, str], certificate_pem: bytes) -> bool:
    """AWS's documented steps, written apart from pixelpost's code: pick the fields of
    the Type in their order (Subject only when present), "name\\nvalue\\n" each, decode
    the base64 Signature, and check it with the certificate's public key, SHA1withRSA
    for SignatureVersion 1 and SHA256withRSA for 2."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = [
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    text = "".join(f"{name}\n{message[name]}\n" for name in names if name in message)
    digest = {"1": hashes.SHA1(), "2": hashes.SHA256()}[message["SignatureVersion"]]
    public = x509.load_pem_x509_certificate(certificate_pem).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    try:
        public.verify(
            base64.b64decode(message["Signature"]), text.encode(), padding.PKCS1v15(), digest
        )
    except InvalidSignature:
        return False
    return True


def _notification(key: sns.SigningKey, version: sns.SignatureVersion) -> dict[str, str]:
    return sns.notification(
        message_id="0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        topic_arn=TOPIC,
        subscription_arn=SUBSCRIPTION,
        message=EVENT,
        at=AT,
        public_url=PUBLIC,
        key=key,
        version=version,
    )


def _confirmation(key: sns.SigningKey, version: sns.SignatureVersion) -> dict[str, str]:
    return sns.subscription_confirmation(
        topic_arn=TOPIC,
        subscription_arn=SUBSCRIPTION,
        token="2336412f37fb687f5d51e6e2425f004ae",
        at=AT,
        public_url=PUBLIC,
        key=key,
        version=version,
    )


Builder = Callable[[sns.SigningKey, sns.SignatureVersion], dict[str, str]]


def test_a_notifications_string_to_sign_is_awss() -> None:
    message = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
        "Message": "Hello world!\nsecond line",
        "Timestamp": "2012-05-02T00:54:06.655Z",
        "SignatureVersion": "1",
        "Signature": "ignored",
        "SigningCertURL": "https://ignored.test/cert.pem",
        "UnsubscribeURL": "https://ignored.test/unsubscribe",
    }
    assert sns.string_to_sign(message) == (
        b"Message\nHello world!\nsecond line\n"
        b"MessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n"
        b"Timestamp\n2012-05-02T00:54:06.655Z\n"
        b"TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\n"
        b"Type\nNotification\n"
    )
    with_subject = {**message, "Subject": "My First Message"}
    assert sns.string_to_sign(with_subject) == (
        b"Message\nHello world!\nsecond line\n"
        b"MessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n"
        b"Subject\nMy First Message\n"
        b"Timestamp\n2012-05-02T00:54:06.655Z\n"
        b"TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\n"
        b"Type\nNotification\n"
    )


def test_a_confirmations_string_to_sign_is_awss(key: sns.SigningKey) -> None:
    message = _confirmation(key, "2")
    subscribe = (
        "https://t.pixelpost.dev/sns/confirm?SubscriptionArn=arn%3Aaws%3Asns%3Aeu-west-1%3A"
        "123456789012%3Amail-events%3Ac9135db0-26c4-47ec-8998-413945fb5a96"
        "&Token=2336412f37fb687f5d51e6e2425f004ae"
    )
    assert message["SubscribeURL"] == subscribe
    assert (
        sns.string_to_sign(message)
        == (
            "Message\nYou have chosen to subscribe to the topic "
            "arn:aws:sns:eu-west-1:123456789012:mail-events.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message.\n"
            f"MessageId\n{message['MessageId']}\n"
            f"SubscribeURL\n{subscribe}\n"
            "Timestamp\n2026-12-05T08:00:00.000Z\n"
            "Token\n2336412f37fb687f5d51e6e2425f004ae\n"
            "TopicArn\narn:aws:sns:eu-west-1:123456789012:mail-events\n"
            "Type\nSubscriptionConfirmation\n"
        ).encode()
    )


def test_a_notification_has_awss_fields_in_awss_order(key: sns.SigningKey) -> None:
    message = _notification(key, "2")
    assert list(message) == [
        "Type",
        "MessageId",
        "TopicArn",
        "Message",
        "Timestamp",
        "SignatureVersion",
        "Signature",
        "SigningCertURL",
        "UnsubscribeURL",
    ]
    assert "Subject" not in message
    assert b"Subject" not in sns.string_to_sign(message)
    assert message["Message"] == EVENT
    assert message["Timestamp"] == "2026-12-05T08:00:00.000Z"
    fp = hashlib.sha256(
        x509.load_pem_x509_certificate(key.certificate).public_bytes(serialization.Encoding.DER)
    ).hexdigest()[:32]
    assert message["SigningCertURL"] == f"{PUBLIC}/sns/SimpleNotificationService-{fp}.pem"
    assert message["UnsubscribeURL"] == (
        f"{PUBLIC}/sns/unsubscribe?SubscriptionArn=arn%3Aaws%3Asns%3Aeu-west-1%3A123456789012"
        "%3Amail-events%3Ac9135db0-26c4-47ec-8998-413945fb5a96"
    )
    # The body carries the event's JSON text unchanged, inside a JSON string.
    assert json.loads(sns.encode(message))["Message"] == EVENT
    with_subject = sns.notification(
        message_id="1",
        topic_arn=TOPIC,
        subscription_arn=SUBSCRIPTION,
        message=EVENT,
        at=AT,
        public_url=PUBLIC,
        key=key,
        version="2",
        subject="Amazon SES Email Event Notification",
    )
    assert list(with_subject)[3] == "Subject"
    assert aws_verify(with_subject, key.certificate)


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("build", [_notification, _confirmation])
def test_signatures_verify_as_aws_documents(
    key: sns.SigningKey, version: sns.SignatureVersion, build: Builder
) -> None:
    message = build(key, version)
    assert message["SignatureVersion"] == version
    assert aws_verify(message, key.certificate)
    assert sns.verify(message, key.certificate)
    # The other version's hash does not verify it.
    other = {**message, "SignatureVersion": "2" if version == "1" else "1"}
    assert not aws_verify(other, key.certificate)
    assert not sns.verify(other, key.certificate)


@pytest.mark.parametrize("build", [_notification, _confirmation])
def test_a_tampered_signed_field_fails_and_an_unsigned_one_does_not(
    key: sns.SigningKey, build: Builder
) -> None:
    message = build(key, "2")
    signed = (
        sns.NOTIFICATION_FIELDS if message["Type"] == "Notification" else sns.CONFIRMATION_FIELDS
    )
    for name in signed:
        if name in message and name != "Type":
            tampered = {**message, name: message[name] + "x"}
            assert not aws_verify(tampered, key.certificate), name
            assert not sns.verify(tampered, key.certificate), name
    retyped = {**message, "Type": "UnsubscribeConfirmation"}
    assert not sns.verify(retyped, key.certificate)
    added_subject = {**message, "Subject": "injected"}
    if message["Type"] == "Notification":
        assert not aws_verify(added_subject, key.certificate)
        assert not sns.verify(added_subject, key.certificate)
    unsigned = {**message, "SigningCertURL": "https://elsewhere.test/cert.pem"}
    assert sns.verify(unsigned, key.certificate)


def test_verify_says_no_to_what_is_malformed(key: sns.SigningKey) -> None:
    message = _notification(key, "2")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert not sns.verify(message, _certificate(other))
    assert not sns.verify({**message, "Signature": "not base64!"}, key.certificate)
    assert not sns.verify({**message, "SignatureVersion": "3"}, key.certificate)
    assert not sns.verify({k: v for k, v in message.items() if k != "Timestamp"}, key.certificate)
    assert not sns.verify({**message, "Type": "Something"}, key.certificate)
    assert not sns.verify(message, b"not a certificate")
    loaded = x509.load_pem_x509_certificate(key.certificate)
    assert sns.verify(message, loaded)


def test_headers_name_the_message_and_only_a_notification_its_subscription(
    key: sns.SigningKey,
) -> None:
    notification = sns.request_headers(
        _notification(key, "2"), subscription_arn=SUBSCRIPTION, user_agent="pixelpost/1"
    )
    assert notification == {
        "Content-Type": "text/plain; charset=UTF-8",
        "User-Agent": "pixelpost/1",
        "x-amz-sns-message-type": "Notification",
        "x-amz-sns-message-id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "x-amz-sns-topic-arn": TOPIC,
        "x-amz-sns-subscription-arn": SUBSCRIPTION,
    }
    confirmation = _confirmation(key, "2")
    headers = sns.request_headers(
        confirmation, subscription_arn=SUBSCRIPTION, user_agent="pixelpost/1"
    )
    assert headers["x-amz-sns-message-type"] == "SubscriptionConfirmation"
    assert headers["x-amz-sns-message-id"] == confirmation["MessageId"]
    assert "x-amz-sns-subscription-arn" not in headers
    # Sent again, a confirmation keeps its MessageId (as SNS keeps one across retries).
    assert _confirmation(key, "1")["MessageId"] == confirmation["MessageId"]


def test_timestamps_ids_and_tokens() -> None:
    assert sns.timestamp(AT) == "2026-12-05T08:00:00.000Z"
    assert sns.timestamp(AT + 1.2345) == "2026-12-05T08:00:01.234Z"
    arn = sns.new_subscription_arn(TOPIC)
    prefix, _, suffix = arn.rpartition(":")
    assert prefix == TOPIC
    assert len(suffix) == 36
    assert sns.new_subscription_arn(TOPIC) != arn
    token = sns.new_token()
    assert len(token) >= 64
    assert int(token, 16) >= 0
    assert sns.new_token() != token


def test_a_key_and_certificate_load_only_when_they_match(
    material: tuple[bytes, bytes], key: sns.SigningKey
) -> None:
    key_pem, certificate_pem = material
    assert key.bits == 2048
    assert "private_key" not in repr(key)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(sns.SnsKeyError, match=r"^certificate: not the key's"):
        sns.load_signing_key(key_pem, _certificate(other))
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(sns.SnsKeyError, match=r"^key: a 1024-bit RSA key: 2048 bits or more"):
        sns.load_signing_key(_pem(short), _certificate(short))
    curve = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(sns.SnsKeyError, match=r"^key: not an RSA key"):
        sns.load_signing_key(_pem(curve), _certificate(curve))
    with pytest.raises(sns.SnsKeyError, match=r"^key: a certificate, not a private key"):
        sns.load_signing_key(certificate_pem, certificate_pem)
    with pytest.raises(sns.SnsKeyError, match=r"^certificate: not a PEM certificate"):
        sns.load_signing_key(key_pem, key_pem)
    encrypted = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass"),
    )
    with pytest.raises(sns.SnsKeyError, match=r"^key: an encrypted private key"):
        sns.load_signing_key(encrypted, certificate_pem)


def test_reading_the_files_names_the_key_and_the_file(
    tmp_path: Path, material: tuple[bytes, bytes]
) -> None:
    paths = SnsConfig(key=tmp_path / "k.pem", certificate=tmp_path / "c.pem")
    with pytest.raises(ConfigError) as missing:
        read_signing_key(paths)
    assert missing.value.problems == (
        f"sns.key: cannot read the key file {str(paths.key)!r}: No such file or directory "
        "(`pixelpost sns keygen` makes the key and certificate)",
    )
    paths.key.write_bytes(material[0])
    paths.certificate.write_bytes(b"junk")
    with pytest.raises(ConfigError) as junk:
        read_signing_key(paths)
    assert junk.value.problems[0].startswith(f"sns.certificate: {str(paths.certificate)!r}: not")
    paths.certificate.write_bytes(material[1])
    assert read_signing_key(paths).fingerprint == sns.fingerprint(material[1])


def test_keygen_writes_a_matching_pair_and_refuses_to_overwrite(tmp_path: Path) -> None:
    paths = SnsConfig(key=tmp_path / "sns" / "k.pem", certificate=tmp_path / "sns" / "c.pem")
    out = io.StringIO()
    assert keygen(paths=paths, public_url=PUBLIC, stdout=out) == 0
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.certificate.stat().st_mode) == 0o644
    loaded = read_signing_key(paths)
    assert loaded.bits == 2048
    certificate = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
    cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "pixelpost-sns"
    validity = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert datetime.timedelta(days=3650) <= validity < datetime.timedelta(days=3651)
    text = out.getvalue()
    url = f"{PUBLIC}/sns/SimpleNotificationService-{loaded.fingerprint}.pem"
    assert f"fingerprint:    {loaded.fingerprint}\n" in text
    assert f"SigningCertURL: {url}\n" in text
    assert f'[sns]\nkey = "{paths.key}"\ncertificate = "{paths.certificate}"\n' in text

    before = paths.key.read_bytes()
    with pytest.raises(KeyFileError, match="exists: refusing to overwrite"):
        keygen(paths=paths, public_url=PUBLIC, stdout=io.StringIO())
    assert paths.key.read_bytes() == before
    assert keygen(paths=paths, public_url=PUBLIC, force=True, stdout=io.StringIO()) == 0
    assert paths.key.read_bytes() != before
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    assert read_signing_key(paths).fingerprint != loaded.fingerprint


def test_keygen_refuses_weak_keys_and_odd_certificates() -> None:
    now = datetime.datetime.now(datetime.UTC)
    with pytest.raises(PixelpostError, match="--bits 1024"):
        new_key_and_certificate(bits=1024, days=10, common_name="x", now=now)
    with pytest.raises(PixelpostError, match="--days 0"):
        new_key_and_certificate(bits=2048, days=0, common_name="x", now=now)


def _config_file(tmp_path: Path, *, public_url: str = "https://t.pixelpost.dev") -> Path:
    path = tmp_path / "pixelpost.toml"
    path.write_text(
        f'[tracker]\npublic_url = "{public_url}"\n'
        "[sns]\n"
        'key = "sns/signing-key.pem"\n'
        'certificate = "sns/signing-cert.pem"\n'
        "[destinations.app]\n"
        'type = "sns"\n'
        'url = "https://app.pixelpost.dev/ses/"\n'
        "[config_sets.news]\n"
        'destinations = ["app"]\n'
    )
    return path


def test_the_command_line_makes_the_key_and_check_config_wants_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path)
    assert main(["check-config", "-c", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"sns.key: cannot read the key file {str(tmp_path / 'sns' / 'signing-key.pem')!r}: "
        "No such file or directory (`pixelpost sns keygen` makes the key and certificate)"
    ]

    assert main(["sns", "keygen", "-c", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "SigningCertURL: https://t.pixelpost.dev/sns/SimpleNotificationService-" in printed
    assert main(["check-config", "-c", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{path}: ok"]

    assert main(["sns", "keygen", "-c", str(path)]) == 1
    assert "exists: refusing to overwrite" in capsys.readouterr().err

    # A key that is not the certificate's is named too.
    elsewhere = tmp_path / "other"
    assert main(["sns", "keygen", "-c", str(path), "--out", str(elsewhere), "--days", "1"]) == 0
    capsys.readouterr()
    (tmp_path / "sns" / "signing-key.pem").write_bytes(
        (elsewhere / "signing-key.pem").read_bytes()
    )
    assert main(["check-config", "-c", str(path)]) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"sns.certificate: {str(tmp_path / 'sns' / 'signing-cert.pem')!r}")
    assert "not the key's" in line


def test_dispatch_refuses_to_start_without_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path)
    assert main(["dispatch", "-c", str(path)]) == 1
    assert capsys.readouterr().err.startswith("pixelpost: sns.key: cannot read the key file")


def test_lint_warns_of_a_certificate_url_that_is_not_https() -> None:
    text = (
        '[tracker]\npublic_url = "{url}"\n[destinations.app]\ntype = "sns"\n'
        'url = "https://app.pixelpost.dev/ses/"\n'
    )
    plain = parse_config_text(text.format(url="http://t.pixelpost.dev"), environ={})
    [warning] = warnings(plain)
    assert warning.startswith("tracker.public_url: 'http://t.pixelpost.dev' is not https")
    assert "app" in warning
    secure = parse_config_text(text.format(url="https://t.pixelpost.dev"), environ={})
    assert warnings(secure) == []
    placeholder = parse_config_text(
        text.format(url="https://t.pixelpost.dev").replace("app.pixelpost.dev", "app.example.com"),
        environ={},
    )
    [warning] = warnings(placeholder)
    assert warning.startswith("destinations.app.url: the endpoint's host 'app.example.com'")
