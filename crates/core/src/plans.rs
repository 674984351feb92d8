//! The plan catalog: which plans exist, what each one includes, and which
//! payment-provider prices map to it.
//!
//! The catalog is declarative config. [`CatalogConfig`] is its raw shape as
//! written in TOML; [`PlanCatalog::from_config`] validates it once, at
//! start-up, into a [`PlanCatalog`] that the rest of the code trusts without
//! re-checking (a bad catalog stops the server with messages that name the
//! plan and the key). The default catalog, the one API.md describes, is
//! embedded from `default_plans.toml`.
//!
//! This module never reads a file or the clock and never decides what one
//! organization is entitled to: [`crate::entitlements::resolve`] does that
//! with the catalog as input.
//!
//! # The TOML format
//!
//! ```toml
//! [resources]
//! types = ["customers", "clients"]      # app resources counted against limits of the same name
//!
//! [features]
//! extra = ["sso"]                         # app features known besides the built-in ones
//!
//! [entitlements]
//! entitling_statuses = ["trialing", "active", "paused", "past_due"]
//! grace_period_days = 7                   # whole days, 0 to 3650
//!
//! [plans.free]
//! default = true                          # the plan of every org without an entitling subscription
//! tier = "free"
//! features = ["invitations"]
//! limits = { customers = 3, seats = 2, clients = 10 }
//!
//! [plans.business]
//! tier = "business"
//! features = ["invitations", "api_tokens", "custom_roles", "audit_log"]
//! limits = { customers = 100, clients = 1000 }
//! seats = "per_unit"                      # seat limit = the subscription's purchased quantity
//! prices = { stripe = ["price_..."], lemonsqueezy = ["12345"] }
//!
//! [plans.enterprise]
//! tier = "enterprise"
//! features = ["*"]                        # "*" = every known feature; a limit left out is unlimited
//! ```
//!
//! Each of the four sections, when present, replaces the default catalog's
//! section as a whole (one `[plans.*]` table replaces all default plans).
//! Inside `[entitlements]`, a key left out keeps its default.
//!
//! # Names
//!
//! - Features: the built-in vocabulary [`BUILTIN_FEATURES`] (the ones
//!   orgplane's own routes guard) plus the app's own names listed under
//!   `[features] extra`. Anything else in a plan is refused, so that a typo
//!   can't silently switch a feature off. `"*"` stands for every known
//!   feature, extras included.
//! - Limits: every declared resource type, plus the built-in [`SEATS`] (the
//!   number of members) and [`API_KEYS`] (an org's live API keys). A limit left out of a plan is unlimited. The seat
//!   limit is `limits.seats`, or, with `seats = "per_unit"`, the quantity
//!   bought with the subscription.
//! - Plan keys, resource types and extra features are lower-case letters,
//!   digits, `_` and `-`, starting with a letter, at most 64 characters.
//!
//! # Catalog order
//!
//! TOML tables have no order that survives deserialization (and layered
//! config merges them as maps), so the catalog orders plans by what they
//! give, as a stand-in for their price: the default plan first, then by
//! number of features, then by number of unlimited limits, then by the sum
//! of the fixed limits, then by key. Upgrade suggestions ("upgrade to
//! business") pick the first plan in this order that fits; for a limit, the
//! plan with the smallest limit that fits comes first.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::subscription::{Provider, SubscriptionStatus};

/// The features orgplane's own routes guard. Apps add theirs under
/// `[features] extra`.
pub const BUILTIN_FEATURES: [&str; 4] = ["invitations", "api_tokens", "custom_roles", "audit_log"];

/// The built-in limit on the number of members of an organization.
pub const SEATS: &str = "seats";

/// The built-in limit on an organization's live API keys (`ok_…`).
pub const API_KEYS: &str = "api_keys";

/// In a plan's `features`, every known feature.
pub const ALL_FEATURES: &str = "*";

/// The one seat policy besides the default (a fixed `limits.seats`).
pub const PER_UNIT: &str = "per_unit";

/// The longest grace period the catalog accepts, in days (ten years: past
/// that it is not a grace period, and the date arithmetic stays far from
/// overflow).
pub const MAX_GRACE_PERIOD_DAYS: i64 = 3650;
/// The longest trial a plan may give (Stripe refuses more than 730 days).
pub const MAX_TRIAL_DAYS: u32 = 730;

const DEFAULT_CATALOG_TOML: &str = include_str!("default_plans.toml");

const MAX_NAME_LEN: usize = 64;

/// The plan catalog as written in config, before validation.
///
/// Each section is optional: a missing one falls back to the default
/// catalog's. The top level accepts unknown keys because these sections live
/// in `orgplane.toml` beside the server's own; every section below it
/// refuses unknown keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct CatalogConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturesConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<EntitlementsConfig>,
    /// Plans by key. One `[plans.*]` table replaces all default plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plans: Option<BTreeMap<String, PlanConfig>>,
}

/// `[resources]`: the app's counted resource types.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    #[serde(default)]
    pub types: Vec<String>,
}

/// `[features]`: the app's own feature names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesConfig {
    #[serde(default)]
    pub extra: Vec<String>,
}

/// `[entitlements]`: which subscription statuses give their plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntitlementsConfig {
    /// Statuses by their snake_case names (`trialing`, `past_due`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitling_statuses: Option<Vec<String>>,
    /// How long `past_due` still entitles, in whole days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_days: Option<i64>,
}

