"""Where pixelpost keeps messages, events, the outbox and the statistics (see `base` for
the seam, one Protocol per role; `buffer` holds opens and clicks while a store is
slow)."""

from __future__ import annotations

from pixelpost.config import StoreConfig
from pixelpost.store.base import (
    Claimed,
    DeadLetter,
    DestinationCounts,
    Hit,
    HitRecorder,
    MessageLog,
    MessageRecord,
    Outbox,
    Recorder,
    Retention,
    Route,
    SnsSubscription,
    SnsSubscriptions,
    Statistics,
    Store,
    StoreError,
    SuppressionList,
)
from pixelpost.store.buffer import HitBuffer
from pixelpost.store.postgresql import PostgreSQLStore
from pixelpost.store.postgresql.database import describe
from pixelpost.store.sqlite import SQLiteStore
from pixelpost.store.sqlite.store import outbox_path

__all__ = [
    "Claimed",
    "DeadLetter",
    "DestinationCounts",
    "Hit",
    "HitBuffer",
    "HitRecorder",
    "MessageLog",
    "MessageRecord",
    "Outbox",
    "PostgreSQLStore",
    "Recorder",
    "Retention",
    "Route",
    "SQLiteStore",
    "SnsSubscription",
    "SnsSubscriptions",
    "Statistics",
    "Store",
    "StoreError",
    "SuppressionList",
    "open_store",
    "store_description",
]


def store_description(config: StoreConfig) -> str:
    """Where the configured store is, for people (a PostgreSQL URL without its
    password)."""
    if config.sqlite_path is not None:
        return str(config.sqlite_path)
    return describe(config.url)


async def open_store(config: StoreConfig, *, create: bool = True) -> Store:
    """The configured store, open and migrated. With `create` false (commands that
    only read or change what is there), a store that does not exist yet is an error
    rather than a new empty one."""
    if config.kind == "sqlite":
        assert config.sqlite_path is not None
        files = (config.sqlite_path, outbox_path(config.sqlite_path))
        if not create and (missing := [f for f in files if not f.exists()]):
            raise StoreError(
                f"no store at {missing[0]} (store.url): has pixelpost run with this configuration?"
            )
        return await SQLiteStore.open(config.sqlite_path)
    return await PostgreSQLStore.open(config.url, create=create)
