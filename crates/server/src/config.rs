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

    /// Range checks, with the key and the fix named.
    fn validate(&self) -> Result<(), String> {
        if !(1..=3600).contains(&self.request_timeout_secs) {
            return Err(format!(
                "server.request_timeout_secs: must be between 1 and 3600 seconds, not {}",
                self.request_timeout_secs
            ));
        }
        if self.idempotency_lease_secs <= self.request_timeout_secs || self.idempotency_lease_secs > 3600 {
            return Err(format!(
                "server.idempotency_lease_secs: must be longer than server.request_timeout_secs ({}) and at most 3600 seconds, not {}; a few multiples of the request timeout is a good choice",
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

    /// Range checks, with the key and the fix named.
    fn validate(&self) -> Result<(), String> {
        if !(100..=60_000).contains(&self.acquire_timeout_ms) {
            return Err(format!(
                "database.acquire_timeout_ms: must be between 100 and 60000 milliseconds, not {}; 2000 lets a caller retry soon during an outage",
                self.acquire_timeout_ms
            ));
        }
        if !(100..=600_000).contains(&self.statement_timeout_ms) {
            return Err(format!(
                "database.statement_timeout_ms: must be between 100 and 600000 milliseconds, not {}; keep it below server.request_timeout_secs",
                self.statement_timeout_ms
            ));
        }
        Ok(())
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
    /// A token with an unknown `kid` re-fetches the JWKS at most this often.
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
            auth: AuthConfig { issuers: Vec::new(), jwks_refresh_min_interval_secs: 30, leeway_secs: 30 },
            invitations: InvitationConfig { ttl_hours: 7 * 24 },
            roles: BTreeMap::new(),
            resources: None,
            features: None,
            entitlements: None,
            plans: None,
            cache: CacheConfig { entitlements_ttl_ms: 1000 },
            billing: crate::billing::BillingConfig::default(),
            server: ServerConfig::default(),
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
        "database_",
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
                return Err(format!("config file {} does not exist", path.display()));
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
        figment.extract::<Config>().map_err(|e| format!("configuration: {e}"))
    }

    /// The plan catalog sections of this config.
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
        if self.max_body_bytes < 1024 {
            return Err("max_body_bytes: must be at least 1024".into());
        }
        self.server.validate()?;
        self.database.validate()?;
        if self.invitations.ttl_hours == 0 {
            return Err("invitations.ttl_hours: must be at least 1".into());
        }
        for (i, issuer) in self.auth.issuers.iter().enumerate() {
            if issuer.issuer.trim().is_empty() {
                return Err(format!("auth.issuers[{i}].issuer: must not be empty"));
            }
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
}
