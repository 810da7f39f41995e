"""The store's seam: what the relay, the tracker and the event pipeline ask of it, one
Protocol per role, so that each caller names the role it uses and an implementation
can be held to each role's contract tests (tests/contract/).

    MessageLog   messages (one row per copy: its configuration set and SES mail object)
                 and the event log; each event is routed once into the outbox
    Outbox       one delivery per event and subscribed destination: pending, or dead
                 (a dead letter) once its retries are spent
    Statistics   counters per configuration set, tag, link and hour, rolled up from the
                 events; they outlive the events' retention
    Retention    ages events and message records out
    SuppressionList  addresses that no copy is sent to, and why

Unsubscribes are entries of the suppression list, in the scope they were made for.

`SQLiteStore` implements every role for one machine (pixelpost.store.sqlite);
`PostgreSQLStore` the same Protocols for many relays, trackers and dispatchers on many
machines (pixelpost.store.postgresql).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple, Protocol

from pixelpost.core.event_types import EventType
from pixelpost.core.events import Event
from pixelpost.core.stats import StatsQuery, StatsTable
from pixelpost.core.suppression import Reason, Suppressed
from pixelpost.errors import PixelpostError


class StoreError(PixelpostError):
    """The store cannot be read or written."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MessageRecord:
    """One copy of a message, as events need it."""

    id: str
    config_set: str | None
    created_at: datetime
    mail: str
    """The SES `mail` object, as JSON."""


class Hit(NamedTuple):
    """An open or a click, as the tracker records it. A tuple rather than a dataclass:
    it is made once per request on the tracker's hot path, and the store turns a batch
    of them into events without more Python per hit."""

    kind: EventType
    """OPEN or CLICK."""
    message_id: str
    ip: str
    user_agent: str
    at: float
    """When, as a Unix time."""
    link: str | None = None
    link_tags: str | None = None
    """The click's linkTags, as JSON."""
    machine: bool = False
    """A machine's open or a bot's click (`pixelpost.core.classify`)."""
    reason: str | None = None
    """Why it is a machine's."""
    proxy: str | None = None
    """The proxy a person's open came through."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Claimed:
    """A delivery taken from the outbox: the event to send, as SES JSON."""

    seq: int
    event_id: str
    event_type: EventType
    message_id: str
    config_set: str
    """The configuration set of the event's message ('' if it has none)."""
    attempts: int
    """Failed attempts so far."""
    body: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class DeadLetter:
    """A delivery that exhausted its retries, or whose destination was disabled."""

    event_id: str
    destination: str
    event_type: EventType
    message_id: str
    attempts: int
    last_error: str
    failed_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class DestinationCounts:
    """What became of a destination's events, since the store was created."""

    delivered: int = 0
    failed: int = 0
    """Failed attempts (a dead letter failed at least once)."""
    dead: int = 0
    pending: int = 0


