//! `orgplane doctor`: checks a config and the world it points at, without
//! starting the server.
//!
//! One line per check, `✓` or `✗`, and for each `✗` what to do. It only
//! reads: it never migrates, never creates a database file or directory,
//! and calls providers with read-only requests (Stripe `GET /v1/prices`,
//! Lemon Squeezy `GET /users/me`, `/stores/{id}` and `/variants/{id}`,
//! WorkOS `GET /organizations?limit=1` when `[mirror.workos]` is set, each
//! issuer's JWKS). The exit code is 1 if any check failed.

use std::path::Path;
use std::time::Duration;

use orgplane_billing::{CatalogItemStatus, LemonSqueezyClient, ProviderError, StripeClient};
use orgplane_core::subscription::Provider;
use orgplane_server::Config;

/// How long an issuer's JWKS may take to arrive.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// The checks' lines, in order, and whether all passed.
#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn ok(&mut self, line: impl AsRef<str>) {
        println!("✓ {}", line.as_ref());
    }

    fn fail(&mut self, line: impl AsRef<str>) {
        self.failed += 1;
        println!("✗ {}", line.as_ref());
    }

    fn check(&mut self, result: Result<String, String>) {
        match result {
            Ok(line) => self.ok(line),
            Err(line) => self.fail(line),
        }
    }
}

/// Runs every check; `Ok` when all passed, else how many failed.
pub async fn run(config: &Config) -> Result<(), String> {
    let mut report = Report::default();
    match config.validate() {
        Ok(()) => report.ok("config: valid"),
        Err(problem) => report.fail(format!("config: {problem}")),
    }
    report.check(database(config).await);
    issuers(config, &mut report).await;
    stripe(config, &mut report).await;
    lemonsqueezy(config, &mut report).await;
    if let Some(workos) = &config.mirror.workos {
        report.check(orgplane_server::workos_mirror::check_api_key(workos).await);
    }
    report.check(public_url(config));
    match report.failed {
        0 => Ok(()),
        n => Err(format!("{n} check{} failed; fix the ✗ lines above", if n == 1 { "" } else { "s" })),
    }
}

async fn database(config: &Config) -> Result<String, String> {
    let url = config.database_url();
    let shown = orgplane_server::redact(&url);
    if let Some(path) = sqlite_path(&url)
        && !Path::new(path).exists()
    {
        return Err(format!(
            "database: no SQLite database at {path}; create it with `orgplane migrate` (same --config / --database-url)"
        ));
    }
    let store = orgplane_server::open_store(config, false).await.map_err(|e| {
        format!("database: {shown} can't be reached ({e:#}); check database_url and that the server runs")
    })?;
    let ready = store.ready().await;
    store.close().await;
    match ready {
        Ok(()) => Ok(format!("database: {shown} answers, every migration of this build applied")),
        Err(e) => Err(format!("database: {shown}: {e}")),
    }
}

/// The file of a `sqlite://PATH[?options]` URL.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    Some(rest.split('?').next().unwrap_or(rest)).filter(|path| !path.is_empty() && *path != ":memory:")
}

async fn issuers(config: &Config, report: &mut Report) {
    if config.auth.issuers.is_empty() {
        if config.dev {
            report.ok("auth: no [[auth.issuers]], only the --dev issuer");
        } else {
            report
                .fail("auth: no [[auth.issuers]]: no user can sign in; add your identity provider (README, Identity)");
        }
        return;
    }
    for (i, issuer) in config.auth.issuers.iter().enumerate() {
        let at = format!("auth.issuers[{i}]");
        let settings = match issuer.resolve(&at) {
            Ok(settings) => settings,
            Err(problem) => {
                report.fail(problem);
                continue;
            }
        };
        let preset = settings.preset.map(|p| format!(" (preset {p})")).unwrap_or_default();
        match orgplane_auth::inspect_jwks(&settings, JWKS_TIMEOUT).await {
            Ok(keys) => {
                let skipped = match keys.skipped {
                    0 => String::new(),
                    n => format!(", {n} skipped (not RS256, ES256 or EdDSA signing keys)"),
                };
                report.ok(format!(
                    "{at} `{}`{preset}: JWKS {} has {}{skipped}; reads {}",
                    settings.issuer,
                    settings.jwks_url,
                    keys.usable.join(", "),
                    settings.claims_summary()
                ));
            }
            Err(problem) => report.fail(format!(
                "{at} `{}`{preset}: {problem}; check jwks_url and that this host can reach it (tokens of this issuer are refused until it can)",
                settings.issuer
            )),
        }
    }
}

