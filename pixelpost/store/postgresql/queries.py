"""Every statement of the PostgreSQL store, by name, grouped by role. A batch of any
size is one statement and one round trip: rows go in as one array per column
(`unnest`), fanned out and counted by PostgreSQL. The only SQL built at run time is the
statistics reader's WHERE clause (pixelpost.store.postgresql.statistics), from fixed
parts.
"""

# -- The log: written by the group commit (pixelpost.store.postgresql.writer) ----------

# Each copy's message tags (not SES's own `ses:` ones) as "name:value" strings.
INSERT_MESSAGES = (
    "INSERT INTO messages (id, config_set, created_at, mail, tags)"
    " SELECT m.id, m.config_set, m.created_at, m.mail,"
    "  ARRAY(SELECT DISTINCT t.key || ':' || v.value"
    "   FROM jsonb_each(m.mail::jsonb -> 'tags') AS t,"
    "   jsonb_array_elements_text(t.value) AS v(value)"
    "   WHERE t.key NOT LIKE 'ses:%' AND jsonb_typeof(t.value) = 'array')"
    " FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[])"
    "  AS m(id, config_set, created_at, mail)"
    " ON CONFLICT (id) DO NOTHING"
)

# What every new batch of events does besides going into `events`: a row in each queue,
# when each copy was delivered (for the classification of clicks soon after), and the
# counts by type (for /metrics), in the order of their names so that two commits never
# wait on each other's counters crosswise.
_AFTER_EVENTS = (
    " , routed AS (INSERT INTO route_queue (seq) SELECT seq FROM e)"
    " , counted AS (INSERT INTO rollup_queue (seq) SELECT seq FROM e)"
    " , delivered AS (UPDATE messages AS m SET delivered_at = d.at"
    "  FROM (SELECT message_id, min(created_at) AS at FROM e WHERE type = 'delivery'"
    "   GROUP BY message_id) AS d"
    "  WHERE m.id = d.message_id AND m.delivered_at IS NULL)"
    " INSERT INTO counters (name, shard, value)"
    " SELECT type, $SHARD, count(*) FROM e GROUP BY type ORDER BY type"
    " ON CONFLICT (name, shard) DO UPDATE SET value = counters.value + excluded.value"
)

INSERT_EVENTS = (
    "WITH e AS (INSERT INTO events (id, message_id, type, created_at, detail)"  # noqa: S608 (fixed parts)
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[])"
    " RETURNING seq, message_id, type, created_at)" + _AFTER_EVENTS.replace("$SHARD", "$6")
)

# Opens and clicks become events here: an id, SES's timestamp, and the detail object in
# SES's key order, then pixelpost's additions (`pixelpost.core.classify`), compact JSON
# as pixelpost.core.events.dumps writes it.
_J = "coalesce(to_json({})::text, 'null')"
_TIMESTAMP = "to_char(to_timestamp(h.at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
_COMMON = (
    "'{\"ipAddress\":' || "
    + _J.format("h.ip")
    + " || ',\"timestamp\":' || "
    + _J.format(_TIMESTAMP)
    + " || ',\"userAgent\":' || "
    + _J.format("h.user_agent")
)
INSERT_HITS = (
    "WITH e AS (INSERT INTO events (id, message_id, type, created_at, detail)"  # noqa: S608 (fixed parts)
    " SELECT replace(gen_random_uuid()::text, '-', ''), h.message_id, h.kind, h.at,"
    "  CASE WHEN h.link IS NULL THEN " + _COMMON + " || ',\"machine\":' ||"
    "   CASE WHEN h.machine THEN 'true' ELSE 'false' END"
    "   || ',\"machineReason\":' || "
    + _J.format("h.reason")
    + " || ',\"proxy\":' || "
    + _J.format("h.proxy")
    + " || '}'"
    "  ELSE " + _COMMON + " || ',\"link\":' || " + _J.format("h.link") + ""
    "   || ',\"linkTags\":' || coalesce(h.link_tags, 'null') || ',\"bot\":' ||"
    "   CASE WHEN h.machine THEN 'true' ELSE 'false' END"
    "   || ',\"botReason\":' || " + _J.format("h.reason") + " || '}' END"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[],"
    "  $7::text[], $8::bool[], $9::text[], $10::text[])"
    "  AS h(kind, message_id, ip, user_agent, at, link, link_tags, machine, reason, proxy)"
    " RETURNING seq, message_id, type, created_at)" + _AFTER_EVENTS.replace("$SHARD", "$11")
)

