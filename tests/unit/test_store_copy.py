"""`pixelpost store copy`'s pure parts: which pairs of stores it copies, and its table of
counts (the copy itself: tests/integration/test_store_copy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelpost.app.store_copy import Copied, Counted, endpoints, format_counts
from pixelpost.errors import PixelpostError


def test_sqlite_to_postgresql_is_the_pair_copied() -> None:
    assert endpoints("sqlite:///var/pixelpost.db", "postgres://u:p@db/pixelpost") == (
        Path("var/pixelpost.db"),
        "postgres://u:p@db/pixelpost",
    )
    assert endpoints("sqlite:////srv/p.db", "postgresql://db/p")[0] == Path("/srv/p.db")


@pytest.mark.parametrize(
    ("source", "target", "shown"),
    [
        (
            "postgresql://u:secret@db/p",
            "sqlite:///p.db",
            "from postgresql://u@db/p to sqlite:///p.db",
        ),
        ("sqlite:///a.db", "sqlite:///b.db", "from sqlite:///a.db to sqlite:///b.db"),
        ("sqlite:///", "postgresql://db/p", "from sqlite:/// to postgresql://db/p"),
        ("mysql://u:secret@db/p", "postgresql://db/p", "from mysql://db/p to postgresql://db/p"),
    ],
)
def test_other_pairs_are_refused_naming_the_one_supported_and_no_password(
    source: str, target: str, shown: str
) -> None:
    with pytest.raises(PixelpostError) as refused:
        endpoints(source, target)
    assert str(refused.value) == (
        f"cannot copy {shown}: pixelpost store copy copies a SQLite store into PostgreSQL "
        "(--from sqlite:///PATH --to postgresql://…)"
    )


def test_the_counts_line_up_and_a_difference_is_named() -> None:
    copied = Copied(
        tables=[
            Counted(table="messages", source=1200, target=1200),
            Counted(table="route_queue", source=7, target=6),
        ],
        last_event=12,
    )
    assert format_counts(copied) == [
        "TABLE        SOURCE  TARGET  CHECK",
        "messages       1200    1200  ok",
        "route_queue       7       6  MISMATCH",
    ]
    assert not copied.matches
    assert Copied(tables=copied.tables[:1]).matches