/// `[plans.<key>]`: one plan as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// The plan of every org without an entitling subscription; exactly one.
    #[serde(default)]
    pub default: bool,
    /// A label for reporting and the app's own grouping (`free`, `business`).
    #[serde(default)]
    pub tier: String,
    /// Feature names, or `"*"` for all.
    #[serde(default)]
    pub features: Vec<String>,
    /// Limit key → maximum. Left out = unlimited.
    #[serde(default)]
    pub limits: BTreeMap<String, i64>,
    /// `"per_unit"`, or left out for a fixed `limits.seats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<String>,
    /// Provider name → the price (Stripe) or variant (Lemon Squeezy) ids
    /// that buy this plan.
    #[serde(default)]
    pub prices: BTreeMap<String, Vec<String>>,
    /// Days of free trial a first checkout of this plan gets (overrides
    /// `billing.trial_period_days`); 0 = none. One trial per org, ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_days: Option<u32>,
}

impl CatalogConfig {
    /// Parses catalog TOML (the whole `orgplane.toml` will do: other sections
    /// are ignored). The error is the TOML parser's, which names the line.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The default catalog's config, as embedded in the binary.
    pub fn embedded() -> Self {
        Self::from_toml(DEFAULT_CATALOG_TOML)
            .expect("default_plans.toml is embedded at compile time and a unit test parses and validates it")
    }
}

/// What a plan allows for one limit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlanLimit {
    /// At most this many.
    Fixed(i64),
    /// As many as the subscription's purchased quantity (seats only).
    PerUnit,
    /// No limit.
    Unlimited,
}

impl PlanLimit {
    /// The limit for an organization whose subscription bought `quantity`
    /// units; `None` = unlimited.
    pub fn for_quantity(self, quantity: i64) -> Option<i64> {
        match self {
            PlanLimit::Fixed(n) => Some(n),
            PlanLimit::PerUnit => Some(quantity.max(0)),
            PlanLimit::Unlimited => None,
        }
    }

    /// Whether this limit can accommodate `total` (a per-unit limit can: buy
    /// that many).
    pub fn can_allow(self, total: i64) -> bool {
        match self {
            PlanLimit::Fixed(n) => total <= n,
            PlanLimit::PerUnit | PlanLimit::Unlimited => true,
        }
    }

    /// Orders limits from least to most generous: fixed ones by value, then
    /// per-unit, then unlimited.
    fn generosity(self) -> (u8, i64) {
        match self {
            PlanLimit::Fixed(n) => (0, n),
            PlanLimit::PerUnit => (1, 0),
            PlanLimit::Unlimited => (2, 0),
        }
    }
}

impl fmt::Display for PlanLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanLimit::Fixed(n) => write!(f, "{n}"),
            PlanLimit::PerUnit => f.write_str("as many as purchased"),
            PlanLimit::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// One validated plan. Its feature set is expanded (`"*"` resolved) and its
/// limits hold every known limit key of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    key: String,
    tier: String,
    is_default: bool,
    features: BTreeSet<String>,
    limits: BTreeMap<String, PlanLimit>,
    prices: Vec<(Provider, Vec<String>)>,
    trial_days: Option<u32>,
}

impl Plan {
    /// The plan's own trial length, if it sets one (0 = no trial).
    pub fn trial_days(&self) -> Option<u32> {
        self.trial_days
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn tier(&self) -> &str {
        &self.tier
    }

    pub fn is_default(&self) -> bool {
        self.is_default
    }

    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }

    /// The plan's features, in name order.
    pub fn features(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(String::as_str)
    }

    /// The plan's limit for `key`; `None` if the catalog knows no such limit.
    pub fn limit(&self, key: &str) -> Option<PlanLimit> {
        self.limits.get(key).copied()
    }

    /// Every known limit key with this plan's limit, in key order.
    pub fn limits(&self) -> impl Iterator<Item = (&str, PlanLimit)> {
        self.limits.iter().map(|(k, l)| (k.as_str(), *l))
    }

    /// The price ids that buy this plan at `provider`, as written.
    pub fn prices(&self, provider: Provider) -> &[String] {
        self.prices.iter().find(|(p, _)| *p == provider).map_or(&[], |(_, ids)| ids.as_slice())
    }

    /// The catalog-order key (see the module docs).
    fn order_key(&self) -> (bool, usize, usize, i64, &str) {
        let unlimited = self.limits.values().filter(|l| **l == PlanLimit::Unlimited).count();
        let fixed_sum = self
            .limits
            .values()
            .fold(0i64, |sum, l| if let PlanLimit::Fixed(n) = l { sum.saturating_add(*n) } else { sum });
        (!self.is_default, self.features.len(), unlimited, fixed_sum, &self.key)
    }
}

/// The validated catalog: plans, the known feature and limit names, and the
/// entitlement policy. Built once at start-up, then shared read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanCatalog {
    /// In catalog order; the default plan is first.
    plans: Vec<Plan>,
    /// Built-in features, then the extras, as declared.
    features: Vec<String>,
    resource_types: Vec<String>,
    /// The resource types, then `seats`.
    limit_keys: Vec<String>,
    entitling_statuses: Vec<SubscriptionStatus>,
    grace_period: time::Duration,
}