# Wakes dispatchers that wait for new events (LISTEN), at most so often a process.
EVENTS_CHANNEL = "pixelpost_events"
OUTBOX_CHANNEL = "pixelpost_outbox"
NOTIFY = "SELECT pg_notify($1, $2)"

# -- The log: lookups -----------------------------------------------------------------

DELIVERED_AT = (
    "SELECT coalesce(delivered_at, created_at), delivered_at IS NOT NULL"
    " FROM messages WHERE id = $1"
)
MESSAGE = "SELECT id, config_set, created_at, mail FROM messages WHERE id = $1"
EVENT_COUNTS = "SELECT name, sum(value) FROM counters GROUP BY name"

# -- The outbox -----------------------------------------------------------------------

# A batch of events to route is taken off the queue by one process (others skip what
# it holds), fanned out by the routing table (one array per column), and what goes to a
# disabled destination goes straight to the dead letters.
ROUTE = (
    "WITH batch AS (DELETE FROM route_queue WHERE seq = ANY(ARRAY("
    "  SELECT seq FROM route_queue ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED))"
    "  RETURNING seq),"
    " added AS (INSERT INTO deliveries"
    "  (event_seq, destination, state, next_attempt_at, last_error, updated_at)"
    "  SELECT e.seq, r.destination, CASE WHEN d.name IS NULL THEN 'pending' ELSE 'dead' END,"
    "   $2, d.reason, $2"
    "  FROM batch JOIN events AS e ON e.seq = batch.seq"
    "  JOIN messages AS m ON m.id = e.message_id"
    "  JOIN unnest($3::text[], $4::text[], $5::text[]) AS r(config_set, type, destination)"
    "   ON r.config_set = m.config_set AND r.type = e.type"
    "  LEFT JOIN disabled_destinations AS d ON d.name = r.destination"
    "  ON CONFLICT DO NOTHING RETURNING destination, state)"
    " SELECT (SELECT count(*) FROM batch), destination,"
    "  count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead')"
    " FROM added GROUP BY destination"
    " UNION ALL SELECT (SELECT count(*) FROM batch), NULL, 0, 0"
)
# (In key order: the index, not a scan past the rows routed and not vacuumed yet.)
ROUTING_BEHIND = "SELECT EXISTS (SELECT 1 FROM route_queue ORDER BY seq LIMIT 1)"
# Due deliveries of one destination, hidden for the lease; what another process holds
# is skipped, not waited for.
CLAIM = (
    "WITH claimed AS (UPDATE deliveries AS d SET next_attempt_at = $1, updated_at = $2"
    "  FROM (SELECT event_seq FROM deliveries"
    "   WHERE destination = $3 AND state = 'pending' AND next_attempt_at <= $4"
    "   ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED) AS due"
    "  WHERE d.destination = $3 AND d.event_seq = due.event_seq"
    "  RETURNING d.event_seq, d.attempts)"
    " SELECT e.seq, e.id, e.type, e.message_id, e.detail, m.mail, m.config_set, c.attempts"
    " FROM claimed AS c JOIN events AS e ON e.seq = c.event_seq"
    " LEFT JOIN messages AS m ON m.id = e.message_id ORDER BY e.seq"
)
COUNT_DELIVERED, COUNT_FAILED, COUNT_DEAD = (
    f"INSERT INTO destination_counts (name, shard, {column}) VALUES ($1, $2, $3)"  # noqa: S608 (a fixed column)
    f" ON CONFLICT (name, shard) DO UPDATE SET {column} = destination_counts.{column}"
    f" + excluded.{column}"
    for column in ("delivered", "failed", "dead")
)
DELETE_DELIVERED = (
    "DELETE FROM deliveries WHERE destination = $1 AND event_seq = ANY($2::bigint[])"
)
RETRY = (
    "UPDATE deliveries SET attempts = $1, next_attempt_at = $2, last_error = $3,"
    " updated_at = $4 WHERE event_seq = $5 AND destination = $6"
)
DEAD = (
    "UPDATE deliveries SET state = 'dead', attempts = $1, last_error = $2,"
    " updated_at = $3 WHERE event_seq = $4 AND destination = $5"
)
DISABLE = (
    "INSERT INTO disabled_destinations (name, disabled_at, reason) VALUES ($1, $2, $3)"
    " ON CONFLICT (name) DO NOTHING"
)
SET_ATTEMPTS = "UPDATE deliveries SET attempts = $1 WHERE event_seq = $2 AND destination = $3"
DEAD_PENDING = (
    "UPDATE deliveries SET state = 'dead', last_error = $1, updated_at = $2"
    " WHERE destination = $3 AND state = 'pending'"
)
DISABLED = "SELECT name, reason FROM disabled_destinations"
DEAD_LETTERS = (
    "SELECT e.id, d.destination, e.type, e.message_id, d.attempts, d.last_error,"
    " d.updated_at FROM deliveries AS d JOIN events AS e ON e.seq = d.event_seq"
    " WHERE d.state = 'dead' AND ($1::text IS NULL OR d.destination = $1)"
    " ORDER BY d.updated_at, e.seq LIMIT $2"
)
REPLAY = (
    "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = $1,"
    " updated_at = $1 WHERE state = 'dead' AND ($2::text IS NULL OR destination = $2)"
)
ENABLE = "DELETE FROM disabled_destinations WHERE $1::text IS NULL OR name = $1"
OLDEST_WAITING = (
    "SELECT min(e.created_at) FROM events AS e WHERE e.seq IN ("
    " SELECT (SELECT min(event_seq) FROM deliveries"
    "  WHERE state = 'pending' AND destination = d.name) FROM unnest($1::text[]) AS d(name)"
    " UNION ALL SELECT min(seq) FROM route_queue)"
)
DESTINATION_COUNTS = (
    "SELECT name, sum(delivered), sum(failed), sum(dead) FROM destination_counts GROUP BY name"
)
PENDING_BY_DESTINATION = (
    "SELECT destination, count(*) FROM deliveries WHERE state = 'pending' GROUP BY destination"
)

