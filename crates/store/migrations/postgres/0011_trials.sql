-- Trials (issue 10): one free trial per org, ever. A checkout that would
-- give a trial claims the org's row first; the primary key refuses a
-- second claim, also when two checkouts race. A checkout the provider
-- refused releases its claim (it gave no trial). Times are unix milliseconds.
CREATE TABLE org_trials (
    org_id      TEXT PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    checkout_id TEXT NOT NULL,
    plan        TEXT NOT NULL,
    days        BIGINT NOT NULL CHECK (days > 0),
    claimed_at  BIGINT NOT NULL
);
