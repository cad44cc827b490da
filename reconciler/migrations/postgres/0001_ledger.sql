-- The audit ledger. Columns are exactly the hashed fields plus `hash`; see docs/audit.md.
-- `at` and `detail` are TEXT, not timestamptz/jsonb, so a round trip returns the exact bytes hashed.
CREATE TABLE ledger (
    seq            BIGINT PRIMARY KEY,
    at             TEXT   NOT NULL,
    app            TEXT   NOT NULL,
    desired_commit TEXT   NOT NULL,
    desired_digest TEXT   NOT NULL,
    rollout        BIGINT,
    from_state     TEXT   NOT NULL,
    to_state       TEXT   NOT NULL,
    action         TEXT   NOT NULL,
    actor          TEXT   NOT NULL,
    detail         TEXT   NOT NULL,
    prev_hash      TEXT   NOT NULL,
    hash           TEXT   NOT NULL
);

CREATE INDEX ledger_app ON ledger (app, seq);
CREATE INDEX ledger_at ON ledger (at);

-- Append-only. Anyone with write access can drop these; the hash chain is what detects that.
CREATE FUNCTION keelson_ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the keelson audit ledger is append-only: % is not allowed', TG_OP;
END
$$;

CREATE TRIGGER ledger_no_update_delete BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION keelson_ledger_append_only();

CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION keelson_ledger_append_only();
