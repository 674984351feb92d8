//! Billing as the server runs it: the `[billing]` configuration, the
//! registry of payment providers (Stripe, Lemon Squeezy and the `--dev`
//! sandbox behind one interface), webhook intake, subscription operations,
//! and the reconciliation job.
//!
//! The work is split by layer. The billing crate verifies signatures,
//! normalizes provider JSON and calls provider APIs; the store applies
//! snapshots (once, in the provider's order, one subscription per org) and
//! keeps every provider event; this module joins the two: it turns a
//! verified event into a [`EventEffect`] (re-fetching the subscription from
//! the provider's API when one is configured, as Stripe advises), and it
//! applies the provider's answer to each operation through the same store
//! path a webhook takes.
//!
//! It never writes SQL and never reads a provider's JSON.
//!
//! # Configuration
//!
//! ```toml
//! [billing]
//! provider = "stripe"              # checkouts: stripe | lemonsqueezy | sandbox (the --dev default)
//! retry_interval_secs = 30         # how often unmatched / failed events are retried (0 = never)
//! reconcile_interval_secs = 3600   # how often every live subscription is re-fetched (0 = never)
//! refetch_on_webhook = true        # apply the provider's current state, not the event's copy
//! [billing.stripe]
//! api_key = "sk_..."               # or ORGPLANE_BILLING_STRIPE_API_KEY
//! webhook_secrets = ["whsec_..."]  # several while a secret is rolled
//! [billing.lemonsqueezy]
//! api_key = "..."
//! store_id = "1"
//! webhook_secret = "..."
//! ```
//!
//! # The sandbox
//!
//! With `--dev` (and no other `billing.provider`), checkouts go to a local
//! sandbox provider whose state lives in the database. Its prices are plan
//! keys: when the catalog lists no `sandbox` prices, every non-default plan
//! `p` gets the sandbox price `sandbox_p`, so that `plan_for_price` and
//! entitlement resolution treat sandbox subscriptions exactly like Stripe's.
//! Paying a sandbox checkout stores and applies a provider event through the
//! same path as a real webhook; its API (fetch, cancel, reactivate, seats)
//! changes the stored sandbox state and returns snapshots that are applied
//! like Stripe's answers. A sandbox period lasts `sandbox_period_secs`; a
//! reconciliation pass renews it, or ends the subscription if it was set to
//! cancel.

use std::sync::Arc;
use std::time::Duration;

use orgplane_billing::{
    BillingEvent, CheckoutRequest, LemonSqueezyClient, LemonSqueezyConfig, ParseError, ParsedWebhook, PaymentProvider,
    ProviderError, StripeClient, StripeConfig, lemonsqueezy, stripe,
};
use orgplane_core::entitlements::{SubscriptionFacts, entitles};
use orgplane_core::org::Org;
use orgplane_core::plans::{CatalogConfig, PlanCatalog};
use orgplane_core::subscription::{Provider, SubscriptionSnapshot, check_seats};
use orgplane_core::{DomainError, OrgId, Timestamp, UserId};
use orgplane_store::{
    Actor, EventEffect, Ingest, NewCheckout, NewProviderEvent, ProcessedEvent, RetryCandidate, SandboxChange,
    SandboxSubscription, SnapshotInput, Store, StoreError, StoredSubscription, WalkClaim,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::Config;
use crate::entitlements::plan_bought;
use crate::error::ApiError;

/// Which provider checkouts go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckoutProvider {
    Stripe,
    Lemonsqueezy,
    Sandbox,
}

impl CheckoutProvider {
    fn provider(self) -> Provider {
        match self {
            CheckoutProvider::Stripe => Provider::Stripe,
            CheckoutProvider::Lemonsqueezy => Provider::Lemonsqueezy,
            CheckoutProvider::Sandbox => Provider::Sandbox,
        }
    }
}

/// `[billing]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// The checkout provider. Left out: `sandbox` with `--dev`, otherwise
    /// the provider that has an API key (Stripe first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<CheckoutProvider>,
    pub stripe: StripeConfig,
    pub lemonsqueezy: LemonSqueezyConfig,
    /// Seconds between retries of unmatched and failed provider events; 0 = never.
    pub retry_interval_secs: u64,
    /// Seconds between passes that re-fetch every live subscription; 0 = never.
    pub reconcile_interval_secs: u64,
    /// Re-fetch the subscription a webhook names (when the provider's API is
    /// configured) and apply that, rather than the event's own copy.
    pub refetch_on_webhook: bool,
    /// Stripe only: a free trial on every checkout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial_period_days: Option<u32>,
    /// Length of a sandbox billing period, in seconds (default 30 days).
    pub sandbox_period_secs: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            provider: None,
            stripe: StripeConfig::default(),
            lemonsqueezy: LemonSqueezyConfig::default(),
            retry_interval_secs: 30,
            reconcile_interval_secs: 3600,
            refetch_on_webhook: true,
            trial_period_days: None,
            sandbox_period_secs: 30 * 24 * 3600,
        }
    }
}

impl BillingConfig {
    /// The provider checkouts go to, if any.
    pub fn checkout_provider(&self, dev: bool) -> Option<Provider> {
        match self.provider {
            Some(p) => Some(p.provider()),
            None if dev => Some(Provider::Sandbox),
            None if self.stripe.api_key.is_some() => Some(Provider::Stripe),
            None if self.lemonsqueezy.api_key.is_some() => Some(Provider::Lemonsqueezy),
            None => None,
        }
    }

    /// Checks what types can't; the message names the key and the fix.
    pub fn validate(&self, dev: bool) -> Result<(), String> {
        self.stripe.validate()?;
        self.lemonsqueezy.validate()?;
        match self.provider {
            Some(CheckoutProvider::Sandbox) if !dev => {
                return Err("billing.provider: \"sandbox\" hands out plans without payment and runs only with --dev; \
                     choose \"stripe\" or \"lemonsqueezy\""
                    .into());
            }
            Some(CheckoutProvider::Stripe) if self.stripe.api_key.is_none() => {
                return Err(
                    "billing.provider: \"stripe\" needs billing.stripe.api_key (or ORGPLANE_BILLING_STRIPE_API_KEY)"
                        .into(),
                );
            }
            Some(CheckoutProvider::Lemonsqueezy) if self.lemonsqueezy.api_key.is_none() => {
                return Err("billing.provider: \"lemonsqueezy\" needs billing.lemonsqueezy.api_key and store_id".into());
            }
            _ => {}
        }
        Ok(())
    }
}

/// The sandbox price of `plan` when the catalog lists none (see the module docs).
pub fn sandbox_price(plan: &str) -> String {
    format!("sandbox_{plan}")
}

