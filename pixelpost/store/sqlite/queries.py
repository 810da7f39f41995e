"""Every statement of the SQLite store, by name, grouped by role (the log, the outbox,
the statistics, retention). The log is the database `main` (pixelpost.db), the outbox
the attached database `outbox` (pixelpost-outbox.db); see pixelpost.store.sqlite.

Statements that take a JSON array as a parameter read it with `json_each`: a batch of
any size is one statement and one round trip. The only SQL built at run time is the
statistics reader's WHERE clause (pixelpost.store.sqlite.statistics), from fixed parts.
"""

# -- The log: written by the group commit (pixelpost.store.sqlite.writer) --------------

# Each copy's message tags (not SES's own `ses:` ones) as "name:value" strings, for the
# statistics per tag.
INSERT_MESSAGES = (
    "INSERT OR IGNORE INTO messages (id, config_set, created_at, mail, tags)"
    " SELECT m.value ->> 0, m.value ->> 1, m.value ->> 2, m.value ->> 3,"
    "  (SELECT json_group_array(DISTINCT t.key || ':' || v.value)"
    "   FROM json_each(m.value ->> 3, '$.tags') AS t, json_each(t.value) AS v"
    "   WHERE t.key NOT LIKE 'ses:%')"
    " FROM json_each(?) AS m"
)
INSERT_EVENTS = (
    "INSERT INTO events (id, message_id, type, created_at, detail)"
    " SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?)"
)
# The detail objects in SES's key order, then pixelpost's additions (`pixelpost.core.classify`).
INSERT_HITS = (
    "INSERT INTO events (id, message_id, type, created_at, detail)"
    " SELECT lower(hex(randomblob(16))), value ->> 1, value ->> 0, value ->> 4,"
    "  CASE WHEN value ->> 5 IS NULL THEN json_object("
    "   'ipAddress', value ->> 2,"
    "   'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', value ->> 4, 'unixepoch'),"
    "   'userAgent', value ->> 3,"
    "   'machine', json(iif(value ->> 7, 'true', 'false')),"
    "   'machineReason', value ->> 8,"
    "   'proxy', value ->> 9)"
    "  ELSE json_object("
    "   'ipAddress', value ->> 2,"
    "   'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', value ->> 4, 'unixepoch'),"
    "   'userAgent', value ->> 3,"
    "   'link', value ->> 5,"
    "   'linkTags', json(value ->> 6),"
    "   'bot', json(iif(value ->> 7, 'true', 'false')),"
    "   'botReason', value ->> 8) END"
    " FROM json_each(?)"
)
# When each copy was delivered, for the classification of clicks soon after.
MARK_DELIVERED = (
    "UPDATE messages SET delivered_at = d.at"
    " FROM (SELECT value ->> 1 AS id, min(value ->> 3) AS at FROM json_each(?)"
    "  WHERE value ->> 2 = 'delivery' GROUP BY value ->> 1) AS d"
    " WHERE messages.id = d.id AND messages.delivered_at IS NULL"
)
# Events counted by type as they are written (for /metrics), in the same transaction.
COUNT_EVENTS = (
    "INSERT INTO counters (name, value) SELECT value ->> 2, count(*) FROM json_each(?)"
    " WHERE true GROUP BY value ->> 2"
    " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
)
COUNT_HITS = (
    "INSERT INTO counters (name, value) SELECT value ->> 0, count(*) FROM json_each(?)"
    " WHERE true GROUP BY value ->> 0"
    " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
)

# -- The log: lookups -----------------------------------------------------------------

DELIVERED_AT = (
    "SELECT coalesce(delivered_at, created_at), delivered_at IS NOT NULL"
    " FROM main.messages WHERE id = ?"
)
MESSAGE = "SELECT id, config_set, created_at, mail FROM main.messages WHERE id = ?"
EVENT_COUNTS = "SELECT name, value FROM main.counters"
NEWEST_EVENT = "SELECT coalesce(max(seq), 0) FROM main.events"

# -- The outbox -----------------------------------------------------------------------

