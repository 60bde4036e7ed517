-- presenced schema 1: the three record types of presenced.storage.base.
-- Bindings rows are small, so WITHOUT ROWID saves the second b-tree a text key needs; subscription
-- and publication rows are large (route sets, bodies), where SQLite advises ordinary rowid tables.
-- Loads are full scans at startup (the working set lives in memory), hence no secondary indexes.

CREATE TABLE bindings (
    aor         TEXT    NOT NULL,
    contact     TEXT    NOT NULL,
    expires_at  REAL    NOT NULL,  -- wall-clock epoch seconds
    call_id     TEXT    NOT NULL,
    cseq        INTEGER NOT NULL,
    q           REAL,
    peer        TEXT    NOT NULL,
    instance    TEXT,
    user_agent  TEXT,
    PRIMARY KEY (aor, contact)
) WITHOUT ROWID;

CREATE TABLE subscriptions (
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
    expires_at     REAL    NOT NULL,
    content_type   TEXT    NOT NULL,
    peer           TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    event_id       TEXT,
    version        INTEGER NOT NULL
);

CREATE TABLE publications (
    etag          TEXT NOT NULL PRIMARY KEY,
    presentity    TEXT NOT NULL,
    event         TEXT NOT NULL,
    expires_at    REAL NOT NULL,
    content_type  TEXT NOT NULL,
    body          BLOB NOT NULL
);
