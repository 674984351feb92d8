//! Subscriptions as orgplane normalizes them across payment providers.
//!
//! Each provider's vocabulary maps onto [`SubscriptionStatus`]; the billing
//! crate does the mapping, the store keeps the result, entitlement
//! resolution reads it. Nothing here knows a provider's JSON.

use serde::{Deserialize, Serialize};

use crate::{OrgId, Timestamp};

/// Which payment provider a subscription or event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Stripe,
    Lemonsqueezy,
    Sandbox,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Stripe => "stripe",
            Provider::Lemonsqueezy => "lemonsqueezy",
            Provider::Sandbox => "sandbox",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "stripe" => Some(Provider::Stripe),
            "lemonsqueezy" => Some(Provider::Lemonsqueezy),
            "sandbox" => Some(Provider::Sandbox),
            _ => None,
        }
    }
}

/// The normalized subscription status (Stripe's vocabulary, which is the
/// larger one; Lemon Squeezy's maps onto it in the billing crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 8] = [
        SubscriptionStatus::Incomplete,
        SubscriptionStatus::IncompleteExpired,
        SubscriptionStatus::Trialing,
        SubscriptionStatus::Active,
        SubscriptionStatus::PastDue,
        SubscriptionStatus::Canceled,
        SubscriptionStatus::Unpaid,
        SubscriptionStatus::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Incomplete => "incomplete",
            SubscriptionStatus::IncompleteExpired => "incomplete_expired",
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Canceled => "canceled",
            SubscriptionStatus::Unpaid => "unpaid",
            SubscriptionStatus::Paused => "paused",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        SubscriptionStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The statuses of a subscription that has ended for good. The store
    /// binds these into its queries (`status NOT IN ($n, $m)`), so the SQL
    /// and [`SubscriptionStatus::is_terminal`] can't disagree.
    pub const TERMINAL: [SubscriptionStatus; 2] = [SubscriptionStatus::Canceled, SubscriptionStatus::IncompleteExpired];

    /// A subscription that has ended for good: a new checkout may start.
    pub fn is_terminal(self) -> bool {
        SubscriptionStatus::TERMINAL.contains(&self)
    }

    /// Live = not ended. An org holds at most one live subscription.
    pub fn is_live(self) -> bool {
        !self.is_terminal()
    }
}

/// The provider's view of one subscription at one moment, normalized.
/// This is what a webhook or a re-fetch turns into, and what the store
/// applies (older snapshots never overwrite newer ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionSnapshot {
    pub provider: Provider,
    /// The provider's subscription id (`sub_…` at Stripe, a number at Lemon Squeezy).
    pub provider_subscription_id: String,
    pub provider_customer_id: Option<String>,
    /// The org named in the provider's metadata, if any.
    pub org_id: Option<OrgId>,
    pub status: SubscriptionStatus,
    /// The price (Stripe) or variant (Lemon Squeezy) id that maps to a plan.
    pub price_id: Option<String>,
    /// The provider's id of the item whose quantity is the seat count.
    pub item_id: Option<String>,
    pub quantity: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub current_period_end: Option<Timestamp>,
    pub cancel_at_period_end: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub trial_end: Option<Timestamp>,
    /// The provider's own time of this state: events are applied in this order.
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: Timestamp,
    /// A customer-portal URL when the provider hands one out with the object
    /// (Lemon Squeezy's pre-signed `urls.customer_portal`).
    pub portal_url: Option<String>,
}

/// What an invoice event says about paying for a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payment {
    /// An invoice was paid (or a failed one recovered).
    Paid,
    /// A payment attempt failed.
    Failed(PaymentFailure),
}

impl Payment {
    pub fn as_str(&self) -> &'static str {
        match self {
            Payment::Paid => "paid",
            Payment::Failed(_) => "failed",
        }
    }
}

/// A failed payment, as an app shows it: what is owed and where the
/// customer pays it (the provider's hosted invoice page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFailure {
    /// The provider's invoice id (`in_…`, a Lemon Squeezy subscription invoice id).
    pub invoice_id: String,
    /// In the currency's minor unit (cents), when the provider says.
    pub amount_due: Option<i64>,
    /// Lower-case ISO 4217 (`usd`), when the provider says.
    pub currency: Option<String>,
    /// The provider's page where the customer pays the invoice.
    pub hosted_invoice_url: Option<String>,
    /// How many times the provider has tried to collect (Stripe only).
    pub attempt_count: Option<i64>,
    /// When the provider tries again, if it will (Stripe only).
    pub next_payment_attempt: Option<Timestamp>,
    /// The provider's own time of the failure: a payment stored as made
    /// after it makes it stale.
    pub failed_at: Timestamp,
}

