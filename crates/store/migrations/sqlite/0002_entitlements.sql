-- Entitlements: each org's one subscription (mirrored from its payment
-- provider), its billing admin, per-org overrides, and the app's counted
-- resources with member grants.

ALTER TABLE orgs ADD COLUMN billing_admin_user_id TEXT REFERENCES users (id);

CREATE TABLE subscriptions (
    id                        TEXT PRIMARY KEY,
    org_id                    TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    provider                  TEXT NOT NULL,
    provider_subscription_id  TEXT NOT NULL,
    provider_customer_id      TEXT,
    status                    TEXT NOT NULL,
    price_id                  TEXT,
    item_id                   TEXT,
    quantity                  BIGINT NOT NULL DEFAULT 1,
    current_period_end        BIGINT,
    cancel_at_period_end      BOOLEAN NOT NULL DEFAULT FALSE,
    trial_end                 BIGINT,
    past_due_since            BIGINT,
    portal_url                TEXT,
    -- the provider's time of the state stored here: older states never win
    observed_at               BIGINT NOT NULL,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL,
    CONSTRAINT subscriptions_org_key UNIQUE (org_id),
    CONSTRAINT subscriptions_provider_key UNIQUE (provider, provider_subscription_id)
);
CREATE INDEX subscriptions_customer_idx ON subscriptions (provider, provider_customer_id);

CREATE TABLE org_overrides (
    org_id      TEXT PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    features    TEXT NOT NULL DEFAULT '{}',
    limits      TEXT NOT NULL DEFAULT '{}',
    updated_at  BIGINT NOT NULL
);

CREATE TABLE resources (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    type         TEXT NOT NULL,
    external_id  TEXT,
    name         TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX resources_org_type_idx ON resources (org_id, type, id);
CREATE UNIQUE INDEX resources_external_key ON resources (org_id, type, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE resource_grants (
    resource_id  TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id       TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (resource_id, user_id)
);
CREATE INDEX resource_grants_user_idx ON resource_grants (org_id, user_id);
