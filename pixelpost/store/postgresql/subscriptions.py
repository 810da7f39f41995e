"""The SnsSubscriptions role on PostgreSQL: the subscriptions of SNS-compatible
destinations, shared by every dispatcher and tracker of the store. Two dispatchers that
subscribe at once store one subscription: the first insert wins, and the other reads it
back."""

from __future__ import annotations

import hmac

from pixelpost.store.base import SnsSubscription
from pixelpost.store.postgresql import queries
from pixelpost.store.postgresql.database import Connection, Database
from pixelpost.store.rows import sns_subscription


async def _by(connection: Connection, sql: str, value: str) -> SnsSubscription | None:
    row = await connection.fetchrow(sql, value)
    return None if row is None else sns_subscription(row)


class PostgreSQLSnsSubscriptions:
    """Subscriptions of SNS-compatible destinations (`pixelpost.store.SnsSubscriptions`)."""

    _db: Database

    async def sns_subscription(self, destination: str) -> SnsSubscription | None:
        async def work(connection: Connection) -> SnsSubscription | None:
            return await _by(connection, queries.SNS_BY_DESTINATION, destination)

        return await self._db.transaction(work)

    async def sns_subscribe(
        self, subscription: SnsSubscription, *, replacing: str | None = None
    ) -> SnsSubscription:
        s = subscription
        row = (s.arn, s.endpoint, s.topic_arn, s.token, s.state, s.requested_at, s.changed_at)

        async def work(connection: Connection) -> SnsSubscription:
            if replacing is None:
                await connection.execute(queries.SNS_INSERT, s.destination, *row)
            else:
                await connection.execute(queries.SNS_REPLACE, *row, s.destination, replacing)
            stored = await _by(connection, queries.SNS_BY_DESTINATION, s.destination)
            assert stored is not None
            return stored

        return await self._db.transaction(work)

    async def sns_confirm(self, arn: str, token: str) -> SnsSubscription | None:
        now = self._db.clock()

        async def work(connection: Connection) -> SnsSubscription | None:
            found = await _by(connection, queries.SNS_BY_ARN + " FOR UPDATE", arn)
            if found is None or found.state == "unsubscribed":
                return None
            if not hmac.compare_digest(found.token.encode(), token.encode()):
                return None
            if found.state == "pending":
                await connection.execute(queries.SNS_SET_STATE, "confirmed", now, arn)
            return await _by(connection, queries.SNS_BY_ARN, arn)

        return await self._db.transaction(work)

    async def sns_unsubscribe(self, arn: str) -> SnsSubscription | None:
        now = self._db.clock()

        async def work(connection: Connection) -> SnsSubscription | None:
            found = await _by(connection, queries.SNS_BY_ARN, arn)
            if found is None or found.state == "unsubscribed":
                return found  # nothing to write
            await connection.execute(queries.SNS_SET_STATE, "unsubscribed", now, arn)
            return await _by(connection, queries.SNS_BY_ARN, arn)

        return await self._db.transaction(work)

    async def sns_subscriptions(self) -> list[SnsSubscription]:
        async with self._db.connection() as connection:
            rows = await connection.fetch(queries.SNS_ALL)
        return [sns_subscription(row) for row in rows]
