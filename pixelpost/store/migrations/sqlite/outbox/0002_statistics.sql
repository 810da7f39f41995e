-- Statistics, rolled up from the log by the process that routes (the events they come
-- from may be purged; these stay): one counter per period, tag, link, configuration
-- set, bucket and metric. period is 3600 (bucket: the hour's start) or 86400 (the
-- day's), each event counted in both, so that a long range reads days and only its
-- ends read hours. tag is '' for all of a set's mail, else "name:value"; link is ''
-- for counts per copy, else the URL clicked; config_set is '' for mail without a set.
-- stats_firsts remembers which copies already counted towards a unique count
-- ("open:human", "click:bot" + U+001F + URL …), so that each counts once.

CREATE TABLE stats (
    period INTEGER NOT NULL,
    tag TEXT NOT NULL,
    link TEXT NOT NULL,
    config_set TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (period, tag, link, config_set, bucket, metric)
) WITHOUT ROWID;

CREATE TABLE stats_firsts (
    message_id TEXT NOT NULL,
    what TEXT NOT NULL,
    PRIMARY KEY (message_id, what)
) WITHOUT ROWID;

INSERT INTO cursors (name, seq) VALUES ('rolled_up', 0);
-- How far retention has cut message records to stubs (a rowid of messages).
INSERT INTO cursors (name, seq) VALUES ('stubbed', 0);
