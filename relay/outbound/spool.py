"""The spool: where accepted mail waits, safe on disk, until it is delivered or bounced.

    spool/tmp/<id>     being written; what is left here at start was never accepted
    spool/queue/<id>   accepted: written, fsync'd, renamed here, the directory fsync'd,
                       all before the client hears 250
    spool/state/<id>   how delivery went so far (attempts, next attempt, recipients
                       done); replaced atomically, not fsync'd: losing it to a crash
                       means trying sooner or sending again, never losing mail
    spool/flush        touched by `pixelpost queue flush`: every relay retries now

One file per accepted message, however many recipients (`relay.outbound.spoolfile` is its
format). Relay processes sharing a spool take a flock on a file while they deliver it,
so that no message goes out twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from relay.outbound.spoolfile import CorruptSpoolFile, Envelope, SpoolError, decode, encode_parts

T = TypeVar("T")

IO_THREADS = 4
"""Threads writing spool files: fsyncs of several messages proceed side by side."""
ABANDONED_AFTER = 60.0
"""Seconds after which an unlocked file in spool/tmp is a dead writer's leftover."""

__all__ = ["Claim", "CorruptSpoolFile", "Envelope", "Lock", "Spool", "SpoolError", "State"]


@dataclass(kw_only=True, slots=True)
class State:
    """How delivery of one spool file went so far."""

    attempts: int = 0
    """Deferrals so far."""
    sent: bool = False
    """Whether the first attempt is over (every copy's Send event is recorded by then)."""
    next_attempt_at: float = 0.0
    first_deferred_at: float | None = None
    done: list[str] = field(default_factory=list)
    """Recipients already delivered or bounced."""
    last_error: str = ""


