-- The subscriptions of SNS-compatible destinations: one per destination, for the
-- endpoint and topic it was made for, and whether the endpoint confirmed it (visited its
-- SubscribeURL) or left (visited its UnsubscribeURL). `arn` is the subscription's ARN,
-- whose random part is what the UnsubscribeURL carries.
CREATE TABLE sns_subscriptions (
    destination text PRIMARY KEY,
    arn text NOT NULL UNIQUE,
    endpoint text NOT NULL,
    topic_arn text NOT NULL,
    token text NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'confirmed', 'unsubscribed')),
    requested_at double precision NOT NULL,
    changed_at double precision NOT NULL
);