# -- Statistics (pixelpost.store.postgresql.statistics) --------------------------------

ROLLUP_BEHIND = "SELECT EXISTS (SELECT 1 FROM rollup_queue ORDER BY seq LIMIT 1)"
# A batch of events to count, taken off its queue (the roll-up runs in one process at a
# time: an advisory lock), with what the counters need, one row each.
STATS_BATCH = (
    "CREATE TEMP TABLE stats_batch ON COMMIT DROP AS"
    " WITH batch AS (DELETE FROM rollup_queue WHERE seq = ANY(ARRAY("
    "  SELECT seq FROM rollup_queue ORDER BY seq LIMIT $1)) RETURNING seq)"
    " SELECT seq FROM batch"
)
STATS_BATCH_SIZE = "SELECT count(*) FROM stats_batch"
# One row per event of the batch, with what the counters need.
STATS_FACTS = (
    "CREATE TEMP TABLE stats_facts ON COMMIT DROP AS"
    " SELECT e.seq, e.message_id, (floor(e.created_at / 3600) * 3600)::bigint AS hour,"
    "  coalesce(m.config_set, '') AS config_set, m.tags, e.type AS kind,"
    "  CASE e.type WHEN 'open' THEN CASE WHEN (x.d ->> 'machine')::boolean"
    "    THEN 'machine' ELSE 'human' END"
    "   WHEN 'click' THEN CASE WHEN (x.d ->> 'bot')::boolean THEN 'bot' ELSE 'human' END"
    "   WHEN 'subscription' THEN CASE"
    "    WHEN (x.d #>> '{newTopicPreferences,unsubscribeAll}')::boolean THEN 'unsubscribed'"
    "    WHEN NOT (x.d #>> '{newTopicPreferences,unsubscribeAll}')::boolean"
    "     AND (x.d #>> '{oldTopicPreferences,unsubscribeAll}')::boolean THEN 'resubscribed'"
    "   END END AS class,"
    "  CASE e.type WHEN 'open' THEN x.d ->> 'machineReason'"
    "   WHEN 'click' THEN x.d ->> 'botReason'"
    "   WHEN 'bounce' THEN x.d ->> 'bounceSubType'"
    "   WHEN 'subscription' THEN x.d ->> 'source' END AS reason,"
    "  CASE WHEN e.type = 'open' THEN x.d ->> 'proxy' END AS proxy,"
    "  CASE WHEN e.type = 'click' THEN x.d ->> 'link' END AS link,"
    "  CASE WHEN e.type = 'bounce' THEN x.d ->> 'bounceType' END AS bounce_type"
    " FROM stats_batch AS b JOIN events AS e ON e.seq = b.seq"
    " JOIN messages AS m ON m.id = e.message_id,"
    " LATERAL (SELECT CASE WHEN e.type IN ('open', 'click', 'subscription', 'bounce')"
    "  THEN e.detail::jsonb END AS d) AS x"
)
STATS_ROWS = (
    "CREATE TEMP TABLE stats_rows ON COMMIT DROP AS"
    " SELECT hour, config_set, tags, '' AS link, CASE kind"
    "  WHEN 'send' THEN 'sent' WHEN 'delivery' THEN 'delivered'"
    "  WHEN 'delivery_delay' THEN 'delayed' WHEN 'reject' THEN 'rejected'"
    "  WHEN 'rendering_failure' THEN 'rendering_failures' WHEN 'complaint' THEN 'complained'"
    "  WHEN 'bounce' THEN 'bounced:' || coalesce(bounce_type, 'Undetermined')"
    "  WHEN 'open' THEN 'opens:' || class WHEN 'click' THEN 'clicks:' || class END AS metric"
    " FROM stats_facts WHERE kind <> 'subscription'"
    " UNION ALL SELECT hour, config_set, tags, '', 'opens:machine:' || coalesce(reason, 'other')"
    " FROM stats_facts WHERE kind = 'open' AND class = 'machine'"
    " UNION ALL SELECT hour, config_set, tags, '', 'clicks:bot:' || coalesce(reason, 'other')"
    " FROM stats_facts WHERE kind = 'click' AND class = 'bot'"
    " UNION ALL SELECT hour, config_set, tags, '', 'suppressed'"
    " FROM stats_facts WHERE kind = 'bounce' AND reason = 'OnAccountSuppressionList'"
    " UNION ALL SELECT hour, config_set, tags, '', 'opens:proxied'"
    " FROM stats_facts WHERE kind = 'open' AND class = 'human' AND proxy IS NOT NULL"
    " UNION ALL SELECT hour, config_set, tags, link, 'clicks:' || class"
    " FROM stats_facts WHERE kind = 'click' AND link IS NOT NULL"
    " UNION ALL SELECT hour, config_set, tags, '', 'resubscribed'"
    " FROM stats_facts WHERE kind = 'subscription' AND class = 'resubscribed'"
    " UNION ALL SELECT hour, config_set, tags, '', 'unsubscribed:' || coalesce(reason, 'other')"
    " FROM stats_facts WHERE kind = 'subscription' AND class = 'unsubscribed'"
)
# What each event could count towards as a unique, at the hour of the copy's first such
# event in the batch; those not counted before (stats_firsts) count now.
STATS_FIRSTS = (
    "WITH candidates AS ("
    "  SELECT DISTINCT ON (message_id, what) message_id, what, hour, config_set, tags, link,"
    "   metric FROM ("
    "   SELECT seq, message_id, kind AS what, hour, config_set, tags, '' AS link,"
    "    'unique_' || kind || 's' AS metric"
    "   FROM stats_facts WHERE kind IN ('open', 'click')"
    "   UNION ALL SELECT seq, message_id, kind || ':' || class, hour, config_set, tags, '',"
    "    'unique_' || kind || 's:' || class"
    "   FROM stats_facts WHERE kind IN ('open', 'click')"
    "   UNION ALL SELECT seq, message_id, 'click' || chr(31) || link, hour, config_set, tags,"
    "    link, 'unique_clicks'"
    "   FROM stats_facts WHERE kind = 'click' AND link IS NOT NULL"
    "   UNION ALL SELECT seq, message_id, 'click:' || class || chr(31) || link, hour,"
    "    config_set, tags, link, 'unique_clicks:' || class"
    "   FROM stats_facts WHERE kind = 'click' AND link IS NOT NULL"
    "   UNION ALL SELECT seq, message_id, 'engaged', hour, config_set, tags, '', 'engaged'"
    "   FROM stats_facts WHERE kind IN ('open', 'click') AND class = 'human'"
    "   UNION ALL SELECT seq, message_id, 'unsubscribe', hour, config_set, tags, '',"
    "    'unique_unsubscribes'"
    "   FROM stats_facts WHERE kind = 'subscription' AND class = 'unsubscribed'"
    "  ) AS c ORDER BY message_id, what, hour, seq),"
    " firsts AS (INSERT INTO stats_firsts (message_id, what)"
    "  SELECT message_id, what FROM candidates ON CONFLICT DO NOTHING"
    "  RETURNING message_id, what)"
    " INSERT INTO stats_rows (hour, config_set, tags, link, metric)"
    " SELECT c.hour, c.config_set, c.tags, c.link, c.metric FROM candidates AS c"
    " JOIN firsts AS f ON f.message_id = c.message_id AND f.what = c.what"
)
# Every row counts for all of its set's mail (tag '') and for each of the copy's tags,
# in its hour and in its day; in key order, so that two roll-ups never deadlock.
STATS_ADD = (
    "INSERT INTO stats (period, tag, link, config_set, bucket, metric, value)"
    " SELECT p.period, r.tag, r.link, r.config_set, r.hour / p.period * p.period, r.metric,"
    "  count(*)"
    " FROM (SELECT '' AS tag, link, config_set, hour, metric FROM stats_rows"
    "  UNION ALL SELECT t.tag, s.link, s.config_set, s.hour, s.metric"
    "  FROM stats_rows AS s, unnest(s.tags) AS t(tag)) AS r,"
    " (VALUES (3600), (86400)) AS p(period)"
    " GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"
    " ON CONFLICT (period, tag, link, config_set, bucket, metric)"
    " DO UPDATE SET value = stats.value + excluded.value"
)