/// The catalog's price or variant ids for `provider`, with their plan.
fn catalog_prices(config: &Config, provider: Provider) -> Vec<(String, String)> {
    let Ok(catalog) = config.catalog() else { return Vec::new() };
    catalog
        .plans()
        .iter()
        .flat_map(|plan| plan.prices(provider).iter().map(|price| (plan.key().to_string(), price.clone())))
        .collect()
}

fn catalog_line(
    provider: &str,
    kind: &str,
    key: &str,
    plan: &str,
    id: &str,
    status: Result<CatalogItemStatus, ProviderError>,
) -> Result<String, String> {
    let at = format!("{provider} {kind} `{id}` (plans.{plan}.prices.{key})");
    match status {
        Ok(CatalogItemStatus::Active) => Ok(format!("{at}: known and active")),
        Ok(CatalogItemStatus::Unusable(why)) => Err(format!("{at} {why}; pick an active one in {provider}")),
        Ok(CatalogItemStatus::Unknown) => Err(format!(
            "{at} is unknown to {provider} (test and live mode have different ids); copy the id from {provider}"
        )),
        Err(e) => Err(format!("{at}: could not be checked: {e}")),
    }
}

async fn stripe(config: &Config, report: &mut Report) {
    let stripe = &config.billing.stripe;
    let prices = catalog_prices(config, Provider::Stripe);
    if stripe.api_key.is_none() && prices.is_empty() && stripe.webhook_secrets.is_empty() {
        return; // Stripe is not used.
    }
    if stripe.webhook_secrets.is_empty() {
        report.fail("Stripe: billing.stripe.webhook_secrets is empty, so every Stripe webhook is refused; add the endpoint's signing secret (`whsec_…`)");
    } else {
        report.ok(format!("Stripe: {} webhook secret(s) configured", stripe.webhook_secrets.len()));
    }
    let client = match StripeClient::from_config(stripe) {
        Ok(client) => client,
        Err(e) => {
            report.fail(format!("Stripe: {e}"));
            return;
        }
    };
    match client.check_key().await {
        Ok(()) => report.ok(format!("Stripe: the API key works ({})", stripe.api_base)),
        Err(e) => {
            report.fail(format!(
                "Stripe: the API key was refused or Stripe is unreachable: {e}; check billing.stripe.api_key"
            ));
            return;
        }
    }
    for (plan, price) in prices {
        let status = client.price_status(&price).await;
        report.check(catalog_line("Stripe", "price", "stripe", &plan, &price, status));
    }
}

async fn lemonsqueezy(config: &Config, report: &mut Report) {
    let ls = &config.billing.lemonsqueezy;
    let variants = catalog_prices(config, Provider::Lemonsqueezy);
    if ls.api_key.is_none() && variants.is_empty() && ls.webhook_secret.is_none() {
        return; // Lemon Squeezy is not used.
    }
    match &ls.webhook_secret {
        Some(_) => report.ok("Lemon Squeezy: webhook secret configured"),
        None => report.fail("Lemon Squeezy: billing.lemonsqueezy.webhook_secret is not set, so every Lemon Squeezy webhook is refused; add the webhook's signing secret"),
    }
    let client = match LemonSqueezyClient::from_config(ls) {
        Ok(client) => client,
        Err(e) => {
            report.fail(format!("Lemon Squeezy: {e}"));
            return;
        }
    };
    match client.check_key_and_store().await {
        Ok(()) => report
            .ok(format!("Lemon Squeezy: the API key works and sees store {}", ls.store_id.as_deref().unwrap_or("?"))),
        Err(e) => {
            report.fail(format!("Lemon Squeezy: {e}; check billing.lemonsqueezy.api_key and store_id"));
            return;
        }
    }
    for (plan, variant) in variants {
        let status = client.variant_status(&variant).await;
        report.check(catalog_line("Lemon Squeezy", "variant", "lemonsqueezy", &plan, &variant, status));
    }
}

fn public_url(config: &Config) -> Result<String, String> {
    let Some(url) = &config.public_url else {
        return if config.dev {
            Ok(format!("public_url: not set; links use http://{} (--dev)", config.listen))
        } else {
            Err(format!(
                "public_url: not set, so portal links point at http://{}; set it to the URL clients reach this server at",
                config.listen
            ))
        };
    };
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("public_url `{url}` is not a URL ({e}); write it as https://host[:port]"))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
        return Err(format!("public_url `{url}` must be an http(s) URL with a host, e.g. https://orgs.example.com"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "public_url `{url}` has a query or fragment; links are built by appending paths, so remove it"
        ));
    }
    if parsed.scheme() == "http" && !config.dev {
        return Ok(format!("public_url: {url} (http: use https in production)"));
    }
    Ok(format!("public_url: {url}"))
}