/// The seats a subscription may be bought or changed to.
pub const SEATS: std::ops::RangeInclusive<u32> = 1..=100_000;

/// Checks a requested seat count against [`SEATS`].
pub fn check_seats(seats: u32) -> Result<u32, crate::DomainError> {
    if SEATS.contains(&seats) {
        Ok(seats)
    } else {
        Err(crate::DomainError::invalid(
            "seats",
            format!("seats must be a whole number from {} to {}", SEATS.start(), SEATS.end()),
        ))
    }
}

/// A cap on the seats a subscription's quantity gives, held while a seat
/// change is on its way to the payment provider.
///
/// The provider call can't run inside a database transaction, so a seat
/// decrease is checked and announced in one step before the call: the
/// store takes the hold inside the org's lock (see [`SeatHold::take`]), and
/// from then on every seat limit counts `min(quantity, seats)` (see
/// [`SeatHold::cap`]) until the provider's answer is applied and the hold
/// released. An invitation racing the decrease is then refused like any
/// other past the limit, instead of being let in under the old, higher
/// quantity. A hold ends by itself at `until`, so that a process that dies
/// mid-call blocks nothing for long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatHold {
    /// The seat count asked of the provider.
    pub seats: i64,
    /// When the hold stops counting, released or not.
    pub until: Timestamp,
}

impl SeatHold {
    /// Whether the hold still counts at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.until
    }

    /// The quantity the seat limit counts at `now`: the purchased
    /// `quantity`, capped by a hold while it lasts. The one place where a
    /// hold meets the quantity.
    pub fn cap(hold: Option<&SeatHold>, quantity: i64, now: Timestamp) -> i64 {
        match hold {
            Some(hold) if hold.is_live(now) => quantity.min(hold.seats),
            _ => quantity,
        }
    }

    /// A hold of `seats` until `now + hold_for`, taken inside the org's lock
    /// with the seats in use counted there: refused when more seats are in
    /// use than asked for, and while another live hold (another seat change
    /// still waiting on the provider) is in place. An expired hold is
    /// replaced.
    pub fn take(
        seats: u32,
        seats_in_use: i64,
        current: Option<&SeatHold>,
        now: Timestamp,
        hold_for: time::Duration,
    ) -> Result<SeatHold, crate::DomainError> {
        let seats = i64::from(check_seats(seats)?);
        if seats < seats_in_use {
            return Err(crate::DomainError::invalid(
                "seats",
                format!(
                    "{seats_in_use} seats are in use (members and pending invitations); remove members or revoke invitations before buying fewer"
                ),
            ));
        }
        if let Some(other) = current.filter(|h| h.is_live(now)) {
            let wait = (other.until - now).whole_seconds().max(0) + 1;
            return Err(crate::DomainError::conflict(format!(
                "another seat change of this organization is waiting on the payment provider; try again when it is done (at most {wait} s)"
            )));
        }
        Ok(SeatHold { seats, until: now + hold_for })
    }
}

/// A plan change on its way to the provider: the seat limit of the target
/// plan, counted before the provider has switched.
///
/// A change's downgrade check counts the seats in use against the target
/// plan's limit, but the local plan changes only when the provider's answer
/// (or its webhook) is applied. Invitations sent in between would be let in
/// under the current, higher limit and leave the org over the target's. So
/// the store takes the hold inside the org's lock, in the transaction that
/// counts the seats ([`PlanHold::take`]); from then on every seat limit
/// counts `min(limit, seats)` ([`PlanHold::cap`]) until the provider's
/// answer with the target price is applied, the call fails, or `until`
/// passes (so a lost webhook can't keep the org below its plan for long).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanHold {
    /// The target plan's seat limit (overrides included).
    pub seats: i64,
    /// When the hold stops counting, released or not.
    pub until: Timestamp,
}

/// Why a plan change can't take its hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanHoldRefused {
    /// More seats are in use than the target plan allows.
    SeatsInUse { used: i64, limit: i64 },
    /// A change to a plan with another seat limit is still waiting on the
    /// provider, until `until`.
    AnotherChange { until: Timestamp },
}

