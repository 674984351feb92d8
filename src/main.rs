//! The `orgplane` command: serve, migrate, keys (create, list, revoke), plans, reconcile,
//! copy (SQLite → PostgreSQL), backup and restore, doctor.

mod cli;
mod doctor;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orgplane_server::config::LogFormat;
use orgplane_server::{Application, Config, open_store, shutdown_signal};
use orgplane_store::{Actor, Revocation, StoreError};

#[derive(Parser)]
#[command(name = "orgplane", version, about = "Organizations, billing and entitlements for multi-tenant SaaS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "ORGPLANE_CONFIG")]
    config: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…` (default: SQLite in ./orgplane-data/).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrates the database first unless told not to).
    Serve {
        #[command(flatten)]
        common: Common,
        /// IP address and port to listen on (default 127.0.0.1:8080).
        #[arg(long, value_parser = cli::parse_listen)]
        listen: Option<SocketAddr>,
        /// Local dev issuer and sandbox payments; loopback only.
        #[arg(long)]
        dev: bool,
        /// Don't apply migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Manage server API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// User administration: find a user, fix their active org.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Delete abandoned personal orgs (`[cleanup] personal_orgs_inactive_days`).
    Cleanup {
        #[command(flatten)]
        common: Common,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// One reconciliation pass: re-fetch live subscriptions from their
    /// provider and retry unmatched or failed provider events.
    Reconcile {
        #[command(flatten)]
        common: Common,
        /// Only this org (`org_…`).
        #[arg(long)]
        org: Option<String>,
    },
    /// Check a config and what it points at (database, issuers' keys,
    /// payment providers, URLs) without starting the server; exit 1 on a ✗.
    Doctor {
        #[command(flatten)]
        common: Common,
    },
    /// The plan catalog.
    Plans {
        #[command(subcommand)]
        command: PlansCommand,
    },
    /// Copy a SQLite database into a new PostgreSQL database, verified
    /// table by table (stop writes first: see "Growing onto PostgreSQL").
    Copy {
        /// The SQLite database: `sqlite://PATH`.
        #[arg(long)]
        from: String,
        /// A new, empty PostgreSQL database: `postgres://…`.
        #[arg(long)]
        to: String,
    },
    /// Write a consistent copy of the SQLite database to FILE, while serving.
    Backup {
        #[command(flatten)]
        common: Common,
        /// The backup file to create (never overwritten).
        #[arg(long)]
        to: PathBuf,
    },
    /// Replace the SQLite database with a backup (stop the server first).
    Restore {
        #[command(flatten)]
        common: Common,
        /// A file written by `orgplane backup`.
        #[arg(long)]
        from: PathBuf,
        /// Replace a database that holds rows.
        #[arg(long)]
        force: bool,
    },
    /// Billing operations.
    Billing {
        #[command(subcommand)]
        command: BillingCommand,
    },
    /// Development only: data at scale for load tests (`bench/scale.sh`).
    #[command(hide = true)]
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Mirrors of orgs and memberships in other systems.
    Mirror {
        #[command(subcommand)]
        command: MirrorCommand,
    },
}

#[derive(Subcommand)]
enum BillingCommand {
    /// Tie a subscription made elsewhere (a payment link, the provider's
    /// dashboard, a migration) to an org, as `POST /v1/billing/link` does.
    Link {
        #[command(flatten)]
        common: Common,
        /// `stripe`, `lemonsqueezy` (or `sandbox`).
        #[arg(long)]
        provider: String,
        /// The provider's subscription id.
        #[arg(long)]
        subscription: String,
        /// The org to tie it to (`org_…`).
        #[arg(long)]
        org: String,
    },
}

