//! Entitlements: what one organization may do, and how much of it.
//!
//! [`resolve`] is the one function that decides, from the plan catalog, the
//! org's kind, its subscription and its per-org overrides. The guards every
//! route uses, [`Entitlements::require_feature`] and
//! [`Entitlements::check_limit`], read its result and say, in the error,
//! what the org has and what would allow the request.
//!
//! Everything here is pure and cheap (well under a microsecond per
//! resolution) so that it can run on every request of the app. It never
//! reads the clock (callers pass `now`), the store or a provider, and never
//! counts usage: the store counts, and consumes quota atomically.
//!
//! # The rules
//!
//! 1. A subscription entitles when its status is one of the catalog's
//!    entitling statuses (default: `trialing`, `active`, `paused`,
//!    `past_due`), with two time limits, both the catalog's grace period
//!    (default 7 days):
//!    - `past_due` entitles only until `past_due_since + grace`; with
//!      `past_due_since` unknown it counts as within the grace period (a
//!      grace period of 0 days means `past_due` never entitles);
//!    - `trialing` past its `trial_end` entitles only until
//!      `trial_end + grace`: the provider normally moves such a
//!      subscription on at once, and the grace covers a late or missed
//!      webhook without keeping a stale trial alive for ever.
//! 2. An entitling subscription gives its plan; a subscription that does not
//!    entitle, a price the catalog doesn't map (`plan: None`, or a key the
//!    catalog doesn't know), or no subscription gives the default plan.
//! 3. The plan's limits apply; `seats = "per_unit"` makes the seat limit the
//!    subscription's quantity (0 if negative), capped by a live seat hold
//!    while a seat change waits on the provider ([`SeatHold::cap`]).
//!    A live plan hold (a plan change waiting on the provider, see
//!    [`PlanHold`]) caps the seat limit at the target plan's, whatever the
//!    plan and the overrides say now.
//! 4. A personal org resolves like any org, but its seat limit is at most 1:
//!    it holds its one member. (A personal org that gets an entitling
//!    subscription becomes a team org; that is the store's job.)
//! 5. Overrides apply last: a feature override turns the feature on or off,
//!    a limit override replaces the limit (`None` = unlimited). An override
//!    for a name the catalog no longer knows is ignored (the overrides route
//!    refuses unknown names with [`Overrides::validate`]; a later catalog
//!    change can orphan one).
//!
//! Downgrades delete nothing: when usage is above a (new) limit,
//! [`Entitlements::check_limit`] refuses more until usage is back under it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::DomainError;
use crate::org::OrgKind;
use crate::plans::{PlanCatalog, PlanLimit, SEATS};
use crate::subscription::{PlanHold, SeatHold, SubscriptionStatus};

/// What resolution needs to know of an org's subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionFacts<'a> {
    pub status: SubscriptionStatus,
    /// The catalog plan key the subscription's price maps to; `None` when the
    /// price is unknown to the catalog.
    pub plan: Option<&'a str>,
    /// The purchased quantity (seats, for a per-unit plan).
    pub quantity: i64,
    pub trial_end: Option<OffsetDateTime>,
    /// When the subscription became `past_due`, if known.
    pub past_due_since: Option<OffsetDateTime>,
    /// A seat change on its way to the provider, if any.
    pub seat_hold: Option<SeatHold>,
    /// A plan change on its way to the provider, if any: its target's seat
    /// limit caps the seat limit while it lasts, whatever the plan now.
    pub plan_hold: Option<PlanHold>,
}

/// Per-org exceptions for sales-led deals, set through the API
/// (`PUT /v1/orgs/{org}/overrides`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overrides {
    /// Feature → on or off, whatever the plan says.
    pub features: BTreeMap<String, bool>,
    /// Limit key → the limit, whatever the plan says; `None` = unlimited.
    pub limits: BTreeMap<String, Option<i64>>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.features.is_empty() && self.limits.is_empty()
    }

    /// Refuses names the catalog doesn't know and negative limits, naming
    /// the offending key as the error's param (`features.sso`,
    /// `limits.customers`).
    pub fn validate(&self, catalog: &PlanCatalog) -> Result<(), DomainError> {
        for feature in self.features.keys() {
            if !catalog.is_known_feature(feature) {
                return Err(DomainError::invalid(format!("features.{feature}"), unknown_feature(feature, catalog)));
            }
        }
        for (key, limit) in &self.limits {
            if !catalog.is_known_limit(key) {
                return Err(DomainError::invalid(format!("limits.{key}"), unknown_limit(key, catalog)));
            }
            if limit.is_some_and(|n| n < 0) {
                return Err(DomainError::invalid(
                    format!("limits.{key}"),
                    format!("the `{key}` override must be 0 or more, or null for unlimited"),
                ));
            }
        }
        Ok(())
    }
}

/// An organization's features and limits at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlements {
    /// The plan key in effect (the default plan unless a subscription entitles).
    pub plan: String,
    pub tier: String,
    pub kind: OrgKind,
    /// The subscription's status, entitling or not; `None` without one.
    pub status: Option<SubscriptionStatus>,
    /// When the trial ends, while the subscription is `trialing`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub trial_end: Option<OffsetDateTime>,
    /// Every known feature, on or off.
    pub features: BTreeMap<String, bool>,
    /// Every known limit, `seats` included; `None` = unlimited.
    pub limits: BTreeMap<String, Option<i64>>,
}

/// When a grace period that started at `start` ends (rule 1 of the module
/// docs); `None` when it never ends within the calendar's range.
pub fn grace_ends_at(catalog: &PlanCatalog, start: OffsetDateTime) -> Option<OffsetDateTime> {
    start.checked_add(catalog.grace_period())
}

/// When a `past_due` subscription stops entitling: `past_due_since` plus
/// the catalog's grace period. `None` when it is not `past_due` or the
/// start of its grace period is unknown.
pub fn past_due_grace_ends_at(catalog: &PlanCatalog, subscription: &SubscriptionFacts<'_>) -> Option<OffsetDateTime> {
    match subscription.status {
        SubscriptionStatus::PastDue => subscription.past_due_since.and_then(|since| grace_ends_at(catalog, since)),
        _ => None,
    }
}