SubscriptionState = Literal["pending", "confirmed", "unsubscribed"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SnsSubscription:
    """An SNS-compatible destination's subscription of its endpoint to its topic."""

    destination: str
    arn: str
    """The subscription's ARN: the topic's, a colon, and a random UUID (which the
    UnsubscribeURL carries)."""
    endpoint: str
    topic_arn: str
    token: str = field(repr=False)
    """What the SubscribeURL carries to confirm it."""
    state: SubscriptionState
    requested_at: float
    changed_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Route:
    """Events of `event_type` about messages of `config_set` go to `destination`."""

    config_set: str
    event_type: EventType
    destination: str


class HitRecorder(Protocol):
    """Where the tracker records opens and clicks."""

    def record_hits(self, hits: Sequence[Hit]) -> Awaitable[None]:
        """Durably record opens and clicks as events: committed when what this returns
        is done. (Not a coroutine: the tracker awaits it straight, one suspension less
        on its hot path.)"""


class Recorder(HitRecorder, Protocol):
    """Where the relay and the tracker record what happened."""

    async def record(
        self,
        *,
        messages: Sequence[MessageRecord] = (),
        events: Sequence[Event] = (),
        suppressions: Sequence[Suppressed] = (),
    ) -> None:
        """Durably record copies and events, and put addresses on the suppression list
        (as `SuppressionList.suppress` does), all in one commit, done when this
        returns."""


class MessageLog(Recorder, Protocol):
    """Copies of messages and the events about them."""

    async def event_counts(self) -> dict[EventType, int]:
        """Events recorded so far, by type."""

    async def message(self, message_id: str) -> MessageRecord | None:
        """The record of one copy (a stub once retention has cut it), or None for a
        copy the store does not know."""

    async def delivered_at(self, message_id: str) -> tuple[float, bool] | None:
        """(when, delivered): when the copy was delivered, or, while no delivery is
        known, when it was accepted (a Unix time); None for a copy the store does not
        know."""


class Outbox(Protocol):
    """Deliveries of events to destinations, at least once."""

    async def route(self, routes: Sequence[Route], *, limit: int = 5000) -> int:
        """Put events not routed yet into the outbox, by the routing table `routes`;
        returns how many events were routed (to no destination, for some)."""

    async def claim(self, destination: str, *, limit: int, lease: float) -> list[Claimed]:
        """Take due deliveries for `destination`, hidden from other claims for `lease`
        seconds (after which a crashed sender's deliveries come back)."""

    async def delivered(self, destination: str, seqs: Sequence[int]) -> None:
        """Remove delivered events from the outbox."""

    async def retry(
        self, destination: str, seq: int, *, attempts: int, at: float, error: str
    ) -> None:
        """Record a failed attempt and when to try again (a Unix time)."""

    async def dead(self, destination: str, seq: int, *, attempts: int, error: str) -> None:
        """Make a delivery a dead letter."""

    async def disable(
        self, destination: str, reason: str, *, seq: int | None = None, attempts: int = 0
    ) -> bool:
        """Stop delivering to `destination`: its pending deliveries become dead letters,
        the one refused (`seq`, when given) with its `attempts`. True when this call
        disabled it, False when it already was (its first reason is kept)."""

    async def disabled(self) -> dict[str, str]:
        """Disabled destinations and why."""

    async def dead_letters(
        self, destination: str | None = None, *, limit: int = 1000
    ) -> list[DeadLetter]:
        """Dead letters, oldest first."""

    async def replay(self, destination: str | None = None) -> int:
        """Queue dead letters again (and enable their destinations); returns how many."""

    async def outbox_depth(self) -> dict[str, int]:
        """Pending deliveries per destination."""

    async def outbox_oldest(self, destinations: Sequence[str]) -> float | None:
        """When the oldest event still waiting was recorded (a Unix time): not routed
        yet, or pending delivery to one of `destinations` (dead letters wait no more,
        and nothing delivers to a destination no longer configured); None when nothing
        waits. For readiness: how far behind the dispatcher is."""

    async def counts(self) -> dict[str, DestinationCounts]:
        """Delivered, failed and dead-lettered events per destination, and the outbox."""

    async def listen(
        self, *, events: Callable[[], None], deliveries: Callable[[str], None]
    ) -> None:
        """From now on call `events()` when another process records events, and
        `deliveries(destination)` when deliveries for it become due, as far as the store
        can tell (PostgreSQL's LISTEN; SQLite tells nothing: the dispatcher polls)."""


class Statistics(Protocol):
    """The counters behind the funnel, the API and the dashboard."""

    async def rollup(self, *, limit: int = 5000) -> int:
        """Add up to `limit` events not counted yet to the statistics; returns how many."""

    async def stats(self, query: StatsQuery) -> StatsTable:
        """The statistics counters that `query` asks for."""


class Retention(Protocol):
    """`store.retention_days`, applied."""

    async def purge(self, before: float) -> tuple[int, int]:
        """Apply retention to what is from before `before` (a Unix time): delete events
        once routed, counted and delivered, and cut message records to stubs that keep
        what routing and counting need; returns how many of each. Statistics stay."""


class SuppressionList(Protocol):
    """The suppression list, shared by every process of the store. Addresses go in and
    are looked up as `pixelpost.core.suppression.normalize` spells them. Each entry has
    a scope: the account (`config_set` None: no mail goes to the address) or one
    configuration set (no mail of that set goes to it: an unsubscribe from it)."""

    async def suppressed(
        self, addresses: Sequence[str], config_set: str | None = None
    ) -> frozenset[str]:
        """Those of `addresses` (normalized) that mail of `config_set` does not go to:
        on the account's list, or on that set's. One lookup for a message's
        recipients."""

    async def suppression(self, address: str, config_set: str | None = None) -> Suppressed | None:
        """The entry for `address` (normalized) in one scope, or None."""

    async def suppress(self, entries: Sequence[Suppressed]) -> int:
        """Put `entries` on the list, replacing an address's entry that is there in the
        same scope (its reason and time become the new ones); returns how many were not
        there before."""

    async def unsuppress(self, address: str, config_set: str | None = None) -> bool:
        """Take `address` (normalized) off the list in one scope; False when it was not
        on it."""

    async def unsubscribe(self, entry: Suppressed, event: Event) -> bool:
        """Put `entry` (reason UNSUBSCRIBE) on the list and record `event` (its
        Subscription), in one commit, unless the address is on the list in that scope
        already, whatever the reason: then nothing changes and this returns False. A
        replayed unsubscribe makes one event."""

    async def resubscribe(self, address: str, config_set: str | None, event: Event) -> bool:
        """Take an unsubscribe's entry for `address` in one scope off the list and
        record `event`, in one commit; False (and nothing changes) when there is none.
        An entry for another reason (a bounce, say) stays."""

    async def suppression_list(
        self,
        *,
        after: str = "",
        limit: int = 1000,
        reason: Reason | None = None,
        config_set: str | None = None,
    ) -> list[Suppressed]:
        """One scope's entries in address order, from the first after `after` (a
        cursor: the last address of the previous page); only those of `reason` when
        given."""


class SnsSubscriptions(Protocol):
    """The subscriptions of SNS-compatible destinations: the dispatcher makes them and
    waits for their confirmation; the tracker's SubscribeURL and UnsubscribeURL change
    their state."""

    async def sns_subscription(self, destination: str) -> SnsSubscription | None:
        """The destination's subscription, if it has one."""

    async def sns_subscribe(
        self, subscription: SnsSubscription, *, replacing: str | None = None
    ) -> SnsSubscription:
        """Store a new subscription and return the one stored: with `replacing` None,
        only if the destination has none (another dispatcher's, made first, wins);
        otherwise only in place of the subscription whose ARN is `replacing`."""

    async def sns_confirm(self, arn: str, token: str) -> SnsSubscription | None:
        """The endpoint visited its SubscribeURL: confirm the pending subscription `arn`
        if `token` is its token (compared in constant time); None if it is not. A
        confirmed subscription stays confirmed (a second visit changes nothing)."""

    async def sns_unsubscribe(self, arn: str) -> SnsSubscription | None:
        """The endpoint visited its UnsubscribeURL: the subscription `arn` ends (None if
        there is no such subscription)."""

    async def sns_subscriptions(self) -> list[SnsSubscription]:
        """Every destination's subscription."""


class Store(
    MessageLog, Outbox, Statistics, Retention, SuppressionList, SnsSubscriptions, Protocol
):
    """Every role, in one store that the process opens and closes."""

    async def ping(self, *, within: float) -> None:
        """Raise StoreError unless the store would take a write within `within` seconds
        (nothing is written). For readiness: a store that is locked or gone says so."""

    async def close(self) -> None:
        """Finish pending writes and release the store."""
