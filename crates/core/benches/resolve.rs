//! How long entitlement resolution takes: it runs on every request of the
//! app, so it should stay well under a microsecond.
//!
//! `cargo bench -p orgplane-core --bench resolve`

use std::collections::BTreeMap;

use divan::{Bencher, black_box};
use orgplane_core::entitlements::{Overrides, SubscriptionFacts, resolve};
use orgplane_core::org::OrgKind;
use orgplane_core::plans::PlanCatalog;
use orgplane_core::subscription::SubscriptionStatus;
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);

fn main() {
    divan::main();
}

fn active_business() -> SubscriptionFacts<'static> {
    SubscriptionFacts {
        status: SubscriptionStatus::Active,
        plan: Some("business"),
        quantity: 12,
        trial_end: None,
        past_due_since: None,
        seat_hold: None,
        plan_hold: None,
    }
}

#[divan::bench]
fn no_subscription(bencher: Bencher) {
    let catalog = PlanCatalog::default_catalog();
    let overrides = Overrides::default();
    bencher.bench_local(|| resolve(black_box(&catalog), OrgKind::Team, black_box(None), black_box(&overrides), NOW));
}

#[divan::bench]
fn active_business_subscription(bencher: Bencher) {
    let catalog = PlanCatalog::default_catalog();
    let facts = active_business();
    let overrides = Overrides::default();
    bencher.bench_local(|| {
        resolve(black_box(&catalog), OrgKind::Team, black_box(Some(&facts)), black_box(&overrides), NOW)
    });
}

#[divan::bench]
fn active_business_subscription_with_overrides(bencher: Bencher) {
    let catalog = PlanCatalog::default_catalog();
    let facts = active_business();
    let overrides = Overrides {
        features: BTreeMap::from([("audit_log".to_owned(), false)]),
        limits: BTreeMap::from([("customers".to_owned(), Some(500)), ("clients".to_owned(), None)]),
    };
    bencher.bench_local(|| {
        resolve(black_box(&catalog), OrgKind::Team, black_box(Some(&facts)), black_box(&overrides), NOW)
    });
}

#[divan::bench]
fn resolve_then_check_limit(bencher: Bencher) {
    let catalog = PlanCatalog::default_catalog();
    let facts = active_business();
    let overrides = Overrides::default();
    bencher.bench_local(|| {
        let entitlements = resolve(black_box(&catalog), OrgKind::Team, Some(&facts), &overrides, NOW);
        entitlements.check_limit(black_box("customers"), black_box(42), 1, &catalog)
    });
}