impl PlanHold {
    /// Whether the hold still counts at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.until
    }

    /// The seat limit at `now`: `limit` (`None`: unlimited), capped by a
    /// live hold. The one place where a plan hold meets a limit.
    pub fn cap(hold: Option<&PlanHold>, limit: Option<i64>, now: Timestamp) -> Option<i64> {
        match (hold, limit) {
            (Some(hold), limit) if hold.is_live(now) => Some(limit.map_or(hold.seats, |l| l.min(hold.seats))),
            (_, limit) => limit,
        }
    }

    /// A hold of the target's seat limit `seats` until `now + hold_for`,
    /// taken inside the org's lock with the seats in use counted there:
    /// refused when more seats are in use, and while a live hold of
    /// another change with another limit is in place. A live hold with the
    /// same limit is shared as it is (concurrent identical changes are one
    /// change at the provider); an expired one is replaced.
    pub fn take(
        seats: i64,
        seats_in_use: i64,
        current: Option<&PlanHold>,
        now: Timestamp,
        hold_for: time::Duration,
    ) -> Result<PlanHold, PlanHoldRefused> {
        if seats_in_use > seats {
            return Err(PlanHoldRefused::SeatsInUse { used: seats_in_use, limit: seats });
        }
        match current.filter(|h| h.is_live(now)) {
            Some(same) if same.seats == seats => Ok(*same),
            Some(other) => Err(PlanHoldRefused::AnotherChange { until: other.until }),
            None => Ok(PlanHold { seats, until: now + hold_for }),
        }
    }
}

/// The longest wait between two retries of an unmatched or failed provider event.
pub const MAX_RETRY_BACKOFF: time::Duration = time::Duration::hours(6);
/// Retries of a provider event stop this long after it arrived (it stays stored and listed).
pub const RETRY_WINDOW: time::Duration = time::Duration::days(7);

/// When an unmatched or failed provider event is tried again after its
/// `attempts`-th attempt: exponential backoff from 2 s up to
/// [`MAX_RETRY_BACKOFF`], and never once [`RETRY_WINDOW`] has passed since
/// it arrived.
pub fn next_retry_at(attempts: i64, received_at: Timestamp, now: Timestamp) -> Option<Timestamp> {
    if now - received_at > RETRY_WINDOW {
        return None;
    }
    let secs = 1i64.checked_shl(attempts.clamp(0, 30) as u32).unwrap_or(i64::MAX);
    Some(now + time::Duration::seconds(secs).min(MAX_RETRY_BACKOFF))
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn retries_back_off_and_stop_after_the_window() {
        let now = datetime!(2026-01-01 11:00 UTC);
        assert_eq!(next_retry_at(1, now, now), Some(now + time::Duration::seconds(2)));
        assert_eq!(next_retry_at(40, now, now), Some(now + MAX_RETRY_BACKOFF));
        assert_eq!(next_retry_at(3, now - time::Duration::days(8), now), None);
    }

    #[test]
    fn a_live_seat_hold_caps_the_quantity_and_an_expired_one_does_not() {
        let now = time::macros::datetime!(2026-01-01 11:00 UTC);
        let hold = SeatHold { seats: 4, until: now + time::Duration::minutes(2) };
        assert_eq!(SeatHold::cap(None, 5, now), 5);
        assert_eq!(SeatHold::cap(Some(&hold), 5, now), 4, "a decrease counts at once");
        assert_eq!(SeatHold::cap(Some(&hold), 3, now), 3, "an increase counts once the provider says so");
        assert_eq!(SeatHold::cap(Some(&hold), 5, hold.until - time::Duration::nanoseconds(1)), 4);
        assert_eq!(SeatHold::cap(Some(&hold), 5, hold.until), 5, "expired: it counts no more");
    }

    #[test]
    fn a_seat_hold_is_refused_below_usage_and_beside_another_live_hold() {
        let now = time::macros::datetime!(2026-01-01 11:00 UTC);
        let two_minutes = time::Duration::minutes(2);
        let taken = SeatHold::take(4, 4, None, now, two_minutes).expect("usage fits");
        assert_eq!(taken, SeatHold { seats: 4, until: now + two_minutes });
        match SeatHold::take(3, 4, None, now, two_minutes) {
            Err(crate::DomainError::InvalidRequest { param, message }) => {
                assert_eq!(param.as_deref(), Some("seats"));
                assert_eq!(
                    message,
                    "4 seats are in use (members and pending invitations); remove members or revoke invitations before buying fewer"
                );
            }
            other => panic!("expected invalid_request, got {other:?}"),
        }
        assert!(SeatHold::take(0, 0, None, now, two_minutes).is_err(), "the seat range still holds");
        let other = SeatHold { seats: 6, until: now + time::Duration::seconds(30) };
        match SeatHold::take(8, 4, Some(&other), now, two_minutes) {
            Err(crate::DomainError::Conflict { message }) => assert!(message.contains("31 s"), "{message}"),
            other => panic!("expected conflict, got {other:?}"),
        }
        let later = other.until;
        let replaced = SeatHold::take(8, 4, Some(&other), later, two_minutes).expect("an expired hold is replaced");
        assert_eq!(replaced.until, later + two_minutes);
    }

    #[test]
    fn seats_are_checked_against_one_range() {
        assert!(check_seats(0).is_err());
        assert_eq!(check_seats(1).ok(), Some(1));
        assert_eq!(check_seats(100_000).ok(), Some(100_000));
        assert!(check_seats(100_001).is_err());
    }
}