/// Whether `subscription` gives its plan at `now` (rule 1 of the module docs).
pub fn entitles(catalog: &PlanCatalog, subscription: &SubscriptionFacts<'_>, now: OffsetDateTime) -> bool {
    if !catalog.entitling_statuses().contains(&subscription.status) {
        return false;
    }
    let grace = catalog.grace_period();
    let within_grace = |start: OffsetDateTime| grace_ends_at(catalog, start).is_none_or(|end| now < end);
    match subscription.status {
        SubscriptionStatus::PastDue => subscription.past_due_since.map_or(!grace.is_zero(), within_grace),
        SubscriptionStatus::Trialing => subscription.trial_end.is_none_or(within_grace),
        _ => true,
    }
}

/// Resolves an organization's entitlements. See the module docs for the rules.
pub fn resolve(
    catalog: &PlanCatalog,
    kind: OrgKind,
    subscription: Option<&SubscriptionFacts<'_>>,
    overrides: &Overrides,
    now: OffsetDateTime,
) -> Entitlements {
    let entitled = subscription
        .filter(|s| entitles(catalog, s, now))
        .and_then(|s| Some((catalog.plan(s.plan?)?, SeatHold::cap(s.seat_hold.as_ref(), s.quantity, now))));
    let (plan, quantity) = entitled.unwrap_or((catalog.default_plan(), 0));

    let features = catalog
        .features()
        .iter()
        .map(|feature| {
            let on = overrides.features.get(feature).copied().unwrap_or_else(|| plan.has_feature(feature));
            (feature.clone(), on)
        })
        .collect();

    let limits = catalog
        .limit_keys()
        .iter()
        .map(|key| {
            let from_plan = plan.limit(key).unwrap_or(PlanLimit::Unlimited).for_quantity(quantity);
            let for_kind = match kind {
                OrgKind::Personal if key == SEATS => Some(from_plan.map_or(1, |n| n.min(1))),
                _ => from_plan,
            };
            let limit = overrides.limits.get(key).copied().unwrap_or(for_kind);
            let plan_hold = subscription.and_then(|s| s.plan_hold);
            let limit = if key == SEATS { PlanHold::cap(plan_hold.as_ref(), limit, now) } else { limit };
            (key.clone(), limit)
        })
        .collect();

    Entitlements {
        plan: plan.key().to_owned(),
        tier: plan.tier().to_owned(),
        kind,
        status: subscription.map(|s| s.status),
        trial_end: subscription.filter(|s| s.status == SubscriptionStatus::Trialing).and_then(|s| s.trial_end),
        features,
        limits,
    }
}

impl Entitlements {
    /// Whether `feature` is on; `None` if it isn't a known feature.
    pub fn feature(&self, feature: &str) -> Option<bool> {
        self.features.get(feature).copied()
    }

    /// The limit for `key`: `None` if unknown, `Some(None)` if unlimited.
    pub fn limit(&self, key: &str) -> Option<Option<i64>> {
        self.limits.get(key).copied()
    }

    /// The feature guard: `Ok` if `feature` is on, `FeatureNotEntitled`
    /// naming the plan and the cheapest plan with the feature if not, and
    /// `InvalidRequest` (param `feature`) for a name the catalog doesn't know.
    pub fn require_feature(&self, feature: &str, catalog: &PlanCatalog) -> Result<(), DomainError> {
        let on = match (catalog.is_known_feature(feature), self.feature(feature)) {
            (true, Some(on)) => on,
            _ => return Err(DomainError::invalid("feature", unknown_feature(feature, catalog))),
        };
        if on {
            return Ok(());
        }
        let plan = &self.plan;
        let message = if catalog.plan(plan).is_some_and(|p| p.has_feature(feature)) {
            format!(
                "`{feature}` is turned off for this organization, although the {plan} plan includes it; ask the operator of this service to turn it back on"
            )
        } else if let Some(upgrade) = catalog.cheapest_with_feature(feature, plan) {
            format!("the {plan} plan does not include `{feature}`; upgrade to {} to use it", upgrade.key())
        } else {
            format!(
                "the {plan} plan does not include `{feature}` and no plan offers it; ask the operator of this service to turn it on for this organization"
            )
        };
        Err(DomainError::FeatureNotEntitled { feature: feature.to_owned(), message })
    }

    /// The quota guard: `Ok` if `amount` more of `key` fit beside the `used`
    /// ones, `LimitReached` naming the limit, the usage and what would allow
    /// it if not, and `InvalidRequest` for an unknown key (param `limit`) or
    /// a negative amount (param `amount`).
    ///
    /// This only reads numbers the caller counted; the store must check and
    /// consume atomically so that concurrent creates never overshoot.
    pub fn check_limit(&self, key: &str, used: i64, amount: i64, catalog: &PlanCatalog) -> Result<(), DomainError> {
        let limit = match (catalog.is_known_limit(key), self.limit(key)) {
            (true, Some(limit)) => limit,
            _ => return Err(DomainError::invalid("limit", unknown_limit(key, catalog))),
        };
        if amount < 0 {
            return Err(DomainError::invalid("amount", format!("amount must be 0 or more, not {amount}")));
        }
        match limit {
            Some(limit) if !fits(limit, used, amount) => Err(DomainError::LimitReached {
                limit: key.to_owned(),
                message: self.limit_message(key, limit, used, amount, catalog),
            }),
            _ => Ok(()),
        }
    }

