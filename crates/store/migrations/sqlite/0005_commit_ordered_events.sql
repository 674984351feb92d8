-- Event sequence numbers in commit order (issue 14, item 3): nothing to do
-- on SQLite. Its writers take turns (one write transaction at a time, from
-- its first write to its commit), so `seq` is already given in commit order
-- and a reader never sees a later event before an earlier one. The
-- PostgreSQL migration of the same number renumbers events at commit.
SELECT 1;
