//! The hosted portal in a real browser: headless Chromium driven through
//! one `chromedriver` process (started here once for every scenario) and
//! one WebDriver session, against the real server on SQLite in `--dev`
//! mode (the sandbox payment provider). Each scenario mints a link with an
//! API key, opens it, and works the pages as a person would. The
//! screenshots under `docs/portal/` are written by these scenarios.
//!
//! Browser tests run on SQLite only: the pages call the same handlers as
//! the API, whose store paths `tests/api` runs on both backends.
//!
//! Without `chromedriver` on the PATH (`apt-get install chromium
//! chromium-driver`), the run FAILS when `CI` is set and otherwise skips
//! loudly. A plain `harness = false` binary: scenarios share the browser
//! and run in order; a name given on the command line runs only the
//! scenarios containing it.

#[path = "../api/helpers.rs"]
mod helpers;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use helpers::{Backend, TestApp, TestUser, spawn_app_with};

type Scenario = for<'a> fn(&'a Ctx) -> Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

/// What every scenario gets: the app, the browser, an API key.
struct Ctx {
    app: TestApp,
    browser: Client,
    key: String,
}

/// `chromedriver` for the whole run; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    _profile: TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()))
}

fn start_driver(chromedriver: &PathBuf) -> Result<Driver, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))?;
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", chromedriver.display()))?;
    let profile = std::env::temp_dir().join(format!("orgplane-chromium-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&profile).map_err(|e| format!("profile dir: {e}"))?;
    let driver = Driver { child, port, _profile: TempDir(profile) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("chromedriver did not listen within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(driver)
}

async fn connect(driver: &Driver) -> Result<Client, String> {
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1280,1000".to_owned(),
    ];
    args.push(format!("--user-data-dir={}", driver._profile.0.display()));
    let mut options = json!({"args": args});
    if let Some(chromium) = find_on_path("chromium") {
        options["binary"] = json!(chromium);
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::rustls()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .map_err(|e| format!("a WebDriver session: {e}"))
}

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("opens_a_minted_link_and_sees_the_overview", |c| Box::pin(opens_a_minted_link_and_sees_the_overview(c))),
        ("invites_a_colleague_and_sees_them_pending", |c| Box::pin(invites_a_colleague_and_sees_them_pending(c))),
        ("changes_a_members_role", |c| Box::pin(changes_a_members_role(c))),
        ("demoting_the_last_owner_is_refused_with_the_reason", |c| {
            Box::pin(demoting_the_last_owner_is_refused_with_the_reason(c))
        }),
        ("upgrades_through_the_sandbox_checkout_cancels_reactivates_and_transfers_billing_admin", |c| {
            Box::pin(upgrades_through_the_sandbox_checkout_cancels_reactivates_and_transfers_billing_admin(c))
        }),
        ("makes_an_org_api_key_sees_it_once_and_revokes_it_after_confirming", |c| {
            Box::pin(makes_an_org_api_key_sees_it_once_and_revokes_it_after_confirming(c))
        }),
        ("is_logged_out_by_session_expiry", |c| Box::pin(is_logged_out_by_session_expiry(c))),
    ];
    let chosen: Vec<_> = scenarios
        .into_iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if chosen.is_empty() {
        println!("test result: ok. 0 passed; 0 failed; 0 ignored (no browser scenario matches the filter)");
        return;
    }
    let Some(chromedriver) = find_on_path("chromedriver") else {
        let message = "chromedriver is not on the PATH: install `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver; .ci/run does)";
        if std::env::var_os("CI").is_some() {
            eprintln!("FAILED: {message}; CI is set, so the browser tests can't be skipped");
            std::process::exit(1);
        }
        eprintln!("\n!!!!! SKIPPING the portal browser tests: {message} !!!!!\n");
        println!("test result: ok. 0 passed; 0 failed; {} ignored", chosen.len());
        return;
    };
    let total = chosen.len();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    let failed = runtime.block_on(async move {
        let driver = match start_driver(&chromedriver) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("FAILED: {e}");
                return chosen.len();
            }
        };
        let browser = match connect(&driver).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("FAILED: {e}");
                return chosen.len();
            }
        };
        let Some(app) = spawn_app_with(Backend::Sqlite, |config| {
            config.dev = true;
            config.portal.app_name = "Clinic Manager".into();
            config.portal.return_url_allowlist = vec!["https://app.example".into()];
        })
        .await
        else {
            eprintln!("FAILED: the app did not start");
            return chosen.len();
        };
        let key = app.api_key().await;
        let ctx = Ctx { app, browser, key };
        let mut failed = 0;
        println!("\nrunning {} tests", chosen.len());
        for (name, scenario) in &chosen {
            let started = Instant::now();
            match tokio::time::timeout(Duration::from_secs(120), scenario(&ctx)).await {
                Ok(Ok(())) => println!("test {name} ... ok ({:.1} s)", started.elapsed().as_secs_f32()),
                Ok(Err(e)) => {
                    failed += 1;
                    println!("test {name} ... FAILED\n    {e}");
                }
                Err(_) => {
                    failed += 1;
                    println!("test {name} ... FAILED\n    timed out after 120 s");
                }
            }
        }
        let _ = ctx.browser.clone().close().await;
        drop(driver);
        failed
    });
    let passed = total - failed;
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

