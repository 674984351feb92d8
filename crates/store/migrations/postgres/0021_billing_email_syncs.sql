-- The billing e-mail follows the org to its Stripe customer (issue 10 item
-- 9). Changing `orgs.billing_email` writes a row here in the same
-- transaction, one per (org, Stripe customer of the org); a background
-- worker sends `POST /v1/customers/{id}` with `email=…` and marks it done.
-- Timestamps are unix milliseconds.
--
-- A newer change of the e-mail bumps `generation` (and replaces `email`):
-- a send that began at an older generation never marks the row done, so
-- the latest e-mail is always the one that reaches Stripe last.
CREATE TABLE billing_email_syncs (
    org_id           TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    customer_id      TEXT NOT NULL,
    -- what Stripe must hold; '' clears the customer's e-mail
    email            TEXT NOT NULL,
    -- pending: to send; done: Stripe holds `email`; gone: Stripe answered
    -- 404 (the customer was deleted), given up
    status           TEXT NOT NULL CHECK (status IN ('pending', 'done', 'gone')),
    generation       BIGINT NOT NULL DEFAULT 0,
    -- every send, failed sends in a row (the place in the retry schedule)
    attempts         BIGINT NOT NULL DEFAULT 0,
    failures         BIGINT NOT NULL DEFAULT 0,
    failing_since    BIGINT,
    last_error       TEXT,
    next_attempt_at  BIGINT NOT NULL,
    -- the replica sending it now, and until when that holds
    lease_owner      TEXT,
    lease_until      BIGINT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (org_id, customer_id)
);
CREATE INDEX billing_email_syncs_due_idx ON billing_email_syncs (next_attempt_at) WHERE status = 'pending';
