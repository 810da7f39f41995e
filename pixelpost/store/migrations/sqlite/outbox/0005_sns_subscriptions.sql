-- The subscriptions of SNS-compatible destinations: one per destination, for the
-- endpoint and topic it was made for, and whether the endpoint confirmed it (visited its
-- SubscribeURL) or left (visited its UnsubscribeURL). `arn` is the subscription's ARN,
-- whose random part is what the UnsubscribeURL carries.
CREATE TABLE sns_subscriptions (
    destination TEXT PRIMARY KEY,
    arn TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    topic_arn TEXT NOT NULL,
    token TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'unsubscribed')),
    requested_at REAL NOT NULL,
    changed_at REAL NOT NULL
);