// ------------------------------------------------------------------ helpers

fn fail(what: impl std::fmt::Display) -> String {
    what.to_string()
}

impl Ctx {
    /// Mints a link with the API key and opens it: the browser is now
    /// signed in to `org` as `user`, on its overview.
    async fn sign_in(&self, org: &str, user: &TestUser) -> Result<(), String> {
        let body = json!({"org_id": org, "user_id": user.id, "return_url": "https://app.example/settings"});
        let res = self.app.post("/v1/portal_sessions", &self.key, body).await;
        if res.status.as_u16() != 200 {
            return Err(fail(format!("minting a link: {} {}", res.status, res.body)));
        }
        let url = res.body["url"].as_str().ok_or("no url")?.to_owned();
        self.browser.goto(&url).await.map_err(fail)?;
        self.wait_text("#fact-plan", "").await?;
        Ok(())
    }

    async fn goto(&self, path: &str) -> Result<(), String> {
        self.browser.goto(&format!("{}{path}", self.app.base)).await.map_err(fail)
    }

    /// Waits until the element matching `css` exists and its text contains `needle`.
    async fn wait_text(&self, css: &str, needle: &str) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        loop {
            if let Ok(element) = self.browser.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                if text.contains(needle) {
                    return Ok(text);
                }
                last = text;
            }
            if Instant::now() > deadline {
                let url = self.browser.current_url().await.map(|u| u.to_string()).unwrap_or_default();
                return Err(format!("`{css}` never showed `{needle}` on {url} (last: `{last}`)"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) -> Result<(), String> {
        let element = self.browser.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await;
        element.map_err(|e| format!("`{css}`: {e}"))?.click().await.map_err(|e| format!("clicking `{css}`: {e}"))
    }

    async fn fill(&self, css: &str, text: &str) -> Result<(), String> {
        let element = self.browser.find(Locator::Css(css)).await.map_err(|e| format!("`{css}`: {e}"))?;
        element.clear().await.map_err(fail)?;
        element.send_keys(text).await.map_err(fail)
    }

    async fn select(&self, css: &str, value: &str) -> Result<(), String> {
        let element = self.browser.find(Locator::Css(css)).await.map_err(|e| format!("`{css}`: {e}"))?;
        element.select_by_value(value).await.map_err(|e| format!("choosing {value} in `{css}`: {e}"))
    }

    /// Writes the page as `docs/portal/{name}.png`.
    async fn screenshot(&self, name: &str) -> Result<(), String> {
        let png = self.browser.screenshot().await.map_err(fail)?;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/portal");
        std::fs::create_dir_all(&dir).map_err(fail)?;
        std::fs::write(dir.join(format!("{name}.png")), png).map_err(fail)
    }
}

fn check(condition: bool, what: impl std::fmt::Display) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what.to_string()) }
}

// ---------------------------------------------------------------- scenarios

async fn opens_a_minted_link_and_sees_the_overview(c: &Ctx) -> Result<(), String> {
    let smith = c.app.user("dr.smith@clinic.example").await;
    let org = c.app.team(&smith, "Downtown Clinic").await;
    c.sign_in(&org, &smith).await?;
    c.wait_text("#org-name", "Downtown Clinic").await?;
    c.wait_text("#fact-plan", "free").await?;
    c.wait_text("#fact-kind", "team").await?;
    c.wait_text("#upgrade", "Upgrade").await?;
    let seats = c.wait_text("#limit-seats", "1").await?;
    check(seats.contains('2'), format!("the seats row shows used and limit: {seats}"))?;
    let url = c.browser.current_url().await.map_err(fail)?;
    check(url.path() == format!("/portal/orgs/{org}"), format!("landed on {url}"))?;
    // The cookie is HttpOnly: the page's script can't read it.
    let cookie = c.browser.execute("return document.cookie", vec![]).await.map_err(fail)?;
    check(cookie.as_str().is_some_and(|v| !v.contains("orgplane_portal")), format!("document.cookie = {cookie}"))?;
    c.screenshot("overview").await
}

