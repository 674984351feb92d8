//! `[billing]`: which provider checkouts go to, and the plan catalog as
//! the server sells it (with the sandbox's own prices under `--dev`).
//!
//! - [`BillingConfig::validate`] refuses the sandbox outside `--dev` and a
//!   provider without its API key, naming the key and the fix.

use orgplane_billing::{LemonSqueezyConfig, StripeConfig};
use orgplane_core::plans::{CatalogConfig, PlanCatalog};
use orgplane_core::subscription::Provider;
use serde::{Deserialize, Serialize};

use crate::config::Config;

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
    /// Stripe only: a free trial on an org's first checkout, for plans
    /// without their own `trial_days` (one trial per org, ever).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial_period_days: Option<u32>,
    /// Stripe only: a trial that ends without a payment method pauses the
    /// subscription (resumed with `POST …/subscription/resume`) instead of
    /// cancelling it.
    pub pause_trials_without_payment_method: bool,
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
            pause_trials_without_payment_method: false,
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
