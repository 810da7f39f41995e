"""Readiness: whether this process can do its work now, as checks that each return a
record. `tracker.health` answers /readyz with them; `pixelpost healthcheck` asks it.

    store    the store would take a write within a second (not locked, not gone)
    outbox   no event has waited longer than `tracker.ready_max_outbox_lag` to be
             routed or delivered (dead letters wait no more)
    spool    a file can be made and removed in the relay's spool

Each check bounds its own time, so that a store or disk that hangs makes /readyz say
so within about a second rather than hang with it.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pixelpost.config import Config
from pixelpost.core.values import format_duration, format_span
from pixelpost.store import StoreError

CHECK_TIMEOUT = 1.0
"""Seconds each check may take before it counts as failed."""


class Status(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not this process's to check (said why in the detail)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    """What one check found."""

    name: str
    status: Status
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    """Every check of one readiness question."""

    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if check.status is Status.FAILED)

    @property
    def ready(self) -> bool:
        return not self.failed

    def as_json(self) -> dict[str, object]:
        """The body of /readyz."""
        return {
            "status": "ready" if self.ready else "not ready",
            "failed": [check.name for check in self.failed],
            "checks": {
                check.name: {"status": check.status.value, "detail": check.detail}
                for check in self.checks
            },
        }


Probe = Callable[[], Awaitable[Check]]
"""One check, its collaborators bound."""


class StoreHealth(Protocol):
    """What the checks ask of the store (`pixelpost.store.Store` has it)."""

    async def ping(self, *, within: float) -> None: ...

    async def outbox_oldest(self, destinations: Sequence[str]) -> float | None: ...


async def check_store(store: StoreHealth, *, within: float = CHECK_TIMEOUT) -> Check:
    """The store takes writes. Its own wait for a lock is half the time allowed, so
    that a locked store is reported as locked rather than as silent."""
    try:
        async with asyncio.timeout(within):
            await store.ping(within=within / 2)
    except TimeoutError:
        return Check(name="store", status=Status.FAILED, detail=f"no answer within {within:g}s")
    except StoreError as exc:
        return Check(name="store", status=Status.FAILED, detail=str(exc))
    return Check(name="store", status=Status.OK, detail="takes writes")


async def check_outbox(
    store: StoreHealth,
    *,
    destinations: Sequence[str],
    max_lag: float,
    clock: Callable[[], float] = time.time,
    within: float = CHECK_TIMEOUT,
) -> Check:
    """No event has waited longer than `max_lag` seconds to be routed or delivered to
    one of `destinations`; 0 turns the check off."""
    if not max_lag:
        return Check(
            name="outbox", status=Status.SKIPPED, detail="off (tracker.ready_max_outbox_lag = 0)"
        )
    try:
        async with asyncio.timeout(within):
            oldest = await store.outbox_oldest(destinations)
    except TimeoutError:
        return Check(
            name="outbox",
            status=Status.FAILED,
            detail=f"no answer from the store within {within:g}s",
        )
    except StoreError as exc:
        return Check(name="outbox", status=Status.FAILED, detail=f"cannot be read: {exc}")
    bound = format_duration(max_lag)
    if oldest is None:
        return Check(name="outbox", status=Status.OK, detail="nothing waits")
    waited = clock() - oldest
    if waited > max_lag:
        return Check(
            name="outbox",
            status=Status.FAILED,
            detail=f"an event has waited {format_span(waited)} to be delivered, longer than "
            f"tracker.ready_max_outbox_lag ({bound})",
        )
    return Check(
        name="outbox",
        status=Status.OK,
        detail=f"the oldest event waiting came {format_span(waited)} ago (at most {bound})",
    )


def _make_and_remove(spool: Path, *, required: bool) -> bool:
    """Whether a file was made and removed in `spool`; False when there is no spool
    and none is `required`. OSError when one cannot be made."""
    if not required and not spool.exists():
        return False
    path = spool / "tmp" / f".readyz-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"x")  # a full disk refuses the byte, not the name
    finally:
        os.close(fd)
        path.unlink()
    return True


async def check_spool(path: Path, *, required: bool, within: float = CHECK_TIMEOUT) -> Check:
    """A file can be made, written and removed where the spool writes (`spool/tmp`).
    Where the relay does not run (`required` false), a spool that is not on this
    machine is skipped."""
    try:
        async with asyncio.timeout(within):
            made = await asyncio.to_thread(_make_and_remove, path, required=required)
    except TimeoutError:
        return Check(
            name="spool",
            status=Status.FAILED,
            detail=f"{path}: no file made within {within:g}s",
        )
    except OSError as exc:
        return Check(
            name="spool",
            status=Status.FAILED,
            detail=f"{path} is not writable: {exc.strerror or exc}",
        )
    if not made:
        return Check(
            name="spool",
            status=Status.SKIPPED,
            detail=f"no spool at {path} on this machine (relay.outbound.spool)",
        )
    return Check(name="spool", status=Status.OK, detail=f"{path} is writable")


async def _skipped(name: str, detail: str) -> Check:
    return Check(name=name, status=Status.SKIPPED, detail=detail)


def probes_for(config: Config, store: StoreHealth, *, relay: bool, tracker: bool) -> list[Probe]:
    """The checks of a process that runs the relay, the tracker or both: the outbox is
    the tracker's to watch (its dispatcher delivers it), the spool the relay's (and
    the tracker's too when the spool is on its machine)."""
    outbox: Probe = (
        functools.partial(
            check_outbox,
            store,
            destinations=sorted(config.destinations),
            max_lag=config.tracker.ready_max_outbox_lag,
        )
        if tracker
        else functools.partial(_skipped, "outbox", "delivered by the tracker, not here")
    )
    return [
        functools.partial(check_store, store),
        outbox,
        functools.partial(check_spool, config.relay.spool, required=relay),
    ]


async def readiness(probes: Sequence[Probe]) -> Report:
    """Run the checks side by side."""
    return Report(checks=tuple(await asyncio.gather(*(probe() for probe in probes))))
