//! One typed configuration: embedded defaults, then a TOML file, then
//! `ORGPLANE_…` environment variables, then command-line flags. Validated
//! at start-up with messages that name the key and the fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use orgplane_auth::IssuerConfig;
use orgplane_core::plans::{
    CatalogConfig, EntitlementsConfig, FeaturesConfig, PlanCatalog, PlanConfig, ResourcesConfig,
};
use orgplane_core::roles::CustomRoleConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Where the embedded database and the dev issuer's key live.
    pub data_dir: PathBuf,
    /// Run the local dev issuer and the sandbox payment provider.
    pub dev: bool,
    /// Apply pending migrations at `serve`.
    pub migrate_on_start: bool,
    /// Largest request body accepted, in bytes (larger → 413).
    pub max_body_bytes: usize,
    /// Database pool size.
    pub max_connections: u32,
    /// `[database]`: how long to wait for the database before answering 503.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// The URL clients reach this server at (links, the dev issuer's `iss`).
    /// Default: `http://<listen address>`.
    pub public_url: Option<String>,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    pub auth: AuthConfig,
    pub invitations: InvitationConfig,
    /// Custom roles: `[roles.support] permissions = ["members:invite"]`.
    pub roles: BTreeMap<String, CustomRoleConfig>,
    /// `[resources]` of the plan catalog (see `orgplane plans check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesConfig>,
    /// `[features]` of the plan catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturesConfig>,
    /// `[entitlements]`: entitling statuses and the past-due grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<EntitlementsConfig>,
    /// `[plans.*]`: replaces the embedded default catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plans: Option<BTreeMap<String, PlanConfig>>,
    pub cache: CacheConfig,
    /// `[billing]`: payment providers, webhooks, reconciliation (see `crate::billing`).
    pub billing: crate::billing::BillingConfig,
    /// `[server]`: request time limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[limits]`: requests in flight, rates per caller, event streams (see `crate::limits`).
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
    /// `[portal]`: the hosted pages' wording, theme, allowed return URLs and framing (see `crate::portal`).
    #[serde(default)]
    pub portal: crate::portal::PortalConfig,
    /// `[webhooks]`: outgoing webhooks (see `crate::webhook_delivery`).
    #[serde(default)]
    pub webhooks: crate::webhook_delivery::WebhooksConfig,
    /// `[cleanup]`: deleting abandoned personal orgs (off by default; see `crate::cleanup`).
    #[serde(default)]
    pub cleanup: CleanupConfig,
    /// `[mirror.workos]`: orgs and memberships mirrored into WorkOS (see `crate::workos_mirror`).
    #[serde(default)]
    pub mirror: crate::workos_mirror::MirrorConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanupConfig {
    /// Delete personal orgs whose user has not been seen for this many
    /// days (and which have no live subscription, no resources and no
    /// other members). Left out: no clean-up. 30 to 36500.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal_orgs_inactive_days: Option<u32>,
    /// Orgs deleted per pass of the background job. 1 to 1000.
    pub batch_size: u32,
    /// Seconds between passes. 1 to 86400.
    pub interval_secs: u64,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        CleanupConfig { personal_orgs_inactive_days: None, batch_size: 20, interval_secs: 3600 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// A request still running after this many seconds is stopped and
    /// answered `503 unavailable` with `Retry-After` (the event stream is
    /// exempt). 1 to 3600.
    pub request_timeout_secs: u64,
    /// How long an `Idempotency-Key` stays claimed by a request that never
    /// finished (its replica was killed): after that, a retry takes the key
    /// over and runs. Must be longer than `request_timeout_secs` so that a
    /// running request is never taken over, and at most 3600. Every replica
    /// must use the same value.
    pub idempotency_lease_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { request_timeout_secs: 30, idempotency_lease_secs: 120 }
    }
}