ROUTING_BEHIND = (
    "SELECT seq < (SELECT coalesce(max(seq), 0) FROM main.events) FROM outbox.cursors"
    " WHERE name = 'routed'"
)
# The cursor is written first, so that the outbox is locked before the log is read.
LOCK_ROUTED = "UPDATE outbox.cursors SET seq = seq WHERE name = 'routed' RETURNING seq"
SET_ROUTED = "UPDATE outbox.cursors SET seq = ? WHERE name = 'routed'"
# The routing table joins in as JSON: fanning a batch of events out to their
# destinations is one statement, run by SQLite.
ROUTE = (
    "INSERT OR IGNORE INTO outbox.deliveries"
    " (event_seq, destination, state, next_attempt_at, last_error, updated_at)"
    " SELECT e.seq, r.value ->> 2, iif(d.name IS NULL, 'pending', 'dead'), ?,"
    "  d.reason, ?"
    " FROM main.events e JOIN main.messages m ON m.id = e.message_id"
    " JOIN json_each(?) r ON r.value ->> 0 = m.config_set AND r.value ->> 1 = e.type"
    " LEFT JOIN outbox.disabled_destinations d ON d.name = r.value ->> 2"
    " WHERE e.seq > ? AND e.seq <= ?"
)
ROUTED_DEAD = (
    "SELECT destination, count(*) FROM outbox.deliveries"
    " WHERE event_seq > ? AND event_seq <= ? AND state = 'dead'"
    " GROUP BY destination"
)
CLAIM = (
    "UPDATE outbox.deliveries SET next_attempt_at = ?, updated_at = ?"
    " WHERE rowid IN (SELECT rowid FROM outbox.deliveries"
    "  WHERE destination = ? AND state = 'pending' AND next_attempt_at <= ?"
    "  ORDER BY next_attempt_at LIMIT ?)"
    " RETURNING event_seq, attempts"
)
CLAIMED_EVENTS = (
    "SELECT e.seq, e.id, e.type, e.message_id, e.detail, m.mail, m.config_set"
    " FROM main.events e"
    " LEFT JOIN main.messages m ON m.id = e.message_id"
    " WHERE e.seq IN (SELECT value FROM json_each(?)) ORDER BY e.seq"
)
COUNT_DELIVERED, COUNT_FAILED, COUNT_DEAD = (
    f"INSERT INTO outbox.destination_counts (name, {column}) VALUES (?, ?)"  # noqa: S608 (a fixed column)
    f" ON CONFLICT (name) DO UPDATE SET {column} = {column} + excluded.{column}"
    for column in ("delivered", "failed", "dead")
)
DELETE_DELIVERED = (
    "DELETE FROM outbox.deliveries WHERE destination = ?"
    " AND event_seq IN (SELECT value FROM json_each(?))"
)
RETRY = (
    "UPDATE outbox.deliveries SET attempts = ?, next_attempt_at = ?, last_error = ?,"
    " updated_at = ? WHERE event_seq = ? AND destination = ?"
)
DEAD = (
    "UPDATE outbox.deliveries SET state = 'dead', attempts = ?, last_error = ?,"
    " updated_at = ? WHERE event_seq = ? AND destination = ?"
)
DISABLE = (
    "INSERT OR IGNORE INTO outbox.disabled_destinations (name, disabled_at, reason)"
    " VALUES (?, ?, ?)"
)
SET_ATTEMPTS = "UPDATE outbox.deliveries SET attempts = ? WHERE event_seq = ? AND destination = ?"
DEAD_PENDING = (
    "UPDATE outbox.deliveries SET state = 'dead', last_error = ?, updated_at = ?"
    " WHERE destination = ? AND state = 'pending'"
)
DISABLED = "SELECT name, reason FROM outbox.disabled_destinations"
DEAD_LETTERS = (
    "SELECT e.id, d.destination, e.type, e.message_id, d.attempts, d.last_error,"
    " d.updated_at FROM outbox.deliveries d JOIN main.events e ON e.seq = d.event_seq"
    " WHERE d.state = 'dead' AND (? IS NULL OR d.destination = ?)"
    " ORDER BY d.updated_at, e.seq LIMIT ?"
)
REPLAY = (
    "UPDATE outbox.deliveries SET state = 'pending', attempts = 0,"
    " next_attempt_at = ?, updated_at = ?"
    " WHERE state = 'dead' AND (? IS NULL OR destination = ?)"
)
ENABLE = "DELETE FROM outbox.disabled_destinations WHERE ? IS NULL OR name = ?"
# Events are numbered as they are recorded: the lowest number waiting is, near enough,
# the oldest event, and each destination's is one step of an index.
OLDEST_WAITING = (
    "SELECT min(e.created_at) FROM main.events e WHERE e.seq IN ("
    " SELECT (SELECT min(event_seq) FROM outbox.deliveries"
    "  WHERE state = 'pending' AND destination = d.value) FROM json_each(?) d"
    " UNION ALL SELECT (SELECT seq FROM main.events WHERE seq > ("
    "  SELECT seq FROM outbox.cursors WHERE name = 'routed') ORDER BY seq LIMIT 1))"
)
DESTINATION_COUNTS = "SELECT name, delivered, failed, dead FROM outbox.destination_counts"
PENDING_BY_DESTINATION = (
    "SELECT destination, count(*) FROM outbox.deliveries WHERE state = 'pending'"
    " GROUP BY destination"
)