impl PlanCatalog {
    /// The catalog API.md describes, embedded from `default_plans.toml`.
    pub fn default_catalog() -> Self {
        Self::from_config(&CatalogConfig::embedded())
            .expect("default_plans.toml validates: the test default_catalog_validates_and_matches_api_md proves it")
    }

    /// Parses and validates catalog TOML in one step (what `orgplane plans
    /// check` needs).
    pub fn from_toml(text: &str) -> Result<Self, Vec<String>> {
        let config = CatalogConfig::from_toml(text).map_err(|e| vec![e])?;
        Self::from_config(&config)
    }

    /// Validates `config`, with missing sections taken from the default
    /// catalog. On failure, every problem found, each naming its key
    /// (`plans.business.limits.widgets: …`) and how to fix it.
    pub fn from_config(config: &CatalogConfig) -> Result<Self, Vec<String>> {
        let embedded = CatalogConfig::embedded();
        let mut errors = Vec::new();

        let resources = config.resources.as_ref().or(embedded.resources.as_ref());
        let resource_types = validate_resource_types(resources.map_or(&[][..], |r| &r.types), &mut errors);
        let mut limit_keys = resource_types.clone();
        limit_keys.push(SEATS.to_owned());
        limit_keys.push(API_KEYS.to_owned());

        let extra = config.features.as_ref().or(embedded.features.as_ref());
        let features = validate_features(extra.map_or(&[][..], |f| &f.extra), &mut errors);

        let policy = config.entitlements.as_ref();
        let fallback = embedded.entitlements.as_ref();
        let statuses = policy
            .and_then(|e| e.entitling_statuses.as_ref())
            .or_else(|| fallback.and_then(|e| e.entitling_statuses.as_ref()));
        let entitling_statuses = validate_statuses(statuses.map_or(&[][..], Vec::as_slice), &mut errors);
        let grace_days = policy
            .and_then(|e| e.grace_period_days)
            .or_else(|| fallback.and_then(|e| e.grace_period_days))
            .unwrap_or(0);
        if !(0..=MAX_GRACE_PERIOD_DAYS).contains(&grace_days) {
            errors.push(format!(
                "entitlements.grace_period_days: {grace_days} is not a grace period; give whole days from 0 to {MAX_GRACE_PERIOD_DAYS}"
            ));
        }

        let plans_config = config.plans.as_ref().or(embedded.plans.as_ref());
        let known = Known { features: &features, limit_keys: &limit_keys };
        let mut plans = validate_plans(plans_config, &known, &mut errors);

        if !errors.is_empty() {
            return Err(errors);
        }
        plans.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        Ok(Self {
            plans,
            features,
            resource_types,
            limit_keys,
            entitling_statuses,
            grace_period: time::Duration::days(grace_days),
        })
    }

    /// Every plan, in catalog order (the default plan first).
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    pub fn plan(&self, key: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.key == key)
    }

    /// The plan of every org without an entitling subscription.
    pub fn default_plan(&self) -> &Plan {
        self.plans.first().expect("validation admits exactly one default plan and sorts it first")
    }

    /// The plan a provider's price (or variant) id buys, if any.
    pub fn plan_for_price(&self, provider: Provider, price_id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.prices(provider).iter().any(|id| id == price_id))
    }

    /// The first price id listed for `plan` at `provider`: what a checkout
    /// for that plan sells.
    pub fn first_price(&self, plan: &str, provider: Provider) -> Option<&str> {
        self.plan(plan)?.prices(provider).first().map(String::as_str)
    }

    /// The declared app resource types, as declared.
    pub fn resource_types(&self) -> &[String] {
        &self.resource_types
    }

    /// Every known feature: the built-in ones, then the declared extras.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// Every known limit key: the resource types, then `seats`, then `api_keys`.
    pub fn limit_keys(&self) -> &[String] {
        &self.limit_keys
    }

    pub fn is_known_feature(&self, name: &str) -> bool {
        self.features.iter().any(|f| f == name)
    }

    /// A declared resource type or `seats`.
    pub fn is_known_limit(&self, key: &str) -> bool {
        self.limit_keys.iter().any(|k| k == key)
    }

    /// The statuses that give a subscription its plan (`past_due` only
    /// within [`grace_period`](Self::grace_period)).
    pub fn entitling_statuses(&self) -> &[SubscriptionStatus] {
        &self.entitling_statuses
    }

    pub fn grace_period(&self) -> time::Duration {
        self.grace_period
    }

    /// The first plan in catalog order, other than `current`, that includes
    /// `feature`: the upgrade to suggest.
    pub fn cheapest_with_feature(&self, feature: &str, current: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.key != current && p.has_feature(feature))
    }

    /// The plan to suggest when `key` would reach `total` under `current`:
    /// among the other plans whose limit is more generous than `current`'s
    /// and can allow `total`, the one with the smallest such limit (then the
    /// first in catalog order).
    pub fn cheapest_allowing(&self, key: &str, total: i64, current: &str) -> Option<&Plan> {
        let floor = self.plan(current).and_then(|p| p.limit(key)).map(PlanLimit::generosity);
        self.plans
            .iter()
            .filter(|p| p.key != current)
            .filter_map(|p| p.limit(key).map(|l| (p, l)))
            .filter(|(_, l)| l.can_allow(total) && floor.is_none_or(|floor| l.generosity() > floor))
            .min_by_key(|(_, l)| l.generosity())
            .map(|(p, _)| p)
    }
}

