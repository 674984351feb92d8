-- Tenancy: users, organizations, memberships, invitations, API keys, the
-- event log and stored Idempotency-Key responses.
-- Timestamps are unix milliseconds (BIGINT) on both backends; JSON is TEXT.

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    issuer          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    email           TEXT,
    email_verified  BOOLEAN NOT NULL DEFAULT FALSE,
    name            TEXT,
    active_org_id   TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CONSTRAINT users_issuer_subject_key UNIQUE (issuer, subject)
);

CREATE TABLE orgs (
    id                TEXT PRIMARY KEY,
    kind              TEXT NOT NULL CHECK (kind IN ('personal', 'team')),
    name              TEXT NOT NULL,
    billing_email     TEXT,
    -- set while the org is someone's personal org: one per user, by constraint
    personal_user_id  TEXT REFERENCES users (id) ON DELETE CASCADE,
    settings          TEXT NOT NULL DEFAULT '{}',
    -- bumped by every write to the org; the write also locks the row, which
    -- serializes multi-row invariants (last owner, seats, quotas) per org
    version           BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    CONSTRAINT orgs_personal_user_key UNIQUE (personal_user_id)
);

CREATE TABLE memberships (
    org_id      TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE invitations (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    email            TEXT NOT NULL,
    role             TEXT NOT NULL,
    token_hash       TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'declined', 'revoked')),
    invited_by       TEXT,
    expires_at       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    CONSTRAINT invitations_token_hash_key UNIQUE (token_hash)
);
CREATE UNIQUE INDEX invitations_pending_email_key ON invitations (org_id, email) WHERE status = 'pending';

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);

CREATE TABLE events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    org_id      TEXT,
    type        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX events_org_idx ON events (org_id, seq);

CREATE TABLE idempotency_keys (
    principal     TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status_code   BIGINT,
    response_body BYTEA,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (principal, key)
);