    /// "the free plan allows 3 customers and 3 are in use; upgrade to
    /// business (100) or remove one", and its variants.
    fn limit_message(&self, key: &str, limit: i64, used: i64, amount: i64, catalog: &PlanCatalog) -> String {
        if self.kind == OrgKind::Personal && key == SEATS {
            return "a personal organization holds only its owner; create a team organization to work with others"
                .to_owned();
        }
        let plan = &self.plan;
        // Exact: `used + amount` may pass i64::MAX.
        let total = i128::from(used) + i128::from(amount);
        let plan_limit = catalog.plan(plan).and_then(|p| p.limit(key));

        let allowance = match plan_limit {
            Some(PlanLimit::Fixed(n)) if n == limit && n != 1 => format!("the {plan} plan allows {limit} {key}"),
            Some(PlanLimit::Fixed(n)) if n == limit => format!("the {plan} plan's `{key}` limit is {limit}"),
            Some(PlanLimit::PerUnit) => format!("the {plan} plan allows {limit} {key}, the number purchased,"),
            _ => format!("this organization's `{key}` limit is {limit}"),
        };
        let verb = if used == 1 { "is" } else { "are" };
        let usage = if amount > 1 {
            format!("{used} {verb} in use, so {amount} more would make {total}")
        } else {
            format!("{used} {verb} in use")
        };

        let mut remedies = Vec::new();
        if plan_limit == Some(PlanLimit::PerUnit) {
            remedies.push(format!("buy more {key}"));
        }
        // A total past i64::MAX fits only an unlimited plan.
        let upgrade = match i64::try_from(total) {
            Ok(total) => catalog.cheapest_allowing(key, total, plan),
            Err(_) => catalog
                .cheapest_allowing(key, i64::MAX, plan)
                .filter(|p| p.limit(key).is_some_and(|l| !matches!(l, PlanLimit::Fixed(_)))),
        };
        if let Some(upgrade) = upgrade {
            let offer = upgrade.limit(key).map_or_else(String::new, |l| format!(" ({l})"));
            remedies.push(format!("upgrade to {}{offer}", upgrade.key()));
        }
        let shortfall = Shortfall::of(limit, used, amount);
        if let Some(room) = shortfall.room {
            remedies.push(format!("add at most {room}"));
        }
        if let Some(remove) = shortfall.remove {
            remedies.push(if remove == 1 { "remove one".to_owned() } else { format!("remove {remove}") });
        }
        if plan_limit != Some(PlanLimit::PerUnit) && upgrade.is_none() {
            remedies.push("ask for a higher limit".to_owned());
        }
        format!("{allowance} and {usage}; {}", join_or(&remedies))
    }
}

/// Whether `amount` more fit beside `used` under `limit`. Exact over the
/// whole i64 range: a sum past i64::MAX passes every limit.
pub fn fits(limit: i64, used: i64, amount: i64) -> bool {
    used.checked_add(amount).is_some_and(|total| total <= limit)
}

/// What would make `amount` more fit beside `used` under `limit`, when they
/// don't: for the "add at most …" and "remove …" hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    /// How many more fit now, when some do but fewer than asked.
    pub room: Option<i64>,
    /// How many in use must go for `amount` more to fit, when removing
    /// ones in use can make room (never more than `used`).
    pub remove: Option<i64>,
}

impl Shortfall {
    pub fn of(limit: i64, used: i64, amount: i64) -> Shortfall {
        let (limit, used, amount) = (i128::from(limit), i128::from(used), i128::from(amount));
        let room = limit - used;
        let excess = used + amount - limit;
        Shortfall {
            room: (room > 0 && room < amount).then(|| i64::try_from(room).ok()).flatten(),
            remove: (excess > 0 && excess <= used).then(|| i64::try_from(excess).ok()).flatten(),
        }
    }
}

/// "a or b", "a, b, or c".
fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [first, second] => format!("{first} or {second}"),
        [init @ .., last] => format!("{}, or {last}", init.join(", ")),
    }
}

fn unknown_feature(feature: &str, catalog: &PlanCatalog) -> String {
    format!("unknown feature `{feature}` (known: {})", catalog.features().join(", "))
}