/// Lower-case letters, digits, `_` and `-`, starting with a letter.
fn is_name(text: &str) -> bool {
    text.len() <= MAX_NAME_LEN
        && text.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

const NAME_RULE: &str = "lower-case letters, digits, `_` and `-`, starting with a letter, at most 64 characters";

fn validate_resource_types(types: &[String], errors: &mut Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in types {
        if t == SEATS || t == API_KEYS {
            errors.push(format!(
                "resources.types: {t:?} is built in (the number of members, or of org API keys); remove it from resources.types"
            ));
        } else if !is_name(t) {
            errors.push(format!("resources.types: {t:?} is not a resource type name ({NAME_RULE})"));
        } else if out.contains(t) {
            errors.push(format!("resources.types: {t:?} is listed twice; list each resource type once"));
        } else {
            out.push(t.clone());
        }
    }
    out
}

fn validate_features(extra: &[String], errors: &mut Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = BUILTIN_FEATURES.iter().map(|f| (*f).to_owned()).collect();
    for f in extra {
        if BUILTIN_FEATURES.contains(&f.as_str()) {
            errors.push(format!("features.extra: {f:?} is a built-in feature; remove it from features.extra"));
        } else if !is_name(f) {
            errors.push(format!("features.extra: {f:?} is not a feature name ({NAME_RULE})"));
        } else if out.contains(f) {
            errors.push(format!("features.extra: {f:?} is listed twice; list each feature once"));
        } else {
            out.push(f.clone());
        }
    }
    out
}

fn validate_statuses(statuses: &[String], errors: &mut Vec<String>) -> Vec<SubscriptionStatus> {
    let mut out = Vec::new();
    for s in statuses {
        match SubscriptionStatus::parse(s) {
            Some(status) if !out.contains(&status) => out.push(status),
            Some(_) => {}
            None => {
                let known: Vec<&str> = SubscriptionStatus::ALL.iter().map(|s| s.as_str()).collect();
                errors.push(format!(
                    "entitlements.entitling_statuses: unknown status {s:?} (known: {})",
                    known.join(", ")
                ));
            }
        }
    }
    out
}

/// The names a plan may use, once the other sections are validated.
struct Known<'a> {
    features: &'a [String],
    limit_keys: &'a [String],
}

fn validate_plans(
    plans: Option<&BTreeMap<String, PlanConfig>>,
    known: &Known<'_>,
    errors: &mut Vec<String>,
) -> Vec<Plan> {
    let Some(plans) = plans.filter(|p| !p.is_empty()) else {
        errors.push(
            "plans: the catalog has no plans; define at least the default one ([plans.free] default = true)".into(),
        );
        return Vec::new();
    };

    let defaults: Vec<&str> = plans.iter().filter(|(_, p)| p.default).map(|(k, _)| k.as_str()).collect();
    match defaults.len() {
        1 => {}
        0 => errors
            .push("plans: no plan has default = true; mark the one plan every org without a subscription gets".into()),
        _ => errors.push(format!(
            "plans: {} plans have default = true ({}); exactly one plan may be the default",
            defaults.len(),
            defaults.join(", ")
        )),
    }

    // (provider, price id) → the plan that claimed it first.
    let mut claimed: Vec<(Provider, &str, &str)> = Vec::new();
    let mut out = Vec::new();
    for (key, config) in plans {
        if let Some(plan) = validate_plan(key, config, known, &mut claimed, errors) {
            out.push(plan);
        }
    }
    out
}

