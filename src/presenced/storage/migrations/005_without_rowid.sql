-- presenced schema 5: subscriptions and publications become WITHOUT ROWID tables, keyed by their
-- primary key alone. A rowid table with a TEXT primary key keeps a second b-tree (the key's
-- index), so each write changed two pages or more and each COMMIT appended that many 4 KiB frames
-- to the WAL; keyed by the text itself, a write changes one leaf. Measured on the dev machine
-- (insert then delete, one commit each, WAL, synchronous NORMAL): subscription rows 2.0 -> 1.05
-- frames and 27.8 -> 20.3 µs of CPU a commit; publications with a 900-byte body 5.0 -> 1.1
-- frames, 51.8 -> 19.5 µs (docs/performance.md, "Tenth pass"). Loads stay full scans, now in
-- key order.

CREATE TABLE subscriptions_v5 (
    id             TEXT    NOT NULL PRIMARY KEY,
    presentity     TEXT    NOT NULL,
    event          TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    call_id        TEXT    NOT NULL,
    local_tag      TEXT    NOT NULL,
    remote_tag     TEXT    NOT NULL,
    local_uri      TEXT    NOT NULL,
    remote_uri     TEXT    NOT NULL,
    watcher        TEXT    NOT NULL,
    remote_target  TEXT    NOT NULL,
    route_set      TEXT    NOT NULL,  -- JSON array of strings, in NOTIFY order
    local_cseq     INTEGER NOT NULL,
    remote_cseq    INTEGER NOT NULL,
    expires_at     REAL    NOT NULL,  -- wall-clock epoch seconds
    content_type   TEXT    NOT NULL,
    peer           TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    event_id       TEXT,
    version        INTEGER NOT NULL,
    identity       TEXT               -- the authenticated user@domain, NULL without [auth]
) WITHOUT ROWID;

INSERT INTO subscriptions_v5 (id, presentity, event, source, call_id, local_tag, remote_tag,
                              local_uri, remote_uri, watcher, remote_target, route_set,
                              local_cseq, remote_cseq, expires_at, content_type, peer, state,
                              event_id, version, identity)
SELECT id, presentity, event, source, call_id, local_tag, remote_tag, local_uri, remote_uri,
       watcher, remote_target, route_set, local_cseq, remote_cseq, expires_at, content_type,
       peer, state, event_id, version, identity
FROM subscriptions;

DROP TABLE subscriptions;
ALTER TABLE subscriptions_v5 RENAME TO subscriptions;

CREATE TABLE publications_v5 (
    etag          TEXT NOT NULL PRIMARY KEY,
    presentity    TEXT NOT NULL,
    event         TEXT NOT NULL,
    expires_at    REAL NOT NULL,  -- wall-clock epoch seconds
    content_type  TEXT NOT NULL,
    body          BLOB NOT NULL
) WITHOUT ROWID;

INSERT INTO publications_v5 (etag, presentity, event, expires_at, content_type, body)
SELECT etag, presentity, event, expires_at, content_type, body FROM publications;

DROP TABLE publications;
ALTER TABLE publications_v5 RENAME TO publications;
