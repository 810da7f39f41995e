-- The log: messages (one row per copy, with its SES mail object) and events, only
-- ever appended to by the relay and the tracker, read by the dispatcher.

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    config_set TEXT,
    created_at REAL NOT NULL,
    mail TEXT NOT NULL
);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    created_at REAL NOT NULL,
    detail TEXT NOT NULL
);
