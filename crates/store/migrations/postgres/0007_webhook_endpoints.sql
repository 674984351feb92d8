-- Outgoing webhooks (issue 7): the app's endpoints, one delivery per
-- (endpoint, event) derived from the event log, and each attempt's outcome.
-- Timestamps are unix milliseconds.

-- An endpoint's signing secrets are stored encrypted (AES-256-GCM, nonce
-- first, the endpoint id as associated data) with a key that is not in the
-- database: a dump alone can't sign. `previous_secret` keeps signing until
-- `previous_secret_until` after a rotation.
CREATE TABLE webhook_endpoints (
    id                     TEXT PRIMARY KEY,
    url                    TEXT NOT NULL,
    -- JSON array of exact names and `prefix.*`; [] = every event
    event_types            TEXT NOT NULL,
    -- set: only this org's events (no foreign key: an org's deletion is
    -- itself an event the endpoint must still receive)
    org_id                 TEXT,
    description            TEXT,
    enabled                BOOLEAN NOT NULL,
    disabled_reason        TEXT,
    secret                 BYTEA NOT NULL,
    previous_secret        BYTEA,
    previous_secret_until  BIGINT,
    -- events numbered up to this one were committed before the endpoint
    -- existed and are not fanned out to it
    start_after_seq        BIGINT NOT NULL,
    -- the first failed attempt since the last success (NULL: healthy)
    failing_since          BIGINT,
    -- the replica sending to this endpoint now (one at a time, so that the
    -- endpoint's deliveries go out in order), and until when that holds;
    -- `lease_until` without an owner: paused after a connection failure
    lease_owner            TEXT,
    lease_until            BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         TEXT NOT NULL,
    -- the event's place in the log: deliveries to one endpoint go out in this order
    event_seq        BIGINT NOT NULL,
    event_type       TEXT NOT NULL,
    -- the body of a delivery that is not in the log (`webhook.test`); NULL:
    -- the event's JSON, read from the log
    payload          TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- every attempt ever made; `failures`: failed attempts in a row since
    -- the delivery was last queued (the place in the retry schedule)
    attempts         BIGINT NOT NULL DEFAULT 0,
    failures         BIGINT NOT NULL DEFAULT 0,
    -- bumped by a replay: an attempt that was in flight meanwhile is
    -- logged but does not settle the replayed delivery
    generation       BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    CONSTRAINT webhook_deliveries_endpoint_event_key UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (endpoint_id, event_seq) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    delivery_id       TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt           BIGINT NOT NULL,
    attempted_at      BIGINT NOT NULL,
    -- NULL: no answer (connection refused, timeout, refused address)
    status_code       BIGINT,
    duration_ms       BIGINT NOT NULL,
    -- the first KiB of the answer's body
    response_excerpt  TEXT,
    error             TEXT,
    PRIMARY KEY (delivery_id, attempt)
);

-- The fan-out's place in the event log: events after `after_seq` have not
-- been turned into deliveries yet. One row; whoever holds its row lock (or,
-- on SQLite, the write lock) advances it.
CREATE TABLE webhook_fanout (
    name       TEXT PRIMARY KEY,
    after_seq  BIGINT NOT NULL
);
INSERT INTO webhook_fanout (name, after_seq) SELECT 'events', COALESCE(MAX(seq), 0) FROM events;
