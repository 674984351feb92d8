-- The sandbox provider's invoices: one per paid period of a sandbox
-- subscription (what Stripe would list for it). Written in the transaction
-- that pays the checkout or renews the period; a period is invoiced once.
CREATE TABLE sandbox_invoices (
    id               TEXT PRIMARY KEY,
    subscription_id  TEXT NOT NULL REFERENCES sandbox_subscriptions (id),
    number           TEXT NOT NULL,
    amount           BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    period_start     BIGINT NOT NULL,
    period_end       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    UNIQUE (subscription_id, period_start)
);
