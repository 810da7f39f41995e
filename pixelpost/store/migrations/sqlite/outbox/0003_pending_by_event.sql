-- The oldest pending delivery of each destination, found without reading the others:
-- readiness asks for it every few seconds, however long the outbox grows while an
-- endpoint is down.
CREATE INDEX deliveries_pending ON deliveries (destination, event_seq) WHERE state = 'pending';
