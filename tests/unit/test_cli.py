"""The command line, in process: exit codes and what it prints."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pixelpost.app.cli import build_parser, main
from pixelpost.core.passwords import verify_password
from pixelpost.keys import decode_signing_key, decode_webhook_secret

ROOT = Path(__file__).resolve().parents[2]


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(ROOT / "config.example.toml")]) == 0
    first, *rest = capsys.readouterr().out.splitlines()
    assert first == f"{ROOT / 'config.example.toml'}: ok"
    assert rest
    assert all(line.startswith("warning: ") for line in rest)


def test_check_config_prints_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'default_config_set = "missing"\n'
        "[relay]\n"
        'allow_networks = ["10.0.0.0/33"]\n'
        "[destinations.d]\n"
        'type = "file"\n'
        'path = "e.jsonl"\n'
        'events = ["opened"]\n'
    )

    assert main(["check-config", "-c", str(path)]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith('relay.allow_networks[0]: "10.0.0.0/33" is not a network')
    assert lines[1].startswith('destinations.d.events[0]: "opened" is not an event type')
    assert lines[2].startswith('default_config_set: "missing" is not a configuration set')


def test_check_config_names_a_template_that_would_not_render(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "pages"
    (folder / "de").mkdir(parents=True)
    (folder / "de" / "unsubscribed.html").write_text(
        '<html lang="de"><body>$address abgemeldet</body></html>'
    )
    path = tmp_path / "pixelpost.toml"
    path.write_text('[tracker]\ntemplates = "pages"\n')

    assert main(["check-config", "-c", str(path)]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"tracker.templates: {folder / 'de' / 'unsubscribed.html'}: the placeholder $list "
        "is missing"
    ]


def test_check_config_names_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "-c", str(tmp_path / "nope.toml")]) == 1
    assert "nope.toml: cannot read the configuration file" in capsys.readouterr().out


def test_serve_with_a_bad_config_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[relay]\nlisten = "nowhere"\n')
    assert main(["serve", "-c", str(path)]) == 1
    assert capsys.readouterr().err.startswith('pixelpost: relay.listen: "nowhere" is not')


def test_keygen(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    key_line, secret_line = capsys.readouterr().out.splitlines()
    assert len(decode_signing_key(key_line.split()[-1])) == 32
    assert len(decode_webhook_secret(secret_line.split()[-1])) == 32

    assert main(["keygen", "--signing-key"]) == 0
    decode_signing_key(capsys.readouterr().out.strip())
    assert main(["keygen", "--webhook-secret"]) == 0
    decode_webhook_secret(capsys.readouterr().out.strip())


def test_hash_password_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass\n"))
    assert main(["hash-password"]) == 0
    hashed = capsys.readouterr().out.strip()
    assert verify_password("s3cret pass", hashed)
    assert "s3cret" not in hashed


def test_hash_password_refuses_an_empty_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["hash-password"]) == 1
    assert "empty password" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        "serve",
        "relay",
        "tracker",
        "check-config",
        "keygen",
        "hash-password",
        "stats",
        "reputation",
        "queue",
    ],
)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert f"usage: pixelpost {command}" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_log_level_goes_before_or_after_the_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve"]).log_level == "info"
    assert parser.parse_args(["--log-level", "debug", "serve"]).log_level == "debug"
    assert parser.parse_args(["serve", "--log-level", "warning"]).log_level == "warning"
    args = parser.parse_args(["relay", "-c", "x.toml", "--log-level", "error"])
    assert args.log_level == "error"
