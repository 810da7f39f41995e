-- For the classification of clicks and the statistics: when each copy was delivered
-- (or NULL), and its message tags as a JSON array of "name:value" strings.

ALTER TABLE messages ADD COLUMN delivered_at REAL;
ALTER TABLE messages ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
UPDATE messages SET delivered_at = d.at
    FROM (SELECT message_id, min(created_at) AS at FROM events WHERE type = 'delivery'
          GROUP BY message_id) AS d
    WHERE messages.id = d.message_id;
UPDATE messages SET tags = (
    SELECT json_group_array(DISTINCT t.key || ':' || v.value)
    FROM json_each(messages.mail, '$.tags') AS t, json_each(t.value) AS v
    WHERE t.key NOT LIKE 'ses:%');
