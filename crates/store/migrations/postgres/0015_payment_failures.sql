-- What an invoice event said about paying (`paid`, `failed`; NULL for every
-- other event), and when its `subscription.payment_failed` event was written
-- to the org's log. The failure is reported once per delivery, in the
-- transaction that stores or retries it; a payment stored as made after the
-- failure (same subscription, later `occurred_at`) makes it stale.
ALTER TABLE provider_events ADD COLUMN payment TEXT CONSTRAINT provider_events_payment_check CHECK (payment IN ('paid', 'failed'));
ALTER TABLE provider_events ADD COLUMN payment_reported_at BIGINT;
CREATE INDEX provider_events_payment_idx ON provider_events (provider, provider_subscription_id, occurred_at) WHERE payment = 'paid';