fn unknown_limit(key: &str, catalog: &PlanCatalog) -> String {
    format!("unknown limit `{key}` (known: {})", catalog.limit_keys().join(", "))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use time::Duration;
    use time::macros::datetime;

    use super::*;
    use crate::plans::{CatalogConfig, EntitlementsConfig, FeaturesConfig, PlanConfig};

    const NOW: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);

    fn active(plan: &str, quantity: i64) -> SubscriptionFacts<'_> {
        SubscriptionFacts {
            status: SubscriptionStatus::Active,
            plan: Some(plan),
            quantity,
            trial_end: None,
            past_due_since: None,
            seat_hold: None,
            plan_hold: None,
        }
    }

    fn with_status(status: SubscriptionStatus) -> SubscriptionFacts<'static> {
        SubscriptionFacts { status, ..active("business", 5) }
    }

    fn team(subscription: Option<&SubscriptionFacts<'_>>) -> Entitlements {
        resolve(&PlanCatalog::default_catalog(), OrgKind::Team, subscription, &Overrides::default(), NOW)
    }

    fn limit_message(result: Result<(), DomainError>) -> String {
        match result {
            Err(DomainError::LimitReached { message, .. }) => message,
            other => panic!("expected limit_reached, got {other:?}"),
        }
    }

    fn feature_message(result: Result<(), DomainError>) -> String {
        match result {
            Err(DomainError::FeatureNotEntitled { message, .. }) => message,
            other => panic!("expected feature_not_entitled, got {other:?}"),
        }
    }

    #[test]
    fn an_org_without_a_subscription_gets_the_default_plan() {
        let e = team(None);
        assert_eq!((e.plan.as_str(), e.tier.as_str(), e.status), ("free", "free", None));
        assert_eq!(e.features.get("invitations"), Some(&true));
        assert_eq!(e.features.get("audit_log"), Some(&false));
        assert_eq!(e.limit("customers"), Some(Some(3)));
        assert_eq!(e.limit("seats"), Some(Some(2)));
        assert_eq!(e.limit("clients"), Some(Some(10)));
    }

    #[test]
    fn every_known_feature_and_limit_is_listed() {
        let e = team(Some(&active("business", 5)));
        assert_eq!(e.features.keys().collect::<Vec<_>>(), ["api_tokens", "audit_log", "custom_roles", "invitations"]);
        assert_eq!(e.limits.keys().collect::<Vec<_>>(), ["api_keys", "clients", "customers", "seats"]);
        assert_eq!(e.feature("sso"), None);
        assert_eq!(e.limit("widgets"), None);
    }

    #[test]
    fn each_status_entitles_as_the_default_policy_says() {
        use SubscriptionStatus::*;
        let table = [
            (Incomplete, "free"),
            (IncompleteExpired, "free"),
            (Trialing, "business"),
            (Active, "business"),
            (PastDue, "business"),
            (Canceled, "free"),
            (Unpaid, "free"),
            (Paused, "business"),
        ];
        assert_eq!(table.map(|(s, _)| s), SubscriptionStatus::ALL, "the table covers every status");
        for (status, plan) in table {
            let facts = SubscriptionFacts { past_due_since: Some(NOW - Duration::days(1)), ..with_status(status) };
            let e = team(Some(&facts));
            assert_eq!(e.plan, plan, "{status:?}");
            assert_eq!(e.status, Some(status), "the status is reported whether it entitles or not");
        }
    }

    #[test]
    fn entitling_statuses_come_from_the_catalog() {
        let catalog = PlanCatalog::from_toml("[entitlements]\nentitling_statuses = [\"active\"]\n").expect("valid");
        let resolve_with =
            |status| resolve(&catalog, OrgKind::Team, Some(&with_status(status)), &Overrides::default(), NOW).plan;
        assert_eq!(resolve_with(SubscriptionStatus::Active), "business");
        assert_eq!(resolve_with(SubscriptionStatus::Trialing), "free");
        assert_eq!(resolve_with(SubscriptionStatus::PastDue), "free");
    }

    #[test]
    fn past_due_entitles_until_the_grace_period_ends() {
        let past_due = |since| SubscriptionFacts { past_due_since: since, ..with_status(SubscriptionStatus::PastDue) };
        let plan_at = |since| team(Some(&past_due(since))).plan;
        let grace = Duration::days(7);
        assert_eq!(plan_at(Some(NOW)), "business", "just became past due");
        assert_eq!(plan_at(Some(NOW - grace + Duration::nanoseconds(1))), "business", "last instant of grace");
        assert_eq!(plan_at(Some(NOW - grace)), "free", "the grace period has ended");
        assert_eq!(plan_at(Some(NOW - Duration::days(30))), "free");
        assert_eq!(plan_at(None), "business", "unknown since counts as within grace");
    }

    #[test]
    fn the_past_due_grace_period_ends_when_past_due_stops_entitling() {
        let catalog = PlanCatalog::default_catalog();
        let since = NOW - Duration::days(2);
        let past_due = SubscriptionFacts { past_due_since: Some(since), ..with_status(SubscriptionStatus::PastDue) };
        let ends = past_due_grace_ends_at(&catalog, &past_due).expect("past due since a known time");
        assert_eq!(ends, since + Duration::days(7));
        let plan_at = |now| resolve(&catalog, OrgKind::Team, Some(&past_due), &Overrides::default(), now).plan;
        assert_eq!(plan_at(ends - Duration::nanoseconds(1)), "business", "the last instant of grace");
        assert_eq!(plan_at(ends), "free", "grace_ends_at is the first instant without the plan");
        let unknown = SubscriptionFacts { past_due_since: None, ..past_due };
        assert_eq!(past_due_grace_ends_at(&catalog, &unknown), None, "no start, no end to show");
        let active = SubscriptionFacts { past_due_since: Some(since), ..with_status(SubscriptionStatus::Active) };
        assert_eq!(past_due_grace_ends_at(&catalog, &active), None, "not past due");
    }

    #[test]
    fn a_zero_grace_period_means_past_due_never_entitles() {
        let catalog = PlanCatalog::from_toml("[entitlements]\ngrace_period_days = 0\n").expect("valid");
        for since in [None, Some(NOW)] {
            let facts = SubscriptionFacts { past_due_since: since, ..with_status(SubscriptionStatus::PastDue) };
            assert!(!entitles(&catalog, &facts, NOW), "{since:?}");
        }
    }

    #[test]
    fn an_ended_trial_entitles_only_for_the_grace_period() {
        let trial = |end| SubscriptionFacts { trial_end: end, ..with_status(SubscriptionStatus::Trialing) };
        let plan_at = |end| team(Some(&trial(end))).plan;
        let grace = Duration::days(7);
        assert_eq!(plan_at(None), "business");
        assert_eq!(plan_at(Some(NOW + Duration::days(3))), "business", "trial running");
        assert_eq!(plan_at(Some(NOW)), "business", "trial just ended, within grace");
        assert_eq!(plan_at(Some(NOW - grace + Duration::nanoseconds(1))), "business");
        assert_eq!(plan_at(Some(NOW - grace)), "free", "stale trial");
    }

    #[test]
    fn an_unknown_price_gets_the_default_plan() {
        let unknown_price = SubscriptionFacts { plan: None, ..active("business", 5) };
        assert_eq!(team(Some(&unknown_price)).plan, "free");
        assert_eq!(team(Some(&active("platinum", 5))).plan, "free", "a key the catalog doesn't know");
    }

    #[test]
    fn per_unit_seats_are_the_purchased_quantity() {
        let e = team(Some(&active("business", 12)));
        assert_eq!((e.plan.as_str(), e.tier.as_str()), ("business", "business"));
        assert_eq!(e.limit("seats"), Some(Some(12)));
        assert_eq!(e.limit("customers"), Some(Some(100)));
        assert_eq!(e.limit("clients"), Some(Some(1000)));
        assert!(e.features.values().all(|on| *on));
        assert_eq!(team(Some(&active("business", -3))).limit("seats"), Some(Some(0)), "a negative quantity is 0");
    }

    #[test]
    fn a_live_seat_hold_lowers_the_per_unit_seat_limit_until_it_expires() {
        let until = NOW + Duration::minutes(2);
        let held = SubscriptionFacts { seat_hold: Some(SeatHold { seats: 4, until }), ..active("business", 12) };
        let e = team(Some(&held));
        assert_eq!(e.limit("seats"), Some(Some(4)), "the decrease counts before the provider answers");
        assert_eq!(e.limit("customers"), Some(Some(100)), "a hold touches only the seats");
        let catalog = PlanCatalog::default_catalog();
        let later = resolve(&catalog, OrgKind::Team, Some(&held), &Overrides::default(), until);
        assert_eq!(later.limit("seats"), Some(Some(12)), "an expired hold counts no more");
        let fixed = SubscriptionFacts { seat_hold: Some(SeatHold { seats: 1, until }), ..active("enterprise", 12) };
        assert_eq!(team(Some(&fixed)).limit("seats"), Some(None), "a plan without per-unit seats ignores holds");
    }

    #[test]
    fn a_live_plan_hold_caps_any_seat_limit_until_it_expires() {
        let until = NOW + Duration::hours(1);
        let held = SubscriptionFacts { plan_hold: Some(PlanHold { seats: 10, until }), ..active("enterprise", 1) };
        let e = team(Some(&held));
        assert_eq!(e.limit("seats"), Some(Some(10)), "the target's limit counts before the provider answers");
        assert_eq!(e.limit("customers"), Some(None), "a hold touches only the seats");
        let catalog = PlanCatalog::default_catalog();
        let later = resolve(&catalog, OrgKind::Team, Some(&held), &Overrides::default(), until);
        assert_eq!(later.limit("seats"), Some(None), "an expired hold counts no more");
        let lower = SubscriptionFacts { plan_hold: Some(PlanHold { seats: 10, until }), ..active("business", 4) };
        assert_eq!(team(Some(&lower)).limit("seats"), Some(Some(4)), "a lower limit stays");
    }

    #[test]
    fn enterprise_is_unlimited_with_every_feature() {
        let e = team(Some(&active("enterprise", 1)));
        assert!(e.limits.values().all(Option::is_none));
        assert!(e.features.values().all(|on| *on));
    }

    #[test]
    fn a_personal_org_holds_one_seat_whatever_its_plan() {
        let catalog = PlanCatalog::default_catalog();
        let personal =
            |s: Option<&SubscriptionFacts<'_>>| resolve(&catalog, OrgKind::Personal, s, &Overrides::default(), NOW);
        let free = personal(None);
        assert_eq!((free.kind, free.limit("seats")), (OrgKind::Personal, Some(Some(1))));
        assert_eq!(free.limit("customers"), Some(Some(3)), "other limits are the plan's");
        assert_eq!(personal(Some(&active("enterprise", 1))).limit("seats"), Some(Some(1)));
        assert_eq!(personal(Some(&active("business", 10))).limit("seats"), Some(Some(1)));
        assert_eq!(personal(Some(&active("business", 0))).limit("seats"), Some(Some(0)), "never above the plan");
    }

    #[test]
    fn overrides_apply_last() {
        let catalog = PlanCatalog::default_catalog();
        let overrides = Overrides {
            features: BTreeMap::from([("audit_log".into(), true), ("invitations".into(), false)]),
            limits: BTreeMap::from([
                ("customers".into(), None),
                ("clients".into(), Some(2)),
                ("seats".into(), Some(9)),
            ]),
        };
        let e = resolve(&catalog, OrgKind::Team, None, &overrides, NOW);
        assert_eq!(e.plan, "free");
        assert_eq!(e.feature("audit_log"), Some(true), "turned on above the plan");
        assert_eq!(e.feature("invitations"), Some(false), "turned off below the plan");
        assert_eq!(e.limit("customers"), Some(None), "null = unlimited");
        assert_eq!(e.limit("clients"), Some(Some(2)), "replaced, even below the plan");
        assert_eq!(e.limit("seats"), Some(Some(9)));
        let personal = resolve(&catalog, OrgKind::Personal, None, &overrides, NOW);
        assert_eq!(personal.limit("seats"), Some(Some(9)), "an override outranks the personal cap too");
    }

    #[test]
    fn overrides_for_names_the_catalog_no_longer_knows_are_ignored() {
        let overrides = Overrides {
            features: BTreeMap::from([("sso".into(), true)]),
            limits: BTreeMap::from([("widgets".into(), Some(5))]),
        };
        let e = resolve(&PlanCatalog::default_catalog(), OrgKind::Team, None, &overrides, NOW);
        assert_eq!(e.feature("sso"), None);
        assert_eq!(e.limit("widgets"), None);
    }

    #[test]
    fn overrides_name_only_known_features_and_limits() {
        let catalog = PlanCatalog::default_catalog();
        let ok = Overrides {
            features: BTreeMap::from([("audit_log".into(), true)]),
            limits: BTreeMap::from([("seats".into(), Some(0)), ("customers".into(), None)]),
        };
        assert_eq!(ok.validate(&catalog), Ok(()));
        let sso = Overrides { features: BTreeMap::from([("sso".into(), true)]), ..Overrides::default() };
        assert_eq!(
            sso.validate(&catalog),
            Err(DomainError::invalid(
                "features.sso",
                "unknown feature `sso` (known: invitations, api_tokens, custom_roles, audit_log)"
            ))
        );
        let widgets = Overrides { limits: BTreeMap::from([("widgets".into(), Some(1))]), ..Overrides::default() };
        assert_eq!(
            widgets.validate(&catalog),
            Err(DomainError::invalid(
                "limits.widgets",
                "unknown limit `widgets` (known: customers, clients, seats, api_keys)"
            ))
        );
        let negative = Overrides { limits: BTreeMap::from([("seats".into(), Some(-1))]), ..Overrides::default() };
        assert!(
            matches!(negative.validate(&catalog), Err(DomainError::InvalidRequest { param: Some(p), .. }) if p == "limits.seats")
        );
    }

    #[test]
    fn overrides_read_from_the_api_body() {
        let parsed: Overrides =
            serde_json::from_str(r#"{"features":{"audit_log":true},"limits":{"customers":null,"clients":50}}"#)
                .expect("valid body");
        assert_eq!(parsed.features.get("audit_log"), Some(&true));
        assert_eq!(parsed.limits.get("customers"), Some(&None));
        assert_eq!(parsed.limits.get("clients"), Some(&Some(50)));
        assert_eq!(serde_json::from_str::<Overrides>("{}").expect("empty body"), Overrides::default());
        assert!(serde_json::from_str::<Overrides>(r#"{"feature":{}}"#).is_err());
    }

    #[test]
    fn a_missing_feature_names_the_plan_and_the_upgrade() {
        let catalog = PlanCatalog::default_catalog();
        let free = team(None);
        assert_eq!(free.require_feature("invitations", &catalog), Ok(()));
        let err = free.require_feature("audit_log", &catalog);
        assert!(matches!(&err, Err(DomainError::FeatureNotEntitled { feature, .. }) if feature == "audit_log"));
        assert_eq!(feature_message(err), "the free plan does not include `audit_log`; upgrade to business to use it");
    }

    #[test]
    fn a_feature_turned_off_by_an_override_says_so() {
        let catalog = PlanCatalog::default_catalog();
        let overrides = Overrides { features: BTreeMap::from([("api_tokens".into(), false)]), ..Overrides::default() };
        let e = resolve(&catalog, OrgKind::Team, Some(&active("business", 3)), &overrides, NOW);
        assert_eq!(
            feature_message(e.require_feature("api_tokens", &catalog)),
            "`api_tokens` is turned off for this organization, although the business plan includes it; ask the operator of this service to turn it back on"
        );
    }

    #[test]
    fn a_feature_no_plan_offers_says_so() {
        let mut cfg = CatalogConfig::embedded();
        cfg.features = Some(FeaturesConfig { extra: vec!["sso".into()] });
        cfg.plans.as_mut().and_then(|p| p.get_mut("enterprise")).expect("enterprise").features =
            vec!["audit_log".into()];
        let catalog = PlanCatalog::from_config(&cfg).expect("valid");
        let e = resolve(&catalog, OrgKind::Team, None, &Overrides::default(), NOW);
        assert_eq!(
            feature_message(e.require_feature("sso", &catalog)),
            "the free plan does not include `sso` and no plan offers it; ask the operator of this service to turn it on for this organization"
        );
    }

    #[test]
    fn an_unknown_feature_or_limit_in_a_check_is_an_invalid_request() {
        let catalog = PlanCatalog::default_catalog();
        let e = team(None);
        assert_eq!(
            e.require_feature("sso", &catalog),
            Err(DomainError::invalid(
                "feature",
                "unknown feature `sso` (known: invitations, api_tokens, custom_roles, audit_log)"
            ))
        );
        assert_eq!(
            e.check_limit("widgets", 0, 1, &catalog),
            Err(DomainError::invalid("limit", "unknown limit `widgets` (known: customers, clients, seats, api_keys)"))
        );
        assert!(matches!(
            e.check_limit("customers", 0, -1, &catalog),
            Err(DomainError::InvalidRequest { param: Some(p), .. }) if p == "amount"
        ));
    }

    #[test]
    fn a_full_limit_names_the_usage_and_the_upgrade() {
        let catalog = PlanCatalog::default_catalog();
        let free = team(None);
        assert_eq!(free.check_limit("customers", 2, 1, &catalog), Ok(()));
        let err = free.check_limit("customers", 3, 1, &catalog);
        assert!(matches!(&err, Err(DomainError::LimitReached { limit, .. }) if limit == "customers"));
        assert_eq!(
            limit_message(err),
            "the free plan allows 3 customers and 3 are in use; upgrade to business (100) or remove one"
        );
        assert_eq!(
            limit_message(free.check_limit("customers", 2, 150, &catalog)),
            "the free plan allows 3 customers and 2 are in use, so 150 more would make 152; upgrade to enterprise (unlimited) or add at most 1"
        );
        assert_eq!(
            limit_message(free.check_limit("seats", 2, 1, &catalog)),
            "the free plan allows 2 seats and 2 are in use; upgrade to business (as many as purchased) or remove one"
        );
    }

    #[test]
    fn a_full_per_unit_seat_limit_suggests_buying_seats() {
        let catalog = PlanCatalog::default_catalog();
        let business = team(Some(&active("business", 5)));
        assert_eq!(business.check_limit("seats", 4, 1, &catalog), Ok(()));
        assert_eq!(
            limit_message(business.check_limit("seats", 5, 1, &catalog)),
            "the business plan allows 5 seats, the number purchased, and 5 are in use; buy more seats, upgrade to enterprise (unlimited), or remove one"
        );
    }

    #[test]
    fn a_limit_set_by_an_override_is_named_as_the_organizations() {
        let catalog = PlanCatalog::default_catalog();
        let overrides = Overrides { limits: BTreeMap::from([("customers".into(), Some(5))]), ..Overrides::default() };
        let capped = resolve(&catalog, OrgKind::Team, Some(&active("enterprise", 1)), &overrides, NOW);
        assert_eq!(
            limit_message(capped.check_limit("customers", 5, 1, &catalog)),
            "this organization's `customers` limit is 5 and 5 are in use; remove one or ask for a higher limit"
        );
    }

    #[test]
    fn a_personal_org_at_its_seat_says_to_create_a_team() {
        let catalog = PlanCatalog::default_catalog();
        let e = resolve(&catalog, OrgKind::Personal, None, &Overrides::default(), NOW);
        assert_eq!(
            limit_message(e.check_limit("seats", 1, 1, &catalog)),
            "a personal organization holds only its owner; create a team organization to work with others"
        );
    }

    fn capped(key: &str, limit: Option<i64>) -> Entitlements {
        let overrides = Overrides { limits: BTreeMap::from([(key.into(), limit)]), ..Overrides::default() };
        resolve(&PlanCatalog::default_catalog(), OrgKind::Team, Some(&active("enterprise", 1)), &overrides, NOW)
    }

    #[test]
    fn asking_for_more_than_fit_says_how_many_fit_not_how_many_to_remove() {
        let catalog = PlanCatalog::default_catalog();
        let message = limit_message(capped("customers", Some(10)).check_limit("customers", 2, 100, &catalog));
        assert_eq!(
            message,
            "this organization's `customers` limit is 10 and 2 are in use, so 100 more would make 102; add at most 8 or ask for a higher limit"
        );
        // Removing helps only up to what is in use; both hints when both are true.
        assert_eq!(
            limit_message(capped("customers", Some(10)).check_limit("customers", 5, 8, &catalog)),
            "this organization's `customers` limit is 10 and 5 are in use, so 8 more would make 13; add at most 5, remove 3, or ask for a higher limit"
        );
        assert_eq!(
            limit_message(capped("customers", Some(0)).check_limit("customers", 0, 1, &catalog)),
            "this organization's `customers` limit is 0 and 0 are in use; ask for a higher limit"
        );
    }

    #[test]
    fn an_amount_at_the_top_of_the_range_never_fits_a_finite_limit() {
        let catalog = PlanCatalog::default_catalog();
        let top = capped("customers", Some(i64::MAX));
        assert!(matches!(top.check_limit("customers", 2, i64::MAX, &catalog), Err(DomainError::LimitReached { .. })));
        assert!(matches!(top.check_limit("customers", i64::MAX, 1, &catalog), Err(DomainError::LimitReached { .. })));
        assert_eq!(top.check_limit("customers", 0, i64::MAX, &catalog), Ok(()));
        assert!(
            limit_message(top.check_limit("customers", 2, i64::MAX, &catalog))
                .contains(&format!("would make {}", i128::from(i64::MAX) + 2))
        );
        let free = team(None);
        assert!(matches!(free.check_limit("customers", 2, i64::MAX, &catalog), Err(DomainError::LimitReached { .. })));
        assert!(
            limit_message(free.check_limit("customers", 2, i64::MAX, &catalog)).contains("upgrade to enterprise"),
            "only an unlimited plan allows a total past i64::MAX"
        );
        assert_eq!(capped("customers", None).check_limit("customers", i64::MAX, i64::MAX, &catalog), Ok(()));
    }

    #[test]
    fn after_a_downgrade_nothing_more_fits_until_usage_is_under_the_limit() {
        let catalog = PlanCatalog::default_catalog();
        let free = team(None);
        assert_eq!(
            limit_message(free.check_limit("customers", 40, 1, &catalog)),
            "the free plan allows 3 customers and 40 are in use; upgrade to business (100) or remove 38"
        );
        assert!(free.check_limit("customers", 40, 0, &catalog).is_err(), "over the limit even without adding");
        assert_eq!(free.check_limit("customers", 2, 1, &catalog), Ok(()), "fits again once usage is back under");
    }

    #[test]
    fn an_unlimited_limit_always_fits() {
        let catalog = PlanCatalog::default_catalog();
        let e = team(Some(&active("enterprise", 1)));
        assert_eq!(e.check_limit("customers", i64::MAX, i64::MAX, &catalog), Ok(()));
    }

    #[test]
    fn entitlements_serialize_with_null_for_unlimited() {
        let e = team(Some(&active("enterprise", 1)));
        let json = serde_json::to_value(&e).expect("serializes");
        assert_eq!(json["plan"], "enterprise");
        assert_eq!(json["kind"], "team");
        assert_eq!(json["status"], "active");
        assert_eq!(json["limits"]["customers"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<Entitlements>(json).expect("round-trips"), e);
    }

    // ---- properties over generated catalogs ----

    const FEATURE_POOL: [&str; 5] = ["invitations", "api_tokens", "custom_roles", "audit_log", "sso"];
    const LIMIT_POOL: [&str; 3] = ["customers", "clients", "seats"];
    const PLAN_KEYS: [&str; 4] = ["p0", "p1", "p2", "p3"];

    fn plan_config(index: usize) -> impl Strategy<Value = PlanConfig> {
        (
            proptest::sample::subsequence(FEATURE_POOL.to_vec(), 0..=FEATURE_POOL.len()),
            any::<bool>(),
            proptest::collection::vec(proptest::option::of(0i64..1000), LIMIT_POOL.len()),
            any::<bool>(),
        )
            .prop_map(move |(features, all, limits, per_unit)| {
                let per_unit = per_unit && index > 0;
                let mut features: Vec<String> = features.into_iter().map(String::from).collect();
                if all {
                    features.push("*".into());
                }
                let limits = LIMIT_POOL
                    .iter()
                    .zip(limits)
                    .filter(|(key, _)| !(per_unit && **key == "seats"))
                    .filter_map(|(key, limit)| limit.map(|n| ((*key).to_owned(), n)))
                    .collect();
                PlanConfig {
                    default: index == 0,
                    tier: format!("tier{index}"),
                    features,
                    limits,
                    seats: per_unit.then(|| "per_unit".to_owned()),
                    prices: BTreeMap::new(),
                    trial_days: None,
                }
            })
    }

    fn catalog() -> impl Strategy<Value = PlanCatalog> {
        let plans = (1..=PLAN_KEYS.len()).prop_flat_map(|n| (0..n).map(plan_config).collect::<Vec<_>>());
        let statuses =
            proptest::sample::subsequence(SubscriptionStatus::ALL.to_vec(), 0..=SubscriptionStatus::ALL.len());
        (plans, statuses, 0i64..30).prop_map(|(plans, statuses, grace)| {
            let config = CatalogConfig {
                resources: None,
                features: Some(FeaturesConfig { extra: vec!["sso".into()] }),
                entitlements: Some(EntitlementsConfig {
                    entitling_statuses: Some(statuses.iter().map(|s| s.as_str().to_owned()).collect()),
                    grace_period_days: Some(grace),
                }),
                plans: Some(PLAN_KEYS.iter().map(|k| (*k).to_owned()).zip(plans).collect()),
            };
            PlanCatalog::from_config(&config).expect("generated catalogs are valid")
        })
    }

    /// Owned subscription facts (`SubscriptionFacts` borrows its plan key).
    #[derive(Debug, Clone)]
    struct Facts {
        status: SubscriptionStatus,
        plan: Option<String>,
        quantity: i64,
        trial_end: Option<OffsetDateTime>,
        past_due_since: Option<OffsetDateTime>,
    }

    impl Facts {
        fn borrow(&self) -> SubscriptionFacts<'_> {
            SubscriptionFacts {
                status: self.status,
                plan: self.plan.as_deref(),
                quantity: self.quantity,
                trial_end: self.trial_end,
                past_due_since: self.past_due_since,
                seat_hold: None,
                plan_hold: None,
            }
        }
    }

    fn around_now() -> impl Strategy<Value = OffsetDateTime> {
        (-40 * 86_400i64..40 * 86_400).prop_map(|s| NOW + Duration::seconds(s))
    }

    fn facts() -> impl Strategy<Value = Facts> {
        (
            proptest::sample::select(SubscriptionStatus::ALL.to_vec()),
            proptest::option::of(proptest::sample::select(vec!["p0", "p1", "p2", "p3", "gone"])),
            -5i64..500,
            proptest::option::of(around_now()),
            proptest::option::of(around_now()),
        )
            .prop_map(|(status, plan, quantity, trial_end, past_due_since)| Facts {
                status,
                plan: plan.map(String::from),
                quantity,
                trial_end,
                past_due_since,
            })
    }

    /// Counts from 0 to i64::MAX, often at the edges.
    fn extreme() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(i64::MAX),
            Just(i64::MAX - 1),
            0i64..20,
            (i64::MAX - 20)..=i64::MAX,
            0i64..=i64::MAX,
        ]
    }

    fn overrides() -> impl Strategy<Value = Overrides> {
        let feature = proptest::sample::select(vec!["invitations", "api_tokens", "audit_log", "sso", "ghost"]);
        let limit = proptest::sample::select(vec!["customers", "clients", "seats", "ghost"]);
        (
            proptest::collection::btree_map(feature.prop_map(String::from), any::<bool>(), 0..3),
            proptest::collection::btree_map(limit.prop_map(String::from), proptest::option::of(0i64..2000), 0..3),
        )
            .prop_map(|(features, limits)| Overrides { features, limits })
    }

    fn kind() -> impl Strategy<Value = OrgKind> {
        prop_oneof![Just(OrgKind::Team), Just(OrgKind::Personal)]
    }

    proptest! {
        #[test]
        fn a_non_entitling_status_always_yields_the_default_plan(
            catalog in catalog(), kind in kind(), facts in facts(), overrides in overrides(),
        ) {
            let e = resolve(&catalog, kind, Some(&facts.borrow()), &overrides, NOW);
            if !catalog.entitling_statuses().contains(&facts.status) {
                prop_assert_eq!(&e.plan, catalog.default_plan().key());
            }
            let grace_over = facts.past_due_since.is_some_and(|since| since + catalog.grace_period() <= NOW);
            if facts.status == SubscriptionStatus::PastDue && grace_over {
                prop_assert_eq!(&e.plan, catalog.default_plan().key());
            }
            prop_assert!(e.plan == catalog.default_plan().key() || Some(e.plan.as_str()) == facts.plan.as_deref());
            prop_assert_eq!(e.status, Some(facts.status));
        }

        #[test]
        fn an_override_is_the_only_way_above_the_plan(
            catalog in catalog(), kind in kind(), facts in facts(), overrides in overrides(),
        ) {
            let e = resolve(&catalog, kind, Some(&facts.borrow()), &overrides, NOW);
            let plan = catalog.plan(&e.plan).expect("the result names a catalog plan");
            let quantity = if plan.is_default() { 0 } else { facts.quantity };
            for (key, limit) in &e.limits {
                if let Some(overridden) = overrides.limits.get(key) {
                    prop_assert_eq!(limit, overridden);
                    continue;
                }
                let from_plan = plan.limit(key).expect("known limit").for_quantity(quantity);
                match (limit, from_plan) {
                    (_, None) => {}
                    (None, Some(_)) => prop_assert!(false, "{} unlimited above the plan's {:?}", key, from_plan),
                    (Some(n), Some(max)) => prop_assert!(*n <= max, "{} = {} above the plan's {}", key, n, max),
                }
            }
        }

        #[test]
        fn features_come_from_the_plan_or_an_override(
            catalog in catalog(), kind in kind(), facts in facts(), overrides in overrides(),
        ) {
            let e = resolve(&catalog, kind, Some(&facts.borrow()), &overrides, NOW);
            let plan = catalog.plan(&e.plan).expect("the result names a catalog plan");
            prop_assert!(e.features.keys().eq(catalog.features().iter().collect::<std::collections::BTreeSet<_>>()));
            prop_assert!(e.limits.keys().eq(catalog.limit_keys().iter().collect::<std::collections::BTreeSet<_>>()));
            for (feature, on) in &e.features {
                if *on {
                    prop_assert!(plan.has_feature(feature) || overrides.features.get(feature) == Some(&true));
                }
                if overrides.features.get(feature) == Some(&false) {
                    prop_assert!(!on);
                }
            }
        }

        #[test]
        fn resolution_is_deterministic(
            catalog in catalog(), kind in kind(), facts in facts(), overrides in overrides(),
        ) {
            let first = resolve(&catalog, kind, Some(&facts.borrow()), &overrides, NOW);
            let again = resolve(&catalog.clone(), kind, Some(&facts.clone().borrow()), &overrides.clone(), NOW);
            prop_assert_eq!(first, again);
        }

        #[test]
        fn fits_is_exact_over_the_whole_range(
            limit in extreme(), used in extreme(), amount in extreme(),
        ) {
            let exact = i128::from(used) + i128::from(amount) <= i128::from(limit);
            prop_assert_eq!(fits(limit, used, amount), exact);
        }

        #[test]
        fn the_shortfall_hints_are_true_and_tight(
            limit in extreme(), used in extreme(), amount in extreme(),
        ) {
            let s = Shortfall::of(limit, used, amount);
            let (l, u, a) = (i128::from(limit), i128::from(used), i128::from(amount));
            if let Some(room) = s.room {
                let room = i128::from(room);
                prop_assert!(room > 0 && room < a, "room {} for {}", room, a);
                prop_assert!(u + room <= l && u + room + 1 > l, "exactly `room` more fit");
            } else {
                prop_assert!(u + a <= l || l - u <= 0 || l - u >= a);
            }
            if let Some(remove) = s.remove {
                let remove = i128::from(remove);
                prop_assert!(remove > 0 && remove <= u, "can't remove {} of {}", remove, u);
                prop_assert!(u - remove + a <= l && u - remove + 1 + a > l, "removing exactly `remove` makes room");
            } else {
                prop_assert!(u + a <= l || u + a - l > u, "removal helps whenever it can");
            }
        }

        #[test]
        fn check_limit_agrees_with_fits_at_the_extremes(
            limit in extreme(), used in extreme(), amount in extreme(),
        ) {
            let catalog = PlanCatalog::default_catalog();
            let e = capped("customers", Some(limit));
            let result = e.check_limit("customers", used, amount, &catalog);
            prop_assert_eq!(result.is_ok(), fits(limit, used, amount), "{:?}", result);
        }

        #[test]
        fn check_limit_refuses_exactly_when_usage_would_pass_the_limit(
            catalog in catalog(), facts in facts(), overrides in overrides(),
            used in 0i64..3000, amount in 0i64..5,
        ) {
            let e = resolve(&catalog, OrgKind::Team, Some(&facts.borrow()), &overrides, NOW);
            for (key, limit) in &e.limits {
                let fits = limit.is_none_or(|max| used + amount <= max);
                let result = e.check_limit(key, used, amount, &catalog);
                prop_assert_eq!(result.is_ok(), fits, "{} used {} + {} vs {:?}: {:?}", key, used, amount, limit, result);
            }
        }
    }
}
