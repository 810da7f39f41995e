"""The MessageLog role: what the tracker looks up about a copy."""

from __future__ import annotations

from datetime import UTC, datetime

from pixelpost.core.events import delivery_event
from tests.contract.campaign import H0, message
from tests.contract.conftest import StoreOpener


async def test_delivery_time_is_known_to_the_tracker(open_store: StoreOpener) -> None:
    store = await open_store()
    try:
        await store.record(messages=[message("m1", "marketing")])
        assert await store.delivered_at("m1") == (H0, False)  # accepted, not delivered yet
        delivered = datetime.fromtimestamp(H0 + 42, UTC)
        await store.record(
            events=[
                delivery_event(
                    "m1",
                    recipients=["r@example.com"],
                    smtp_response="250 ok",
                    processing_ms=5,
                    reporting_mta="relay",
                    now=delivered,
                )
            ]
        )
        assert await store.delivered_at("m1") == (H0 + 42, True)
        assert await store.delivered_at("unknown") is None
    finally:
        await store.close()


async def test_a_copy_record_is_read_back_whole(open_store: StoreOpener) -> None:
    """The intake finds the copy a returned report names, with its set and mail object."""
    store = await open_store()
    recorded = message("m2", "marketing")
    await store.record(messages=[recorded])
    assert await store.message("m2") == recorded
    assert await store.message("m3") is None
