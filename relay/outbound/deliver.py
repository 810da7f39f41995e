"""One delivery of one spooled message, from the spool and back to it.

`Deliverer.deliver` claims the message (its lock, state and content), runs an attempt
(`relay.outbound.attempt`) at it, and then leaves the spool as the outcome says: the
message removed once every recipient is delivered or bounced, else its state saved for
the next attempt. The attempt records its events before it returns, so nothing leaves
the spool before its outcome is recorded; a crash in between sends a copy again rather
than losing its events.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable

from pixelpost.config import RelayConfig
from pixelpost.core.retry import next_attempt_at
from pixelpost.core.rewrite import MessagePlan
from pixelpost.logs import fields
from pixelpost.store import Recorder, SuppressionList
from relay.outbound.attempt import Attempt, Limits, Notify
from relay.outbound.fresh import Fresh, FreshMessages
from relay.outbound.spool import Claim, CorruptSpoolFile, Spool, State
from relay.outbound.upstream import Transport
from relay.tracking import Rewriter

# The delivery queue's logger: its lines keep the `logger` they always had.
log = logging.getLogger("relay.outbound.queue")

LARGE_DELIVERIES_AT_ONCE = 4
"""Copies over 1 MB sent at once: the SMTP client copies a message twice as it sends
it (line endings, dot-stuffing)."""


class Deliverer:
    """Delivers spooled messages one attempt at a time, each as `deliver` is called;
    the copies of all of them share one set of `Limits`."""

    def __init__(
        self,
        *,
        spool: Spool,
        transport: Transport,
        recorder: Recorder,
        suppression: SuppressionList,
        rewriter: Rewriter,
        relay: RelayConfig,
        fresh: FreshMessages,
        notify: Notify,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._spool = spool
        self._transport = transport
        self._recorder = recorder
        self._suppression = suppression
        self._rewriter = rewriter
        self._relay = relay
        self._fresh = fresh
        self._notify = notify
        self._clock = clock
        self._rng = rng
        self._limits = Limits(
            concurrency=relay.concurrency,
            sends=asyncio.Semaphore(relay.concurrency),
            large=asyncio.Semaphore(LARGE_DELIVERIES_AT_ONCE),
        )

    async def deliver(self, message_id: str) -> float | None:
        """One attempt at a spooled message; returns when to try it again, if ever."""
        spool = self._spool
        fresh = self._fresh.take(message_id)
        claim = await self._claim(message_id, fresh)
        if claim is None:
            return None
        done: bool | None = None  # None: the attempt did not happen; leave the files
        try:
            if claim.state.next_attempt_at > self._clock() + 1:
                return claim.state.next_attempt_at  # another relay process deferred it
            again = await self._attempt(claim, fresh.plan if fresh is not None else None).run()
            done = again is None
            return again
        except Exception:  # a bug must not lose the message: it stays spooled
            log.exception(
                "%s: delivery failed unexpectedly; will try again",
                message_id,
                extra=fields(message_id=message_id),
            )
            done = False  # what the attempt did so far is saved, and it backs off
            return self._back_off(claim)
        finally:
            if done is None:
                claim.lock.release()
            else:
                # Shielded: once the upstream has it, a stop must not skip the removal.
                await asyncio.shield(spool.run(functools.partial(spool.finish, claim, done=done)))

    async def _claim(self, message_id: str, fresh: Fresh | None) -> Claim | None:
        """The message, held for this attempt (from memory when `fresh`). None if it is
        delivered, or being delivered, by another process, or if its file is damaged:
        that one is moved aside for an operator."""
        spool = self._spool
        known = (fresh.envelope, fresh.content) if fresh is not None else None
        try:
            return await spool.run(spool.claim, message_id, known)
        except CorruptSpoolFile as exc:
            where = await spool.run(spool.quarantine, message_id)
            log.error(
                "%s: damaged spool file moved to %s: %s",
                message_id,
                where,
                exc,
                extra=fields(message_id=message_id),
            )
            return None

    def _attempt(self, claim: Claim, plan: MessagePlan | None) -> Attempt:
        spool = self._spool

        async def save_state(state: State) -> None:
            await spool.run(spool.save_state, claim.envelope.id, state)

        return Attempt(
            envelope=claim.envelope,
            content=claim.content,
            state=claim.state,
            plan=plan,
            transport=self._transport,
            recorder=self._recorder,
            suppression=self._suppression,
            rewriter=self._rewriter,
            relay=self._relay,
            limits=self._limits,
            save_state=save_state,
            notify=self._notify,
            clock=self._clock,
            rng=self._rng,
        )

    def _back_off(self, claim: Claim) -> float:
        """When to try a message again whose attempt failed for want of a reply to
        count: on the retry schedule, and past its lifetime at the longest delay."""
        state = claim.state
        state.attempts += 1
        now = self._clock()
        delays = self._relay.retry_delays
        due = next_attempt_at(
            attempts=state.attempts,
            delays=delays,
            now=now,
            expires_at=claim.envelope.expires_at,
            rng=self._rng,
        )
        state.next_attempt_at = due if due > now else now + delays[-1]
        return state.next_attempt_at