# -- Statistics (pixelpost.store.sqlite.statistics) ------------------------------------

ROLLUP_BEHIND = (
    "SELECT seq, (SELECT coalesce(max(seq), 0) FROM main.events) FROM outbox.cursors"
    " WHERE name = 'rolled_up'"
)
# The cursor is written first, so that the outbox is locked before the log is read.
LOCK_ROLLED_UP = "UPDATE outbox.cursors SET seq = seq WHERE name = 'rolled_up' RETURNING seq"
SET_ROLLED_UP = "UPDATE outbox.cursors SET seq = ? WHERE name = 'rolled_up'"

# One row per event of the batch, with what the counters need (temp tables are the
# connection's own).
STATS_SETUP = (
    "CREATE TEMP TABLE IF NOT EXISTS stats_facts (message_id TEXT, hour INTEGER,"
    " config_set TEXT, tags TEXT, kind TEXT, class TEXT, reason TEXT, proxy TEXT, link TEXT,"
    " bounce_type TEXT)",
    "CREATE TEMP TABLE IF NOT EXISTS stats_rows (hour INTEGER, config_set TEXT, tags TEXT,"
    " link TEXT, metric TEXT)",
    "CREATE TEMP TABLE IF NOT EXISTS stats_candidates (message_id TEXT, what TEXT,"
    " hour INTEGER, config_set TEXT, tags TEXT, link TEXT, metric TEXT,"
    " PRIMARY KEY (message_id, what))",
    "DELETE FROM temp.stats_facts",
    "DELETE FROM temp.stats_rows",
    "DELETE FROM temp.stats_candidates",
)
STATS_FACTS = (
    "INSERT INTO temp.stats_facts SELECT e.message_id,"
    " CAST(e.created_at / 3600 AS INTEGER) * 3600, coalesce(m.config_set, ''), m.tags, e.type,"
    " CASE e.type WHEN 'open' THEN iif(e.detail ->> '$.machine', 'machine', 'human')"
    "  WHEN 'click' THEN iif(e.detail ->> '$.bot', 'bot', 'human')"
    "  WHEN 'subscription' THEN CASE"
    "   WHEN e.detail ->> '$.newTopicPreferences.unsubscribeAll' THEN 'unsubscribed'"
    "   WHEN NOT e.detail ->> '$.newTopicPreferences.unsubscribeAll'"
    "    AND e.detail ->> '$.oldTopicPreferences.unsubscribeAll' THEN 'resubscribed' END END,"
    " CASE e.type WHEN 'open' THEN e.detail ->> '$.machineReason'"
    "  WHEN 'click' THEN e.detail ->> '$.botReason'"
    "  WHEN 'bounce' THEN e.detail ->> '$.bounceSubType'"
    "  WHEN 'subscription' THEN e.detail ->> '$.source' END,"
    " iif(e.type = 'open', e.detail ->> '$.proxy', NULL),"
    " iif(e.type = 'click', e.detail ->> '$.link', NULL),"
    " iif(e.type = 'bounce', e.detail ->> '$.bounceType', NULL)"
    " FROM main.events AS e JOIN main.messages AS m ON m.id = e.message_id"
    " WHERE e.seq > ? AND e.seq <= ?"
)
STATS_COUNTS = (
    "INSERT INTO temp.stats_rows (hour, config_set, tags, link, metric)"
    " SELECT hour, config_set, tags, '', CASE kind"
    "  WHEN 'send' THEN 'sent' WHEN 'delivery' THEN 'delivered'"
    "  WHEN 'delivery_delay' THEN 'delayed' WHEN 'reject' THEN 'rejected'"
    "  WHEN 'rendering_failure' THEN 'rendering_failures' WHEN 'complaint' THEN 'complained'"
    "  WHEN 'bounce' THEN 'bounced:' || coalesce(bounce_type, 'Undetermined')"
    "  WHEN 'open' THEN 'opens:' || class WHEN 'click' THEN 'clicks:' || class END"
    " FROM temp.stats_facts WHERE kind != 'subscription'"
    " UNION ALL SELECT hour, config_set, tags, '', 'opens:machine:' || coalesce(reason, 'other')"
    " FROM temp.stats_facts WHERE kind = 'open' AND class = 'machine'"
    " UNION ALL SELECT hour, config_set, tags, '', 'clicks:bot:' || coalesce(reason, 'other')"
    " FROM temp.stats_facts WHERE kind = 'click' AND class = 'bot'"
    " UNION ALL SELECT hour, config_set, tags, '', 'suppressed'"
    " FROM temp.stats_facts WHERE kind = 'bounce' AND reason = 'OnAccountSuppressionList'"
    " UNION ALL SELECT hour, config_set, tags, '', 'opens:proxied'"
    " FROM temp.stats_facts WHERE kind = 'open' AND class = 'human' AND proxy IS NOT NULL"
    " UNION ALL SELECT hour, config_set, tags, link, 'clicks:' || class"
    " FROM temp.stats_facts WHERE kind = 'click' AND link IS NOT NULL"
    " UNION ALL SELECT hour, config_set, tags, '', 'resubscribed'"
    " FROM temp.stats_facts WHERE kind = 'subscription' AND class = 'resubscribed'"
    " UNION ALL SELECT hour, config_set, tags, '', 'unsubscribed:' || coalesce(reason, 'other')"
    " FROM temp.stats_facts WHERE kind = 'subscription' AND class = 'unsubscribed'"
)
# What each event could count towards as a unique: per copy, and per copy and link.
# "engaged": a person's open or click, whichever came first (a click without an open is
# a pixel that was not loaded); "unsubscribe": the copy's first unsubscribe.
STATS_CANDIDATES = (
    "INSERT OR IGNORE INTO temp.stats_candidates"
    " SELECT message_id, what, min(hour), config_set, tags, link, metric FROM ("
    "  SELECT message_id, kind AS what, hour, config_set, tags, '' AS link,"
    "   'unique_' || kind || 's' AS metric"
    "  FROM temp.stats_facts WHERE kind IN ('open', 'click')"
    "  UNION ALL SELECT message_id, kind || ':' || class, hour, config_set, tags, '',"
    "   'unique_' || kind || 's:' || class"
    "  FROM temp.stats_facts WHERE kind IN ('open', 'click')"
    "  UNION ALL SELECT message_id, 'click' || char(31) || link, hour, config_set, tags, link,"
    "   'unique_clicks'"
    "  FROM temp.stats_facts WHERE kind = 'click' AND link IS NOT NULL"
    "  UNION ALL SELECT message_id, 'click:' || class || char(31) || link, hour, config_set,"
    "   tags, link, 'unique_clicks:' || class"
    "  FROM temp.stats_facts WHERE kind = 'click' AND link IS NOT NULL"
    "  UNION ALL SELECT message_id, 'engaged', hour, config_set, tags, '', 'engaged'"
    "  FROM temp.stats_facts WHERE kind IN ('open', 'click') AND class = 'human'"
    "  UNION ALL SELECT message_id, 'unsubscribe', hour, config_set, tags, '',"
    "   'unique_unsubscribes'"
    "  FROM temp.stats_facts WHERE kind = 'subscription' AND class = 'unsubscribed'"
    " ) WHERE true GROUP BY message_id, what"
)
STATS_FIRSTS = (
    "INSERT INTO temp.stats_rows (hour, config_set, tags, link, metric)"
    " SELECT hour, config_set, tags, link, metric FROM temp.stats_candidates AS c"
    " WHERE NOT EXISTS (SELECT 1 FROM outbox.stats_firsts AS f"
    "  WHERE f.message_id = c.message_id AND f.what = c.what)",
    "INSERT OR IGNORE INTO outbox.stats_firsts (message_id, what)"
    " SELECT message_id, what FROM temp.stats_candidates",
)
# Every row counts for all of its set's mail (tag '') and for each of the copy's tags,
# in its hour and in its day.
STATS_ADD = (
    "INSERT INTO outbox.stats (period, tag, link, config_set, bucket, metric, value)"
    " SELECT p.period, tag, link, config_set, hour / p.period * p.period, metric, count(*)"
    " FROM ("
    "  SELECT '' AS tag, link, config_set, hour, metric FROM temp.stats_rows"
    "  UNION ALL SELECT j.value, r.link, r.config_set, r.hour, r.metric"
    "  FROM temp.stats_rows AS r, json_each(r.tags) AS j"
    " ), (SELECT 3600 AS period UNION ALL SELECT 86400) AS p"
    " WHERE true GROUP BY 1, 2, 3, 4, 5, 6"
    " ON CONFLICT (period, tag, link, config_set, bucket, metric)"
    " DO UPDATE SET value = value + excluded.value"
)

