-- Retention of outgoing-webhook deliveries (`webhooks.retention_days`): the
-- sweep finds finished deliveries (succeeded or failed) by when they last
-- changed, oldest first, without reading the pending ones.
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (updated_at) WHERE status <> 'pending';
