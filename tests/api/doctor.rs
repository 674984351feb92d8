//! `orgplane doctor`: the real binary, pointed at a real database, a real
//! JWKS, the Stripe and Lemon Squeezy stand-ins
//! and the WorkOS stand-in of `workos_mirror` (which check the API key).
//! Each ✗ case prints its line with what to do, and exits 1; a sound config
//! prints only ✓ and exits 0.

use std::path::PathBuf;

use serde_json::json;

use crate::billing_support::{
    LS_KEY, LS_SECRET, LS_STORE, PRICE_BUSINESS, PRICE_ENTERPRISE, STRIPE_KEY, STRIPE_SECRET, StandIn, VARIANT_BUSINESS,
};
use crate::helpers::{AUDIENCE, Backend, ISSUER, TestDb, spawn_app};
use crate::on_both_backends;
use crate::workos_mirror::{StandIn as WorkosStandIn, WORKOS_KEY};

/// The pieces a config points at.
struct World {
    database_url: String,
    jwks_url: String,
    stripe: String,
    lemonsqueezy: String,
}

fn config_toml(world: &World) -> String {
    format!(
        r#"
database_url = "{database_url}"
public_url = "https://orgs.example.test"

[[auth.issuers]]
issuer = "{ISSUER}"
jwks_url = "{jwks_url}"
audience = ["{AUDIENCE}"]

[[auth.issuers]]
preset = "better-auth"
issuer = "https://app.example.test"
jwks_url = "{jwks_url}"

[billing.stripe]
api_key = "{STRIPE_KEY}"
api_base = "{stripe}"
webhook_secrets = ["{STRIPE_SECRET}"]

[billing.lemonsqueezy]
api_key = "{LS_KEY}"
store_id = "{LS_STORE}"
webhook_secret = "{LS_SECRET}"
api_base = "{lemonsqueezy}/v1"

[plans.free]
default = true
tier = "free"
features = ["invitations"]
limits = {{ customers = 3 }}

[plans.business]
tier = "business"
features = ["invitations", "audit_log"]
limits = {{ customers = 100 }}
prices = {{ stripe = ["{PRICE_BUSINESS}"], lemonsqueezy = ["{VARIANT_BUSINESS}"] }}

[plans.enterprise]
tier = "enterprise"
features = ["*"]
prices = {{ stripe = ["{PRICE_ENTERPRISE}"] }}
"#,
        database_url = world.database_url,
        jwks_url = world.jwks_url,
        stripe = world.stripe,
        lemonsqueezy = world.lemonsqueezy,
    )
}

