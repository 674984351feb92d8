-- The WorkOS mirror (issue 12): each org, and each membership of a user who
-- signs in through WorkOS, is a target kept in step with WorkOS. Timestamps
-- are unix milliseconds.

-- One row per target: (org, '') is the org itself, (org, user) a
-- membership. An event about a target marks it pending again (`generation`
-- moves on); the worker then makes WorkOS match the target's state *now*,
-- so a retried or repeated sync is harmless. No foreign keys: an org's or a
-- membership's deletion must still reach WorkOS.
CREATE TABLE workos_mirror_targets (
    org_id           TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    -- the member's WorkOS user id (the token's subject), '' for the org
    workos_user_id   TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'synced')),
    -- bumped by every event about the target: a sync that began before it
    -- does not mark the target synced
    generation       BIGINT NOT NULL DEFAULT 0,
    -- failed syncs in a row (the place in the retry schedule), every sync
    attempts         BIGINT NOT NULL DEFAULT 0,
    failures         BIGINT NOT NULL DEFAULT 0,
    failing_since    BIGINT,
    last_error       TEXT,
    next_attempt_at  BIGINT NOT NULL,
    -- the replica syncing it now, and until when that holds
    lease_owner      TEXT,
    lease_until      BIGINT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX workos_mirror_targets_due_idx ON workos_mirror_targets (next_attempt_at) WHERE status = 'pending';

-- What WorkOS calls an org: known once created or found by external_id.
CREATE TABLE workos_organizations (
    org_id                  TEXT PRIMARY KEY,
    workos_organization_id  TEXT NOT NULL,
    updated_at              BIGINT NOT NULL
);

-- The mirror's place in the event log, as `webhook_fanout` is the webhooks'.
-- Starts at the end: existing orgs are mirrored by `orgplane mirror workos backfill`.
CREATE TABLE workos_mirror_position (
    name       TEXT PRIMARY KEY,
    after_seq  BIGINT NOT NULL
);
INSERT INTO workos_mirror_position (name, after_seq) SELECT 'events', COALESCE(MAX(seq), 0) FROM events;
