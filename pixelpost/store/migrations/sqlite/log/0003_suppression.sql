-- The suppression list: one row per address (lowercased), why and since when; the copy
-- whose bounce or complaint put it there, when one did.

CREATE TABLE suppression (
    address TEXT PRIMARY KEY,
    reason TEXT NOT NULL CHECK (reason IN ('BOUNCE', 'COMPLAINT', 'UNSUBSCRIBE', 'MANUAL')),
    created_at REAL NOT NULL,
    message_id TEXT
) WITHOUT ROWID;
