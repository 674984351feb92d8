-- Per-(org, type) count of resources, kept in the same transaction as every
-- insert and delete of a resource, so a quota check reads one row instead of
-- counting an org's resources (which grows with the org). Exact: a CHECK
-- keeps it from going below zero, and tests compare it with COUNT(*) after
-- concurrent creates and deletes.
CREATE TABLE resource_usage (
    org_id  TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    type    TEXT NOT NULL,
    used    BIGINT NOT NULL CHECK (used >= 0),
    PRIMARY KEY (org_id, type)
);
INSERT INTO resource_usage (org_id, type, used)
SELECT org_id, type, COUNT(*) FROM resources GROUP BY org_id, type;