async fn invites_a_colleague_and_sees_them_pending(c: &Ctx) -> Result<(), String> {
    let smith = c.app.user("dr.smith@clinic.example").await;
    let org = c.app.team(&smith, "Invite Clinic").await;
    c.sign_in(&org, &smith).await?;
    c.goto(&format!("/portal/orgs/{org}/invitations")).await?;
    c.fill("#invite-email", "dr.johnson@clinic.example").await?;
    c.select("#invite-role", "admin").await?;
    c.click("form.stack button[type=submit]").await?;
    c.wait_text("#flash", "Invitation sent to dr.johnson@clinic.example").await?;
    let pending = c.wait_text("#pending", "dr.johnson@clinic.example").await?;
    check(pending.contains("admin"), format!("pending row: {pending}"))?;
    let api = c.app.get(&format!("/v1/orgs/{org}/invitations"), &smith.token).await;
    check(api.body["data"][0]["email"] == "dr.johnson@clinic.example", format!("the API agrees: {}", api.body))?;
    c.screenshot("invitations").await
}

/// Smith's team with Johnson as a member; Smith signed in on the members page.
async fn team_with_johnson(c: &Ctx, name: &str) -> Result<(TestUser, TestUser, String), String> {
    let smith = c.app.user("dr.smith@clinic.example").await;
    let johnson = c.app.user("dr.johnson@clinic.example").await;
    let org = c.app.team(&smith, name).await;
    c.app.add_member(&org, &smith, &johnson, "member").await;
    c.sign_in(&org, &smith).await?;
    c.goto(&format!("/portal/orgs/{org}/members")).await?;
    c.wait_text("#members", "dr.johnson").await?;
    Ok((smith, johnson, org))
}

async fn changes_a_members_role(c: &Ctx) -> Result<(), String> {
    let (smith, johnson, org) = team_with_johnson(c, "Role Clinic").await?;
    c.select(&format!("#role-{}", johnson.id), "admin").await?;
    c.click(&format!("tr[data-user='{}'] button[aria-label^='Change the role']", johnson.id)).await?;
    c.wait_text("#flash", "Role changed").await?;
    c.wait_text(&format!("tr[data-user='{}'] td.role", johnson.id), "admin").await?;
    check(c.app.role_of(&org, &smith, &johnson).await.as_deref() == Some("admin"), "the API sees admin")?;
    c.screenshot("members").await
}

async fn demoting_the_last_owner_is_refused_with_the_reason(c: &Ctx) -> Result<(), String> {
    let (smith, _johnson, org) = team_with_johnson(c, "Owner Clinic").await?;
    c.select(&format!("#role-{}", smith.id), "member").await?;
    c.click(&format!("tr[data-user='{}'] button[aria-label^='Change the role']", smith.id)).await?;
    let alert = c.wait_text("#flash", "always keeps at least one owner").await?;
    check(!alert.is_empty(), "an alert")?;
    c.wait_text(&format!("tr[data-user='{}'] td.role", smith.id), "owner").await?;
    check(c.app.owner_count(&org).await == 1, "still one owner")?;
    c.screenshot("last-owner-refused").await
}