/// The plan catalog of `config`; with the sandbox as checkout provider and
/// no `sandbox` prices in the catalog, each non-default plan `p` is sold at
/// the sandbox price `sandbox_p`.
pub fn plan_catalog(config: &Config) -> Result<PlanCatalog, String> {
    let mut catalog = config.catalog_config();
    if config.billing.checkout_provider(config.dev) == Some(Provider::Sandbox) {
        let mut plans = catalog.plans.clone().or_else(|| CatalogConfig::embedded().plans).unwrap_or_default();
        let listed =
            plans.values().any(|p| p.prices.get(Provider::Sandbox.as_str()).is_some_and(|ids| !ids.is_empty()));
        if !listed {
            for (key, plan) in plans.iter_mut().filter(|(_, p)| !p.default) {
                plan.prices.insert(Provider::Sandbox.as_str().to_owned(), vec![sandbox_price(key)]);
            }
            catalog.plans = Some(plans);
        }
    }
    PlanCatalog::from_config(&catalog).map_err(|errors| errors.join("\n"))
}

/// Why a billing call failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("{0}")]
    NotConfigured(String),
    #[error("{0}")]
    InvalidSignature(String),
    /// A billing task ended without an answer (it panicked, or the runtime
    /// is shutting down).
    #[error("{0}")]
    Internal(String),
}

impl From<DomainError> for BillingError {
    fn from(e: DomainError) -> Self {
        BillingError::Store(e.into())
    }
}

impl From<BillingError> for ApiError {
    fn from(e: BillingError) -> Self {
        use axum::http::StatusCode;
        match e {
            BillingError::Store(e) => e.into(),
            BillingError::InvalidSignature(message) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_signature",
                format!("the webhook signature does not verify ({message}); nothing was stored"),
            ),
            BillingError::NotConfigured(message) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "billing_not_configured", message)
            }
            BillingError::Internal(cause) => ApiError::internal(cause),
            BillingError::Provider(ProviderError::InvalidRequest(message)) => ApiError::invalid(message),
            BillingError::Provider(ProviderError::Config(message)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "billing_not_configured", message)
            }
            BillingError::Provider(e) if e.is_retryable() => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_unavailable",
                format!("{e}; nothing changed here, try again"),
            ),
            BillingError::Provider(e) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "provider_error",
                format!("{e}; nothing changed here (check the plan's price ids and the provider's dashboard)"),
            ),
        }
    }
}

type BillingResult<T> = Result<T, BillingError>;

/// What a webhook delivery became.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    /// Seen before: nothing was done again.
    pub duplicate: bool,
    /// `applied`, `ignored`, `unmatched` or `failed` (a duplicate: absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// What applying did (`created`, `updated`, `unchanged`, `stale`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// The stored event (`pev_…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

impl WebhookReceipt {
    fn from_ingest(ingest: &Ingest) -> Self {
        match ingest {
            Ingest::Duplicate => {
                WebhookReceipt { received: true, duplicate: true, status: None, outcome: None, event: None }
            }
            Ingest::Processed(p) => WebhookReceipt {
                received: true,
                duplicate: false,
                status: Some(p.status.as_str()),
                outcome: p.outcome.map(|o| o.as_str()),
                event: Some(p.id.to_string()),
            },
        }
    }
}

/// What one reconciliation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Unmatched or failed events tried again.
    pub events_retried: usize,
    /// Of those, applied now.
    pub events_applied: usize,
    /// Live subscriptions re-fetched from their provider.
    pub subscriptions_checked: usize,
    /// Of those, changed by what the provider said (drift repaired).
    pub subscriptions_changed: usize,
    /// Subscriptions whose provider has no API configured here.
    pub subscriptions_skipped: usize,
    /// Events Stripe could not deliver, fetched from its API and stored now.
    pub missed_events_recovered: usize,
    /// Orgs not checked because another pass holds their lease (one that
    /// died leaves a lease of [`LEASE`] at most; the next pass takes it).
    pub orgs_leased_elsewhere: usize,
    /// Orgs not checked because another pass checked them within the
    /// freshness window (half the reconcile interval).
    pub orgs_checked_recently: usize,
    pub errors: usize,
}

/// The sandbox provider: a payment provider whose "API" is rows in the
/// database and whose checkout page is served by orgplane itself.
#[derive(Clone)]
struct SandboxProvider {
    store: Store,
    clock: Arc<dyn Clock>,
    base_url: String,
    period: time::Duration,
}

/// A sandbox provider event, as stored (its payload).
#[derive(Serialize, Deserialize)]
struct SandboxEvent {
    org_id: OrgId,
    snapshot: SubscriptionSnapshot,
}

impl SandboxProvider {
    fn snapshot(sub: &SandboxSubscription, now: Timestamp) -> SubscriptionSnapshot {
        SubscriptionSnapshot {
            provider: Provider::Sandbox,
            provider_subscription_id: sub.id.clone(),
            provider_customer_id: Some(sub.customer_id.clone()),
            org_id: Some(sub.org_id),
            status: sub.status,
            price_id: Some(sub.price_id.clone()),
            item_id: Some(sub.id.clone()),
            quantity: sub.quantity,
            current_period_end: Some(sub.current_period_end),
            cancel_at_period_end: sub.cancel_at_period_end,
            trial_end: None,
            observed_at: now,
            portal_url: None,
        }
    }

    async fn change(&self, id: &str, change: SandboxChange) -> BillingResult<SubscriptionSnapshot> {
        let now = self.clock.now();
        let sub = self.store.sandbox_change(id, change, now, self.period).await?;
        Ok(Self::snapshot(&sub, now))
    }
}

/// One payment provider's API, whichever it is.
enum ProviderApi<'a> {
    Remote(&'a PaymentProvider),
    Sandbox(&'a SandboxProvider),
}

impl ProviderApi<'_> {
    async fn fetch(&self, subscription_id: &str) -> BillingResult<SubscriptionSnapshot> {
        match self {
            ProviderApi::Remote(p) => Ok(p.fetch(subscription_id).await?),
            ProviderApi::Sandbox(s) => s.change(subscription_id, SandboxChange::Refresh).await,
        }
    }

    async fn set_cancel_at_period_end(
        &self,
        subscription_id: &str,
        cancel: bool,
        key: &str,
    ) -> BillingResult<SubscriptionSnapshot> {
        match self {
            ProviderApi::Remote(p) => Ok(p.set_cancel_at_period_end(subscription_id, cancel, key).await?),
            ProviderApi::Sandbox(s) => s.change(subscription_id, SandboxChange::CancelAtPeriodEnd(cancel)).await,
        }
    }

    async fn cancel_now(&self, subscription_id: &str) -> BillingResult<SubscriptionSnapshot> {
        match self {
            ProviderApi::Remote(p) => Ok(p.cancel_now(subscription_id).await?),
            ProviderApi::Sandbox(s) => s.change(subscription_id, SandboxChange::CancelNow).await,
        }
    }

    /// Sets the seat count; answers the provider's view afterwards.
    async fn set_quantity(
        &self,
        subscription_id: &str,
        item_id: &str,
        quantity: u32,
        key: &str,
    ) -> BillingResult<SubscriptionSnapshot> {
        match self {
            ProviderApi::Remote(p) => {
                p.set_quantity(item_id, quantity, key).await?;
                Ok(p.fetch(subscription_id).await?)
            }
            ProviderApi::Sandbox(s) => s.change(subscription_id, SandboxChange::Quantity(i64::from(quantity))).await,
        }
    }

    async fn portal_url(
        &self,
        customer: Option<&str>,
        subscription_id: &str,
        return_url: &str,
        key: &str,
    ) -> BillingResult<String> {
        match self {
            ProviderApi::Remote(p) => Ok(p.portal_url(customer, subscription_id, return_url, key).await?),
            ProviderApi::Sandbox(s) => {
                Ok(format!("{}/sandbox/portal/{subscription_id}?return_url={}", s.base_url, form_encode(return_url)))
            }
        }
    }
}