// ---------------------------------------------------------------------------
// Every provider subscription an org has had, and which one is the org's.
//
// orgplane keeps, for each provider subscription it has seen, the newest
// state it knows of it ([`KnownSubscription`]), whether or not that
// subscription is the org's current one. Two rules decide everything, and
// neither depends on the order in which provider events arrive:
//
// 1. [`merge`]: a state replaces the known one only when it is newer news.
//    An ended state beats every live state, whatever their timestamps (a
//    subscription that ended never becomes live again); otherwise the later
//    `observed_at` wins (millisecond precision, as stored); a tie is broken
//    by the states' content, so that the result is the same in every order.
// 2. [`current`]: the org's subscription is its live one; of several live
//    ones (bought twice), the one seen first (smallest `first_observed_at`,
//    the earliest time of any of its states); with none live, the one that
//    ended last.
//
// Because `merge` takes the greatest state under a total order and
// `first_observed_at` is a minimum, folding any arrival order of the same
// events gives the same known states, and so the same current subscription.

/// A timestamp at the store's precision (unix milliseconds).
fn ms(at: Timestamp) -> i128 {
    at.unix_timestamp_nanos() / 1_000_000
}

/// What orgplane knows of one provider subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSubscription {
    /// Its newest known state (`observed_at` is that state's time).
    pub state: SubscriptionSnapshot,
    /// The earliest provider time of any state seen of it: of two live
    /// subscriptions, the one that came first stays the org's.
    pub first_observed_at: Timestamp,
    /// Since when it has been `past_due`, as orgplane saw it (the start of
    /// the grace period); `None` unless its state is `past_due`.
    pub past_due_since: Option<Timestamp>,
}

/// What [`merge`] made of an incoming state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    /// The first state seen of this subscription.
    New,
    /// Newer news: `content_changed` is false when only its time moved on.
    Newer { content_changed: bool },
    /// Not newer than the known state (older, the same, or a live state of
    /// an ended subscription): the known state stays.
    Stale,
}

impl StateChange {
    /// Whether the known state was replaced.
    pub fn took(self) -> bool {
        !matches!(self, StateChange::Stale)
    }
}

/// The order of precedence between two states of one subscription: ended
/// beats live, then the later time, then content (a total order, so that
/// equal-time states settle the same way in every arrival order).
fn precedence(s: &SubscriptionSnapshot) -> impl Ord + '_ {
    (
        s.status.is_terminal(),
        ms(s.observed_at),
        SubscriptionStatus::ALL.iter().position(|x| *x == s.status),
        (s.quantity, s.price_id.as_deref(), s.item_id.as_deref(), s.cancel_at_period_end),
        (s.current_period_end.map(ms), s.trial_end.map(ms)),
        (s.provider_customer_id.as_deref(), s.portal_url.as_deref()),
    )
}

/// Whether two states say the same thing, apart from their time (a missing
/// customer or portal URL in `b` means "not told", not "removed").
pub fn same_content(a: &SubscriptionSnapshot, b: &SubscriptionSnapshot) -> bool {
    a.status == b.status
        && a.price_id == b.price_id
        && a.item_id == b.item_id
        && a.quantity == b.quantity
        && a.current_period_end.map(ms) == b.current_period_end.map(ms)
        && a.cancel_at_period_end == b.cancel_at_period_end
        && a.trial_end.map(ms) == b.trial_end.map(ms)
        && b.provider_customer_id.as_ref().is_none_or(|c| a.provider_customer_id.as_ref() == Some(c))
        && b.portal_url.as_ref().is_none_or(|p| a.portal_url.as_ref() == Some(p))
}

