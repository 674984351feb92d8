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
//!
//! Where each part lives: `config` (`[billing]`, the catalog as sold),
//! `provider` (one provider's API, idempotency keys), `webhooks` (intake),
//! `checkout`, `subscription` (cancel, reactivate, seats, portal, sync),
//! `link` (subscriptions made elsewhere, Lemon Squeezy discovery),
//! `sandbox` and `reconcile`.

mod change;
mod checkout;
mod config;
mod email;
mod invoices;
mod link;
mod provider;
mod reconcile;
mod sandbox;
mod subscription;
mod webhooks;

pub use change::{ChangePreviewed, ChangeRequest};
pub use checkout::CheckoutStarted;
pub use config::{BillingConfig, CheckoutProvider, plan_catalog, sandbox_price};
pub use email::BillingEmailWorker;
pub use link::link_from_config;
pub use provider::provider_key;
pub use reconcile::{ReconcileReport, reconcile_from_config};
pub use sandbox::SandboxPaid;
pub use webhooks::WebhookReceipt;

use std::sync::Arc;
use std::time::Duration;

use orgplane_billing::{LemonSqueezyClient, PaymentProvider, ProviderError, StripeClient};
use orgplane_core::entitlements::{SubscriptionFacts, entitles};
use orgplane_core::plans::PlanCatalog;
use orgplane_core::subscription::{Provider, SubscriptionSnapshot};
use orgplane_core::{DomainError, Timestamp};
use orgplane_store::{SnapshotInput, Store, StoreError, StoredSubscription};

use crate::clock::Clock;
use crate::config::Config;
use crate::entitlements::plan_bought;
use crate::error::ApiError;
use provider::ProviderApi;
use sandbox::SandboxProvider;

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
    pause_trials_without_payment_method: bool,
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

/// How long a plan change's hold caps the org's seat limit at the target
/// plan's at most (see [`Billing::change_plan`]). The hold normally ends
/// when the provider's answer with the target price is applied (the call's
/// answer, or its webhook when the provider switches later) or when the
/// call fails; this bounds how long a lost webhook or a process that died
/// mid-call keeps the org below its plan's seats and refuses a change to a
/// plan with another limit.
pub(crate) const PLAN_HOLD: time::Duration = time::Duration::hours(1);

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
            pause_trials_without_payment_method: billing.pause_trials_without_payment_method,
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
        self.plan_of_price(
            subscription.provider,
            &subscription.provider_subscription_id,
            subscription.price_id.as_deref(),
        )
    }

    /// The catalog plan a provider's price (or variant) buys, if any.
    fn plan_of_price(&self, provider: Provider, subscription_id: &str, price: Option<&str>) -> Option<String> {
        plan_bought(&self.0.catalog, provider, subscription_id, price).map(|p| p.key().to_owned())
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
                        plan_hold: None,
                    },
                    now,
                )
        });
        SnapshotInput { snapshot, entitling }
    }
}

fn no_subscription() -> BillingError {
    DomainError::NotFound { what: "subscription" }.into()
}