/// Stripe's `Idempotency-Key` for one operation, derived from what the
/// operation is, so that a retry of the same operation is one provider call
/// (Stripe answers a repeated key with its first answer, for 24 h): the
/// operation and its target, the state it acts on (the stored subscription's
/// time: once an operation's result is applied, the next one is new), every
/// parameter sent (Stripe refuses a key reused with other parameters), and
/// the caller's own `Idempotency-Key` (scoped by who sent it) when there is
/// one.
pub fn provider_key(operation: &str, caller: Option<&str>, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    hash.update(operation.as_bytes());
    for part in caller.into_iter().chain(parts.iter().copied()) {
        hash.update([0x1f]);
        hash.update(part.as_bytes());
    }
    format!("orgplane-{operation}-{}", hex::encode(&hash.finalize()[..20]))
}

/// The state version an operation on `sub` acts on (see [`provider_key`]).
fn state_version(sub: &StoredSubscription) -> String {
    format!("{}@{}", sub.provider_subscription_id, sub.observed_at.unix_timestamp_nanos() / 1_000_000)
}

/// Percent-encodes a query value.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A checkout's hosted page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckoutStarted {
    /// Where to send the buyer.
    pub url: String,
    /// `chk_…`
    pub checkout_id: String,
}

/// What a paid sandbox checkout became.
#[derive(Debug, Clone)]
pub struct SandboxPaid {
    pub checkout: orgplane_store::CheckoutRecord,
    pub receipt: WebhookReceipt,
    pub subscription: Option<StoredSubscription>,
}

/// The billing service: cheap to clone, shared by handlers and the
/// reconciliation job.
#[derive(Clone)]
pub struct Billing(Arc<BillingInner>);

struct BillingInner {
    store: Store,
    clock: Arc<dyn Clock>,
    catalog: PlanCatalog,
    checkout_provider: Option<Provider>,
    stripe: Option<PaymentProvider>,
    stripe_secrets: Vec<String>,
    stripe_tolerance: Duration,
    lemonsqueezy: Option<PaymentProvider>,
    lemonsqueezy_secret: Option<String>,
    sandbox: Option<SandboxProvider>,
    refetch: bool,
    trial_period_days: Option<u32>,
    retry_interval: Option<Duration>,
    reconcile_interval: Option<Duration>,
    /// Names this process in reconciliation leases.
    holder: String,
    /// How long a seat change's hold lasts (see [`SEAT_HOLD`]).
    seat_hold: time::Duration,
}

/// How long a pass holds an event or an org before another pass may take
/// it: short, so that a pass that died blocks nothing for long, and renewed
/// (every third of it) while the work lasts longer.
const LEASE: time::Duration = time::Duration::seconds(15);
/// A walk skips orgs checked within this part of the reconcile interval
/// (concurrent passes fetch each subscription once)...
const FRESHNESS_DIVISOR: u32 = 2;
/// ...or within this window when there is no background interval.
const DEFAULT_FRESHNESS: Duration = Duration::from_secs(30 * 60);
/// How long a seat change holds the org's seats at least (see
/// [`Billing::set_seats`]). The provider call, the applying of its answer
/// and the release run to the end whatever happens to the request, so this
/// only bounds how long a process that died mid-call keeps the org's seat
/// limit at the asked-for count and refuses another seat change. Two
/// minutes is far beyond a provider call (10 s timeout by default); a
/// longer configured timeout lengthens the hold to twice that timeout.
const SEAT_HOLD: time::Duration = time::Duration::minutes(2);
const RETRY_BATCH: u32 = 100;
const RETRY_PER_PASS: usize = 2_000;
const WALK_PAGE: u32 = 100;
/// Pages (of 100) of undelivered Stripe events read per reconciliation pass.
const MISSED_EVENT_PAGES: usize = 10;

impl Billing {
    /// The billing service for `config`. `base_url` is where this server is
    /// reached (the sandbox's checkout links point there).
    pub fn new(
        config: &Config,
        store: Store,
        catalog: PlanCatalog,
        base_url: &str,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Billing> {
        let billing = &config.billing;
        billing.validate(config.dev).map_err(anyhow::Error::msg)?;
        let stripe = match &billing.stripe.api_key {
            Some(_) => {
                Some(PaymentProvider::Stripe(StripeClient::from_config(&billing.stripe).map_err(anyhow::Error::new)?))
            }
            None => None,
        };
        let lemonsqueezy = match &billing.lemonsqueezy.api_key {
            Some(_) => Some(PaymentProvider::LemonSqueezy(
                LemonSqueezyClient::from_config(&billing.lemonsqueezy).map_err(anyhow::Error::new)?,
            )),
            None => None,
        };
        let checkout_provider = billing.checkout_provider(config.dev);
        let sandbox = (checkout_provider == Some(Provider::Sandbox)).then(|| SandboxProvider {
            store: store.clone(),
            clock: clock.clone(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            period: time::Duration::seconds(i64::try_from(billing.sandbox_period_secs).unwrap_or(i64::MAX / 1000)),
        });
        let every = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        let slowest_call = billing.stripe.timeout().max(billing.lemonsqueezy.timeout());
        let seat_hold = time::Duration::try_from(slowest_call * 2).map_or(SEAT_HOLD, |d| d.max(SEAT_HOLD));
        Ok(Billing(Arc::new(BillingInner {
            store,
            clock,
            catalog,
            checkout_provider,
            stripe,
            stripe_secrets: billing.stripe.webhook_secrets.clone(),
            stripe_tolerance: billing.stripe.webhook_tolerance(),
            lemonsqueezy,
            lemonsqueezy_secret: billing.lemonsqueezy.webhook_secret.clone(),
            sandbox,
            refetch: billing.refetch_on_webhook,
            trial_period_days: billing.trial_period_days,
            retry_interval: every(billing.retry_interval_secs),
            reconcile_interval: every(billing.reconcile_interval_secs),
            holder: format!("orgplane-{}", uuid::Uuid::now_v7().simple()),
            seat_hold,
        })))
    }

    /// The time the service decides at (see [`crate::clock`]).
    pub fn now(&self) -> Timestamp {
        self.0.clock.now()
    }

    /// Whether the sandbox provider runs (its pages are mounted then).
    pub fn sandbox_enabled(&self) -> bool {
        self.0.sandbox.is_some()
    }

    /// The catalog plan a subscription's price buys, if any.
    pub fn plan_of(&self, subscription: &StoredSubscription) -> Option<String> {
        let plan = plan_bought(
            &self.0.catalog,
            subscription.provider,
            &subscription.provider_subscription_id,
            subscription.price_id.as_deref(),
        );
        plan.map(|p| p.key().to_owned())
    }

    fn api(&self, provider: Provider) -> Option<ProviderApi<'_>> {
        match provider {
            Provider::Stripe => self.0.stripe.as_ref().map(ProviderApi::Remote),
            Provider::Lemonsqueezy => self.0.lemonsqueezy.as_ref().map(ProviderApi::Remote),
            Provider::Sandbox => self.0.sandbox.as_ref().map(ProviderApi::Sandbox),
        }
    }

    fn require_api(&self, provider: Provider) -> BillingResult<ProviderApi<'_>> {
        self.api(provider).ok_or_else(|| {
            BillingError::NotConfigured(match provider {
                Provider::Stripe => "this subscription is at Stripe, and no Stripe API key is configured; set billing.stripe.api_key (or ORGPLANE_BILLING_STRIPE_API_KEY)".to_owned(),
                Provider::Lemonsqueezy => "this subscription is at Lemon Squeezy, and no Lemon Squeezy API key is configured; set billing.lemonsqueezy.api_key and store_id".to_owned(),
                Provider::Sandbox => "this subscription is at the sandbox provider, which runs only with --dev".to_owned(),
            })
        })
    }

