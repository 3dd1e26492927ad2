-- 001: accounts, rosters, offline messages, component queues.
-- Text ordering that must match Go's sort uses COLLATE "C" in queries.

CREATE TABLE users (
    jid           text PRIMARY KEY,
    domain        text NOT NULL,
    sha1_salt     bytea,
    sha1_iter     integer NOT NULL DEFAULT 0,
    sha1_key      bytea,      -- SaltedPassword
    sha256_salt   bytea,
    sha256_iter   integer NOT NULL DEFAULT 0,
    sha256_key    bytea,
    created       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_domain ON users (domain, jid);

CREATE TABLE roster (
    owner         text NOT NULL,
    contact       text NOT NULL,
    name          text NOT NULL DEFAULT '',
    subscription  text NOT NULL DEFAULT 'none',
    ask           boolean NOT NULL DEFAULT false,
    pending_in    boolean NOT NULL DEFAULT false,
    groups        text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (owner, contact)
);

CREATE TABLE offline (
    id            bigserial PRIMARY KEY,
    to_jid        text NOT NULL,
    stanza        bytea NOT NULL,
    stored        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX offline_to ON offline (to_jid, id);
CREATE INDEX offline_stored ON offline (stored);

-- The queue. Rows of one (component, sender) form a partition that is
-- delivered in id order by the one owner that leases it.
CREATE TABLE queue (
    id            bigserial PRIMARY KEY,
    component     text NOT NULL,
    sender        text NOT NULL,
    from_jid      text NOT NULL,
    stanza_id     text NOT NULL,
    stanza        bytea NOT NULL,
    enqueued      timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    claimed_by    text          -- owner that was handed the row; NULL = not handed out
);
CREATE INDEX queue_partition ON queue (component, sender, id);

-- One row per partition with rows (or under lease). rows is kept exact in
-- the transaction that adds or removes queue rows, so that a lease on an
-- empty partition can be released without a race against Enqueue.
CREATE TABLE queue_partitions (
    component     text NOT NULL,
    sender        text NOT NULL,
    rows          bigint NOT NULL DEFAULT 0,
    owner         text,
    expires       timestamptz,
    PRIMARY KEY (component, sender)
);
CREATE INDEX queue_partitions_owner ON queue_partitions (component, owner);

-- Exact per-component totals for the limit check (one row read per
-- component per Enqueue, whatever the queue length). Updated in the same
-- transaction as the queue rows; the row lock also orders every writer of a
-- component: counters, then partitions (by sender), then queue rows.
CREATE TABLE queue_counters (
    component     text PRIMARY KEY,
    rows          bigint NOT NULL DEFAULT 0,
    bytes         bigint NOT NULL DEFAULT 0
);

-- Stanza ids seen recently per sender; rows older than the component's
-- dedupe window are ignored and pruned (by the index on at alone, so that
-- the lookup by primary key has no other index to choose).
CREATE TABLE queue_dedupe (
    component     text NOT NULL,
    sender        text NOT NULL,
    stanza_id     text NOT NULL,
    at            timestamptz NOT NULL,
    PRIMARY KEY (component, sender, stanza_id)
);
CREATE INDEX queue_dedupe_at ON queue_dedupe (at);

CREATE TABLE dead_letters (
    id            bigint PRIMARY KEY,   -- the id the row had in queue
    component     text NOT NULL,
    sender        text NOT NULL,
    from_jid      text NOT NULL,
    stanza_id     text NOT NULL,
    stanza        bytea NOT NULL,
    enqueued      timestamptz NOT NULL,
    attempts      integer NOT NULL,
    reason        text NOT NULL,
    died          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_component ON dead_letters (component, id);
