-- Lets `open_intents` find intents and their outcomes without scanning the whole ledger.
CREATE INDEX ledger_intents ON ledger (seq) WHERE action = 'intent';
CREATE INDEX ledger_outcome_of ON ledger (json_extract(detail, '$.intentSeq'));