#[derive(Subcommand)]
enum DevCommand {
    /// Create N orgs straight in the database, in batches: each a team org
    /// with an owner, a membership and two resources; every tenth with an
    /// active sandbox subscription. Not for production databases.
    Seed {
        #[command(flatten)]
        common: Common,
        /// How many orgs.
        #[arg(long)]
        orgs: u64,
        /// The first seeded number (owners are `seed-N@seed.example`):
        /// past the last run's when seeding the same database again.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Orgs per transaction.
        #[arg(long, default_value_t = 2000)]
        batch: u64,
        /// Write the seeded org ids to this file, one per line.
        #[arg(long)]
        ids: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum MirrorCommand {
    /// The WorkOS mirror (`[mirror.workos]`).
    Workos {
        #[command(subcommand)]
        command: WorkosMirrorCommand,
    },
}

#[derive(Subcommand)]
enum WorkosMirrorCommand {
    /// Mirror every existing org and WorkOS membership into WorkOS now
    /// (safe to repeat: what is already in step is left as it is).
    Backfill {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum PlansCommand {
    /// Validate the whole configuration as `serve` does, and list the plan
    /// catalog (the embedded default, or the config file's).
    Check {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// The users with this e-mail address: memberships, active org, personal org, last seen.
    Show {
        #[command(flatten)]
        common: Common,
        email: String,
    },
    /// Point a user's active org at one of their orgs (a user stuck on the wrong org).
    SetActiveOrg {
        #[command(flatten)]
        common: Common,
        /// `usr_…`
        user: String,
        /// `org_…`, one the user is a member of.
        org: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key and print it once (only its hash is stored).
    Create {
        #[command(flatten)]
        common: Common,
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// How long the key lives: e.g. 90d, 12h, 30m (default: no expiry).
        #[arg(long)]
        expires_in: Option<String>,
        /// `read` (GET only), `write` (everything but keys and users) or `admin`.
        #[arg(long, default_value = "admin")]
        scope: String,
    },
    /// List every API key: id, name, prefix, scope, created, last used, expiry, status.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Revoke an API key (`key_…`, as `keys list` shows it). Running servers
    /// refuse it once their cached copy expires (`cache.entitlements_ttl_ms`).
    Revoke {
        #[command(flatten)]
        common: Common,
        /// The key's id (`key_…`), not the key itself.
        key_id: String,
    },
}

fn load(common: &Common) -> Result<Config, String> {
    let mut config = Config::load(common.config.as_deref())?;
    if let Some(url) = &common.database_url {
        config.database_url = Some(url.clone());
    }
    Ok(config)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORGPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { common, listen, dev, no_migrate } => {
            let mut config = load(&common)?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            config.dev |= dev;
            config.migrate_on_start &= !no_migrate;
            init_logs(config.log_format);
            let dev = config.dev;
            if !dev && config.auth.issuers.is_empty() {
                tracing::warn!(
                    "no identity issuer is configured and --dev is off: only API keys authenticate, every user token is refused; add an [[auth.issuers]] section (see the README's configuration reference) or run with --dev on your machine"
                );
            }
            let app = Application::build(config).await.map_err(|e| format!("{e:#}"))?;
            let addr = app.local_addr();
            tracing::info!(%addr, dev, "orgplane listening on http://{addr}");
            if dev {
                tracing::info!("dev mode: POST http://{addr}/dev/token {{\"email\":\"you@example.com\"}} for a token");
            }
            app.run_until(shutdown_signal()).await.map_err(|e| format!("{e:#}"))
        }
        Command::Migrate { common } => {
            let config = load(&common)?;
            init_logs(config.log_format);
            let store = open_store(&config, false).await.map_err(|e| format!("{e:#}"))?;
            let applied = store.migrate().await.map_err(|e| e.to_string())?;
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                println!("applied migrations: {applied:?}");
            }
            Ok(())
        }
        Command::Reconcile { common, org } => {
            let config = load(&common)?;
            init_logs(config.log_format);
            let org = org.map(|o| o.parse::<orgplane_core::OrgId>().map_err(|e| format!("--org: {e}"))).transpose()?;
            let report = orgplane_server::billing::reconcile_from_config(
                &config,
                org,
                std::sync::Arc::new(orgplane_server::clock::SystemClock),
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
            println!(
                "events retried {} (applied {}); missed provider events recovered {}; subscriptions checked {} (changed {}, skipped without provider API {}); orgs skipped: held by another pass {}, checked recently {}; discovered and applied {}, newly unlinked {}; errors {}",
                report.events_retried,
                report.events_applied,
                report.missed_events_recovered,
                report.subscriptions_checked,
                report.subscriptions_changed,
                report.subscriptions_skipped,
                report.orgs_leased_elsewhere,
                report.orgs_checked_recently,
                report.subscriptions_discovered,
                report.subscriptions_unlinked,
                report.errors
            );
            if report.errors > 0 {
                return Err(format!("{} errors during reconciliation; see the log above", report.errors));
            }
            Ok(())
        }
        Command::Billing { command: BillingCommand::Link { common, provider, subscription, org } } => {
            let config = load(&common)?;
            init_logs(config.log_format);
            let provider = orgplane_core::subscription::Provider::parse(&provider)
                .ok_or_else(|| format!("--provider: `{provider}` is not one of stripe, lemonsqueezy, sandbox"))?;
            let org = org.parse::<orgplane_core::OrgId>().map_err(|e| format!("--org: {e}"))?;
            let sub = orgplane_server::billing::link_from_config(
                &config,
                provider,
                subscription.trim(),
                org,
                std::sync::Arc::new(orgplane_server::clock::SystemClock),
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
            println!(
                "linked {} subscription {} to {}: {} ({}, {} seats)",
                sub.provider.as_str(),
                sub.provider_subscription_id,
                sub.org_id,
                sub.id,
                sub.status.as_str(),
                sub.quantity
            );
            Ok(())
        }
        Command::Doctor { common } => {
            let config = load(&common)?;
            init_logs(config.log_format);
            doctor::run(&config).await
        }
        Command::Plans { command: PlansCommand::Check { common } } => {
            let config = load(&common)?;
            let catalog = config.catalog().map_err(|e| format!("the plan catalog is invalid:\n{e}"))?;
            orgplane_server::preflight::check(&config).map_err(|e| format!("the configuration is invalid: {e:#}"))?;
            for plan in catalog.plans() {
                let features: Vec<&str> = plan.features().collect();
                let limits: Vec<String> = plan.limits().map(|(k, v)| format!("{k} {v}")).collect();
                println!(
                    "{}{} (tier {}): features [{}]; limits [{}]",
                    plan.key(),
                    if plan.is_default() { " (default)" } else { "" },
                    plan.tier(),
                    features.join(", "),
                    limits.join(", ")
                );
            }
            println!("the plan catalog is valid");
            println!("the configuration is valid");
            Ok(())
        }
        Command::Dev { command: DevCommand::Seed { common, orgs, start, batch, ids } } => {
            let config = load(&common)?;
            let store = open_store(&config, true).await.map_err(|e| format!("{e:#}"))?;
            let result = cli::dev::seed(&store, orgs, start, batch, ids.as_deref()).await;
            store.close().await;
            result
        }
        Command::Mirror { command: MirrorCommand::Workos { command: WorkosMirrorCommand::Backfill { common } } } => {
            let config = load(&common)?;
            let Some(workos) = config.mirror.workos.clone() else {
                return Err(
                    "the WorkOS mirror is not configured: set [mirror.workos] api_key in the config file".to_owned()
                );
            };
            let store = open_store(&config, true).await.map_err(|e| format!("{e:#}"))?;
            let clock = std::sync::Arc::new(orgplane_server::clock::SystemClock);
            let mirror = orgplane_server::workos_mirror::WorkosMirror::new(store.clone(), clock, workos)
                .map_err(|e| format!("{e:#}"))?;
            let marked = mirror.backfill().await.map_err(|e| format!("{e:#}"))?;
            let mut synced = 0;
            loop {
                let done = mirror.run_once().await.map_err(|e| format!("{e:#}"))?;
                if done == 0 {
                    break;
                }
                synced += done;
            }
            let pending = store.workos_mirror_pending().await.map_err(|e| e.to_string())?;
            println!("marked {marked} orgs and memberships; {synced} syncs tried; {pending} still pending");
            if pending > 0 {
                let failures = store.workos_mirror_failures(20).await.map_err(|e| e.to_string())?;
                for f in failures {
                    let who = f.user_id.map(|u| format!(" member {u}")).unwrap_or_default();
                    println!("  failing: {}{who}: {}", f.org_id, f.last_error.unwrap_or_default());
                }
                println!("a running server retries them (GET /v1/mirror/workos/failures lists them)");
            }
            Ok(())
        }
        Command::Copy { from, to } => cli::ops::copy(&from, &to).await,
        Command::Backup { common, to } => {
            let config = load(&common)?;
            cli::ops::backup(&config.database_url(), &to).await
        }
        Command::Restore { common, from, force } => {
            let config = load(&common)?;
            if config.database_url.is_none() {
                std::fs::create_dir_all(&config.data_dir)
                    .map_err(|e| format!("creating the data directory {}: {e}", config.data_dir.display()))?;
            }
            cli::ops::restore(&config.database_url(), &from, force).await
        }
        Command::Cleanup { common, dry_run } => {
            let config = load(&common)?;
            config.validate()?;
            let days = config.cleanup.personal_orgs_inactive_days.ok_or(
                "clean-up is off: set [cleanup] personal_orgs_inactive_days (e.g. 365) in the config, or ORGPLANE_CLEANUP_PERSONAL_ORGS_INACTIVE_DAYS",
            )?;
            let store = open_store(&config, true).await.map_err(|e| format!("{e:#}"))?;
            let now = time_now();
            if dry_run {
                let orgs = orgplane_server::cleanup::eligible(&store, days, now).await.map_err(|e| e.to_string())?;
                for org in &orgs {
                    println!("{}  user {}  last seen {}", org.org_id, org.user_id, rfc3339(org.last_seen_at));
                }
                println!(
                    "{} personal orgs of users unseen for {days} days would be deleted (dry run: nothing deleted)",
                    orgs.len()
                );
                return Ok(());
            }
            let mut total = 0;
            loop {
                let batch = config.cleanup.batch_size;
                let deleted =
                    orgplane_server::cleanup::pass(&store, days, batch, now).await.map_err(|e| e.to_string())?;
                for org in &deleted {
                    println!("deleted {}  user {}  last seen {}", org.org_id, org.user_id, rfc3339(org.last_seen_at));
                }
                total += deleted.len();
                if deleted.len() < batch as usize {
                    break;
                }
            }
            println!("{total} abandoned personal orgs deleted");
            Ok(())
        }
        Command::Users { command: UsersCommand::Show { common, email } } => {
            let config = load(&common)?;
            let store = open_store(&config, true).await.map_err(|e| format!("{e:#}"))?;
            let ids = store.users_by_email(&email).await.map_err(|e| e.to_string())?;
            if ids.is_empty() {
                return Err(format!("no user with the e-mail address {}", email.trim()));
            }
            for id in ids {
                let user = store.admin_user(id).await.map_err(|e| e.to_string())?;
                print_user(&user);
            }
            Ok(())
        }
        Command::Users { command: UsersCommand::SetActiveOrg { common, user, org } } => {
            let config = load(&common)?;
            let user = user.parse::<orgplane_core::UserId>().map_err(|e| format!("USER: {e}"))?;
            let org = org.parse::<orgplane_core::OrgId>().map_err(|e| format!("ORG: {e}"))?;
            let store = open_store(&config, true).await.map_err(|e| format!("{e:#}"))?;
            store.user(user).await.map_err(|e| format!("{user}: {e}"))?;
            store.set_active_org(user, org).await.map_err(|e| match e {
                StoreError::Domain(orgplane_core::DomainError::NotFound { .. }) => {
                    format!("{user} is not a member of {org}; `orgplane users show EMAIL` lists their orgs")
                }
                other => other.to_string(),
            })?;
            println!(
                "the active org of {user} is {org} now; running servers show it within cache.entitlements_ttl_ms ({} ms in this config)",
                config.cache.entitlements_ttl_ms
            );
            Ok(())
        }
        Command::Keys { command: KeysCommand::Create { common, name, expires_in, scope } } => {
            let config = load(&common)?;
            let name = orgplane_core::keys::parse_key_name(&name).map_err(|e| format!("--name: {e}"))?;
            let scope = orgplane_core::keys::KeyScope::parse(&scope).map_err(|e| format!("--scope: {e}"))?;
            let now = time_now();
            let expires_at = expires_in
                .as_deref()
                .map(orgplane_core::keys::parse_lifetime)
                .transpose()
                .map_err(|e| format!("--expires-in: {e}"))?
                .map(|lifetime| now + lifetime);
            let store = open_store(&config, true).await.map_err(|e| format!("{e:#}"))?;
            let (key, key_hash) = orgplane_auth::api_key::generate();
            let new = orgplane_store::NewApiKey {
                name,
                prefix: orgplane_auth::api_key::display_prefix(&key),
                key_hash,
                scope,
                expires_at,
            };
            let record = store.create_server_key(&new, &Actor::System, now).await.map_err(|e| e.to_string())?;
            let until = record.expires_at.map(|at| format!(", expires {}", rfc3339(at))).unwrap_or_default();
            eprintln!(
                "created API key {} ({}, scope {}{until}); it is shown once, store it now:",
                record.id, record.name, record.scope
            );
            println!("{key}");
            Ok(())
        }
        Command::Keys { command: KeysCommand::List { common } } => {
            let config = load(&common)?;
            let store = open_store(&config, true).await.map_err(|e| format!("{e:#}"))?;
            let keys = store.api_keys().await.map_err(|e| e.to_string())?;
            if keys.is_empty() {
                println!("no API keys; create one with `orgplane keys create --name NAME`");
                return Ok(());
            }
            let width = keys.iter().map(|k| k.name.chars().count()).max().unwrap_or(0).max("NAME".len());
            println!(
                "{:<30}  {:<width$}  {:<11}  {:<5}  {:<20}  {:<20}  {:<20}  STATUS",
                "ID", "NAME", "PREFIX", "SCOPE", "CREATED", "LAST USED", "EXPIRES"
            );
            let now = time_now();
            for key in keys {
                let status = match (key.revoked_at, key.expires_at) {
                    (Some(at), _) => format!("revoked {}", rfc3339(at)),
                    (None, Some(at)) if at <= now => "expired".to_owned(),
                    _ => "active".to_owned(),
                };
                let or_dash = |at: Option<orgplane_core::Timestamp>| at.map(rfc3339).unwrap_or_else(|| "-".to_owned());
                println!(
                    "{:<30}  {:<width$}  {:<11}  {:<5}  {:<20}  {:<20}  {:<20}  {status}",
                    key.id.to_string(),
                    key.name,
                    key.prefix.as_deref().unwrap_or("-"),
                    key.scope.as_str(),
                    rfc3339(key.created_at),
                    or_dash(key.last_used_at),
                    or_dash(key.expires_at),
                );
            }
            Ok(())
        }
        Command::Keys { command: KeysCommand::Revoke { common, key_id } } => {
            let config = load(&common)?;
            let id = key_id
                .parse::<orgplane_core::ApiKeyId>()
                .map_err(|e| format!("KEY_ID: {e}; pass the key's id (`key_…`) as `orgplane keys list` shows it"))?;
            let store = open_store(&config, true).await.map_err(|e| format!("{e:#}"))?;
            let revocation = store.revoke_api_key(id, &Actor::System, time_now()).await.map_err(|e| match e {
                StoreError::Domain(orgplane_core::DomainError::NotFound { .. }) => {
                    format!("no API key {id}; `orgplane keys list` shows the keys")
                }
                other => other.to_string(),
            })?;
            match revocation {
                Revocation::Revoked(key) => println!(
                    "revoked API key {} ({}); running servers refuse it within cache.entitlements_ttl_ms ({} ms in this config)",
                    key.id, key.name, config.cache.entitlements_ttl_ms
                ),
                Revocation::AlreadyRevoked(key) => println!(
                    "API key {} ({}) was already revoked at {}; nothing changed",
                    key.id,
                    key.name,
                    key.revoked_at.map(rfc3339).unwrap_or_default()
                ),
            }
            Ok(())
        }
    }
}

fn print_user(user: &orgplane_store::AdminUser) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    println!("{}  {}  ({} / {})", user.user.id, or_dash(user.user.email.clone()), user.user.issuer, user.user.subject);
    println!("  active org:   {}", or_dash(user.user.active_org_id.map(|o| o.to_string())));
    println!("  personal org: {}", or_dash(user.personal_org.map(|o| o.to_string())));
    println!("  last seen:    {}", or_dash(user.last_seen_at.map(rfc3339)));
    println!("  created:      {}", rfc3339(user.user.created_at));
    for (membership, org) in &user.memberships {
        println!("  member of {}  {:<8}  {:<6}  {}", org.id, org.kind.as_str(), membership.role, org.name);
    }
}

/// RFC 3339 in UTC, as the API writes timestamps.
fn rfc3339(at: orgplane_core::Timestamp) -> String {
    let at = at.replace_millisecond(0).unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

fn time_now() -> orgplane_core::Timestamp {
    orgplane_core::Timestamp::now_utc()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
