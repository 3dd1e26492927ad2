-- Dedupe keys on the id the sender asserts unique (XEP-0359 origin-id), no
-- longer on the stanza id, which is unique only within one stream. The old
-- keys are stanza ids: they must not match origin ids, so they go.
TRUNCATE queue_dedupe;
ALTER TABLE queue_dedupe RENAME COLUMN stanza_id TO origin_id;