# -- Retention (pixelpost.store.sqlite.retention) --------------------------------------

NO_PENDING = 9223372036854775807
SNAPSHOT_LAST_EVENT = (
    "SELECT min((SELECT min(seq) FROM outbox.cursors WHERE name IN ('routed', 'rolled_up')),"
    " coalesce((SELECT min(d.event_seq) - 1 FROM outbox.deliveries AS d"
    "  WHERE d.state = 'pending'"
    "  AND EXISTS (SELECT 1 FROM main.events AS e WHERE e.seq = d.event_seq)), ?))"
)
SNAPSHOT_BUSY = (
    "SELECT e.message_id FROM main.events AS e"
    " WHERE e.seq > (SELECT seq FROM outbox.cursors WHERE name = 'routed')"
    " UNION SELECT e.message_id FROM outbox.deliveries AS d"
    " JOIN main.events AS e ON e.seq = d.event_seq WHERE d.state = 'pending'"
)
ADD_STUBBED = "INSERT OR IGNORE INTO outbox.cursors (name, seq) VALUES ('stubbed', 0)"
TOUCH_STUBBED = "UPDATE outbox.cursors SET seq = seq WHERE name = 'stubbed'"
OLDEST_EVENTS = (
    "SELECT seq, created_at FROM main.events"
    " WHERE seq <= ? AND seq < (SELECT max(seq) FROM main.events) ORDER BY seq LIMIT ?"
)
DELETE_EVENTS = "DELETE FROM main.events WHERE seq <= ?"
DELETE_THEIR_DELIVERIES = "DELETE FROM outbox.deliveries WHERE event_seq <= ?"
STUBBED = "SELECT seq FROM outbox.cursors WHERE name = 'stubbed'"
OLDEST_MESSAGES = (
    "SELECT rowid, id, created_at FROM main.messages WHERE rowid > ? ORDER BY rowid LIMIT ?"
)
STUB_MESSAGES = (
    "UPDATE main.messages SET mail = json_object('messageId', id) WHERE rowid > ? AND rowid <= ?"
)
SET_STUBBED = "UPDATE outbox.cursors SET seq = ? WHERE name = 'stubbed'"

