//! What `serve` checks about a configuration before it binds a port or
//! opens the database, in one place, so that `orgplane plans check`
//! accepts exactly the configurations `serve` starts with: ranges, roles,
//! the plan catalog, billing providers, issuers, webhook delivery.

use std::time::Duration;

use orgplane_auth::{Verifier, VerifierOptions};
use orgplane_billing::{LemonSqueezyClient, StripeClient};
use orgplane_core::roles::RoleCatalog;

use crate::config::Config;

/// `Err` names the key and the fix, as `serve` would.
pub fn check(config: &Config) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    RoleCatalog::from_config(&config.roles).map_err(anyhow::Error::msg)?;
    crate::billing::plan_catalog(config).map_err(|e| anyhow::anyhow!("plan catalog:\n{e}"))?;
    config.billing.validate(config.dev).map_err(anyhow::Error::msg)?;
    if config.billing.stripe.api_key.is_some() {
        StripeClient::from_config(&config.billing.stripe).map_err(anyhow::Error::new)?;
    }
    if config.billing.lemonsqueezy.api_key.is_some() {
        LemonSqueezyClient::from_config(&config.billing.lemonsqueezy).map_err(anyhow::Error::new)?;
    }
    Verifier::new(
        config.auth.issuers.clone(),
        VerifierOptions {
            jwks_refresh_min_interval: Duration::from_secs(config.auth.jwks_refresh_min_interval_secs),
            leeway_secs: config.auth.leeway_secs,
            ..VerifierOptions::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("auth.issuers: {e}"))?;
    let policy = crate::webhook_delivery::TargetPolicy::from_config(&config.webhooks, config.dev);
    crate::webhook_delivery::Sender::new(policy, config.webhooks.timeout())?;
    // The key file in data_dir is made at the first start; a configured key must decode.
    if config.webhooks.secret_key.is_some() {
        crate::webhook_delivery::SecretBox::load(&config.webhooks, &config.data_dir)?;
    }
    Ok(())
}
