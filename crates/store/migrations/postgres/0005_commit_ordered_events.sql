-- Event sequence numbers in commit order (issue 14, item 3).
--
-- `seq` was taken when an event row was inserted, long before its
-- transaction might commit: a reader could see event 14 while 13 was still
-- uncommitted, and could not tell a hole that will fill from a rolled-back
-- transaction. Now every event row is numbered again as its transaction
-- commits (a deferred trigger runs inside COMMIT), under a transaction-level
-- advisory lock that is released only once the commit is visible. So a
-- transaction takes its numbers only after every transaction numbered
-- before it is visible: a reader sees the log as a prefix, and a hole in
-- `seq` is a number given up by a rolled-back commit, never one still to
-- come. The lock is held for the server-side part of a COMMIT only, never
-- across a round trip to a client.
--
-- The number given at INSERT stays as a placeholder until COMMIT; only the
-- transaction itself can see it.

CREATE FUNCTION orgplane_number_event_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7242002);
    UPDATE events SET seq = nextval(pg_get_serial_sequence('events', 'seq')) WHERE seq = NEW.seq;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER events_numbered_at_commit
    AFTER INSERT ON events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION orgplane_number_event_at_commit();
