-- Provider subscriptions found by discovery (Lemon Squeezy's list of the
-- store's subscriptions) whose customer is tied to no org: listed once each
-- by `GET /v1/billing/unlinked` for an operator to link
-- (`POST /v1/billing/link`). The row goes in the transaction that ties the
-- subscription to an org, whatever ties it (a link, a webhook, discovery by
-- a known customer). Timestamps are unix milliseconds.
CREATE TABLE unlinked_subscriptions (
    -- `uls_…`, time-ordered: the list's cursor
    id                        TEXT NOT NULL,
    provider                  TEXT NOT NULL,
    provider_subscription_id  TEXT NOT NULL,
    provider_customer_id      TEXT,
    customer_email            TEXT,
    -- the variant (Lemon Squeezy) or price id, and the catalog plan it buys
    price_id                  TEXT,
    plan                      TEXT,
    status                    TEXT NOT NULL,
    first_seen_at             BIGINT NOT NULL,
    last_seen_at              BIGINT NOT NULL,
    CONSTRAINT unlinked_subscriptions_pkey PRIMARY KEY (id),
    CONSTRAINT unlinked_subscriptions_subscription_key UNIQUE (provider, provider_subscription_id)
);
