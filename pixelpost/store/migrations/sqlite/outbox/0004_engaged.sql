-- Two more kinds of first in stats_firsts: "engaged" (a person's first open or click of
-- the copy) and "unsubscribe" (its first unsubscribe). A copy a person opened or clicked
-- before this version counted then, as an open or a click: it is marked engaged now, so
-- that a later open or click does not count it as newly engaged in a later hour. The
-- engaged counter itself starts at zero here, since the hours of those firsts are not
-- kept (and their events may be purged).

INSERT OR IGNORE INTO stats_firsts (message_id, what)
    SELECT DISTINCT message_id, 'engaged' FROM stats_firsts
    WHERE what IN ('open:human', 'click:human');
