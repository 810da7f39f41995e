"""The Retention role: what a purge keeps until routing, counting and delivery are
done with it."""

from __future__ import annotations

from tests.contract.campaign import ARCHIVE, H0, H1, message, opened
from tests.contract.conftest import StoreOpener


async def test_purge_keeps_what_is_not_counted_routed_or_delivered_yet(
    open_store: StoreOpener,
) -> None:
    store = await open_store()
    try:
        await store.record(messages=[message("m1", "marketing")])
        await store.record_hits([opened("m1", H0), opened("m1", H0 + 1), opened("m1", H0 + 2)])
        assert await store.purge(H1) == (0, 0)  # not routed: the record stays whole
        await store.route(ARCHIVE)
        assert await store.purge(H1) == (0, 0)  # routed, but not counted or delivered
        await store.rollup()
        assert await store.purge(H1) == (0, 0)  # counted, not delivered
        [first, *rest] = await store.claim("archive", limit=100, lease=60)
        await store.delivered("archive", [first.seq])
        assert await store.purge(H1) == (1, 0)  # the first is gone; its copy still waits
        await store.delivered("archive", [c.seq for c in rest])
        assert await store.purge(H1) == (1, 1)  # the newest event always stays
        # Numbering goes on after a purge: new events are routed and counted.
        await store.record_hits([opened("m1", H1)])
        assert await store.route(ARCHIVE) == 1
        assert await store.rollup() == 1
    finally:
        await store.close()
