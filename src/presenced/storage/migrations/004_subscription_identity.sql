-- presenced schema 4: the authenticated user of a subscription (NULL without [auth]), so that
-- presence rules and the per-watcher cap keep judging that user, not the From, after a restart.

ALTER TABLE subscriptions ADD COLUMN identity TEXT;
