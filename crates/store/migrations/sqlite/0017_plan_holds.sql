-- A plan hold on the org's subscription: a plan change waiting on the
-- payment provider. `plan_hold_price` is the target price asked for,
-- `plan_hold_seats` the target plan's seat limit, `plan_hold_until` when
-- the hold stops counting (unix milliseconds). While it lasts every seat
-- limit counts min(limit, plan_hold_seats)
-- (`orgplane_core::subscription::PlanHold`), so invitations sent between a
-- downgrade's seat check and the provider's answer can't leave the org
-- over the target plan's seats. NULL: no plan change in progress. Applying
-- a state with the target price clears it, a failed call releases it, and
-- it expires by itself (one hour) if the answer never comes.
ALTER TABLE subscriptions ADD COLUMN plan_hold_price TEXT;
ALTER TABLE subscriptions ADD COLUMN plan_hold_seats BIGINT;
ALTER TABLE subscriptions ADD COLUMN plan_hold_until BIGINT;
