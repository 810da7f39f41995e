"""`pixelpost suppression list|add|remove|import|export` through the command line's
entry point, on a real SQLite store: what each prints, the exit status, and what the
store holds afterwards."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pixelpost.app.cli import main
from pixelpost.app.suppression import BAD_ROWS_SHOWN, PAGE
from pixelpost.core.suppression import Reason, Suppressed
from pixelpost.store import SQLiteStore

T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "pixelpost.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "pixelpost.db"}"\n')
    return path


def run(config: Path, *args: str) -> int:
    action, *rest = args
    return main(["suppression", action, "-c", str(config), *rest])


def listed(tmp_path: Path) -> list[Suppressed]:
    """The whole list, as the store has it."""

    async def read() -> list[Suppressed]:
        store = await SQLiteStore.open(tmp_path / "pixelpost.db")
        try:
            return await store.suppression_list(limit=1_000_000)
        finally:
            await store.close()

    return asyncio.run(read())


def seed(tmp_path: Path, entries: list[Suppressed]) -> None:
    async def write() -> None:
        store = await SQLiteStore.open(tmp_path / "pixelpost.db")
        try:
            await store.suppress(entries)
        finally:
            await store.close()

    asyncio.run(write())


def stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_add_list_and_remove_without_regard_to_case(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # add makes the store: a list can be loaded before pixelpost first runs
    assert (
        run(config_file, "add", "Jane@Example.COM", "bob@example.org", "--reason", "bounce") == 0
    )
    assert capsys.readouterr().out == "added 2 addresses to the suppression list as BOUNCE\n"
    assert run(config_file, "add", "JANE@example.com", "new@example.net") == 0
    assert capsys.readouterr().out == (
        "added 1 address to the suppression list as MANUAL; "
        "1 address already on it (reason now MANUAL)\n"
    )
    assert [(e.address, e.reason) for e in listed(tmp_path)] == [
        ("bob@example.org", Reason.BOUNCE),
        ("jane@example.com", Reason.MANUAL),
        ("new@example.net", Reason.MANUAL),
    ]

    assert run(config_file, "list") == 0
    header, *rows, summary = capsys.readouterr().out.splitlines()
    assert header.split() == ["SINCE", "(UTC)", "REASON", "MESSAGE", "ID", "ADDRESS"]
    assert [row.split()[2:] for row in rows] == [
        ["BOUNCE", "-", "bob@example.org"],
        ["MANUAL", "-", "jane@example.com"],
        ["MANUAL", "-", "new@example.net"],
    ]
    assert summary == "3 addresses on the suppression list"
    assert run(config_file, "list", "--reason", "Bounce") == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        rows[0],
        "1 address on the suppression list for reason BOUNCE",
    ]

    assert run(config_file, "remove", "BOB@EXAMPLE.ORG", "nobody@example.com") == 0
    assert capsys.readouterr().out == (
        "removed 1 address from the suppression list; not on it: nobody@example.com\n"
    )
    assert [e.address for e in listed(tmp_path)] == ["jane@example.com", "new@example.net"]
    assert run(config_file, "list", "--reason", "COMPLAINT") == 0
    assert capsys.readouterr().out == "no addresses on the suppression list for reason COMPLAINT\n"


def test_list_json_uses_the_api_names(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_file, "list", "--json") == 1  # no store yet: said, and none made
    assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "pixelpost.db").exists()

    seed(
        tmp_path,
        [
            Suppressed(
                address="a@example.com", reason=Reason.BOUNCE, created_at=T0, message_id="m1"
            ),
            Suppressed(address="b@example.com", reason=Reason.MANUAL, created_at=T0),
        ],
    )
    assert run(config_file, "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == [
        {
            "emailAddress": "a@example.com",
            "reason": "BOUNCE",
            "lastUpdateTime": "2026-12-01T09:30:00.000Z",
            "messageId": "m1",
            "configurationSet": None,
        },
        {
            "emailAddress": "b@example.com",
            "reason": "MANUAL",
            "lastUpdateTime": "2026-12-01T09:30:00.000Z",
            "messageId": None,
            "configurationSet": None,
        },
    ]
    assert run(config_file, "list", "--json", "--reason", "COMPLAINT") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_bad_input_is_named_and_changes_nothing(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_file, "add", "ok@example.com") == 0
    capsys.readouterr()
    assert run(config_file, "add", "fine@example.com", "jane", "x@exa mple.com") == 1
    assert capsys.readouterr().err == (
        "pixelpost: not an address: 'jane': no local part and domain; "
        "'x@exa mple.com': malformed domain; nothing changed\n"
    )
    assert run(config_file, "remove", "ok@example.com", "<broken") == 1
    assert "not an address: '<broken'" in capsys.readouterr().err
    assert [e.address for e in listed(tmp_path)] == ["ok@example.com"]

    with pytest.raises(SystemExit) as exited:  # a usage error, through argparse
        run(config_file, "add", "a@example.com", "--reason", "spam")
    assert exited.value.code == 2
    assert "argument --reason: unknown reason 'spam': one of BOUNCE, COMPLAINT" in (
        capsys.readouterr().err
    )


def test_import_reads_a_file_or_standard_input(
    tmp_path: Path,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(tmp_path, [Suppressed(address="old@example.com", reason=Reason.BOUNCE, created_at=T0)])
    csv = tmp_path / "list.csv"
    csv.write_text(
        "address,reason,created_at\n"
        "New@Example.com,complaint,2026-11-30T08:00:00Z\n"
        "OLD@example.com,UNSUBSCRIBE,\n"
        "other@example.com,BOUNCE,2026-11-30T10:00:00+02:00\n"
    )
    assert run(config_file, "import", str(csv)) == 0
    assert capsys.readouterr().out == (
        f"imported 3 rows of {csv}: added 2 addresses to the suppression list, "
        "1 already on it (their reason and time replaced)\n"
    )
    entries = {e.address: e for e in listed(tmp_path)}
    assert (entries["new@example.com"].reason, entries["new@example.com"].created_at) == (
        Reason.COMPLAINT,
        datetime(2026, 11, 30, 8, 0, tzinfo=UTC),
    )
    assert entries["old@example.com"].reason is Reason.UNSUBSCRIBE
    assert entries["old@example.com"].created_at > T0  # no created_at: now
    assert entries["other@example.com"].created_at == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)

    stdin(monkeypatch, b"reason,address\r\nMANUAL,piped@example.com\r\n")
    assert run(config_file, "import", "-") == 0
    assert capsys.readouterr().out == (
        "imported 1 rows of standard input: added 1 address to the suppression list\n"
    )
    assert "piped@example.com" in {e.address for e in listed(tmp_path)}

    stdin(monkeypatch, b"address,reason\n")
    assert run(config_file, "import", "-") == 0
    assert capsys.readouterr().out == "no addresses in standard input: nothing imported\n"


def test_an_import_with_a_bad_row_imports_nothing_and_names_the_lines(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [f"ok{n}@example.com,BOUNCE" for n in range(12_000)]  # past a batch
    rows[7] = "not-an-address,BOUNCE"
    rows[11_000] = "late@example.com,SPAM"
    rows[11_500] = "long@example.com,BOUNCE," + "x" * 2000
    csv = tmp_path / "list.csv"
    csv.write_text("address,reason\n" + "\n".join(rows) + "\n")

    assert run(config_file, "import", str(csv)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"pixelpost: {csv}: line 9: address 'not-an-address': no local part and domain",
        f"pixelpost: {csv}: line 11002: unknown reason 'SPAM': one of BOUNCE, COMPLAINT, "
        "UNSUBSCRIBE, MANUAL",
        f"pixelpost: {csv}: line 11502: longer than 1024 bytes",
        f"pixelpost: {csv}: 3 bad rows; nothing imported",
    ]
    assert not (tmp_path / "pixelpost.db").exists()  # nothing checked out: no store made


def test_a_file_of_many_bad_rows_names_the_first_and_counts_the_rest(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin(monkeypatch, b"address,reason\n" + b"nobody,BOUNCE\n" * (BAD_ROWS_SHOWN + 5))
    assert run(config_file, "import", "-") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == BAD_ROWS_SHOWN + 1
    assert (
        err[0] == "pixelpost: standard input: line 2: address 'nobody': no local part and domain"
    )
    assert err[-1] == (
        f"pixelpost: standard input: {BAD_ROWS_SHOWN + 5} bad rows (5 more not shown); "
        "nothing imported"
    )

    stdin(monkeypatch, b"email,reason\nx@example.com,BOUNCE\n")
    assert run(config_file, "import", "-") == 1
    assert capsys.readouterr().err.splitlines() == [
        "pixelpost: standard input: line 1: unknown column 'email': the first line names the "
        "columns: address,reason[,created_at]",
        "pixelpost: standard input: 1 bad row; nothing imported",
    ]
    assert run(config_file, "import", "missing.csv") == 1
    assert "missing.csv" in capsys.readouterr().err


def test_export_pages_through_the_list_and_imports_back_the_same(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reasons = list(Reason)
    entries = [
        Suppressed(
            address=f"user{n:05}@example.com",
            reason=reasons[n % len(reasons)],
            created_at=datetime.fromtimestamp(T0.timestamp() + n * 60.5, UTC),
            message_id=f"m{n}",
        )
        for n in range(2 * PAGE + 345)  # three pages
    ]
    seed(tmp_path, entries)

    assert run(config_file, "export") == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert captured.err == f"exported {len(entries)} addresses\n"
    assert lines[0] == "address,reason,created_at"
    assert lines[1] == "user00000@example.com,BOUNCE,2026-12-01T09:30:00.000Z"
    assert lines[2] == "user00001@example.com,COMPLAINT,2026-12-01T09:31:00.500Z"
    assert len(lines) == len(entries) + 1
    assert len(set(lines)) == len(lines)  # no page repeated at a page's edge

    exported = tmp_path / "exported.csv"
    assert run(config_file, "export", str(exported)) == 0
    assert capsys.readouterr().out == f"exported {len(entries)} addresses to {exported}\n"
    assert exported.read_text() == captured.out
    assert not list(tmp_path.glob("*.partial"))

    # Into another store: the same list, but for the message ids (not in the CSV).
    other = tmp_path / "other"
    other.mkdir()
    other_config = other / "pixelpost.toml"
    other_config.write_text(f'[store]\nurl = "sqlite:///{other / "pixelpost.db"}"\n')
    assert run(other_config, "import", str(exported)) == 0
    assert capsys.readouterr().out.startswith(f"imported {len(entries)} rows of {exported}")
    assert listed(other) == [
        Suppressed(address=e.address, reason=e.reason, created_at=e.created_at) for e in entries
    ]
    assert run(other_config, "export") == 0
    assert capsys.readouterr().out == captured.out


def test_config_set_names_one_sets_list(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file.write_text(config_file.read_text() + "[config_sets.news]\n")
    assert run(config_file, "add", "jane@example.com", "--config-set", "news") == 0
    assert "added 1 address to the suppression list of configuration set news as MANUAL" in (
        capsys.readouterr().out
    )
    assert listed(tmp_path) == []  # the account's list
    assert run(config_file, "list", "--config-set", "news") == 0
    out = capsys.readouterr().out
    assert "jane@example.com" in out
    assert "1 address on the suppression list of configuration set news" in out
    assert run(config_file, "export", "--config-set", "news") == 0
    assert "jane@example.com,MANUAL," in capsys.readouterr().out
    # Entries go only on a configured set's list.
    assert run(config_file, "add", "bob@example.com", "--config-set", "nws") == 1
    assert "--config-set: no configuration set 'nws' (configured: news)" in (
        capsys.readouterr().err
    )
    assert run(config_file, "remove", "jane@example.com") == 0
    assert "not on it: jane@example.com" in capsys.readouterr().out
    assert run(config_file, "remove", "jane@example.com", "--config-set", "news") == 0
    assert "removed 1 address" in capsys.readouterr().out
