-- The audit ledger. Columns are exactly the hashed fields plus `hash`; see docs/audit.md.
-- STRICT keeps every value the type it was hashed as (no affinity conversions).
CREATE TABLE ledger (
    seq            INTEGER PRIMARY KEY,
    at             TEXT    NOT NULL,
    app            TEXT    NOT NULL,
    desired_commit TEXT    NOT NULL,
    desired_digest TEXT    NOT NULL,
    rollout        INTEGER,
    from_state     TEXT    NOT NULL,
    to_state       TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    detail         TEXT    NOT NULL,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL
) STRICT;

CREATE INDEX ledger_app ON ledger (app, seq);
CREATE INDEX ledger_at ON ledger (at);

-- Append-only. Anyone with write access can drop these; the hash chain is what detects that.
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the keelson audit ledger is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the keelson audit ledger is append-only: DELETE is not allowed');
END;
