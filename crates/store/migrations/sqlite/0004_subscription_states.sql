-- Every provider subscription orgplane has seen keeps its own newest known
-- state, whether or not it is its org's current one, ended ones included:
-- a subscription that ended never becomes live again, and the org's one
-- subscription (the `subscriptions` row) is chosen from these states by one
-- rule (`orgplane_core::subscription::current`). This replaces
-- `ended_subscriptions`, which remembered only the ended subscriptions that
-- had been an org's current one. Timestamps are unix milliseconds.

CREATE TABLE provider_subscriptions (
    provider                  TEXT NOT NULL,
    provider_subscription_id  TEXT NOT NULL,
    -- orgplane's `sub_…` id, given when it first becomes its org's subscription
    id                        TEXT,
    org_id                    TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    provider_customer_id      TEXT,
    status                    TEXT NOT NULL,
    price_id                  TEXT,
    item_id                   TEXT,
    quantity                  BIGINT NOT NULL,
    current_period_end        BIGINT,
    cancel_at_period_end      BOOLEAN NOT NULL,
    trial_end                 BIGINT,
    past_due_since            BIGINT,
    portal_url                TEXT,
    -- the provider's time of the state stored here
    observed_at               BIGINT NOT NULL,
    -- the earliest provider time of any state seen of it
    first_observed_at         BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL,
    CONSTRAINT provider_subscriptions_pkey PRIMARY KEY (provider, provider_subscription_id),
    CONSTRAINT provider_subscriptions_id_key UNIQUE (id)
);
CREATE INDEX provider_subscriptions_org_idx ON provider_subscriptions (org_id);

INSERT INTO provider_subscriptions (provider, provider_subscription_id, id, org_id, provider_customer_id, status, price_id,
    item_id, quantity, current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at,
    first_observed_at, updated_at)
SELECT provider, provider_subscription_id, id, org_id, provider_customer_id, status, price_id, item_id, quantity,
    current_period_end, cancel_at_period_end, trial_end, past_due_since, portal_url, observed_at, observed_at, updated_at
FROM subscriptions;

INSERT INTO provider_subscriptions (provider, provider_subscription_id, id, org_id, status, quantity, cancel_at_period_end,
    observed_at, first_observed_at, updated_at)
SELECT e.provider, e.provider_subscription_id, NULL, e.org_id, e.status, 1, FALSE, e.observed_at, e.observed_at, e.observed_at
FROM ended_subscriptions e
WHERE EXISTS (SELECT 1 FROM orgs o WHERE o.id = e.org_id)
ON CONFLICT (provider, provider_subscription_id) DO NOTHING;

DROP TABLE ended_subscriptions;

-- When a reconciliation pass last checked the org: concurrent passes (two
-- `orgplane reconcile` processes, several replicas) fetch each subscription
-- once per freshness window instead of once each.
ALTER TABLE reconcile_leases ADD COLUMN checked_at BIGINT;