# -- Retention (pixelpost.store.postgresql.retention) ----------------------------------

# Events from before the cut that are routed, counted and have no delivery left to make
# (their dead letters go with them), oldest first; the newest event stays, as on SQLite.
PURGE_EVENTS = (
    "WITH doomed AS (SELECT e.seq FROM events AS e"
    "  WHERE e.created_at < $1 AND e.seq < (SELECT max(seq) FROM events)"
    "  AND NOT EXISTS (SELECT 1 FROM route_queue AS q WHERE q.seq = e.seq)"
    "  AND NOT EXISTS (SELECT 1 FROM rollup_queue AS q WHERE q.seq = e.seq)"
    "  AND NOT EXISTS (SELECT 1 FROM deliveries AS d"
    "   WHERE d.event_seq = e.seq AND d.state = 'pending')"
    "  ORDER BY e.seq LIMIT $2 FOR UPDATE SKIP LOCKED),"
    " letters AS (DELETE FROM deliveries AS d USING doomed WHERE d.event_seq = doomed.seq)"
    " DELETE FROM events AS e USING doomed WHERE e.seq = doomed.seq"
)
# Records of copies from before the cut whose events are all routed and delivered are
# cut to stubs: the mail object keeps only the messageId.
STUB_MESSAGES = (
    "WITH doomed AS (SELECT m.id FROM messages AS m"
    "  WHERE NOT m.stubbed AND m.created_at < $1"
    "  AND NOT EXISTS (SELECT 1 FROM events AS e WHERE e.message_id = m.id AND ("
    "   EXISTS (SELECT 1 FROM route_queue AS q WHERE q.seq = e.seq)"
    "   OR EXISTS (SELECT 1 FROM deliveries AS d"
    "    WHERE d.event_seq = e.seq AND d.state = 'pending')))"
    "  ORDER BY m.created_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
    " UPDATE messages AS m SET mail = '{\"messageId\":' || to_json(m.id)::text || '}',"
    "  stubbed = true FROM doomed WHERE m.id = doomed.id"
)