    /// The webhook's subscription re-fetch, when configured for `provider`.
    fn refetch_api(&self, provider: Provider) -> Option<ProviderApi<'_>> {
        if self.0.refetch && provider != Provider::Sandbox { self.api(provider) } else { None }
    }

    /// A snapshot with what the catalog says of it. An unknown price keeps
    /// the subscription (and the event) but grants nothing: said loudly.
    fn input(&self, snapshot: SubscriptionSnapshot, now: Timestamp) -> SnapshotInput {
        let plan = plan_bought(
            &self.0.catalog,
            snapshot.provider,
            &snapshot.provider_subscription_id,
            snapshot.price_id.as_deref(),
        );
        let entitling = plan.is_some_and(|plan| {
            !plan.is_default()
                && entitles(
                    &self.0.catalog,
                    &SubscriptionFacts {
                        status: snapshot.status,
                        plan: Some(plan.key()),
                        quantity: snapshot.quantity,
                        trial_end: snapshot.trial_end,
                        past_due_since: None,
                        seat_hold: None,
                    },
                    now,
                )
        });
        SnapshotInput { snapshot, entitling }
    }

    // -- Webhooks ----------------------------------------------------------------

    /// A Stripe delivery: verified (any configured secret, within the
    /// tolerance), stored, applied.
    pub async fn receive_stripe(&self, body: &[u8], signature: Option<&str>) -> BillingResult<WebhookReceipt> {
        // The replay window is a security check: it runs on the machine's
        // clock, like token expiry, whatever time the service decides at.
        stripe::signature::verify(
            body,
            signature.unwrap_or(""),
            &self.0.stripe_secrets,
            self.0.stripe_tolerance,
            Timestamp::now_utc().unix_timestamp(),
        )
        .map_err(|e| BillingError::InvalidSignature(e.to_string()))?;
        self.receive(Provider::Stripe, body, stripe::parse_event(body), None, self.now()).await
    }

    /// A Lemon Squeezy delivery: verified with the signing secret, stored, applied.
    pub async fn receive_lemonsqueezy(
        &self,
        body: &[u8],
        signature: Option<&str>,
        event_name: Option<&str>,
    ) -> BillingResult<WebhookReceipt> {
        let now = self.now();
        let secret = self.0.lemonsqueezy_secret.as_deref().unwrap_or("");
        lemonsqueezy::signature::verify(body, signature.unwrap_or(""), secret)
            .map_err(|e| BillingError::InvalidSignature(e.to_string()))?;
        self.receive(Provider::Lemonsqueezy, body, lemonsqueezy::parse_event(body, event_name), event_name, now).await
    }

    async fn receive(
        &self,
        provider: Provider,
        body: &[u8],
        parsed: Result<ParsedWebhook, ParseError>,
        event_name: Option<&str>,
        now: Timestamp,
    ) -> BillingResult<WebhookReceipt> {
        let ingest = match parsed {
            Ok(parsed) => {
                // Asking the provider costs a round trip: not for a replay.
                if self.would_call_provider(&parsed)
                    && self.0.store.provider_event_seen(provider, &parsed.event_id).await?
                {
                    return Ok(WebhookReceipt::from_ingest(&Ingest::Duplicate));
                }
                let effect = self.effect_of(&parsed, now).await;
                let event = NewProviderEvent {
                    provider,
                    event_id: &parsed.event_id,
                    event_type: &parsed.event_type,
                    occurred_at: Some(parsed.occurred_at),
                    payload: body,
                };
                self.0.store.ingest_provider_event(&event, &effect, now).await?
            }
            Err(e) => {
                // Verified, but not what orgplane reads: kept as failed, never lost.
                tracing::error!(provider = provider.as_str(), error = %e, "a verified webhook does not parse; stored as failed");
                let event_id = format!("unparsed:{}", hex::encode(Sha256::digest(body)));
                let event = NewProviderEvent {
                    provider,
                    event_id: &event_id,
                    event_type: event_name.unwrap_or("unknown"),
                    occurred_at: None,
                    payload: body,
                };
                self.0.store.ingest_provider_event(&event, &EventEffect::failed(provider, e.to_string()), now).await?
            }
        };
        if let Ingest::Processed(p) = &ingest {
            log_processed(provider, p);
        }
        Ok(WebhookReceipt::from_ingest(&ingest))
    }

    fn would_call_provider(&self, parsed: &ParsedWebhook) -> bool {
        let provider = match &parsed.event {
            BillingEvent::Subscription(s) => s.provider,
            BillingEvent::CheckoutCompleted { provider, subscription_id: Some(_), .. } => *provider,
            BillingEvent::Invoice { provider, .. } => *provider,
            _ => return false,
        };
        self.refetch_api(provider).is_some()
    }

    /// What a parsed event asks of orgplane. With the provider's API
    /// configured, the subscription is re-fetched and its present state
    /// applied (observed now); if that fails, the event's own copy is
    /// applied, which the store orders by the provider's timestamp.
    async fn effect_of(&self, parsed: &ParsedWebhook, now: Timestamp) -> EventEffect {
        match &parsed.event {
            BillingEvent::Subscription(snapshot) => {
                let snapshot = self.refetched(snapshot.clone()).await;
                EventEffect {
                    provider: snapshot.provider,
                    org_hint: None,
                    customer_id: snapshot.provider_customer_id.clone(),
                    subscription_id: Some(snapshot.provider_subscription_id.clone()),
                    snapshot: Some(self.input(snapshot, now)),
                    failure: None,
                }
            }
            BillingEvent::CheckoutCompleted { provider, org_id, customer_id, subscription_id, session_id } => {
                let mut snapshot = None;
                if let (Some(api), Some(id)) = (self.refetch_api(*provider), subscription_id) {
                    match api.fetch(id).await {
                        Ok(mut fetched) => {
                            fetched.org_id = fetched.org_id.or(*org_id);
                            snapshot = Some(self.input(fetched, now));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, session = %session_id, "could not fetch a completed checkout's subscription; its own event will bring it")
                        }
                    }
                }
                EventEffect {
                    provider: *provider,
                    org_hint: *org_id,
                    customer_id: customer_id.clone(),
                    subscription_id: subscription_id.clone(),
                    snapshot,
                    failure: None,
                }
            }
            BillingEvent::Invoice { provider, subscription_id, paid } => match self.refetch_api(*provider) {
                // Without the API an invoice says nothing to apply: the
                // subscription's own `updated` event carries the status change.
                None => {
                    EventEffect { subscription_id: Some(subscription_id.clone()), ..EventEffect::nothing(*provider) }
                }
                Some(api) => match api.fetch(subscription_id).await {
                    Ok(fetched) => EventEffect {
                        provider: *provider,
                        org_hint: None,
                        customer_id: fetched.provider_customer_id.clone(),
                        subscription_id: Some(subscription_id.clone()),
                        snapshot: Some(self.input(fetched, now)),
                        failure: None,
                    },
                    Err(e) => EventEffect {
                        subscription_id: Some(subscription_id.clone()),
                        ..EventEffect::failed(
                            *provider,
                            format!(
                                "an invoice was {} but subscription {subscription_id} could not be re-fetched: {e}",
                                if *paid { "paid" } else { "not paid" }
                            ),
                        )
                    },
                },
            },
            BillingEvent::Ignored { .. } => EventEffect::nothing(parsed.provider),
        }
    }

    async fn refetched(&self, snapshot: SubscriptionSnapshot) -> SubscriptionSnapshot {
        let Some(api) = self.refetch_api(snapshot.provider) else { return snapshot };
        match api.fetch(&snapshot.provider_subscription_id).await {
            Ok(mut fetched) => {
                // Lemon Squeezy's API does not return checkout custom data.
                fetched.org_id = fetched.org_id.or(snapshot.org_id);
                fetched.provider_customer_id = fetched.provider_customer_id.or(snapshot.provider_customer_id);
                fetched
            }
            Err(e) => {
                tracing::warn!(error = %e, subscription = %snapshot.provider_subscription_id,
                    "re-fetching a webhook's subscription failed; applying the event's own copy, ordered by its timestamp");
                snapshot
            }
        }
    }

    // -- Operations ----------------------------------------------------------------

    /// Opens a checkout for `plan` at the checkout provider. Refused with
    /// `subscription_exists` while the org has a live subscription.
    #[allow(clippy::too_many_arguments)]
    pub async fn checkout(
        &self,
        org: &Org,
        plan: &str,
        seats: Option<u32>,
        success_url: &str,
        cancel_url: &str,
        buyer: Option<(UserId, Option<&str>)>,
        actor: &Actor,
        caller_key: Option<&str>,
    ) -> BillingResult<CheckoutStarted> {
        let now = self.now();
        let provider = self.0.checkout_provider.ok_or_else(|| {
            BillingError::NotConfigured(
                "no payment provider is configured for checkouts; set [billing] provider and its API key".into(),
            )
        })?;
        let catalog = &self.0.catalog;
        let known =
            || catalog.plans().iter().filter(|p| !p.is_default()).map(|p| p.key()).collect::<Vec<_>>().join(", ");
        let chosen = catalog.plan(plan).ok_or_else(|| {
            DomainError::invalid("plan", format!("unknown plan `{plan}`; plans for sale: {}", known()))
        })?;
        if chosen.is_default() {
            return Err(DomainError::invalid(
                "plan",
                format!("`{plan}` is the default plan and needs no checkout; plans for sale: {}", known()),
            )
            .into());
        }
        let price = catalog.first_price(plan, provider).ok_or_else(|| {
            DomainError::invalid(
                "plan",
                format!(
                    "plan `{plan}` has no {} price; list one under [plans.{plan}] prices = {{ {} = [\"…\"] }}",
                    provider.as_str(),
                    provider.as_str()
                ),
            )
        })?;
        let quantity = match seats {
            Some(n) => check_seats(n)?,
            None => {
                // The seats the org uses now (members and pending invitations).
                let (_, usage) = self.0.store.entitlement_inputs(org.id, now).await?;
                u32::try_from(usage.seats().max(1)).unwrap_or(1)
            }
        };
        let record = self
            .0
            .store
            .begin_checkout(
                &NewCheckout {
                    org: org.id,
                    provider,
                    plan: plan.to_owned(),
                    price_id: price.to_owned(),
                    quantity: i64::from(quantity),
                    started_by: buyer.map(|(id, _)| id),
                    success_url: success_url.to_owned(),
                    cancel_url: cancel_url.to_owned(),
                },
                actor,
                now,
            )
            .await?;
        let opened = match (&self.0.sandbox, provider) {
            (Some(sandbox), Provider::Sandbox) => {
                Ok((record.id.clone(), format!("{}/sandbox/checkout/{}", sandbox.base_url, record.id)))
            }
            _ => {
                let customer_id = self.0.store.org_customer(org.id, provider).await?;
                let customer_email =
                    org.billing_email.clone().or_else(|| buyer.and_then(|(_, e)| e.map(str::to_owned)));
                let trial = self.0.trial_period_days.map(|d| d.to_string()).unwrap_or_default();
                let key = provider_key(
                    "checkout",
                    caller_key,
                    &[
                        &org.id.to_string(),
                        price,
                        &quantity.to_string(),
                        success_url,
                        cancel_url,
                        customer_id.as_deref().unwrap_or(""),
                        customer_email.as_deref().unwrap_or(""),
                        &trial,
                    ],
                );
                let request = CheckoutRequest {
                    org_id: org.id,
                    price_id: price.to_owned(),
                    quantity,
                    success_url: success_url.to_owned(),
                    cancel_url: cancel_url.to_owned(),
                    customer_id,
                    customer_email,
                    trial_period_days: self.0.trial_period_days,
                    idempotency_key: key,
                };
                match self.api(provider) {
                    Some(ProviderApi::Remote(PaymentProvider::Stripe(client))) => client
                        .create_checkout_session(&request)
                        .await
                        .map(|s| (s.id, s.url))
                        .map_err(BillingError::from),
                    Some(ProviderApi::Remote(PaymentProvider::LemonSqueezy(client))) => {
                        client.create_checkout(&request).await.map(|s| (s.id, s.url)).map_err(BillingError::from)
                    }
                    _ => Err(self.require_api(provider).err().unwrap_or_else(|| {
                        BillingError::NotConfigured(format!("no {} API is configured", provider.as_str()))
                    })),
                }
            }
        };
        match opened {
            Ok((session, url)) => {
                self.0.store.checkout_opened(&record.id, &session, &url, now).await?;
                Ok(CheckoutStarted { url, checkout_id: record.id })
            }
            Err(e) => {
                self.0.store.cancel_checkout(&record.id, now).await?;
                Err(e)
            }
        }
    }

    /// The org's subscription while it is live, or why not.
    async fn live_subscription(&self, org: OrgId) -> BillingResult<StoredSubscription> {
        let sub = self.0.store.subscription(org).await?.ok_or_else(no_subscription)?;
        if sub.status.is_terminal() {
            return Err(DomainError::conflict(format!(
                "this organization's subscription has ended ({}); start a new one with POST /v1/orgs/{org}/checkout",
                sub.status.as_str()
            ))
            .into());
        }
        Ok(sub)
    }

    async fn apply(
        &self,
        org: OrgId,
        snapshot: SubscriptionSnapshot,
        actor: &Actor,
    ) -> BillingResult<StoredSubscription> {
        let now = self.now();
        let input = self.input(snapshot, now);
        let (_, stored) = self.0.store.apply_subscription_snapshot(org, &input, actor, now).await?;
        stored.ok_or_else(no_subscription)
    }

    /// Cancels at the end of the period, or now.
    pub async fn cancel(
        &self,
        org: OrgId,
        immediately: bool,
        actor: &Actor,
        caller_key: Option<&str>,
    ) -> BillingResult<StoredSubscription> {
        let sub = self.live_subscription(org).await?;
        let api = self.require_api(sub.provider)?;
        let snapshot = if immediately {
            api.cancel_now(&sub.provider_subscription_id).await?
        } else {
            let key = provider_key("cancel", caller_key, &[&org.to_string(), &state_version(&sub), "true"]);
            api.set_cancel_at_period_end(&sub.provider_subscription_id, true, &key).await?
        };
        self.apply(org, snapshot, actor).await
    }

    /// Undoes a pending cancellation.
    pub async fn reactivate(
        &self,
        org: OrgId,
        actor: &Actor,
        caller_key: Option<&str>,
    ) -> BillingResult<StoredSubscription> {
        let sub = self.live_subscription(org).await?;
        let api = self.require_api(sub.provider)?;
        let key = provider_key("reactivate", caller_key, &[&org.to_string(), &state_version(&sub), "false"]);
        let snapshot = api.set_cancel_at_period_end(&sub.provider_subscription_id, false, &key).await?;
        self.apply(org, snapshot, actor).await
    }

    /// Sets the purchased seats at the provider, then applies its answer.
    ///
    /// The provider call can't run inside a transaction, so the seats in
    /// use are checked first, in the store's locked step that also takes a
    /// seat hold: until the answer is applied, every seat limit of the org
    /// counts at most `seats`, and an invitation racing a decrease is
    /// refused rather than let in under the old quantity. The hold is
    /// released once the answer is applied or the call failed.
    pub async fn set_seats(
        &self,
        org: OrgId,
        seats: u32,
        actor: &Actor,
        caller_key: Option<&str>,
    ) -> BillingResult<StoredSubscription> {
        check_seats(seats)?;
        let sub = self.live_subscription(org).await?;
        let item = sub.item_id.clone().ok_or_else(|| {
            DomainError::conflict(format!(
                "the provider's seat item of this subscription is not known yet; sync it first (POST /v1/orgs/{org}/subscription/sync)"
            ))
        })?;
        self.require_api(sub.provider)?;
        let hold = self.0.store.hold_seats(org, seats, self.now(), self.0.seat_hold).await?;
        let key =
            provider_key("seats", caller_key, &[&org.to_string(), &state_version(&sub), &item, &seats.to_string()]);
        // The call, the applying of its answer and the release run in a task
        // of their own: a client that goes away, or the request timeout,
        // drops this future, and a change made at the provider but never
        // applied here would keep the hold until it expires.
        let billing = self.clone();
        let actor = actor.clone();
        let change = async move {
            let result = async {
                let snapshot = billing
                    .require_api(sub.provider)?
                    .set_quantity(&sub.provider_subscription_id, &item, seats, &key)
                    .await?;
                billing.apply(org, snapshot, &actor).await
            }
            .await;
            if let Err(e) = billing.0.store.release_seat_hold(org, &hold).await {
                tracing::warn!(error = %e, %org, "could not release a seat hold; it expires by itself");
            }
            result
        };
        match tokio::spawn(change.in_current_span()).await {
            Ok(result) => result,
            Err(e) => Err(BillingError::Internal(format!("the seat change task ended without an answer: {e}"))),
        }
    }

    /// A customer-portal link for the org's subscription.
    /// Without the caller's `Idempotency-Key`, each call opens a new portal
    /// session (a repeated key would hand back an expired link for 24 h).
    pub async fn portal_url(&self, org: OrgId, return_url: &str, caller_key: Option<&str>) -> BillingResult<String> {
        let sub = self.0.store.subscription(org).await?.ok_or_else(no_subscription)?;
        let api = self.require_api(sub.provider)?;
        let fresh = uuid::Uuid::now_v7().simple().to_string();
        let key = provider_key(
            "portal",
            caller_key,
            &[&org.to_string(), return_url, if caller_key.is_some() { "" } else { &fresh }],
        );
        api.portal_url(sub.provider_customer_id.as_deref(), &sub.provider_subscription_id, return_url, &key).await
    }

    /// Re-fetches the org's subscription from its provider and applies it.
    pub async fn sync(&self, org: OrgId, actor: &Actor) -> BillingResult<StoredSubscription> {
        let sub = self.0.store.subscription(org).await?.ok_or_else(no_subscription)?;
        let api = self.require_api(sub.provider)?;
        let snapshot = api.fetch(&sub.provider_subscription_id).await?;
        self.apply(org, snapshot, actor).await
    }

    // -- The sandbox's pages --------------------------------------------------------

    fn sandbox(&self) -> BillingResult<&SandboxProvider> {
        self.0
            .sandbox
            .as_ref()
            .ok_or_else(|| BillingError::NotConfigured("the sandbox provider runs only with --dev".into()))
    }

    pub async fn sandbox_checkout(&self, id: &str) -> BillingResult<orgplane_store::CheckoutRecord> {
        self.sandbox()?;
        match self.0.store.checkout(id).await? {
            Some(c) if c.provider == Provider::Sandbox => Ok(c),
            _ => Err(DomainError::NotFound { what: "sandbox checkout" }.into()),
        }
    }

    /// Pays a sandbox checkout: the sandbox creates its subscription and
    /// delivers the event through the same path as a real webhook.
    pub async fn sandbox_pay(&self, id: &str) -> BillingResult<SandboxPaid> {
        let sandbox = self.sandbox()?;
        let now = self.now();
        let payment = self.0.store.sandbox_pay(id, now, sandbox.period).await?;
        let snapshot = SandboxProvider::snapshot(&payment.subscription, now);
        let payload =
            serde_json::to_vec(&SandboxEvent { org_id: payment.subscription.org_id, snapshot: snapshot.clone() })
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let event_id = format!("sandbox:{id}:paid");
        let effect = self.sandbox_effect(payment.subscription.org_id, snapshot, now);
        let event = NewProviderEvent {
            provider: Provider::Sandbox,
            event_id: &event_id,
            event_type: "subscription.created",
            occurred_at: Some(now),
            payload: &payload,
        };
        let ingest = self.0.store.ingest_provider_event(&event, &effect, now).await?;
        if let Ingest::Processed(p) = &ingest {
            log_processed(Provider::Sandbox, p);
        }
        let subscription = self.0.store.subscription(payment.checkout.org_id).await?;
        Ok(SandboxPaid { checkout: payment.checkout, receipt: WebhookReceipt::from_ingest(&ingest), subscription })
    }

    /// Abandons a sandbox checkout (its Cancel button).
    pub async fn sandbox_cancel(&self, id: &str) -> BillingResult<orgplane_store::CheckoutRecord> {
        let checkout = self.sandbox_checkout(id).await?;
        self.0.store.cancel_checkout(id, self.now()).await?;
        Ok(checkout)
    }

    pub async fn sandbox_subscription(&self, id: &str) -> BillingResult<SandboxSubscription> {
        self.sandbox()?;
        self.0
            .store
            .sandbox_subscription(id)
            .await?
            .ok_or_else(|| DomainError::NotFound { what: "sandbox subscription" }.into())
    }

    fn sandbox_effect(&self, org: OrgId, snapshot: SubscriptionSnapshot, now: Timestamp) -> EventEffect {
        EventEffect {
            provider: Provider::Sandbox,
            org_hint: Some(org),
            customer_id: snapshot.provider_customer_id.clone(),
            subscription_id: Some(snapshot.provider_subscription_id.clone()),
            snapshot: Some(self.input(snapshot, now)),
            failure: None,
        }
    }

    // -- Reconciliation -------------------------------------------------------------

    /// One reconciliation pass: retries due unmatched and failed events,
    /// then re-fetches live subscriptions from their providers and applies
    /// what they say (drift from missed webhooks or dashboard changes). With
    /// `org`, only that org's failed events and subscription.
    pub async fn reconcile_once(&self, org: Option<OrgId>) -> BillingResult<ReconcileReport> {
        let mut report = self.retry_due_events(org).await?;
        if org.is_none() {
            self.recover_missed_stripe_events(&mut report).await;
        }
        self.walk_subscriptions(org, &mut report).await?;
        Ok(report)
    }

    /// Asks Stripe for the events it could not deliver (`GET
    /// /v1/events?delivery_success=false`, within its 3-day retry window) and
    /// takes each through the same intake as a webhook: stored once by its
    /// `evt_…` id, then applied. Events already stored are duplicates and
    /// change nothing. This finds subscriptions orgplane never heard of.
    async fn recover_missed_stripe_events(&self, report: &mut ReconcileReport) {
        let Some(PaymentProvider::Stripe(client)) = &self.0.stripe else { return };
        let since = (self.now() - time::Duration::days(3)).unix_timestamp();
        let mut after: Option<String> = None;
        for _ in 0..MISSED_EVENT_PAGES {
            let page = match client.undelivered_events(since, after.as_deref()).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "reconcile: listing Stripe's undelivered events failed");
                    report.errors += 1;
                    return;
                }
            };
            for body in &page.events {
                let now = self.now();
                match self.receive(Provider::Stripe, body, stripe::parse_event(body), None, now).await {
                    Ok(receipt) if !receipt.duplicate => report.missed_events_recovered += 1,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "reconcile: storing an undelivered Stripe event failed");
                        report.errors += 1;
                    }
                }
            }
            match (page.has_more, page.last_id) {
                (true, Some(last)) => after = Some(last),
                _ => return,
            }
        }
    }

    async fn retry_due_events(&self, org: Option<OrgId>) -> BillingResult<ReconcileReport> {
        let mut report = ReconcileReport::default();
        while report.events_retried < RETRY_PER_PASS {
            let now = self.now();
            let batch = self.0.store.claim_due_provider_events(now, RETRY_BATCH, LEASE, org).await?;
            if batch.is_empty() {
                break;
            }
            for candidate in batch {
                report.events_retried += 1;
                match self.retry(&candidate).await {
                    Ok(Some(p)) if p.status == orgplane_store::ProviderEventStatus::Applied => {
                        report.events_applied += 1
                    }
                    Ok(_) => {}
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(error = %e, event = %candidate.id, "retrying a provider event failed");
                    }
                }
            }
        }
        Ok(report)
    }

    async fn retry(&self, candidate: &RetryCandidate) -> BillingResult<Option<ProcessedEvent>> {
        let now = self.now();
        let effect = match candidate.provider {
            Provider::Stripe => match stripe::parse_event(&candidate.payload) {
                Ok(parsed) => self.effect_of(&parsed, now).await,
                Err(e) => EventEffect::failed(Provider::Stripe, e.to_string()),
            },
            Provider::Lemonsqueezy => {
                match lemonsqueezy::parse_event(&candidate.payload, Some(&candidate.event_type)) {
                    Ok(parsed) => self.effect_of(&parsed, now).await,
                    Err(e) => EventEffect::failed(Provider::Lemonsqueezy, e.to_string()),
                }
            }
            Provider::Sandbox => match serde_json::from_slice::<SandboxEvent>(&candidate.payload) {
                Ok(event) => self.sandbox_effect(event.org_id, event.snapshot, now),
                Err(e) => EventEffect::failed(Provider::Sandbox, format!("the sandbox event does not parse: {e}")),
            },
        };
        let processed = self.0.store.retry_provider_event(candidate.id, &candidate.event_id, &effect, now).await?;
        if let Some(p) = &processed {
            log_processed(candidate.provider, p);
        }
        Ok(processed)
    }

    async fn walk_subscriptions(&self, org: Option<OrgId>, report: &mut ReconcileReport) -> BillingResult<()> {
        if let Some(org) = org {
            // Asked for this org: checked now, however recently it was.
            if let Some(sub) = self.0.store.subscription(org).await? {
                self.reconcile_subscription(&sub, None, report).await;
            }
            return Ok(());
        }
        let freshness = self.0.reconcile_interval.map_or(DEFAULT_FRESHNESS, |every| every / FRESHNESS_DIVISOR);
        let mut after = None;
        loop {
            let page = self.0.store.live_subscriptions(after, WALK_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.org_id);
            for sub in &page {
                let fresh_since = self.now() - freshness;
                self.reconcile_subscription(sub, Some(fresh_since), report).await;
            }
        }
        Ok(())
    }

    /// Re-fetches one subscription and applies the provider's answer, under
    /// the org's lease (renewed while the provider takes its time). With
    /// `fresh_since`, an org checked since then is skipped.
    async fn reconcile_subscription(
        &self,
        sub: &StoredSubscription,
        fresh_since: Option<Timestamp>,
        report: &mut ReconcileReport,
    ) {
        let Some(api) = self.api(sub.provider) else {
            report.subscriptions_skipped += 1;
            return;
        };
        let store = &self.0.store;
        let holder = self.0.holder.as_str();
        let org = sub.org_id;
        match store.claim_reconcile_walk(org, holder, self.now(), LEASE, fresh_since).await {
            Ok(WalkClaim::Taken) => {}
            Ok(WalkClaim::LeasedElsewhere { holder: other, until }) => {
                report.orgs_leased_elsewhere += 1;
                tracing::info!(%org, holder = %other, until = %until, "reconcile: skipped an org another pass holds; its lease runs out by itself");
                return;
            }
            Ok(WalkClaim::CheckedRecently { at }) => {
                report.orgs_checked_recently += 1;
                tracing::debug!(%org, checked_at = %at, "reconcile: skipped an org checked recently by another pass");
                return;
            }
            Err(e) => {
                report.errors += 1;
                tracing::warn!(error = %e, %org, "could not take a reconciliation lease");
                return;
            }
        }
        report.subscriptions_checked += 1;
        let work = async {
            let snapshot = api.fetch(&sub.provider_subscription_id).await?;
            let input = self.input(snapshot, self.now());
            let (outcome, _) = store.apply_subscription_snapshot(org, &input, &Actor::System, self.now()).await?;
            Ok::<_, BillingError>(outcome)
        };
        tokio::pin!(work);
        let renew_every = Duration::try_from(LEASE / 3).unwrap_or(Duration::from_secs(5));
        let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                _ = renewals.tick() => {
                    if let Err(e) = store.claim_reconcile_lease(org, holder, self.now(), LEASE).await {
                        tracing::warn!(error = %e, %org, "could not renew a reconciliation lease");
                    }
                }
            }
        };
        let checked = match result {
            Ok(outcome @ (orgplane_store::ApplyOutcome::Created | orgplane_store::ApplyOutcome::Updated)) => {
                report.subscriptions_changed += 1;
                tracing::info!(%org, subscription = %sub.provider_subscription_id, outcome = outcome.as_str(),
                    "reconciliation repaired a subscription from its provider's state");
                Some(self.now())
            }
            Ok(_) => Some(self.now()),
            Err(e) => {
                report.errors += 1;
                tracing::warn!(error = %e, %org, "reconciling a subscription failed; the next pass tries again");
                None
            }
        };
        if let Err(e) = store.release_reconcile_lease(org, holder, checked).await {
            tracing::warn!(error = %e, %org, "could not release a reconciliation lease; it expires by itself");
        }
    }

    /// Runs reconciliation in the background: due events every
    /// `retry_interval_secs`, a walk of live subscriptions every
    /// `reconcile_interval_secs`. Stops when the store closes.
    pub fn spawn_reconciler(&self) {
        let Some(tick) = [self.0.retry_interval, self.0.reconcile_interval].into_iter().flatten().min() else {
            return;
        };
        let billing = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(tick);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_walk: Option<tokio::time::Instant> = None;
            loop {
                ticks.tick().await;
                if billing.0.store.is_closed() {
                    return;
                }
                let mut report = ReconcileReport::default();
                if billing.0.retry_interval.is_some() {
                    match billing.retry_due_events(None).await {
                        Ok(r) => report = r,
                        Err(e) => tracing::warn!(error = %e, "reconciliation: retrying events failed"),
                    }
                }
                if let Some(every) = billing.0.reconcile_interval {
                    // The first walk waits one interval: a starting replica
                    // should not re-fetch everything at once.
                    let due = last_walk.get_or_insert_with(tokio::time::Instant::now).elapsed() >= every;
                    if due {
                        last_walk = Some(tokio::time::Instant::now());
                        if let Err(e) = billing.walk_subscriptions(None, &mut report).await {
                            tracing::warn!(error = %e, "reconciliation: walking subscriptions failed");
                        }
                    }
                }
                if report != ReconcileReport::default() {
                    tracing::info!(?report, "reconciliation pass");
                }
            }
        });
    }
}

