-- Keys and administration (issue 11).
--
-- Server keys get a lifecycle: a scope (`read` < `write` < `admin`; keys
-- made before this migration were all-powerful, so they become `admin`), an
-- optional expiry, the time of last use (written at most once a minute per
-- key), and the first characters of the key (`prefix`) to tell keys apart
-- in a list. Keys made before this migration have no stored prefix.
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin' CONSTRAINT api_keys_scope_check CHECK (scope IN ('read', 'write', 'admin'));
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
ALTER TABLE api_keys ADD COLUMN prefix TEXT;

-- Org API keys (`ok_…`): keys an org's members make for their own scripts
-- against the app, which the app verifies with POST /v1/api_keys/verify.
-- Stored as hashes; a revoked key keeps its row (and its id in the events).
CREATE TABLE org_api_keys (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    key_hash      TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    -- a JSON array of the app's own scope names
    scopes        TEXT NOT NULL DEFAULT '[]',
    created_by    TEXT,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    CONSTRAINT org_api_keys_key_hash_key UNIQUE (key_hash)
);
CREATE INDEX org_api_keys_org_idx ON org_api_keys (org_id, id);

-- When the user last made an authenticated request (at most one write per
-- user per hour): user administration shows it, clean-up of abandoned
-- personal orgs reads it. NULL: not seen since this migration (created_at
-- stands in).
ALTER TABLE users ADD COLUMN last_seen_at BIGINT;