/// Merges an incoming state of a subscription into what is known of it
/// (rule 1 above). Returns what happened and the known subscription after.
pub fn merge(known: Option<&KnownSubscription>, incoming: &SubscriptionSnapshot) -> (StateChange, KnownSubscription) {
    let Some(known) = known else {
        let past_due_since = (incoming.status == SubscriptionStatus::PastDue).then_some(incoming.observed_at);
        let first =
            KnownSubscription { state: incoming.clone(), first_observed_at: incoming.observed_at, past_due_since };
        return (StateChange::New, first);
    };
    let first_observed_at = if ms(incoming.observed_at) < ms(known.first_observed_at) {
        incoming.observed_at
    } else {
        known.first_observed_at
    };
    if precedence(incoming) <= precedence(&known.state) {
        return (StateChange::Stale, KnownSubscription { first_observed_at, ..known.clone() });
    }
    let content_changed = !same_content(&known.state, incoming);
    let mut state = incoming.clone();
    // "Not told" keeps what was known.
    if state.provider_customer_id.is_none() {
        state.provider_customer_id = known.state.provider_customer_id.clone();
    }
    if state.portal_url.is_none() {
        state.portal_url = known.state.portal_url.clone();
    }
    if state.org_id.is_none() {
        state.org_id = known.state.org_id;
    }
    let past_due_since = match (state.status, known.state.status) {
        (SubscriptionStatus::PastDue, SubscriptionStatus::PastDue) => known.past_due_since.or(Some(state.observed_at)),
        (SubscriptionStatus::PastDue, _) => Some(state.observed_at),
        _ => None,
    };
    (StateChange::Newer { content_changed }, KnownSubscription { state, first_observed_at, past_due_since })
}

/// The org's current subscription among every one it has had (rule 2
/// above): its live one (the first seen of several), else the one that
/// ended last. `None` only for an empty list.
pub fn current(known: &[KnownSubscription]) -> Option<&KnownSubscription> {
    let key = |k: &KnownSubscription| (k.state.provider.as_str(), k.state.provider_subscription_id.clone());
    let live = known
        .iter()
        .filter(|k| k.state.status.is_live())
        .min_by(|a, b| (ms(a.first_observed_at), key(a)).cmp(&(ms(b.first_observed_at), key(b))));
    live.or_else(|| {
        known.iter().max_by(|a, b| (ms(a.state.observed_at), key(a)).cmp(&(ms(b.state.observed_at), key(b))))
    })
}

/// Live subscriptions of the org other than `chosen`: the org is paying
/// twice, and an operator must cancel one at the provider.
pub fn live_rivals<'a>(known: &'a [KnownSubscription], chosen: &KnownSubscription) -> Vec<&'a KnownSubscription> {
    known
        .iter()
        .filter(|k| k.state.status.is_live())
        .filter(|k| {
            k.state.provider != chosen.state.provider
                || k.state.provider_subscription_id != chosen.state.provider_subscription_id
        })
        .collect()
}

