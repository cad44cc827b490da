-- Lets `open_intents` find intents and their outcomes without scanning the whole ledger.
-- The appender guarantees `detail` is canonical JSON and `intentSeq`, when present, an integer.
CREATE INDEX ledger_intents ON ledger (seq) WHERE action = 'intent';
CREATE INDEX ledger_outcome_of ON ledger (((detail::jsonb) ->> 'intentSeq'));
