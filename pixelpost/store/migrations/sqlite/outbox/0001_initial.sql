-- The outbox: one delivery per event and destination, how far routing has read the
-- log, what each destination's events became, and destinations an endpoint disabled.
-- Only the dispatcher (and the CLI) write here, so they never wait on the log's writer.

CREATE TABLE cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
INSERT INTO cursors (name, seq) VALUES ('routed', 0);

CREATE TABLE deliveries (
    event_seq INTEGER NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (event_seq, destination)
);
CREATE INDEX deliveries_due ON deliveries (destination, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries (destination) WHERE state = 'dead';

CREATE TABLE destination_counts (
    name TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE disabled_destinations (
    name TEXT PRIMARY KEY,
    disabled_at REAL NOT NULL,
    reason TEXT NOT NULL
);