def _well_formed(state: State) -> bool:
    """Whether a state read back has the types it should (a damaged one starts over)."""
    return (
        isinstance(state.attempts, int)
        and isinstance(state.sent, bool)
        and isinstance(state.next_attempt_at, int | float)
        and isinstance(state.first_deferred_at, int | float | None)
        and isinstance(state.done, list)
        and all(isinstance(recipient, str) for recipient in state.done)
        and isinstance(state.last_error, str)
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Depth:
    """How many messages a spool holds."""

    queued: int
    """All of them."""
    deferred: int
    """Those deferred at least once."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    """What `pixelpost queue` shows."""

    queued: int
    due: int
    """Messages to be tried now: new ones, and deferred ones whose time has come."""
    oldest: tuple[str, float] | None
    """The oldest message's id and when it was spooled."""
    next_retry: float | None
    """When the next deferred message is retried."""
    corrupt: int
    """Damaged files moved aside to spool/corrupt/."""


def depth(path: Path) -> Depth | None:
    """How many messages the spool at `path` holds; None if there is none there. Cheap
    (two directory listings): for metrics."""
    try:
        queued = sum(1 for entry in os.scandir(path / "queue") if not entry.name.startswith("."))
        deferred = sum(1 for entry in os.scandir(path / "state") if not entry.name.startswith("."))
    except FileNotFoundError:
        return None
    return Depth(queued=queued, deferred=deferred)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirectorySync:
    """fsyncs a directory for everyone who asked while the last fsync ran: one fsync
    makes a burst of renames durable."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor) -> None:
        self._path = path
        self._executor = executor
        self._waiting: list[asyncio.Future[None]] = []
        self._running = False

    async def sync(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if not self._running:
            self._start()
        await asyncio.shield(future)

    def _start(self) -> None:
        waiting, self._waiting = self._waiting, []
        self._running = True
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, _fsync_directory, self._path)

        def finished(result: asyncio.Future[None]) -> None:
            self._running = False
            error = result.exception()
            for future in waiting:
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(SpoolError(f"cannot sync the spool: {error}"))
                else:
                    future.set_result(None)
            if self._waiting:
                self._start()

        done.add_done_callback(finished)


class Lock:
    """A delivery's hold on a spool file (released on close, or when the process dies)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass(frozen=True, kw_only=True, slots=True)
class Claim:
    """A message held for a delivery attempt."""

    lock: Lock
    state: State
    envelope: Envelope
    content: bytes


class Spool:
    """The spool directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path / "tmp"
        self.queue = path / "queue"
        self.states = path / "state"
        self._executor = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="spool")
        self._queue_sync = _DirectorySync(self.queue, self._executor)

    def open(self) -> list[str]:
        """Create the directories; remove what was never accepted; return the ids of the
        messages waiting."""
        try:
            for folder in (self.tmp, self.queue, self.states):
                folder.mkdir(parents=True, exist_ok=True)
            self._remove_abandoned()
            return self.ids()
        except OSError as exc:
            raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc

    def _remove_abandoned(self) -> None:
        """Remove what a process that died was writing (never accepted). Files being
        written are locked by their writer; those and recent ones are other relay
        processes' work in progress on a shared spool."""
        old = time.time() - ABANDONED_AFTER
        for leftover in os.scandir(self.tmp):
            try:
                fd = os.open(leftover.path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # renamed into the queue meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_mtime < old:
                    os.unlink(leftover.path)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)

    def ids(self) -> list[str]:
        """The messages in the queue, oldest first (ids are time-ordered)."""
        return sorted(entry.name for entry in os.scandir(self.queue) if entry.is_file())

    async def commit(self, copies: Sequence[tuple[Envelope, bytes]]) -> None:
        """Make the copies durable: when this returns, they survive a crash."""
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(self._executor, self._write, e, c) for e, c in copies),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            # All or nothing: the client is told to send it again.
            for (envelope, _), result in zip(copies, results, strict=True):
                if not isinstance(result, BaseException):
                    with contextlib.suppress(FileNotFoundError):
                        (self.queue / envelope.id).unlink()
            if isinstance(failed[0], OSError):
                raise SpoolError(f"cannot write to the spool {self.path}: {failed[0]}")
            raise failed[0]
        await self._queue_sync.sync()

    def _write(self, envelope: Envelope, content: bytes) -> None:
        temporary = self.tmp / envelope.id
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # in progress: see _remove_abandoned
            parts = [memoryview(part) for part in encode_parts(envelope, content)]
            while parts:
                written = os.writev(fd, parts)
                while parts and written >= len(parts[0]):
                    written -= len(parts.pop(0))
                if parts:
                    parts[0] = parts[0][written:]
            os.fsync(fd)
            os.rename(temporary, self.queue / envelope.id)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        finally:
            os.close(fd)

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """Run blocking spool work on the spool's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def lock(self, message_id: str) -> Lock | None:
        """Hold the message for delivery; None if another process holds it, or if it is
        gone."""
        try:
            fd = os.open(self.queue / message_id, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not (self.queue / message_id).exists():  # delivered by the holder we waited for
            os.close(fd)
            return None
        return Lock(fd)

    def claim(self, message_id: str, known: tuple[Envelope, bytes] | None = None) -> Claim | None:
        """Everything a delivery attempt needs, in one go: the lock, the state and the
        message (read from the file unless `known`). None if another process holds it
        or it is gone; CorruptSpoolFile if the file is damaged."""
        lock = self.lock(message_id)
        if lock is None:
            return None
        try:
            state = self.state(message_id)
            envelope, content = known if known is not None else self.read(lock)
            if envelope.id != message_id:
                raise CorruptSpoolFile(f"the envelope names another message, {envelope.id}")
        except BaseException:
            lock.release()
            raise
        return Claim(lock=lock, state=state, envelope=envelope, content=content)

    def finish(self, claim: Claim, *, done: bool) -> None:
        """Release a claim: remove the message when `done`, else save its state."""
        try:
            if done:
                self.remove(claim.envelope.id)
            else:
                self.save_state(claim.envelope.id, claim.state)
        finally:
            claim.lock.release()

    def read(self, lock: Lock) -> tuple[Envelope, bytes]:
        """The envelope and message of a held spool file."""
        size = os.fstat(lock.fd).st_size
        chunks = []
        offset = 0
        while offset < size:
            chunk = os.pread(lock.fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return decode(b"".join(chunks))

    def state(self, message_id: str) -> State:
        try:
            values = json.loads((self.states / message_id).read_bytes())
        except FileNotFoundError:
            return State()
        except ValueError:
            return State()  # a state torn by a crash: start over, which sends again at worst
        try:
            state = State(**values)
        except TypeError:  # not a state this version wrote: start over as well
            return State()
        if not _well_formed(state):
            return State()
        return state

    def save_state(self, message_id: str, state: State) -> None:
        # A name of its own: a relay and `pixelpost queue flush` may both be saving.
        temporary = self.states / f".{message_id}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        temporary.write_text(json.dumps(asdict(state)))
        os.replace(temporary, self.states / message_id)

    def remove(self, message_id: str) -> None:
        """Forget a message that is done with: its state, then the message itself."""
        with contextlib.suppress(FileNotFoundError):
            (self.states / message_id).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.queue / message_id).unlink()

    def quarantine(self, message_id: str) -> Path:
        """Move a damaged spool file aside (spool/corrupt/), for an operator to look at."""
        corrupt = self.path / "corrupt"
        corrupt.mkdir(exist_ok=True)
        target = corrupt / message_id
        os.replace(self.queue / message_id, target)
        with contextlib.suppress(FileNotFoundError):
            (self.states / message_id).unlink()
        return target

    def exists(self) -> bool:
        return self.queue.is_dir()

    def summary(self, now: float) -> Summary:
        """Counts, the oldest message and the next retry (reads every state file)."""
        ids = self.ids()
        next_attempts = [self.state(message_id).next_attempt_at for message_id in ids]
        oldest = None
        for message_id in ids[:1]:
            with contextlib.suppress(FileNotFoundError):
                oldest = (message_id, (self.queue / message_id).stat().st_mtime)
        later = [at for at in next_attempts if at > now]
        try:
            corrupt = sum(1 for _ in os.scandir(self.path / "corrupt"))
        except FileNotFoundError:
            corrupt = 0
        return Summary(
            queued=len(ids),
            due=len(ids) - len(later),
            oldest=oldest,
            next_retry=min(later, default=None),
            corrupt=corrupt,
        )

    def request_flush(self) -> int:
        """Ask every relay on this spool to retry everything now; returns how many
        messages were waiting for a retry."""
        now = time.time()
        flushed = 0
        for message_id in self.ids():
            lock = self.lock(message_id)
            if lock is None:
                continue  # being delivered right now, or just done
            try:
                state = self.state(message_id)
                if state.next_attempt_at > now:
                    state.next_attempt_at = now
                    self.save_state(message_id, state)
                    flushed += 1
            finally:
                lock.release()
        (self.path / "flush").write_text(f"{now}\n")
        return flushed

    def flush_requested_at(self) -> float:
        try:
            return (self.path / "flush").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def close(self) -> None:
        self._executor.shutdown(wait=True)