/// Runs `orgplane doctor --config <toml>`: exit success and stdout.
async fn doctor(toml: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("orgplane_doctor_{}_{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file: PathBuf = dir.join("orgplane.toml");
    std::fs::write(&file, toml).expect("write config");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orgplane"))
        .args(["doctor", "--config"])
        .arg(&file)
        .current_dir(&dir)
        .env_remove("ORGPLANE_CONFIG")
        .env("ORGPLANE_LOG", "error")
        .kill_on_drop(true)
        .output()
        .await
        .expect("doctor runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() || stderr.contains("failed; fix the ✗ lines above"), "{stdout}\n{stderr}");
    (out.status.success(), stdout)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Both stand-ins, knowing every catalog item as active.
async fn providers() -> (StandIn, StandIn) {
    let stripe = StandIn::stripe().await;
    for price in [PRICE_BUSINESS, PRICE_ENTERPRISE] {
        stripe.set_catalog_item(price, json!({"active": true, "recurring": {"interval": "month"}, "currency": "usd"}));
    }
    let ls = StandIn::lemonsqueezy().await;
    ls.set_catalog_item(VARIANT_BUSINESS, json!({"status": "published", "is_subscription": true, "name": "Monthly"}));
    (stripe, ls)
}

/// The lines of `stdout` starting with `✗`.
fn failures(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|line| line.starts_with('✗')).collect()
}

async fn a_sound_config_passes_every_check(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let (stripe, ls) = providers().await;
    let world = World {
        database_url: app.database_url.clone(),
        jwks_url: app.idp.jwks_url.clone(),
        stripe: stripe.origin.clone(),
        lemonsqueezy: ls.origin.clone(),
    };
    let (ok, stdout) = doctor(&config_toml(&world)).await;
    assert!(ok, "{stdout}");
    assert!(failures(&stdout).is_empty(), "{stdout}");
    for expected in [
        "✓ config: valid",
        "✓ database: ",
        "every migration of this build applied",
        &format!("✓ auth.issuers[0] `{ISSUER}`"),
        "RS256 `rsa-1`, ES256 `ec-1`, EdDSA `ed-1`",
        "✓ auth.issuers[1] `https://app.example.test` (preset better-auth)",
        "verified `emailVerified`",
        "aud ∋ `https://app.example.test`",
        "✓ Stripe: the API key works",
        &format!("✓ Stripe price `{PRICE_ENTERPRISE}` (plans.enterprise.prices.stripe): known and active"),
        "✓ Lemon Squeezy: the API key works and sees store 4242",
        &format!("✓ Lemon Squeezy variant `{VARIANT_BUSINESS}` (plans.business.prices.lemonsqueezy): known and active"),
        "✓ public_url: https://orgs.example.test",
    ] {
        assert!(stdout.contains(expected), "`{expected}` missing from:\n{stdout}");
    }
    // Read-only: only GETs reached the providers.
    assert!(stripe.requests().iter().chain(ls.requests().iter()).all(|r| r.method == axum::http::Method::GET));
}

async fn an_unreachable_jwks_is_a_failure_naming_the_issuer_and_url(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let (stripe, ls) = providers().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let world = World {
        database_url: app.database_url.clone(),
        jwks_url: format!("http://127.0.0.1:{port}/jwks.json"),
        stripe: stripe.origin.clone(),
        lemonsqueezy: ls.origin.clone(),
    };
    let (ok, stdout) = doctor(&config_toml(&world)).await;
    assert!(!ok, "{stdout}");
    let failed = failures(&stdout);
    assert_eq!(failed.len(), 2, "both issuers, nothing else: {stdout}");
    assert!(
        failed[0].starts_with(&format!("✗ auth.issuers[0] `{ISSUER}`: GET http://127.0.0.1:{port}/jwks.json failed"))
    );
    assert!(failed[0].contains("check jwks_url"), "{stdout}");
}

async fn a_price_unknown_at_the_provider_is_a_failure_naming_plan_and_id(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let stripe = StandIn::stripe().await;
    stripe.set_catalog_item(PRICE_BUSINESS, json!({"active": false, "recurring": {"interval": "month"}}));
    let ls = StandIn::lemonsqueezy().await;
    ls.set_catalog_item(VARIANT_BUSINESS, json!({"status": "draft", "is_subscription": true}));
    let world = World {
        database_url: app.database_url.clone(),
        jwks_url: app.idp.jwks_url.clone(),
        stripe: stripe.origin.clone(),
        lemonsqueezy: ls.origin.clone(),
    };
    let (ok, stdout) = doctor(&config_toml(&world)).await;
    assert!(!ok, "{stdout}");
    let failed = failures(&stdout);
    assert_eq!(failed.len(), 3, "{stdout}");
    assert!(failed.contains(&format!(
        "✗ Stripe price `{PRICE_ENTERPRISE}` (plans.enterprise.prices.stripe) is unknown to Stripe (test and live mode have different ids); copy the id from Stripe"
    ).as_str()), "{stdout}");
    assert!(failed.iter().any(|l| l.contains(PRICE_BUSINESS) && l.contains("archived")), "{stdout}");
    assert!(
        failed.iter().any(|l| l.contains(&format!("variant `{VARIANT_BUSINESS}`")) && l.contains("`draft`")),
        "{stdout}"
    );
}

async fn an_unmigrated_database_is_a_failure_saying_to_migrate(backend: Backend) {
    let Some((_db, url)) = TestDb::create(backend).await else { return };
    // SQLite: the file exists but holds nothing.
    if let Some(path) = url.strip_prefix("sqlite://") {
        std::fs::write(path, b"").expect("empty file");
    }
    let (stripe, ls) = providers().await;
    let idp = crate::helpers::Idp::start().await;
    let world = World {
        database_url: url.clone(),
        jwks_url: idp.jwks_url.clone(),
        stripe: stripe.origin.clone(),
        lemonsqueezy: ls.origin.clone(),
    };
    let (ok, stdout) = doctor(&config_toml(&world)).await;
    assert!(!ok, "{stdout}");
    let failed = failures(&stdout);
    assert_eq!(failed.len(), 1, "{stdout}");
    assert!(failed[0].starts_with("✗ database: "), "{stdout}");
    assert!(failed[0].contains("run `orgplane migrate`"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_sqlite_file_is_a_failure_and_is_not_created() {
    let dir = std::env::temp_dir().join(format!("orgplane_doctor_missing_{}", std::process::id()));
    let path = dir.join("nowhere").join("orgplane.db");
    let toml = format!("database_url = \"sqlite://{}\"\ndev = true\n", path.display());
    let (ok, stdout) = doctor(&toml).await;
    assert!(!ok, "{stdout}");
    assert!(stdout.contains(&format!("✗ database: no SQLite database at {}", path.display())), "{stdout}");
    assert!(!path.exists() && !dir.exists(), "doctor creates nothing");
}

on_both_backends!(
    a_sound_config_passes_every_check,
    an_unreachable_jwks_is_a_failure_naming_the_issuer_and_url,
    a_price_unknown_at_the_provider_is_a_failure_naming_plan_and_id,
    an_unmigrated_database_is_a_failure_saying_to_migrate,
);

/// A `--dev` config on `database_url` that mirrors into WorkOS at `api_base` with `api_key`.
fn workos_config(database_url: &str, api_base: &str, api_key: &str) -> String {
    format!(
        "database_url = \"{database_url}\"\ndev = true\n\n[mirror.workos]\napi_key = \"{api_key}\"\napi_base = \"{api_base}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workos_api_key_that_works_is_checked_with_one_read_only_call() {
    let Some(app) = spawn_app(Backend::Sqlite).await else { return };
    let workos = WorkosStandIn::start().await;
    let (ok, stdout) = doctor(&workos_config(&app.database_url, workos.url(), WORKOS_KEY)).await;
    assert!(ok, "{stdout}");
    assert!(stdout.contains(&format!("✓ WorkOS mirror: the API key works ({})", workos.url())), "{stdout}");
    assert!(failures(&stdout).is_empty(), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workos_api_key_refused_by_workos_is_a_failure_saying_which_key_to_set() {
    let Some(app) = spawn_app(Backend::Sqlite).await else { return };
    let workos = WorkosStandIn::start().await;
    let (ok, stdout) = doctor(&workos_config(&app.database_url, workos.url(), "sk_test_revoked")).await;
    assert!(!ok, "{stdout}");
    assert_eq!(
        failures(&stdout),
        vec![
            "✗ WorkOS mirror: WorkOS refused the API key (401 Unauthorized); set mirror.workos.api_key to an `sk_…` key of the environment whose users sign in"
        ],
        "{stdout}"
    );
}
