-- presenced schema 2: the users' presence-rules documents (RFC 5025 pres-rules, one per AOR),
-- written by the XCAP server and `presenced rules`, loaded whole at startup.

CREATE TABLE rules (
    aor       TEXT NOT NULL PRIMARY KEY,
    document  BLOB NOT NULL,
    etag      TEXT NOT NULL,
    updated   REAL NOT NULL  -- wall-clock epoch seconds
);