# -- The suppression list (pixelpost.store.postgresql.suppression) ---------------------

SUPPRESSED = (
    "SELECT DISTINCT address FROM suppression"
    " WHERE address = ANY($1::text[]) AND config_set IN ('', $2)"
)
SUPPRESSION = (
    "SELECT address, reason, created_at, message_id, config_set FROM suppression"
    " WHERE address = $1 AND config_set = $2"
)
# (xmax = 0: the row was inserted, not updated.)
SUPPRESS = (
    "INSERT INTO suppression (address, reason, created_at, message_id, config_set)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::text[])"
    " ORDER BY 1, 5"
    " ON CONFLICT (address, config_set) DO UPDATE SET"
    "  reason = excluded.reason, created_at = excluded.created_at,"
    "  message_id = excluded.message_id"
    " RETURNING xmax = 0"
)
UNSUPPRESS = "DELETE FROM suppression WHERE address = $1 AND config_set = $2"
SUPPRESSION_PAGE = (
    "SELECT address, reason, created_at, message_id, config_set FROM suppression"
    " WHERE config_set = $1 AND address > $2 AND ($3::text IS NULL OR reason = $3)"
    " ORDER BY address LIMIT $4"
)
UNSUBSCRIBE = (
    "INSERT INTO suppression (address, config_set, reason, created_at, message_id)"
    " VALUES ($1, $2, 'UNSUBSCRIBE', $3, $4) ON CONFLICT (address, config_set) DO NOTHING"
)
RESUBSCRIBE = (
    "DELETE FROM suppression WHERE address = $1 AND config_set = $2 AND reason = 'UNSUBSCRIBE'"
)