impl ServerConfig {
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.request_timeout_secs)
    }

    pub fn idempotency_lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.idempotency_lease_secs)
    }

    /// What the range table can't say: the lease outlives the request.
    fn validate(&self) -> Result<(), String> {
        if self.idempotency_lease_secs <= self.request_timeout_secs {
            return Err(format!(
                "server.idempotency_lease_secs: must be longer than server.request_timeout_secs ({}), not {}; a few multiples of the request timeout is a good choice",
                self.request_timeout_secs, self.idempotency_lease_secs
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Longest wait for a pooled connection (opening one included) before
    /// the request answers `503 unavailable` with `Retry-After`. 100 to 60000.
    pub acquire_timeout_ms: u64,
    /// Longest run of one SQL statement (PostgreSQL's `statement_timeout`;
    /// on SQLite, the longest wait for the write lock), then `503
    /// unavailable`. Migrations are exempt. 100 to 600000.
    pub statement_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { acquire_timeout_ms: 2000, statement_timeout_ms: 5000 }
    }
}

impl DatabaseConfig {
    pub fn acquire_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.acquire_timeout_ms)
    }

    pub fn statement_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.statement_timeout_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Longest time a cached answer (entitlements, `GET /v1/me`, a verified
    /// API key) is served without being recomputed. Changes committed by this process (and, on PostgreSQL, by
    /// other replicas, announced with NOTIFY) invalidate it at once; this
    /// bounds staleness if an announcement is lost.
    pub entitlements_ttl_ms: u64,
    /// Most entries each cache holds (verified tokens, users, API keys,
    /// `GET /v1/me` answers, org access, entitlements); the least used go first.
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
}

fn default_cache_entries() -> u64 {
    100_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[auth.issuers]]`: JWT issuers whose tokens are accepted.
    pub issuers: Vec<IssuerConfig>,
    /// A token with an unknown `kid` re-fetches the JWKS at most this often;
    /// within it, such a token is answered `503` with `Retry-After`.
    pub jwks_refresh_min_interval_secs: u64,
    /// Clock skew tolerated on `exp` / `nbf`.
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvitationConfig {
    /// How long an invitation can be accepted, in hours (default 7 days).
    pub ttl_hours: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            data_dir: PathBuf::from("orgplane-data"),
            dev: false,
            migrate_on_start: true,
            max_body_bytes: 1024 * 1024,
            max_connections: 16,
            database: DatabaseConfig::default(),
            public_url: None,
            log_format: LogFormat::Text,
            auth: AuthConfig { issuers: Vec::new(), jwks_refresh_min_interval_secs: 5, leeway_secs: 30 },
            invitations: InvitationConfig { ttl_hours: 7 * 24 },
            roles: BTreeMap::new(),
            resources: None,
            features: None,
            entitlements: None,
            plans: None,
            cache: CacheConfig { entitlements_ttl_ms: 1000, max_entries: default_cache_entries() },
            billing: crate::billing::BillingConfig::default(),
            server: ServerConfig::default(),
            limits: crate::limits::LimitsConfig::default(),
            portal: crate::portal::PortalConfig::default(),
            webhooks: crate::webhook_delivery::WebhooksConfig::default(),
            mirror: Default::default(),
            cleanup: CleanupConfig::default(),
        }
    }
}

/// One numeric setting and the values it may take (both ends included).
/// A value outside its range is refused at start-up: past the top, time
/// arithmetic overflows (`now + invitations.ttl_hours` panicked) or a bound
/// the README promises (how long a revoked API key may still work) no
/// longer holds; at the bottom, zero would mean "never" or "instantly".
pub struct Range {
    pub key: &'static str,
    pub min: i128,
    pub max: i128,
    pub unit: &'static str,
    /// The setting's value in a config (`None`: an optional setting left out).
    pub value: fn(&Config) -> Option<i128>,
}

const MIB: i128 = 1024 * 1024;
const DAY: i128 = 24 * 3600;

/// Every numeric setting's range. A new numeric setting adds its row here;
/// `Config::validate` checks each, and a unit test tries both ends of each
/// and one step past them. (The plan catalog's numbers, such as
/// `entitlements.grace_period_days` and plan limits, are checked with the
/// catalog.)
pub const RANGES: &[Range] = &[
    Range {
        key: "cleanup.personal_orgs_inactive_days",
        min: 30,
        max: 36_500,
        unit: "days",
        value: |c| c.cleanup.personal_orgs_inactive_days.map(i128::from),
    },
    Range { key: "cleanup.batch_size", min: 1, max: 1000, unit: "orgs", value: |c| Some(c.cleanup.batch_size.into()) },
    Range {
        key: "cleanup.interval_secs",
        min: 1,
        max: 86_400,
        unit: "seconds",
        value: |c| Some(c.cleanup.interval_secs.into()),
    },
    Range {
        key: "max_body_bytes",
        min: 1024,
        max: 100 * MIB,
        unit: "bytes",
        value: |c| Some(c.max_body_bytes as i128),
    },
    Range { key: "max_connections", min: 1, max: 1000, unit: "connections", value: |c| Some(c.max_connections.into()) },
    Range {
        key: "server.request_timeout_secs",
        min: 1,
        max: 3600,
        unit: "seconds",
        value: |c| Some(c.server.request_timeout_secs.into()),
    },
    Range {
        key: "server.idempotency_lease_secs",
        min: 2,
        max: 3600,
        unit: "seconds",
        value: |c| Some(c.server.idempotency_lease_secs.into()),
    },
    Range {
        key: "auth.jwks_refresh_min_interval_secs",
        min: 0,
        max: DAY,
        unit: "seconds",
        value: |c| Some(c.auth.jwks_refresh_min_interval_secs.into()),
    },
    Range { key: "auth.leeway_secs", min: 0, max: 300, unit: "seconds", value: |c| Some(c.auth.leeway_secs.into()) },
    Range {
        key: "invitations.ttl_hours",
        min: 1,
        max: orgplane_core::invitation::MAX_TTL_HOURS as i128,
        unit: "hours",
        value: |c| Some(c.invitations.ttl_hours.into()),
    },
    Range {
        key: "cache.entitlements_ttl_ms",
        min: 0,
        max: 60_000,
        unit: "milliseconds",
        value: |c| Some(c.cache.entitlements_ttl_ms.into()),
    },
    // Stripe's SDKs use 300. The top is wide because verifying Stripe's
    // published 2018 signature vectors needs years; it still keeps the
    // check able to refuse something.
    Range {
        key: "billing.stripe.webhook_tolerance_secs",
        min: 1,
        max: 1_000_000_000,
        unit: "seconds",
        value: |c| Some(c.billing.stripe.webhook_tolerance_secs.into()),
    },
    Range {
        key: "billing.stripe.timeout_secs",
        min: 1,
        max: 300,
        unit: "seconds",
        value: |c| Some(c.billing.stripe.timeout_secs.into()),
    },
    Range {
        key: "billing.lemonsqueezy.timeout_secs",
        min: 1,
        max: 300,
        unit: "seconds",
        value: |c| Some(c.billing.lemonsqueezy.timeout_secs.into()),
    },
    Range {
        key: "billing.retry_interval_secs",
        min: 0,
        max: DAY,
        unit: "seconds (0 = never)",
        value: |c| Some(c.billing.retry_interval_secs.into()),
    },
    Range {
        key: "billing.reconcile_interval_secs",
        min: 0,
        max: 7 * DAY,
        unit: "seconds (0 = never)",
        value: |c| Some(c.billing.reconcile_interval_secs.into()),
    },
    // Stripe's own limit for a trial.
    Range {
        key: "billing.trial_period_days",
        min: 1,
        max: 730,
        unit: "days",
        value: |c| c.billing.trial_period_days.map(Into::into),
    },
    Range {
        key: "billing.sandbox_period_secs",
        min: 1,
        max: 366 * DAY,
        unit: "seconds",
        value: |c| Some(c.billing.sandbox_period_secs.into()),
    },
    Range {
        key: "cache.max_entries",
        min: 1,
        max: 1_000_000_000,
        unit: "entries",
        value: |c| Some(c.cache.max_entries as i128),
    },
    Range {
        key: "limits.max_in_flight",
        min: 0,
        max: 1_000_000_000,
        unit: "requests (0 = no limit)",
        value: |c| Some(c.limits.max_in_flight as i128),
    },
    Range {
        key: "limits.rate_burst",
        min: 0,
        max: 1_000_000_000,
        unit: "requests",
        value: |c| Some(c.limits.rate_burst.into()),
    },
    Range {
        key: "limits.anonymous_rate_burst",
        min: 0,
        max: 1_000_000_000,
        unit: "requests",
        value: |c| Some(c.limits.anonymous_rate_burst.into()),
    },
    Range {
        key: "limits.webhook_rate_burst",
        min: 0,
        max: 1_000_000_000,
        unit: "requests",
        value: |c| Some(c.limits.webhook_rate_burst.into()),
    },
    Range {
        key: "limits.max_event_streams",
        min: 0,
        max: 1_000_000_000,
        unit: "streams (0 = no limit)",
        value: |c| Some(c.limits.max_event_streams as i128),
    },
    Range {
        key: "limits.max_event_streams_per_key",
        min: 0,
        max: 1_000_000_000,
        unit: "streams (0 = no limit)",
        value: |c| Some(c.limits.max_event_streams_per_key as i128),
    },
    Range {
        key: "webhooks.timeout_secs",
        min: 1,
        max: 300,
        unit: "seconds",
        value: |c| Some(c.webhooks.timeout_secs.into()),
    },
    Range {
        key: "webhooks.disable_after_hours",
        min: 1,
        max: 8784,
        unit: "hours",
        value: |c| Some(c.webhooks.disable_after_hours.into()),
    },
    Range {
        key: "webhooks.max_in_flight",
        min: 1,
        max: 10_000,
        unit: "requests",
        value: |c| Some(c.webhooks.max_in_flight.into()),
    },
    Range {
        key: "webhooks.max_in_flight_per_endpoint",
        min: 1,
        max: 100,
        unit: "requests",
        value: |c| Some(c.webhooks.max_in_flight_per_endpoint.into()),
    },
    Range {
        key: "webhooks.poll_interval_ms",
        min: 10,
        max: 60_000,
        unit: "milliseconds",
        value: |c| Some(c.webhooks.poll_interval_ms.into()),
    },
    Range {
        key: "webhooks.retention_days",
        min: 1,
        max: 3650,
        unit: "days",
        value: |c| Some(c.webhooks.retention_days.into()),
    },
    Range {
        key: "database.acquire_timeout_ms",
        min: 100,
        max: 60_000,
        unit: "milliseconds",
        value: |c| Some(c.database.acquire_timeout_ms.into()),
    },
    Range {
        key: "database.statement_timeout_ms",
        min: 100,
        max: 600_000,
        unit: "milliseconds",
        value: |c| Some(c.database.statement_timeout_ms.into()),
    },
    Range {
        key: "portal.idle_timeout_secs",
        min: 60,
        max: 7 * DAY,
        unit: "seconds",
        value: |c| Some(c.portal.idle_timeout_secs.into()),
    },
];

impl Range {
    /// `Err` naming the key, the value, the allowed range and where to set it.
    fn check(&self, config: &Config) -> Result<(), String> {
        match (self.value)(config) {
            Some(value) if !(self.min..=self.max).contains(&value) => Err(format!(
                "{key}: {value} is out of range; allowed {min} to {max} {unit}. Set {key} in the config file (or ORGPLANE_{env}) within that range",
                key = self.key,
                min = self.min,
                max = self.max,
                unit = self.unit,
                env = self.key.replace('.', "_").to_ascii_uppercase(),
            )),
            _ => Ok(()),
        }
    }
}

/// Maps `ORGPLANE_AUTH_LEEWAY_SECS` to `auth.leeway_secs` and so on: the
/// first `_` after a known section name becomes a `.`. `__` also nests.
fn env_key(key: &str) -> String {
    let key = key.to_ascii_lowercase().replace("__", ".");
    if key == "database_url" {
        return key; // a top-level key, not `[database] url`
    }
    for section in [
        "billing_stripe_",
        "billing_lemonsqueezy_",
        "billing_",
        "auth_",
        "invitations_",
        "entitlements_",
        "cache_",
        "server_",
        "limits_",
        "database_",
        "portal_",
        "webhooks_",
        "cleanup_",
        "mirror_workos_",
    ] {
        if let Some(rest) = key.strip_prefix(section) {
            return format!("{}.{rest}", section.trim_end_matches('_').replace('_', "."));
        }
    }
    key
}

impl Config {
    /// Defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
                return Err(format!("config file {} does not exist", shown.display()));
            }
            figment = figment.merge(Toml::file(path));
        }
        // ORGPLANE_LOG (the log filter), ORGPLANE_CONFIG (the file) and
        // ORGPLANE_TEST_* (the test suite's) are not configuration keys.
        let env = Env::prefixed("ORGPLANE_")
            .filter(|k| {
                let k = k.as_str().to_ascii_lowercase();
                k != "log" && k != "config" && !k.starts_with("test_")
            })
            .map(|k| env_key(k.as_str()).into());
        figment = figment.merge(env);
        figment.extract::<Config>().map_err(crate::config_error::describe)
    }

    /// The plan catalog sections of this config. They are the catalog's own
    /// types, listed field by field rather than `#[serde(flatten)]`ed: serde
    /// can't combine `flatten` with `deny_unknown_fields`, which is what
    /// refuses a misspelt key by name.
    pub fn catalog_config(&self) -> CatalogConfig {
        CatalogConfig {
            resources: self.resources.clone(),
            features: self.features.clone(),
            entitlements: self.entitlements.clone(),
            plans: self.plans.clone(),
        }
    }

    /// The validated plan catalog, or every problem found, one per line.
    pub fn catalog(&self) -> Result<PlanCatalog, String> {
        PlanCatalog::from_config(&self.catalog_config()).map_err(|errors| errors.join("\n"))
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("orgplane.db").display()),
        }
    }

    /// Checks what types can't: the message names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.dev && !self.listen.ip().is_loopback() {
            return Err(format!(
                "listen: --dev serves an unauthenticated token endpoint and refuses to bind to {}; use a loopback address such as 127.0.0.1",
                self.listen.ip()
            ));
        }
        for range in RANGES {
            range.check(self)?;
        }
        self.server.validate()?;
        self.limits.validate()?;
        self.portal.validate()?;
        self.webhooks.validate()?;
        if let Some(workos) = &self.mirror.workos {
            workos.validate()?;
        }
        for (i, issuer) in self.auth.issuers.iter().enumerate() {
            issuer.resolve(&format!("auth.issuers[{i}]"))?;
        }
        orgplane_core::roles::RoleCatalog::from_config(&self.roles)?;
        self.catalog().map_err(|e| format!("plan catalog:\n{e}"))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's own (large) error
