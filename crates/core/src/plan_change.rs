//! What a plan change would leave over its limits, and which features it
//! would take away: the downgrade check of `POST …/subscription/change` and
//! `…/change_preview`.
//!
//! [`check_change`] resolves the target plan with the same function that
//! resolves every request ([`resolve`]), as if the org's subscription were
//! already on it, and compares the result with the org's usage and with its
//! entitlements now. It never decides whether a change may go ahead: the
//! caller refuses a change that leaves seats over the limit (people can't
//! be kept over a seat limit without a seat each) and lets resources stay
//! over, as for any downgrade (nothing is deleted).
//!
//! Pure: no clock (callers pass `now`), no store, no provider.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

use crate::entitlements::{Entitlements, Overrides, SubscriptionFacts, resolve};
use crate::org::OrgKind;
use crate::plans::{PlanCatalog, SEATS};
use crate::subscription::SubscriptionStatus;

/// One limit that usage would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OverLimit {
    pub used: i64,
    pub limit: i64,
}

/// What a change to another plan would leave behind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangeCheck {
    /// Limit key → usage and the target's limit, for each limit usage would exceed.
    pub over_limits: BTreeMap<String, OverLimit>,
    /// Features on now that the target plan turns off, in catalog order.
    pub features_lost: Vec<String>,
    /// The target's seat limit (overrides included; `None`: unlimited):
    /// what a plan change holds while it waits on the provider.
    pub seat_limit: Option<i64>,
}

impl ChangeCheck {
    /// The seats usage would exceed, if it would.
    pub fn seats_over(&self) -> Option<OverLimit> {
        self.over_limits.get(SEATS).copied()
    }
}

/// Checks a change of the org to `plan` with `quantity` purchased units,
/// given its entitlements now (`current`), its overrides (which still apply
/// after the change) and `used`, its usage per limit key (seats, api keys,
/// each resource type; a key left out counts 0). An unknown `plan` is the
/// caller's to refuse: it resolves to the default plan here.
#[allow(clippy::too_many_arguments)]
pub fn check_change(
    catalog: &PlanCatalog,
    kind: OrgKind,
    current: &Entitlements,
    plan: &str,
    quantity: i64,
    overrides: &Overrides,
    used: &BTreeMap<String, i64>,
    now: OffsetDateTime,
) -> ChangeCheck {
    let target = SubscriptionFacts {
        status: SubscriptionStatus::Active,
        plan: Some(plan),
        quantity,
        trial_end: None,
        past_due_since: None,
        seat_hold: None,
        plan_hold: None,
    };
    let after = resolve(catalog, kind, Some(&target), overrides, now);
    let over_limits = after
        .limits
        .iter()
        .filter_map(|(key, limit)| {
            let limit = (*limit)?;
            let used = used.get(key).copied().unwrap_or(0);
            (used > limit).then(|| (key.clone(), OverLimit { used, limit }))
        })
        .collect();
    let features_lost = catalog
        .features()
        .iter()
        .filter(|f| current.feature(f) == Some(true) && after.feature(f) == Some(false))
        .cloned()
        .collect();
    let seat_limit = after.limit(SEATS).flatten();
    ChangeCheck { over_limits, features_lost, seat_limit }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> PlanCatalog {
        PlanCatalog::from_toml(
            r#"
            [resources]
            types = ["customers"]
            [plans.free]
            default = true
            tier = "free"
            features = ["invitations"]
            limits = { customers = 3, seats = 2 }
            [plans.business]
            tier = "business"
            features = ["invitations", "audit_log"]
            limits = { customers = 100 }
            seats = "per_unit"
            [plans.enterprise]
            tier = "enterprise"
            features = ["*"]
            "#,
        )
        .expect("valid catalog")
    }

    fn on(catalog: &PlanCatalog, plan: &str, quantity: i64) -> Entitlements {
        let facts = SubscriptionFacts {
            status: SubscriptionStatus::Active,
            plan: Some(plan),
            quantity,
            trial_end: None,
            past_due_since: None,
            seat_hold: None,
            plan_hold: None,
        };
        resolve(catalog, OrgKind::Team, Some(&facts), &Overrides::default(), OffsetDateTime::UNIX_EPOCH)
    }

    fn usage(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn an_upgrade_leaves_nothing_over_and_loses_nothing() {
        let catalog = catalog();
        let now = on(&catalog, "business", 5);
        let check = check_change(
            &catalog,
            OrgKind::Team,
            &now,
            "enterprise",
            5,
            &Overrides::default(),
            &usage(&[("seats", 5), ("customers", 50)]),
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(check, ChangeCheck::default());
    }

    #[test]
    fn a_downgrade_names_each_limit_over_and_each_feature_lost() {
        let catalog = catalog();
        let now = on(&catalog, "enterprise", 1);
        let check = check_change(
            &catalog,
            OrgKind::Team,
            &now,
            "business",
            3,
            &Overrides::default(),
            &usage(&[("seats", 5), ("customers", 150)]),
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(check.seats_over(), Some(OverLimit { used: 5, limit: 3 }));
        assert_eq!(check.over_limits["customers"], OverLimit { used: 150, limit: 100 });
        assert!(check.features_lost.contains(&"api_tokens".to_owned()), "{:?}", check.features_lost);
        assert!(!check.features_lost.contains(&"audit_log".to_owned()), "business keeps the audit log");
    }

    #[test]
    fn overrides_still_apply_after_the_change() {
        let catalog = catalog();
        let overrides = Overrides { limits: [("customers".to_owned(), Some(500))].into(), ..Overrides::default() };
        let now = on(&catalog, "enterprise", 1);
        let check = check_change(
            &catalog,
            OrgKind::Team,
            &now,
            "business",
            10,
            &overrides,
            &usage(&[("seats", 2), ("customers", 150)]),
            OffsetDateTime::UNIX_EPOCH,
        );
        assert!(check.over_limits.is_empty(), "{check:?}");
    }
}
