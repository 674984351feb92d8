-- Billing: payment-provider webhooks (stored before they are applied, one
-- row per provider event id), the provider customers known per org,
-- checkouts (who started them becomes billing admin), subscriptions that
-- ended (so that a late event of an ended subscription can't revive it),
-- reconciliation leases, and the sandbox provider's own state.
-- Timestamps are unix milliseconds.

CREATE TABLE provider_events (
    id                        TEXT PRIMARY KEY,
    provider                  TEXT NOT NULL,
    -- Stripe's `evt_…`; Lemon Squeezy's `{event_name}:{data.id}:{updated_at}`;
    -- the sandbox's `sandbox:{checkout}:paid`: the idempotency key of a delivery
    event_id                  TEXT NOT NULL,
    event_type                TEXT NOT NULL,
    occurred_at               BIGINT,
    status                    TEXT NOT NULL CHECK (status IN ('applied', 'ignored', 'unmatched', 'failed')),
    -- what applying did: created, updated, unchanged, stale, superseded, linked
    outcome                   TEXT,
    error                     TEXT,
    -- no foreign key: an event outlives the org it named
    org_id                    TEXT,
    provider_subscription_id  TEXT,
    provider_customer_id      TEXT,
    -- the raw, verified body, byte for byte
    payload                   BLOB NOT NULL,
    attempts                  BIGINT NOT NULL DEFAULT 1,
    -- set while the event waits for a retry (unmatched, failed)
    next_attempt_at           BIGINT,
    -- a reconciliation pass holds the event until then
    lease_until               BIGINT,
    received_at               BIGINT NOT NULL,
    processed_at              BIGINT NOT NULL,
    CONSTRAINT provider_events_event_key UNIQUE (provider, event_id)
);
CREATE INDEX provider_events_status_idx ON provider_events (status, id);
CREATE INDEX provider_events_retry_idx ON provider_events (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

CREATE TABLE billing_customers (
    provider     TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    org_id       TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (provider, customer_id)
);
CREATE INDEX billing_customers_org_idx ON billing_customers (org_id, provider);

CREATE TABLE checkouts (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    provider     TEXT NOT NULL,
    plan         TEXT NOT NULL,
    price_id     TEXT NOT NULL,
    quantity     BIGINT NOT NULL,
    -- the user who started it (NULL for an API key): billing admin once paid
    started_by   TEXT REFERENCES users (id) ON DELETE SET NULL,
    success_url  TEXT NOT NULL,
    cancel_url   TEXT NOT NULL,
    session_id   TEXT,
    url          TEXT,
    status       TEXT NOT NULL CHECK (status IN ('open', 'paid', 'canceled')),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX checkouts_org_idx ON checkouts (org_id, created_at);

CREATE TABLE ended_subscriptions (
    provider                  TEXT NOT NULL,
    provider_subscription_id  TEXT NOT NULL,
    org_id                    TEXT NOT NULL,
    status                    TEXT NOT NULL,
    observed_at               BIGINT NOT NULL,
    PRIMARY KEY (provider, provider_subscription_id)
);

CREATE TABLE reconcile_leases (
    org_id       TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    lease_until  BIGINT NOT NULL
);

CREATE TABLE sandbox_subscriptions (
    id                    TEXT PRIMARY KEY,
    checkout_id           TEXT NOT NULL UNIQUE,
    org_id                TEXT NOT NULL,
    customer_id           TEXT NOT NULL,
    price_id              TEXT NOT NULL,
    quantity              BIGINT NOT NULL,
    status                TEXT NOT NULL,
    cancel_at_period_end  BOOLEAN NOT NULL DEFAULT FALSE,
    current_period_end    BIGINT NOT NULL,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
