-- presenced schema 3: ended presence watchers no presence.winfo document has shown yet
-- ("offline winfo", RFC 3857), one row per presentity, bounded by the notifier.

CREATE TABLE ended_watchers (
    presentity  TEXT NOT NULL PRIMARY KEY,
    watchers    TEXT NOT NULL,  -- JSON list of [id, uri, status, event]
    updated     REAL NOT NULL   -- wall-clock epoch seconds
);
