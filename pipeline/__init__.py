"""The event pipeline: events recorded by the relay and the tracker are routed into the
outbox, delivered to their destinations (webhooks, files …) with retries and dead
letters (`dispatch`, `destinations`); the background jobs beside it count
events into the statistics and age them out (`jobs`)."""