# The subscriptions of SNS-compatible destinations (columns as rows.sns_subscription reads).
SNS_BY_DESTINATION = (
    "SELECT destination, arn, endpoint, topic_arn, token, state, requested_at, changed_at"
    " FROM sns_subscriptions WHERE destination = $1"
)
SNS_BY_ARN = (
    "SELECT destination, arn, endpoint, topic_arn, token, state, requested_at, changed_at"
    " FROM sns_subscriptions WHERE arn = $1"
)
SNS_ALL = (
    "SELECT destination, arn, endpoint, topic_arn, token, state, requested_at, changed_at"
    " FROM sns_subscriptions ORDER BY destination"
)
SNS_INSERT = (
    "INSERT INTO sns_subscriptions (destination, arn, endpoint, topic_arn, token, state,"
    " requested_at, changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (destination) DO NOTHING"
)
SNS_REPLACE = (
    "UPDATE sns_subscriptions SET arn = $1, endpoint = $2, topic_arn = $3, token = $4,"
    " state = $5, requested_at = $6, changed_at = $7 WHERE destination = $8 AND arn = $9"
)
SNS_SET_STATE = "UPDATE sns_subscriptions SET state = $1, changed_at = $2 WHERE arn = $3"
SNS_FORGET = (
    "DELETE FROM sns_subscriptions WHERE ($1::text IS NULL OR destination = $1)"
    " AND state = 'unsubscribed'"
)