mod tests {
    use super::*;

    #[test]
    fn env_keys_nest_under_their_section() {
        assert_eq!(env_key("DATABASE_URL"), "database_url");
        assert_eq!(env_key("AUTH_LEEWAY_SECS"), "auth.leeway_secs");
        assert_eq!(env_key("BILLING_STRIPE_API_KEY"), "billing.stripe.api_key");
        assert_eq!(env_key("INVITATIONS_TTL_HOURS"), "invitations.ttl_hours");
        assert_eq!(env_key("A__B"), "a.b");
    }

    #[test]
    fn files_and_environment_override_defaults_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("orgplane.toml", "listen = \"127.0.0.1:9000\"\n[invitations]\nttl_hours = 48\n")?;
            jail.set_env("ORGPLANE_INVITATIONS_TTL_HOURS", "24");
            let cfg = Config::load(Some(Path::new("orgplane.toml"))).expect("loads");
            assert_eq!(cfg.listen.port(), 9000);
            assert_eq!(cfg.invitations.ttl_hours, 24);
            assert_eq!(cfg.max_body_bytes, 1024 * 1024);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "lisen = \"127.0.0.1:9000\"\n")?;
            let err = Config::load(Some(Path::new("bad.toml"))).expect_err("unknown key");
            assert!(err.contains("lisen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_plan_catalog_stops_the_server_with_the_plan_and_key_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "plans.toml",
                "[plans.free]\ndefault = true\ntier = \"free\"\nfeatures = [\"teleport\"]\n",
            )?;
            let cfg = Config::load(Some(Path::new("plans.toml"))).expect("loads");
            let err = cfg.validate().expect_err("unknown feature");
            assert!(err.contains("plans.free") && err.contains("teleport"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn dev_mode_refuses_a_public_address() {
        let cfg = Config { dev: true, listen: "0.0.0.0:8080".parse().expect("addr"), ..Config::default() };
        let err = cfg.validate().expect_err("non-loopback");
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn request_timeout_and_lease_are_range_checked_with_the_key_named() {
        let with = |timeout: u64, lease: u64| Config {
            server: ServerConfig { request_timeout_secs: timeout, idempotency_lease_secs: lease },
            ..Config::default()
        };
        assert!(Config::default().validate().is_ok());
        let err = with(0, 120).validate().expect_err("no timeout");
        assert!(err.contains("server.request_timeout_secs"), "{err}");
        let err = with(30, 30).validate().expect_err("a lease no longer than the timeout");
        assert!(err.contains("server.idempotency_lease_secs"), "{err}");
        let err = with(30, 3601).validate().expect_err("a lease over an hour");
        assert!(err.contains("server.idempotency_lease_secs"), "{err}");
        assert!(with(1, 2).validate().is_ok());
    }

    /// The defaults with one setting changed, as a config file would.
    fn with_setting(key: &str, value: i128) -> Config {
        let value = i64::try_from(value).expect("test values fit in an i64");
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Serialized::default(key, value))
            .extract()
            .unwrap_or_else(|e| panic!("{key} = {value} loads: {e}"))
    }

    #[test]
    fn every_numeric_setting_takes_both_ends_of_its_range() {
        for range in RANGES {
            for value in [range.min, range.max] {
                let config = with_setting(range.key, value);
                assert_eq!((range.value)(&config), Some(value), "{} is read from its key", range.key);
                assert_eq!(range.check(&config), Ok(()), "{} = {value}", range.key);
            }
        }
    }

    #[test]
    fn a_numeric_setting_one_step_outside_its_range_stops_start_up_naming_key_value_and_range() {
        for range in RANGES {
            let below = (range.min > 0).then(|| range.min - 1);
            for value in below.into_iter().chain([range.max + 1]) {
                let err = with_setting(range.key, value).validate().expect_err("out of range");
                let allowed = format!("allowed {} to {}", range.min, range.max);
                assert!(err.starts_with(range.key), "{err}");
                assert!(err.contains(&format!(": {value} is out of range")) && err.contains(&allowed), "{err}");
            }
        }
    }

    #[test]
    fn every_numeric_setting_of_the_config_has_a_range() {
        // A numeric leaf of the serialized defaults without a row would go
        // unchecked; optional ones (left out by default) are listed by hand.
        fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        leaves(&key, v, out);
                    }
                }
                serde_json::Value::Number(_) => out.push(prefix.to_owned()),
                _ => {}
            }
        }
        let mut numeric = Vec::new();
        leaves("", &serde_json::to_value(Config::default()).expect("serializes"), &mut numeric);
        numeric.push("billing.trial_period_days".into());
        numeric.push("cleanup.personal_orgs_inactive_days".into());
        // Rates are fractional: `LimitsConfig::validate` checks them (0, or
        // 0.001 to 1e9 per second), with the burst each one needs.
        numeric.retain(|k| !k.ends_with("rate_per_second"));
        let mut listed: Vec<String> = RANGES.iter().map(|r| r.key.to_owned()).collect();
        numeric.sort();
        listed.sort();
        assert_eq!(numeric, listed);
    }

    #[test]
    fn a_huge_invitation_ttl_is_refused_at_start_up() {
        let err = with_setting("invitations.ttl_hours", i128::from(u32::MAX)).validate().expect_err("huge");
        assert!(err.contains("invitations.ttl_hours: 4294967295 is out of range; allowed 1 to 8784 hours"), "{err}");
        assert!(err.contains("ORGPLANE_INVITATIONS_TTL_HOURS"), "{err}");
    }

    #[test]
    fn database_timeouts_default_to_2_and_5_seconds_and_are_range_checked() {
        let defaults = Config::default();
        assert_eq!(defaults.database.acquire_timeout(), std::time::Duration::from_secs(2));
        assert_eq!(defaults.database.statement_timeout(), std::time::Duration::from_secs(5));
        let with = |acquire_timeout_ms: u64, statement_timeout_ms: u64| Config {
            database: DatabaseConfig { acquire_timeout_ms, statement_timeout_ms },
            ..Config::default()
        };
        for (acquire, statement, key) in [
            (0, 5000, "database.acquire_timeout_ms"),
            (60_001, 5000, "database.acquire_timeout_ms"),
            (2000, 99, "database.statement_timeout_ms"),
            (2000, 600_001, "database.statement_timeout_ms"),
        ] {
            let err = with(acquire, statement).validate().expect_err("out of range");
            assert!(err.contains(key), "{err}");
        }
        assert!(with(100, 100).validate().is_ok());
        assert!(with(60_000, 600_000).validate().is_ok());
    }

    #[test]
    fn database_keys_load_from_file_and_environment_beside_database_url() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("orgplane.toml", "[database]\nacquire_timeout_ms = 500\n")?;
            jail.set_env("ORGPLANE_DATABASE_STATEMENT_TIMEOUT_MS", "8000");
            jail.set_env("ORGPLANE_DATABASE_URL", "postgres://db/orgplane");
            let cfg = Config::load(Some(Path::new("orgplane.toml"))).expect("loads");
            assert_eq!(cfg.database.acquire_timeout_ms, 500);
            assert_eq!(cfg.database.statement_timeout_ms, 8000);
            assert_eq!(cfg.database_url.as_deref(), Some("postgres://db/orgplane"));
            Ok(())
        });
    }

    #[test]
    fn server_keys_load_from_file_and_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("orgplane.toml", "[server]\nrequest_timeout_secs = 10\n")?;
            jail.set_env("ORGPLANE_SERVER_IDEMPOTENCY_LEASE_SECS", "40");
            let cfg = Config::load(Some(Path::new("orgplane.toml"))).expect("loads");
            assert_eq!(cfg.server.request_timeout_secs, 10);
            assert_eq!(cfg.server.idempotency_lease_secs, 40);
            Ok(())
        });
    }

    #[test]
    fn webhook_keys_load_from_file_and_environment_and_dev_allows_local_targets_unless_told() {
        use crate::webhook_delivery::TargetPolicy;
        figment::Jail::expect_with(|jail| {
            jail.create_file("orgplane.toml", "[webhooks]\ntimeout_secs = 3\nallow_http = false\n")?;
            jail.set_env("ORGPLANE_WEBHOOKS_RETRY_SCHEDULE_SECS", "[1, 2, 4]");
            jail.set_env("ORGPLANE_WEBHOOKS_DISABLE_AFTER_HOURS", "24");
            let cfg = Config::load(Some(Path::new("orgplane.toml"))).expect("loads");
            assert_eq!(cfg.webhooks.retry_schedule_secs, vec![1, 2, 4]);
            assert_eq!(cfg.webhooks.timeout_secs, 3);
            assert_eq!(cfg.webhooks.disable_after_hours, 24);
            assert_eq!(cfg.webhooks.retention_days, 30, "the default");
            assert!(cfg.validate().is_ok());
            // --dev allows http and private targets, unless the file says otherwise.
            let dev = TargetPolicy::from_config(&cfg.webhooks, true);
            assert!(!dev.allow_http && dev.allow_private);
            let production = TargetPolicy::from_config(&Config::default().webhooks, false);
            assert!(!production.allow_http && !production.allow_private);
            jail.set_env("ORGPLANE_WEBHOOKS_RETRY_SCHEDULE_SECS", "[]");
            let err = Config::load(None).expect("loads").validate().expect_err("an empty schedule");
            assert!(err.contains("webhooks.retry_schedule_secs"), "{err}");
            jail.set_env("ORGPLANE_WEBHOOKS_RETRY_SCHEDULE_SECS", "[5]");
            jail.set_env("ORGPLANE_WEBHOOKS_RETENTION_DAYS", "7");
            assert_eq!(Config::load(None).expect("loads").webhooks.retention_days, 7);
            for bad in ["0", "3651"] {
                jail.set_env("ORGPLANE_WEBHOOKS_RETENTION_DAYS", bad);
                let err = Config::load(None).expect("loads").validate().expect_err("out of range");
                assert!(err.contains("webhooks.retention_days") && err.contains("1 to 3650 days"), "{err}");
            }
            Ok(())
        });
    }

    #[test]
    fn limits_load_from_file_and_environment_and_are_range_checked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("orgplane.toml", "[limits]\nmax_in_flight = 64\nrate_per_second = 2.5\n")?;
            jail.set_env("ORGPLANE_LIMITS_MAX_EVENT_STREAMS_PER_KEY", "3");
            // Whole numbers are fine for rates (the benchmarks set them so).
            jail.set_env("ORGPLANE_LIMITS_WEBHOOK_RATE_PER_SECOND", "1000000000");
            let cfg = Config::load(Some(Path::new("orgplane.toml"))).expect("loads");
            assert_eq!(cfg.limits.max_in_flight, 64);
            assert_eq!(cfg.limits.rate_per_second, 2.5);
            assert_eq!(cfg.limits.max_event_streams_per_key, 3);
            assert_eq!(cfg.limits.webhook_rate_per_second, 1e9);
            assert_eq!(cfg.limits.rate_burst, crate::limits::LimitsConfig::default().rate_burst);
            jail.set_env("ORGPLANE_LIMITS_RATE_BURST", "0");
            let err = Config::load(None).expect("loads").validate().expect_err("a rate without a burst");
            assert!(err.contains("limits.rate_burst"), "{err}");
            Ok(())
        });
    }
}
