-- Portal sessions (issue 9): a single-use link minted for one member of one
-- org, and the browser session that opening it starts. Times are unix
-- milliseconds. Only hashes of the link token and of the session cookie are
-- stored. The session belongs to a membership: removing the member (or
-- deleting the org, or the user) deletes the session in the same
-- transaction, so a removed member loses the portal at once.
CREATE TABLE portal_sessions (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    link_hash        TEXT NOT NULL,
    link_expires_at  BIGINT NOT NULL,
    return_url       TEXT,
    cookie_hash      TEXT,
    csrf_token       TEXT,
    opened_at        BIGINT,
    last_seen_at     BIGINT,
    ended_at         BIGINT,
    created_at       BIGINT NOT NULL,
    CONSTRAINT portal_sessions_link_hash_key UNIQUE (link_hash),
    CONSTRAINT portal_sessions_cookie_hash_key UNIQUE (cookie_hash),
    CONSTRAINT portal_sessions_membership_fkey FOREIGN KEY (org_id, user_id)
        REFERENCES memberships (org_id, user_id) ON DELETE CASCADE
);
CREATE INDEX portal_sessions_membership_idx ON portal_sessions (org_id, user_id);