#[cfg(test)]
mod known_subscription_tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use time::macros::datetime;

    const T0: Timestamp = datetime!(2026-01-01 10:00 UTC);

    fn at(secs: i64) -> Timestamp {
        T0 + time::Duration::seconds(secs)
    }

    fn snap(psid: &str, status: SubscriptionStatus, t: i64) -> SubscriptionSnapshot {
        SubscriptionSnapshot {
            provider: Provider::Stripe,
            provider_subscription_id: psid.into(),
            provider_customer_id: Some("cus_1".into()),
            org_id: None,
            status,
            price_id: Some("price_business".into()),
            item_id: Some(format!("si_{psid}")),
            quantity: 3,
            current_period_end: None,
            cancel_at_period_end: false,
            trial_end: None,
            observed_at: at(t),
            portal_url: None,
        }
    }

    /// Folds `events` in arrival order, as the store does.
    fn fold(events: &[SubscriptionSnapshot]) -> BTreeMap<String, KnownSubscription> {
        let mut known: BTreeMap<String, KnownSubscription> = BTreeMap::new();
        for e in events {
            let (_, next) = merge(known.get(&e.provider_subscription_id), e);
            known.insert(e.provider_subscription_id.clone(), next);
        }
        known
    }

    fn current_of(known: &BTreeMap<String, KnownSubscription>) -> Option<(String, SubscriptionStatus)> {
        let all: Vec<KnownSubscription> = known.values().cloned().collect();
        current(&all).map(|k| (k.state.provider_subscription_id.clone(), k.state.status))
    }

    use SubscriptionStatus::{Active, Canceled, PastDue, Trialing};

    #[test]
    fn an_ended_subscription_never_becomes_live_again_whatever_the_timestamps() {
        let (_, ended) = merge(None, &snap("sub_1", Canceled, -400));
        let (change, after) = merge(Some(&ended), &snap("sub_1", Active, -100));
        assert_eq!(change, StateChange::Stale);
        assert_eq!(after.state.status, Canceled);
        let (change, _) = merge(Some(&ended), &snap("sub_1", Active, -400));
        assert_eq!(change, StateChange::Stale, "not even at the same millisecond");
    }

    #[test]
    fn a_newer_state_replaces_an_older_one_and_an_older_one_does_not() {
        let (_, known) = merge(None, &snap("sub_1", Active, 10));
        assert_eq!(merge(Some(&known), &snap("sub_1", PastDue, 5)).0, StateChange::Stale);
        assert_eq!(merge(Some(&known), &snap("sub_1", PastDue, 20)).0, StateChange::Newer { content_changed: true });
        assert_eq!(merge(Some(&known), &snap("sub_1", Active, 20)).0, StateChange::Newer { content_changed: false });
        assert_eq!(merge(Some(&known), &snap("sub_1", Active, 10)).0, StateChange::Stale);
    }

    #[test]
    fn case_b_an_old_live_event_after_both_ends_leaves_the_org_ended() {
        // sub_1 created, sub_1 deleted, sub_2 deleted, then sub_2's older "created".
        let known = fold(&[
            snap("sub_1", Active, -500),
            snap("sub_1", Canceled, -400),
            snap("sub_2", Canceled, -100),
            snap("sub_2", Active, -200),
        ]);
        assert_eq!(current_of(&known), Some(("sub_2".into(), Canceled)));
    }

    #[test]
    fn case_a_a_retried_old_event_does_not_revive_an_ended_subscription() {
        let mut events = vec![
            snap("sub_2", Active, -100),
            snap("sub_1", Active, -1000),
            snap("sub_1", Canceled, -900),
            snap("sub_2", Canceled, -50),
        ];
        // The retry of sub_1's first event, and any redelivery, change nothing.
        events.push(snap("sub_1", Active, -1000));
        events.push(snap("sub_2", Active, -100));
        let known = fold(&events);
        assert_eq!(current_of(&known), Some(("sub_2".into(), Canceled)));
    }

    #[test]
    fn of_two_live_subscriptions_the_first_seen_is_the_orgs_and_the_other_is_a_rival() {
        let known = fold(&[snap("sub_b", Active, 50), snap("sub_a", Trialing, 10), snap("sub_a", Active, 60)]);
        let all: Vec<KnownSubscription> = known.values().cloned().collect();
        let chosen = current(&all).expect("one");
        assert_eq!(chosen.state.provider_subscription_id, "sub_a");
        let rivals = live_rivals(&all, chosen);
        assert_eq!(rivals.len(), 1);
        assert_eq!(rivals[0].state.provider_subscription_id, "sub_b");
    }

    #[test]
    fn past_due_since_is_kept_while_past_due_and_cleared_after() {
        let (_, k) = merge(None, &snap("sub_1", Active, 0));
        let (_, k) = merge(Some(&k), &snap("sub_1", PastDue, 10));
        assert_eq!(k.past_due_since, Some(at(10)));
        let (_, k) = merge(Some(&k), &snap("sub_1", PastDue, 20));
        assert_eq!(k.past_due_since, Some(at(10)));
        let (_, k) = merge(Some(&k), &snap("sub_1", Active, 30));
        assert_eq!(k.past_due_since, None);
    }

    /// One subscription's real history: live states at increasing times,
    /// maybe ended at the end.
    fn history(psid: &'static str) -> impl Strategy<Value = Vec<SubscriptionSnapshot>> {
        let live = proptest::sample::select(vec![Active, Trialing, PastDue, SubscriptionStatus::Paused]);
        let ending =
            proptest::option::of(proptest::sample::select(vec![Canceled, SubscriptionStatus::IncompleteExpired]));
        (proptest::collection::vec((live, 1i64..400, 1i64..5), 1..5), ending, -2000i64..0).prop_map(
            move |(states, end, start)| {
                let mut t = start;
                let mut out = Vec::new();
                for (status, step, seats) in states {
                    t += step;
                    let mut s = snap(psid, status, t);
                    s.quantity = seats;
                    out.push(s);
                }
                if let Some(end) = end {
                    t += 1;
                    out.push(snap(psid, end, t));
                }
                out
            },
        )
    }

    proptest! {
        /// Whatever order the events of a generated history arrive in (with
        /// redeliveries), each subscription ends at the state of its newest
        /// event, and the org's current subscription is the one those states
        /// imply.
        #[test]
        fn every_arrival_order_ends_in_the_state_of_each_subscriptions_newest_event(
            (events, order, redeliver) in (history("sub_1"), history("sub_2"), history("sub_3"), 1usize..=3)
                .prop_flat_map(|(a, b, c, n)| {
                    let events: Vec<SubscriptionSnapshot> =
                        [a, b, c].into_iter().take(n).flatten().collect();
                    let len = events.len();
                    (
                        Just(events),
                        Just((0..len).collect::<Vec<usize>>()).prop_shuffle(),
                        proptest::collection::vec(0..len, 0..4),
                    )
                })
        ) {
            let arrived: Vec<SubscriptionSnapshot> =
                order.iter().chain(redeliver.iter()).map(|&i| events[i].clone()).collect();
            let known = fold(&arrived);
            // What each subscription's newest event implies.
            let mut newest: BTreeMap<String, SubscriptionSnapshot> = BTreeMap::new();
            for e in &events {
                newest.insert(e.provider_subscription_id.clone(), e.clone());
            }
            prop_assert_eq!(known.len(), newest.len());
            for (psid, expected) in &newest {
                prop_assert_eq!(&known[psid].state, expected);
                let first = events.iter().filter(|e| &e.provider_subscription_id == psid).map(|e| e.observed_at).min();
                prop_assert_eq!(Some(known[psid].first_observed_at), first);
            }
            let in_order = fold(&events);
            prop_assert_eq!(current_of(&known), current_of(&in_order));
        }
    }
}

