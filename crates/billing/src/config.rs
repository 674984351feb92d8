//! The `[billing.stripe]` and `[billing.lemonsqueezy]` configuration tables.
//!
//! This module owns the shape, the defaults and the checks of those tables
//! (except numeric ranges: the server's config checks every numeric setting
//! in one table). It must never read files or the environment (the server's
//! config loader does), and its `Debug` output must never show a key or a
//! secret.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[billing.stripe]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StripeConfig {
    /// Secret API key (`sk_…` or a restricted `rk_…`). Without it, no REST calls.
    pub api_key: Option<String>,
    /// Webhook signing secrets (`whsec_…`). Several during a secret roll: a
    /// delivery is accepted when any of them signed it.
    pub webhook_secrets: Vec<String>,
    pub api_base: String,
    /// How far a webhook's signed timestamp may be from now, in seconds.
    pub webhook_tolerance_secs: u64,
    /// Timeout of each REST call, in seconds.
    pub timeout_secs: u64,
}

impl Default for StripeConfig {
    fn default() -> Self {
        StripeConfig {
            api_key: None,
            webhook_secrets: Vec::new(),
            api_base: "https://api.stripe.com".to_owned(),
            webhook_tolerance_secs: 300,
            timeout_secs: 10,
        }
    }
}

impl StripeConfig {
    pub fn webhook_tolerance(&self) -> Duration {
        Duration::from_secs(self.webhook_tolerance_secs)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Checks what types can't; the message names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        check_base("billing.stripe.api_base", &self.api_base)?;
        if self.webhook_secrets.iter().any(|s| s.trim().is_empty()) {
            return Err(
                "billing.stripe.webhook_secrets: remove the empty entry; each secret is a `whsec_…` string".into()
            );
        }
        if self.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err("billing.stripe.api_key: is empty; set a secret key (`sk_…`) or remove the key".into());
        }
        Ok(())
    }
}

impl fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("webhook_secrets", &format_args!("[{} redacted]", self.webhook_secrets.len()))
            .field("api_base", &self.api_base)
            .field("webhook_tolerance_secs", &self.webhook_tolerance_secs)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// `[billing.lemonsqueezy]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LemonSqueezyConfig {
    pub api_key: Option<String>,
    /// The store checkouts are created in (a number, as text).
    pub store_id: Option<String>,
    /// The webhook's signing secret.
    pub webhook_secret: Option<String>,
    pub api_base: String,
    /// Timeout of each REST call, in seconds.
    pub timeout_secs: u64,
}

impl Default for LemonSqueezyConfig {
    fn default() -> Self {
        LemonSqueezyConfig {
            api_key: None,
            store_id: None,
            webhook_secret: None,
            api_base: "https://api.lemonsqueezy.com/v1".to_owned(),
            timeout_secs: 10,
        }
    }
}

impl LemonSqueezyConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Checks what types can't; the message names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        check_base("billing.lemonsqueezy.api_base", &self.api_base)?;
        if self.api_key.is_some() && self.store_id.is_none() {
            return Err(
                "billing.lemonsqueezy.store_id: is required with an api_key (checkouts are created in a store)".into(),
            );
        }
        if let Some(store) = &self.store_id
            && (store.is_empty() || !store.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("billing.lemonsqueezy.store_id: `{store}` is not a store id (a number such as 12345)"));
        }
        if self.webhook_secret.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err("billing.lemonsqueezy.webhook_secret: is empty; set the webhook's signing secret".into());
        }
        Ok(())
    }
}

impl fmt::Debug for LemonSqueezyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LemonSqueezyConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("store_id", &self.store_id)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "<redacted>"))
            .field("api_base", &self.api_base)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

fn check_base(key: &str, base: &str) -> Result<(), String> {
    match reqwest::Url::parse(base) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(()),
        _ => Err(format!("{key}: `{base}` is not an http(s) URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_the_real_apis() {
        let stripe = StripeConfig::default();
        assert_eq!(stripe.api_base, "https://api.stripe.com");
        assert_eq!(stripe.webhook_tolerance(), Duration::from_secs(300));
        assert_eq!(stripe.timeout(), Duration::from_secs(10));
        assert!(stripe.validate().is_ok());
        let ls = LemonSqueezyConfig::default();
        assert_eq!(ls.api_base, "https://api.lemonsqueezy.com/v1");
        assert!(ls.validate().is_ok());
    }

    #[test]
    fn partial_tables_take_the_defaults() {
        let stripe: StripeConfig =
            serde_json::from_str(r#"{"api_key":"sk_test_1","webhook_secrets":["whsec_a","whsec_b"]}"#).expect("parses");
        assert_eq!(stripe.webhook_secrets.len(), 2);
        assert_eq!(stripe.webhook_tolerance_secs, 300);
        assert!(serde_json::from_str::<StripeConfig>(r#"{"api_kye":"x"}"#).is_err(), "typos are refused");
    }

    #[test]
    fn debug_output_hides_keys_and_secrets() {
        let stripe = StripeConfig {
            api_key: Some("sk_live_secret".into()),
            webhook_secrets: vec!["whsec_secret".into()],
            ..StripeConfig::default()
        };
        let ls = LemonSqueezyConfig {
            api_key: Some("ls_key_secret".into()),
            webhook_secret: Some("ls_whsec".into()),
            store_id: Some("1".into()),
            ..LemonSqueezyConfig::default()
        };
        let text = format!("{stripe:?} {ls:?}");
        for secret in ["sk_live_secret", "whsec_secret", "ls_key_secret", "ls_whsec"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[test]
    fn validation_names_the_key() {
        let ls = LemonSqueezyConfig { api_key: Some("k".into()), ..LemonSqueezyConfig::default() };
        assert!(ls.validate().expect_err("store id missing").starts_with("billing.lemonsqueezy.store_id"));
        let stripe = StripeConfig { api_base: "not a url".into(), ..StripeConfig::default() };
        assert!(stripe.validate().expect_err("bad base").starts_with("billing.stripe.api_base"));
    }
}