# -- Upkeep ---------------------------------------------------------------------------

CHECKPOINTS = ("PRAGMA main.wal_checkpoint(PASSIVE)", "PRAGMA outbox.wal_checkpoint(PASSIVE)")

# -- The suppression list (pixelpost.store.sqlite.suppression) -------------------------

# The suppression list, by address and scope ('' for the account, else a set's name).
SUPPRESSED = (
    "SELECT DISTINCT address FROM suppression"
    " WHERE address IN (SELECT value FROM json_each(?)) AND config_set IN ('', ?)"
)
SUPPRESSION = (
    "SELECT address, reason, created_at, message_id, config_set FROM suppression"
    " WHERE address = ? AND config_set = ?"
)
SUPPRESSION_ADDRESSES = (
    "SELECT count(*) FROM suppression WHERE (address, config_set) IN"
    " (SELECT value ->> 0, coalesce(value ->> 4, '') FROM json_each(?))"
)
SUPPRESS = (
    "INSERT INTO suppression (address, reason, created_at, message_id, config_set)"
    " SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, coalesce(value ->> 4, '')"
    " FROM json_each(?) WHERE true"
    " ON CONFLICT (address, config_set) DO UPDATE SET"
    "  reason = excluded.reason, created_at = excluded.created_at,"
    "  message_id = excluded.message_id"
)
UNSUPPRESS = "DELETE FROM suppression WHERE address = ? AND config_set = ?"
SUPPRESSION_PAGE = (
    "SELECT address, reason, created_at, message_id, config_set FROM suppression"
    " WHERE config_set = ? AND address > ? AND (? IS NULL OR reason = ?)"
    " ORDER BY address LIMIT ?"
)
# An unsubscribe: the entry goes in unless the address is on the list in that scope
# already (for whatever reason); a resubscribe takes off only an unsubscribe's entry.
UNSUBSCRIBE = (
    "INSERT INTO suppression (address, config_set, reason, created_at, message_id)"
    " VALUES (?, ?, 'UNSUBSCRIBE', ?, ?) ON CONFLICT (address, config_set) DO NOTHING"
)
RESUBSCRIBE = (
    "DELETE FROM suppression WHERE address = ? AND config_set = ? AND reason = 'UNSUBSCRIBE'"
)

