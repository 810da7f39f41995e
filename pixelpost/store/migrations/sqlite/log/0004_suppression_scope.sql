-- The suppression list gets a scope: '' for the whole account (every entry so far), or
-- the configuration set whose mail an unsubscribe stopped (unsubscribe_scope =
-- "config_set"). One row per address and scope.

CREATE TABLE suppression_scoped (
    address TEXT NOT NULL,
    config_set TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL CHECK (reason IN ('BOUNCE', 'COMPLAINT', 'UNSUBSCRIBE', 'MANUAL')),
    created_at REAL NOT NULL,
    message_id TEXT,
    PRIMARY KEY (address, config_set)
) WITHOUT ROWID;

INSERT INTO suppression_scoped (address, config_set, reason, created_at, message_id)
SELECT address, '', reason, created_at, message_id FROM suppression;

DROP TABLE suppression;

ALTER TABLE suppression_scoped RENAME TO suppression;