async fn upgrades_through_the_sandbox_checkout_cancels_reactivates_and_transfers_billing_admin(
    c: &Ctx,
) -> Result<(), String> {
    let (_smith, johnson, org) = team_with_johnson(c, "Billing Clinic").await?;
    // Upgrade: the plan chooser, the sandbox's checkout page, Pay.
    c.goto(&format!("/portal/orgs/{org}/billing")).await?;
    c.wait_text("#plans", "free").await?;
    c.fill("#seats-business", "5").await?;
    c.click("#checkout-business").await?;
    c.wait_text("h1", "Sandbox checkout").await?;
    c.click("form[action$='/pay'] button").await?;
    c.wait_text("#flash", "Thank you").await?;
    c.wait_text("#fact-plan", "business").await?;
    c.wait_text("#fact-status", "active").await?;
    c.wait_text("#fact-renewal", "20").await?;
    let upgrade = c.browser.find(Locator::Css("#upgrade")).await;
    check(upgrade.is_err(), "no upgrade call to action on a paid plan")?;
    // Cancel at period end, then reactivate.
    c.goto(&format!("/portal/orgs/{org}/billing")).await?;
    c.wait_text("#sub-seats", "5").await?;
    c.click("#cancel").await?;
    c.wait_text("#flash", "will end at the end of the period").await?;
    c.wait_text("#sub-end", "cancelled at period end").await?;
    c.click("#reactivate").await?;
    c.wait_text("#flash", "active again").await?;
    c.wait_text("#sub-end", "20").await?;
    let end = c.wait_text("#sub-end", "").await?;
    check(!end.contains("cancelled"), format!("renews again: {end}"))?;
    c.screenshot("billing").await?;
    // Hand the billing admin role to Johnson.
    c.goto(&format!("/portal/orgs/{org}/members")).await?;
    c.click(&format!("tr[data-user='{}'] button[aria-label$='billing admin']", johnson.id)).await?;
    c.wait_text("#flash", "Billing admin changed").await?;
    c.wait_text(&format!("tr[data-user='{}']", johnson.id), "billing admin").await?;
    let sub = c.app.get(&format!("/v1/orgs/{org}/subscription"), &johnson.token).await;
    check(sub.body["billing_admin_user_id"] == johnson.id.as_str(), format!("the API agrees: {}", sub.body))?;
    // Audit log and settings, for the README.
    c.goto(&format!("/portal/orgs/{org}/audit")).await?;
    c.wait_text("#events", "billing_admin").await?;
    c.screenshot("audit").await?;
    c.goto(&format!("/portal/orgs/{org}/settings")).await?;
    c.wait_text("h1", "Settings").await?;
    c.screenshot("settings").await
}

async fn makes_an_org_api_key_sees_it_once_and_revokes_it_after_confirming(c: &Ctx) -> Result<(), String> {
    let smith = c.app.user("dr.smith@clinic.example").await;
    let org = c.app.team(&smith, "Keys Clinic").await;
    let overrides = json!({"features": {"api_tokens": true}});
    let res = c.app.put(&format!("/v1/orgs/{org}/overrides"), &c.key, overrides).await;
    check(res.status.as_u16() == 200, format!("api_tokens on: {} {}", res.status, res.body))?;
    c.sign_in(&org, &smith).await?;
    c.click("nav a[href$='/api_keys']").await?;
    c.wait_text("h1", "API keys").await?;
    c.fill("#key-name", "zapier").await?;
    c.select("#key-expires", "90d").await?;
    c.fill("#key-scopes", "invoices:read invoices:write").await?;
    c.click("#create-key").await?;
    c.wait_text("#flash", "Copy it now").await?;
    let key = c.wait_text("#new-key", "ok_").await?;
    let row = c.wait_text("#keys tr[data-key]", "zapier").await?;
    check(row.contains("invoices:read, invoices:write") && row.contains("live"), format!("the listed key: {row}"))?;
    check(!row.contains(&key), "the list does not show the key")?;
    let verify = |key: String| async move {
        let res = c.app.post("/v1/api_keys/verify", &c.key, json!({"key": key})).await;
        res.body["valid"].as_bool()
    };
    check(verify(key.clone()).await == Some(true), "the app verifies the new key")?;
    c.screenshot("api-keys").await?;
    // Revoke: a confirmation first, then the key is refused.
    c.click("#keys a[aria-label='Revoke zapier']").await?;
    c.wait_text("#confirm-revoke", "Revoke zapier?").await?;
    check(verify(key.clone()).await == Some(true), "asking changes nothing")?;
    c.click("#confirm-revoke-button").await?;
    c.wait_text("#flash", "API key zapier revoked").await?;
    c.wait_text("#keys td.status", "revoked").await?;
    check(verify(key).await == Some(false), "the revoked key is refused")
}

async fn is_logged_out_by_session_expiry(c: &Ctx) -> Result<(), String> {
    let smith = c.app.user("dr.smith@clinic.example").await;
    let org = c.app.team(&smith, "Idle Clinic").await;
    c.sign_in(&org, &smith).await?;
    c.app.clock.advance(time::Duration::minutes(61));
    c.browser.refresh().await.map_err(fail)?;
    c.wait_text("h1", "Your session has expired").await?;
    c.wait_text("#return", "Back to Clinic Manager").await?;
    c.screenshot("session-expired").await
}