# The subscriptions of SNS-compatible destinations (columns as rows.sns_subscription reads).
SNS_BY_DESTINATION = (
    "SELECT destination, arn, endpoint, topic_arn, token, state, requested_at, changed_at"
    " FROM outbox.sns_subscriptions WHERE destination = ?"
)
SNS_BY_ARN = (
    "SELECT destination, arn, endpoint, topic_arn, token, state, requested_at, changed_at"
    " FROM outbox.sns_subscriptions WHERE arn = ?"
)
SNS_ALL = (
    "SELECT destination, arn, endpoint, topic_arn, token, state, requested_at, changed_at"
    " FROM outbox.sns_subscriptions ORDER BY destination"
)
SNS_INSERT = (
    "INSERT INTO outbox.sns_subscriptions (destination, arn, endpoint, topic_arn, token, state,"
    " requested_at, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (destination) DO NOTHING"
)
SNS_REPLACE = (
    "UPDATE outbox.sns_subscriptions SET arn = ?, endpoint = ?, topic_arn = ?, token = ?,"
    " state = ?, requested_at = ?, changed_at = ? WHERE destination = ? AND arn = ?"
)
SNS_SET_STATE = "UPDATE outbox.sns_subscriptions SET state = ?, changed_at = ? WHERE arn = ?"
SNS_FORGET = (
    "DELETE FROM outbox.sns_subscriptions WHERE (? IS NULL OR destination = ?)"
    " AND state = 'unsubscribed'"
)