fn validate_plan<'a>(
    key: &'a str,
    config: &'a PlanConfig,
    known: &Known<'_>,
    claimed: &mut Vec<(Provider, &'a str, &'a str)>,
    errors: &mut Vec<String>,
) -> Option<Plan> {
    let before = errors.len();
    if !is_name(key) {
        errors.push(format!("plans.{key}: {key:?} is not a plan key ({NAME_RULE})"));
    }
    if config.tier.trim().is_empty() {
        errors.push(format!("plans.{key}.tier: a plan needs a non-empty tier, e.g. tier = \"business\""));
    }

    let mut features = BTreeSet::new();
    for f in &config.features {
        if f == ALL_FEATURES {
            features.extend(known.features.iter().cloned());
        } else if known.features.contains(f) {
            features.insert(f.clone());
        } else {
            errors.push(format!(
                "plans.{key}.features: unknown feature {f:?} (known: {}, or \"*\" for all); declare an app's own features under [features] extra",
                known.features.join(", ")
            ));
        }
    }

    let per_unit = match config.seats.as_deref() {
        None => false,
        Some(PER_UNIT) => true,
        Some(other) => {
            errors.push(format!(
                "plans.{key}.seats: {other:?} is not a seat policy; write seats = \"per_unit\" or leave it out (the seat limit then comes from limits.seats)"
            ));
            false
        }
    };
    if per_unit && config.default {
        errors.push(format!(
            "plans.{key}.seats: the default plan applies to orgs without a subscription, so there is no purchased quantity to count; give it a fixed limits.seats instead"
        ));
    }

    let mut limits: BTreeMap<String, PlanLimit> =
        known.limit_keys.iter().map(|k| (k.clone(), PlanLimit::Unlimited)).collect();
    if per_unit {
        limits.insert(SEATS.to_owned(), PlanLimit::PerUnit);
    }
    for (limit, value) in &config.limits {
        if !known.limit_keys.contains(limit) {
            errors.push(format!(
                "plans.{key}.limits.{limit}: {limit:?} is not a declared resource type (declared: {})",
                known.limit_keys.join(", ")
            ));
        } else if *value < 0 {
            errors.push(format!(
                "plans.{key}.limits.{limit}: {value} is below 0; a limit is 0 or more, and left out for unlimited"
            ));
        } else if per_unit && limit == SEATS {
            errors.push(format!(
                "plans.{key}.limits.seats: this plan has seats = \"per_unit\", so its seat limit is the purchased quantity; remove limits.seats or the seat policy"
            ));
        } else {
            limits.insert(limit.clone(), PlanLimit::Fixed(*value));
        }
    }

    let mut prices: Vec<(Provider, Vec<String>)> = Vec::new();
    for (provider_name, ids) in &config.prices {
        let Some(provider) = Provider::parse(provider_name) else {
            errors.push(format!(
                "plans.{key}.prices.{provider_name}: unknown provider {provider_name:?} (known: stripe, lemonsqueezy, sandbox)"
            ));
            continue;
        };
        let mut kept: Vec<String> = Vec::new();
        for id in ids {
            if id.trim().is_empty() {
                errors.push(format!("plans.{key}.prices.{provider_name}: a price id can't be empty"));
                continue;
            }
            match claimed.iter().find(|(p, claimed_id, _)| *p == provider && *claimed_id == id.as_str()) {
                Some((_, _, owner)) if *owner != key => errors.push(format!(
                    "plans.{key}.prices.{provider_name}: price {id:?} is already mapped to plan {owner}; a price buys exactly one plan"
                )),
                Some(_) => {}
                None => {
                    claimed.push((provider, id.as_str(), key));
                    kept.push(id.clone());
                }
            }
        }
        prices.push((provider, kept));
    }

    if let Some(days) = config.trial_days {
        if days > MAX_TRIAL_DAYS {
            errors.push(format!(
                "plans.{key}.trial_days: {days} is longer than a trial can be; give whole days from 0 to {MAX_TRIAL_DAYS}"
            ));
        } else if days > 0 && config.default {
            errors.push(format!(
                "plans.{key}.trial_days: the default plan is never bought, so it has no trial; remove trial_days"
            ));
        }
    }

    (errors.len() == before).then(|| Plan {
        key: key.to_owned(),
        tier: config.tier.trim().to_owned(),
        is_default: config.default,
        features,
        limits,
        prices,
        trial_days: config.trial_days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid catalog to break one rule at a time.
    const VALID: &str = r#"
        [resources]
        types = ["customers", "clients"]

        [features]
        extra = ["sso"]

        [plans.free]
        default = true
        tier = "free"
        features = ["invitations"]
        limits = { customers = 3, seats = 2, clients = 10 }

        [plans.business]
        tier = "business"
        features = ["invitations", "api_tokens", "custom_roles", "audit_log"]
        limits = { customers = 100, clients = 1000 }
        seats = "per_unit"
        prices = { stripe = ["price_biz_month", "price_biz_year"], lemonsqueezy = ["12345"] }

        [plans.enterprise]
        tier = "enterprise"
        features = ["*"]
        prices = { stripe = ["price_ent"] }
    "#;

    fn config(text: &str) -> CatalogConfig {
        CatalogConfig::from_toml(text).expect("test TOML parses")
    }

    /// The catalog's errors after `edit` changes the valid config.
    fn errors_after(edit: impl FnOnce(&mut CatalogConfig)) -> Vec<String> {
        let mut cfg = config(VALID);
        edit(&mut cfg);
        PlanCatalog::from_config(&cfg).expect_err("the edit breaks a rule")
    }

    fn plan_mut<'a>(cfg: &'a mut CatalogConfig, key: &str) -> &'a mut PlanConfig {
        cfg.plans.as_mut().and_then(|p| p.get_mut(key)).expect("plan exists in VALID")
    }

    #[test]
    fn a_plan_trial_is_read_and_bounded_and_never_on_the_default_plan() {
        let mut cfg = config(VALID);
        plan_mut(&mut cfg, "business").trial_days = Some(14);
        let catalog = PlanCatalog::from_config(&cfg).expect("valid");
        assert_eq!(catalog.plan("business").and_then(Plan::trial_days), Some(14));
        assert_eq!(catalog.plan("enterprise").and_then(Plan::trial_days), None);
        let errors = errors_after(|c| plan_mut(c, "business").trial_days = Some(MAX_TRIAL_DAYS + 1));
        assert!(errors[0].starts_with("plans.business.trial_days: 731 is longer"), "{errors:?}");
        let errors = errors_after(|c| plan_mut(c, "free").trial_days = Some(7));
        assert!(errors[0].starts_with("plans.free.trial_days: the default plan"), "{errors:?}");
    }

    #[test]
    fn default_catalog_validates_and_matches_api_md() {
        let catalog = PlanCatalog::default_catalog();
        assert_eq!(catalog.resource_types(), ["customers", "clients"]);
        assert_eq!(catalog.limit_keys(), ["customers", "clients", "seats", "api_keys"]);
        assert_eq!(catalog.features(), BUILTIN_FEATURES);
        let keys: Vec<&str> = catalog.plans().iter().map(Plan::key).collect();
        assert_eq!(keys, ["free", "business", "enterprise"]);

        let free = catalog.default_plan();
        assert_eq!((free.key(), free.tier()), ("free", "free"));
        assert_eq!(free.features().collect::<Vec<_>>(), ["invitations"]);
        assert_eq!(free.limit("customers"), Some(PlanLimit::Fixed(3)));
        assert_eq!(free.limit("seats"), Some(PlanLimit::Fixed(2)));
        assert_eq!(free.limit("clients"), Some(PlanLimit::Fixed(10)));

        let business = catalog.plan("business").expect("business");
        assert_eq!(business.tier(), "business");
        assert!(!business.is_default());
        for f in BUILTIN_FEATURES {
            assert!(business.has_feature(f), "business has {f}");
        }
        assert_eq!(business.limit("customers"), Some(PlanLimit::Fixed(100)));
        assert_eq!(business.limit("seats"), Some(PlanLimit::PerUnit));
        assert_eq!(business.limit("clients"), Some(PlanLimit::Fixed(1000)));

        let enterprise = catalog.plan("enterprise").expect("enterprise");
        assert_eq!(enterprise.tier(), "enterprise");
        assert!(BUILTIN_FEATURES.iter().all(|f| enterprise.has_feature(f)));
        assert!(enterprise.limits().all(|(_, l)| l == PlanLimit::Unlimited));

        use SubscriptionStatus::*;
        assert_eq!(catalog.entitling_statuses(), [Trialing, Active, Paused, PastDue]);
        assert_eq!(catalog.grace_period(), time::Duration::days(7));
    }

    #[test]
    fn default_catalog_has_no_price_ids() {
        let catalog = PlanCatalog::default_catalog();
        for provider in [Provider::Stripe, Provider::Lemonsqueezy, Provider::Sandbox] {
            assert!(catalog.plans().iter().all(|p| p.prices(provider).is_empty()));
        }
    }

    #[test]
    fn no_config_at_all_means_the_default_catalog() {
        assert_eq!(PlanCatalog::from_config(&CatalogConfig::default()), Ok(PlanCatalog::default_catalog()));
        assert_eq!(
            PlanCatalog::from_toml("[server]\nlisten = \"127.0.0.1:8080\"\n"),
            Ok(PlanCatalog::default_catalog())
        );
    }

    #[test]
    fn a_plans_section_replaces_every_default_plan() {
        let catalog = PlanCatalog::from_toml(
            "[plans.solo]\ndefault = true\ntier = \"solo\"\nfeatures = [\"api_tokens\"]\nlimits = { customers = 1 }\n",
        )
        .expect("valid");
        assert_eq!(catalog.plans().len(), 1);
        assert!(catalog.plan("free").is_none());
        assert_eq!(catalog.default_plan().key(), "solo");
        // The sections it left out keep the defaults.
        assert_eq!(catalog.resource_types(), ["customers", "clients"]);
        assert_eq!(catalog.grace_period(), time::Duration::days(7));
        assert_eq!(catalog.default_plan().limit("seats"), Some(PlanLimit::Unlimited));
    }

    #[test]
    fn an_entitlements_key_left_out_keeps_its_default() {
        let catalog = PlanCatalog::from_toml("[entitlements]\ngrace_period_days = 3\n").expect("valid");
        assert_eq!(catalog.grace_period(), time::Duration::days(3));
        assert_eq!(catalog.entitling_statuses().len(), 4);
        let catalog = PlanCatalog::from_toml("[entitlements]\nentitling_statuses = [\"active\"]\n").expect("valid");
        assert_eq!(catalog.entitling_statuses(), [SubscriptionStatus::Active]);
        assert_eq!(catalog.grace_period(), time::Duration::days(7));
    }

    #[test]
    fn the_documented_format_parses_with_app_features_and_prices() {
        let catalog = PlanCatalog::from_toml(VALID).expect("valid");
        assert_eq!(catalog.features(), ["invitations", "api_tokens", "custom_roles", "audit_log", "sso"]);
        assert!(catalog.is_known_feature("sso"));
        assert!(!catalog.is_known_feature("*"));
        assert!(catalog.plan("enterprise").is_some_and(|p| p.has_feature("sso")), "\"*\" includes extras");
        assert!(!catalog.plan("business").is_some_and(|p| p.has_feature("sso")));
        assert!(catalog.is_known_limit("customers") && catalog.is_known_limit("seats"));
        assert!(!catalog.is_known_limit("widgets"));
    }

    #[test]
    fn prices_map_to_their_plan_per_provider() {
        let catalog = PlanCatalog::from_toml(VALID).expect("valid");
        let key = |p: Option<&Plan>| p.map(|p| p.key().to_owned());
        assert_eq!(key(catalog.plan_for_price(Provider::Stripe, "price_biz_year")).as_deref(), Some("business"));
        assert_eq!(key(catalog.plan_for_price(Provider::Lemonsqueezy, "12345")).as_deref(), Some("business"));
        assert_eq!(key(catalog.plan_for_price(Provider::Stripe, "price_ent")).as_deref(), Some("enterprise"));
        assert_eq!(catalog.plan_for_price(Provider::Lemonsqueezy, "price_ent"), None, "prices are per provider");
        assert_eq!(catalog.plan_for_price(Provider::Stripe, "price_unknown"), None);
        assert_eq!(catalog.first_price("business", Provider::Stripe), Some("price_biz_month"));
        assert_eq!(catalog.first_price("business", Provider::Sandbox), None);
        assert_eq!(catalog.first_price("nope", Provider::Stripe), None);
    }

    #[test]
    fn unknown_keys_inside_a_section_are_refused_when_parsing() {
        let err =
            CatalogConfig::from_toml("[plans.free]\ndefault = true\ntier = \"free\"\nlimit = { customers = 1 }\n")
                .expect_err("`limit` is a typo of `limits`");
        assert!(err.contains("limit"), "{err}");
        assert!(CatalogConfig::from_toml("[entitlements]\ngrace_period = \"7d\"\n").is_err());
    }

    #[test]
    fn a_catalog_without_a_default_plan_is_refused() {
        let errors = errors_after(|c| plan_mut(c, "free").default = false);
        assert_eq!(
            errors,
            ["plans: no plan has default = true; mark the one plan every org without a subscription gets"]
        );
    }

    #[test]
    fn a_catalog_with_two_default_plans_is_refused() {
        let errors = errors_after(|c| plan_mut(c, "enterprise").default = true);
        assert_eq!(
            errors,
            ["plans: 2 plans have default = true (enterprise, free); exactly one plan may be the default"]
        );
    }

    #[test]
    fn a_catalog_without_plans_is_refused() {
        let errors = errors_after(|c| c.plans = Some(BTreeMap::new()));
        assert_eq!(
            errors,
            ["plans: the catalog has no plans; define at least the default one ([plans.free] default = true)"]
        );
    }

    #[test]
    fn an_unknown_feature_in_a_plan_is_refused() {
        let errors = errors_after(|c| plan_mut(c, "business").features.push("audit_logs".into()));
        assert_eq!(
            errors,
            [
                "plans.business.features: unknown feature \"audit_logs\" (known: invitations, api_tokens, custom_roles, audit_log, sso, or \"*\" for all); declare an app's own features under [features] extra"
            ]
        );
    }

    #[test]
    fn a_limit_on_an_undeclared_resource_type_is_refused() {
        let errors = errors_after(|c| {
            plan_mut(c, "business").limits.insert("widgets".into(), 5);
        });
        assert_eq!(
            errors,
            [
                "plans.business.limits.widgets: \"widgets\" is not a declared resource type (declared: customers, clients, seats, api_keys)"
            ]
        );
    }

    #[test]
    fn a_negative_limit_is_refused() {
        let errors = errors_after(|c| {
            plan_mut(c, "free").limits.insert("customers".into(), -1);
        });
        assert_eq!(
            errors,
            ["plans.free.limits.customers: -1 is below 0; a limit is 0 or more, and left out for unlimited"]
        );
    }

    #[test]
    fn a_price_in_two_plans_is_refused() {
        let errors = errors_after(|c| {
            plan_mut(c, "enterprise").prices.insert("lemonsqueezy".into(), vec!["12345".into()]);
        });
        assert_eq!(
            errors,
            [
                "plans.enterprise.prices.lemonsqueezy: price \"12345\" is already mapped to plan business; a price buys exactly one plan"
            ]
        );
    }

    #[test]
    fn the_same_price_id_at_two_providers_is_fine() {
        let mut cfg = config(VALID);
        plan_mut(&mut cfg, "enterprise").prices.insert("lemonsqueezy".into(), vec!["price_biz_month".into()]);
        assert!(PlanCatalog::from_config(&cfg).is_ok());
    }

    #[test]
    fn an_empty_or_unknown_price_entry_is_refused() {
        let errors = errors_after(|c| {
            plan_mut(c, "business").prices.insert("paddle".into(), vec!["pri_1".into()]);
            plan_mut(c, "enterprise").prices.insert("stripe".into(), vec![" ".into()]);
        });
        assert_eq!(
            errors,
            [
                "plans.business.prices.paddle: unknown provider \"paddle\" (known: stripe, lemonsqueezy, sandbox)",
                "plans.enterprise.prices.stripe: a price id can't be empty",
            ]
        );
    }

    #[test]
    fn an_empty_tier_is_refused() {
        let errors = errors_after(|c| plan_mut(c, "business").tier = "  ".into());
        assert_eq!(errors, ["plans.business.tier: a plan needs a non-empty tier, e.g. tier = \"business\""]);
    }

    #[test]
    fn a_seat_policy_other_than_per_unit_is_refused() {
        let errors = errors_after(|c| plan_mut(c, "business").seats = Some("fixed".into()));
        assert_eq!(
            errors,
            [
                "plans.business.seats: \"fixed\" is not a seat policy; write seats = \"per_unit\" or leave it out (the seat limit then comes from limits.seats)"
            ]
        );
    }

    #[test]
    fn a_per_unit_plan_with_a_fixed_seat_limit_is_refused() {
        let errors = errors_after(|c| {
            plan_mut(c, "business").limits.insert("seats".into(), 5);
        });
        assert_eq!(
            errors,
            [
                "plans.business.limits.seats: this plan has seats = \"per_unit\", so its seat limit is the purchased quantity; remove limits.seats or the seat policy"
            ]
        );
    }

    #[test]
    fn a_per_unit_default_plan_is_refused() {
        let errors = errors_after(|c| {
            let free = plan_mut(c, "free");
            free.limits.remove("seats");
            free.seats = Some("per_unit".into());
        });
        assert_eq!(
            errors,
            [
                "plans.free.seats: the default plan applies to orgs without a subscription, so there is no purchased quantity to count; give it a fixed limits.seats instead"
            ]
        );
    }

    #[test]
    fn a_malformed_plan_key_is_refused() {
        let errors = errors_after(|c| {
            let plans = c.plans.as_mut().expect("plans");
            let mut pro = plans.get("enterprise").cloned().expect("enterprise");
            pro.prices.clear();
            plans.insert("Pro Plan".into(), pro);
        });
        assert_eq!(
            errors,
            [
                "plans.Pro Plan: \"Pro Plan\" is not a plan key (lower-case letters, digits, `_` and `-`, starting with a letter, at most 64 characters)"
            ]
        );
    }

    #[test]
    fn bad_resource_types_are_refused() {
        let errors = errors_after(|c| {
            c.resources = Some(ResourcesConfig {
                types: vec!["customers".into(), "clients".into(), "seats".into(), "Widgets".into(), "clients".into()],
            })
        });
        assert_eq!(
            errors,
            [
                "resources.types: \"seats\" is built in (the number of members, or of org API keys); remove it from resources.types",
                "resources.types: \"Widgets\" is not a resource type name (lower-case letters, digits, `_` and `-`, starting with a letter, at most 64 characters)",
                "resources.types: \"clients\" is listed twice; list each resource type once",
            ]
        );
    }

    #[test]
    fn bad_extra_features_are_refused() {
        let errors = errors_after(|c| {
            c.features =
                Some(FeaturesConfig { extra: vec!["sso".into(), "audit_log".into(), "*".into(), "sso".into()] })
        });
        assert_eq!(
            errors,
            [
                "features.extra: \"audit_log\" is a built-in feature; remove it from features.extra",
                "features.extra: \"*\" is not a feature name (lower-case letters, digits, `_` and `-`, starting with a letter, at most 64 characters)",
                "features.extra: \"sso\" is listed twice; list each feature once",
            ]
        );
    }

    #[test]
    fn an_unknown_entitling_status_is_refused() {
        let errors = errors_after(|c| {
            c.entitlements = Some(EntitlementsConfig {
                entitling_statuses: Some(vec!["active".into(), "pastdue".into()]),
                grace_period_days: None,
            })
        });
        assert_eq!(
            errors,
            [
                "entitlements.entitling_statuses: unknown status \"pastdue\" (known: incomplete, incomplete_expired, trialing, active, past_due, canceled, unpaid, paused)"
            ]
        );
    }

    #[test]
    fn a_grace_period_out_of_range_is_refused() {
        for days in [-1, MAX_GRACE_PERIOD_DAYS + 1] {
            let errors = errors_after(|c| {
                c.entitlements = Some(EntitlementsConfig { entitling_statuses: None, grace_period_days: Some(days) })
            });
            assert_eq!(
                errors,
                [format!(
                    "entitlements.grace_period_days: {days} is not a grace period; give whole days from 0 to 3650"
                )]
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = errors_after(|c| {
            plan_mut(c, "free").tier = String::new();
            plan_mut(c, "business").features.push("sso2".into());
            plan_mut(c, "enterprise").limits.insert("widgets".into(), 1);
        });
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("plans.free.tier:")));
        assert!(errors.iter().any(|e| e.starts_with("plans.business.features:")));
        assert!(errors.iter().any(|e| e.starts_with("plans.enterprise.limits.widgets:")));
    }

    #[test]
    fn plans_are_ordered_default_first_then_by_what_they_give() {
        let catalog = PlanCatalog::from_toml(
            r#"
            [plans.zeta]
            default = true
            tier = "free"
            limits = { customers = 1, clients = 1, seats = 1 }
            [plans.alpha]
            tier = "top"
            features = ["*"]
            [plans.mid]
            tier = "mid"
            features = ["api_tokens", "audit_log"]
            limits = { customers = 50, clients = 50, seats = 5 }
            [plans.low]
            tier = "low"
            features = ["api_tokens", "invitations"]
            limits = { customers = 10, clients = 10, seats = 2 }
            "#,
        )
        .expect("valid");
        let keys: Vec<&str> = catalog.plans().iter().map(Plan::key).collect();
        assert_eq!(keys, ["zeta", "low", "mid", "alpha"]);
        assert_eq!(catalog.cheapest_with_feature("api_tokens", "zeta").map(Plan::key), Some("low"));
        assert_eq!(catalog.cheapest_with_feature("custom_roles", "zeta").map(Plan::key), Some("alpha"));
        assert_eq!(catalog.cheapest_allowing("customers", 11, "zeta").map(Plan::key), Some("mid"));
        assert_eq!(catalog.cheapest_allowing("customers", 51, "zeta").map(Plan::key), Some("alpha"));
        assert_eq!(catalog.cheapest_allowing("customers", 5, "alpha").map(Plan::key), None, "nothing above unlimited");
    }

    #[test]
    fn upgrade_suggestions_in_the_default_catalog_name_business_first() {
        let catalog = PlanCatalog::default_catalog();
        assert_eq!(catalog.cheapest_with_feature("audit_log", "free").map(Plan::key), Some("business"));
        assert_eq!(catalog.cheapest_allowing("customers", 4, "free").map(Plan::key), Some("business"));
        assert_eq!(catalog.cheapest_allowing("customers", 101, "free").map(Plan::key), Some("enterprise"));
        assert_eq!(catalog.cheapest_allowing("seats", 3, "free").map(Plan::key), Some("business"));
        assert_eq!(catalog.cheapest_allowing("seats", 3, "business").map(Plan::key), Some("enterprise"));
    }
}
