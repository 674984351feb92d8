-- A seat hold on the org's subscription: the seat count a seat change has
-- asked the payment provider for, and until when it counts (unix
-- milliseconds). While it lasts, every seat limit counts
-- min(quantity, seat_hold) (`orgplane_core::subscription::SeatHold`), so
-- that an invitation racing a seat decrease can't take a seat the provider
-- is about to remove. NULL: no seat change in progress. A hold is released
-- once the provider's answer is applied (or its call failed) and expires by
-- itself if the process that took it dies.
ALTER TABLE subscriptions ADD COLUMN seat_hold BIGINT;
ALTER TABLE subscriptions ADD COLUMN seat_hold_until BIGINT;