fn no_subscription() -> BillingError {
    DomainError::NotFound { what: "subscription" }.into()
}

fn log_processed(provider: Provider, p: &ProcessedEvent) {
    use orgplane_store::ProviderEventStatus as S;
    match p.status {
        S::Applied | S::Ignored => {
            tracing::debug!(provider = provider.as_str(), event = %p.id, status = p.status.as_str(),
            outcome = p.outcome.map(|o| o.as_str()), "provider event processed")
        }
        S::Unmatched => tracing::warn!(provider = provider.as_str(), event = %p.id,
            "provider event matches no organization; kept as unmatched and retried"),
        S::Failed => tracing::error!(provider = provider.as_str(), event = %p.id, error = p.error.as_deref(),
            "provider event could not be applied; kept as failed and retried"),
    }
}

/// One reconciliation pass for `orgplane reconcile [--org ORG]`: opens the
/// store of `config` and runs [`Billing::reconcile_once`] at the time
/// `clock` shows.
pub async fn reconcile_from_config(
    config: &Config,
    org: Option<OrgId>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ReconcileReport> {
    let catalog = plan_catalog(config).map_err(|e| anyhow::anyhow!("plan catalog:\n{e}"))?;
    let store = crate::open_store(config, config.migrate_on_start).await?;
    let base = config.public_url.clone().unwrap_or_else(|| format!("http://{}", config.listen));
    let billing = Billing::new(config, store.clone(), catalog, &base, clock)?;
    let report = billing.reconcile_once(org).await.map_err(anyhow::Error::new);
    store.close().await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_sells_each_paid_plan_at_its_plan_key_with_dev() {
        let config = Config { dev: true, ..Config::default() };
        let catalog = plan_catalog(&config).expect("valid");
        assert_eq!(catalog.first_price("business", Provider::Sandbox), Some("sandbox_business"));
        assert_eq!(catalog.first_price("enterprise", Provider::Sandbox), Some("sandbox_enterprise"));
        assert_eq!(catalog.first_price("free", Provider::Sandbox), None);
        let plain = plan_catalog(&Config::default()).expect("valid");
        assert_eq!(plain.first_price("business", Provider::Sandbox), None, "no sandbox without --dev");
    }

    #[test]
    fn the_checkout_provider_follows_config_then_dev_then_keys() {
        let mut billing = BillingConfig::default();
        assert_eq!(billing.checkout_provider(false), None);
        assert_eq!(billing.checkout_provider(true), Some(Provider::Sandbox));
        billing.lemonsqueezy.api_key = Some("k".into());
        billing.lemonsqueezy.store_id = Some("1".into());
        assert_eq!(billing.checkout_provider(false), Some(Provider::Lemonsqueezy));
        billing.stripe.api_key = Some("sk_test".into());
        assert_eq!(billing.checkout_provider(false), Some(Provider::Stripe));
        billing.provider = Some(CheckoutProvider::Lemonsqueezy);
        assert_eq!(billing.checkout_provider(true), Some(Provider::Lemonsqueezy), "a config file overrides dev");
    }

    #[test]
    fn the_sandbox_is_refused_outside_dev_and_providers_need_keys() {
        let billing = BillingConfig { provider: Some(CheckoutProvider::Sandbox), ..BillingConfig::default() };
        assert!(billing.validate(false).expect_err("not in production").contains("--dev"));
        assert!(billing.validate(true).is_ok());
        let billing = BillingConfig { provider: Some(CheckoutProvider::Stripe), ..BillingConfig::default() };
        assert!(billing.validate(false).expect_err("no key").contains("billing.stripe.api_key"));
    }
}