#[cfg(test)]
mod plan_hold_tests {
    use super::*;

    const NOW: Timestamp = time::macros::datetime!(2025-06-01 12:00 UTC);
    const HOUR: time::Duration = time::Duration::hours(1);

    #[test]
    fn a_live_plan_hold_caps_the_seat_limit_until_it_expires() {
        let hold = PlanHold { seats: 10, until: NOW + HOUR };
        assert_eq!(PlanHold::cap(None, Some(40), NOW), Some(40));
        assert_eq!(PlanHold::cap(Some(&hold), None, NOW), Some(10), "an unlimited plan is capped too");
        assert_eq!(PlanHold::cap(Some(&hold), Some(40), NOW), Some(10));
        assert_eq!(PlanHold::cap(Some(&hold), Some(4), NOW), Some(4), "a lower limit stays");
        assert_eq!(PlanHold::cap(Some(&hold), Some(40), hold.until), Some(40), "expired: it counts no more");
    }

    #[test]
    fn a_plan_hold_needs_the_seats_in_use_to_fit_and_no_other_change_waiting() {
        let taken = PlanHold::take(10, 10, None, NOW, HOUR).expect("usage fits");
        assert_eq!(taken, PlanHold { seats: 10, until: NOW + HOUR });
        assert_eq!(PlanHold::take(10, 11, None, NOW, HOUR), Err(PlanHoldRefused::SeatsInUse { used: 11, limit: 10 }));
        let later = NOW + time::Duration::minutes(5);
        assert_eq!(PlanHold::take(10, 3, Some(&taken), later, HOUR), Ok(taken), "the same limit shares the hold");
        assert_eq!(
            PlanHold::take(5, 3, Some(&taken), later, HOUR),
            Err(PlanHoldRefused::AnotherChange { until: taken.until })
        );
        let replaced = PlanHold::take(5, 3, Some(&taken), taken.until, HOUR).expect("an expired hold is replaced");
        assert_eq!(replaced, PlanHold { seats: 5, until: taken.until + HOUR });
    }
}
