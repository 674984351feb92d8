//! orgplane's HTTP server: builds the application from a [`Config`], binds
//! it, and serves until told to stop.

pub mod billing;
pub mod cache;
pub mod cleanup;
pub mod clock;
pub mod config;
mod config_error;
pub mod entitlements;
pub mod error;
pub mod extract;
pub mod guards;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod portal;
pub mod preflight;
pub mod routes;
pub mod state;
pub mod unread_body;
pub mod webhook_delivery;
pub mod webhook_retention;
pub mod webhook_worker;
pub mod workos_mirror;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::{delete, get, patch, post, put};
use orgplane_auth::dev::DevIssuer;
use orgplane_auth::{Verifier, VerifierOptions};
use orgplane_core::roles::RoleCatalog;
use orgplane_store::{ConnectOptions, Store};
use tokio::net::TcpListener;

use clock::{Clock, SystemClock};
pub use config::Config;
use error::ApiError;
use routes::billing as billing_routes;
use routes::{
    admin, api_keys, dev, entitlements as ent, events, invitations, me, members, ops, orgs, resources, sandbox,
    webhook_endpoints as whe, webhooks,
};
use state::{AppState, Inner, PrincipalCache};

/// The dev issuer's `iss`: stable, so dev users survive a restart on another port.
pub const DEV_ISSUER: &str = "urn:orgplane:dev";

/// A bound, ready-to-serve orgplane.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutting_down: tokio::sync::watch::Sender<bool>,
}

/// Opens the store named by the config, creating the SQLite data directory
/// when needed, and migrates it if `migrate` is set.
pub async fn open_store(config: &Config, migrate: bool) -> anyhow::Result<Store> {
    let url = config.database_url();
    if url.starts_with("sqlite:") && config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    }
    let options = ConnectOptions {
        url: url.clone(),
        max_connections: config.max_connections,
        acquire_timeout: config.database.acquire_timeout(),
        statement_timeout: config.database.statement_timeout(),
    };
    let store = Store::connect(&options).await.with_context(|| format!("opening the database {}", redact(&url)))?;
    if migrate {
        let applied = store.migrate().await.context("applying migrations")?;
        if !applied.is_empty() {
            tracing::info!(?applied, "migrations applied");
        }
    }
    Ok(store)
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &creds[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Application {
    /// The server on the machine's clock.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Application::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// The server deciding at the time `clock` shows (tests pass a
    /// [`clock::ManualClock`]).
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        preflight::check(&config)?;
        let roles = RoleCatalog::from_config(&config.roles).map_err(anyhow::Error::msg)?;
        let catalog = billing::plan_catalog(&config).map_err(|e| anyhow::anyhow!("plan catalog:\n{e}"))?;
        // Bind first: a taken port is said before the database is touched,
        // and nothing is migrated by a server that can't serve.
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                "; another process listens there: stop it or choose another --listen"
            } else {
                ""
            };
            anyhow::anyhow!("binding {}: {e}{hint}", config.listen)
        })?;
        let store = open_store(&config, config.migrate_on_start).await?;
        let verifier_clock = Arc::clone(&clock);
        let verifier = Verifier::with_clock(
            config.auth.issuers.clone(),
            VerifierOptions {
                jwks_refresh_min_interval: Duration::from_secs(config.auth.jwks_refresh_min_interval_secs),
                leeway_secs: config.auth.leeway_secs,
                cache_capacity: usize::try_from(config.cache.max_entries).unwrap_or(usize::MAX),
                ..VerifierOptions::default()
            },
            Arc::new(move || verifier_clock.now()),
        )
        .map_err(|e| anyhow::anyhow!("auth.issuers: {e}"))?;
        let dev = if config.dev {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
            let dev = DevIssuer::load_or_create(&config.data_dir, DEV_ISSUER.to_owned())
                .map_err(|e| anyhow::anyhow!("dev issuer: {e}"))?;
            // The keys are registered in-process; the JWKS URL only names where
            // this server also publishes them.
            let mut issuer = dev.issuer_config();
            let public_url = match &config.public_url {
                Some(url) => url.trim_end_matches('/').to_owned(),
                None => format!("http://{}", listener.local_addr().context("listener address")?),
            };
            issuer.jwks_url = format!("{public_url}/dev/jwks.json");
            verifier.add_static_issuer(issuer, dev.jwks()).map_err(|e| anyhow::anyhow!("dev issuer: {e}"))?;
            Some(dev)
        } else {
            None
        };
        let cache_ttl = Duration::from_millis(config.cache.entitlements_ttl_ms);
        let cache_entries = config.cache.max_entries;
        let limits = limits::Limits::new(&config.limits);
        let (shutting_down, shutting_down_rx) = tokio::sync::watch::channel(false);
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", listener.local_addr().unwrap_or(config.listen)));
        let billing = billing::Billing::new(&config, store.clone(), catalog.clone(), &base_url, clock.clone())?;
        let portal = portal::PortalSettings::new(&config.portal, &base_url);
        let webhooks = {
            let policy = webhook_delivery::TargetPolicy::from_config(&config.webhooks, config.dev);
            let sender = webhook_delivery::Sender::new(policy, config.webhooks.timeout())?;
            let secrets = webhook_delivery::SecretBox::load(&config.webhooks, &config.data_dir)?;
            webhook_worker::WebhookWorker::new(store.clone(), clock.clone(), config.webhooks.clone(), sender, secrets)
        };
        let workos_mirror = match &config.mirror.workos {
            Some(workos) => Some(workos_mirror::WorkosMirror::new(store.clone(), clock.clone(), workos.clone())?),
            None => None,
        };
        // The billing e-mail follows the org to its Stripe customers (see `billing::email`).
        let billing_email = match &config.billing.stripe.api_key {
            Some(_) => Some(billing::BillingEmailWorker::new(
                store.clone(),
                clock.clone(),
                orgplane_billing::StripeClient::from_config(&config.billing.stripe)?,
                config.billing.stripe.timeout(),
            )),
            None => None,
        };
        let state = AppState::new(Inner {
            store,
            clock,
            verifier,
            config,
            roles,
            catalog,
            entitlements: entitlements::EntitlementsCache::new(cache_entries, cache_ttl),
            dev,
            metrics: Default::default(),
            principals: PrincipalCache::new(cache_entries, cache_ttl),
            me_cache: state::MeCache::new(cache_entries, cache_ttl),
            org_access: state::OrgAccessCache::new(cache_entries, cache_ttl),
            org_keys: keys::OrgKeyCache::new(cache_entries, cache_ttl),
            limits,
            shutting_down: shutting_down_rx.clone(),
            billing,
            openapi: Default::default(),
            portal,
            webhooks,
            workos_mirror,
        });
        let router = router(state.clone());
        {
            let store = state.store.clone();
            tokio::spawn(async move { store.listen_for_changes().await });
        }
        state.billing.spawn_reconciler();
        state.webhooks.spawn(shutting_down_rx.clone());
        if let Some(worker) = billing_email {
            worker.spawn(shutting_down_rx.clone());
        }
        if let Some(mirror) = &state.workos_mirror {
            mirror.spawn(shutting_down_rx);
        }
        spawn_idempotency_sweep(state.store.clone(), state.clock.clone());
        webhook_retention::spawn(state.store.clone(), state.clock.clone(), state.config.webhooks.retention_days);
        cleanup::spawn(state.store.clone(), state.clock.clone(), state.config.cleanup.clone());
        Ok(Application { listener, router, state, shutting_down })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        let shutting_down = self.shutting_down;
        let shutdown = async move {
            shutdown.await;
            // Ends event streams, which would otherwise hold shutdown open.
            let _ = shutting_down.send(true);
        };
        // The peer address keys the rate limit of requests without credentials.
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(self.listener, service).with_graceful_shutdown(shutdown).await.context("serving")?;
        store.close().await;
        Ok(())
    }
}

/// Forgets `Idempotency-Key` records older than a day, at start-up and
/// every hour after.
fn spawn_idempotency_sweep(store: orgplane_store::Store, clock: Arc<dyn Clock>) {
    tokio::spawn(async move {
        let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every_hour.tick().await;
            let before = clock.now() - time::Duration::days(1);
            match store.idempotency_sweep(before).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "idempotency keys older than a day deleted"),
                Err(e) => tracing::warn!(error = %e, "could not delete old idempotency keys; trying again in an hour"),
            }
        }
    });
}

/// Every route, with the middleware stack.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/me", get(me::get_me))
        .route("/v1/me/personal_org", post(me::ensure_personal_org))
        .route("/v1/me/active_org", put(me::set_active_org))
        .route("/v1/orgs", post(orgs::create).get(orgs::list))
        .route("/v1/mirror/workos/failures", get(routes::mirror::workos_failures))
        .route("/v1/orgs/{org}", get(orgs::get).patch(orgs::update).delete(orgs::delete))
        .route("/v1/orgs/{org}/members", get(members::list))
        .route("/v1/orgs/{org}/members/{user}", patch(members::change_role).delete(members::remove))
        .route("/v1/orgs/{org}/invitations", post(invitations::create).get(invitations::list))
        .route("/v1/orgs/{org}/invitations/{inv}", delete(invitations::revoke))
        .route("/v1/orgs/{org}/invitations/{inv}/resend", post(invitations::resend))
        .route("/v1/invitations/accept", post(invitations::accept))
        .route("/v1/invitations/decline", post(invitations::decline))
        .route("/v1/orgs/{org}/events", get(events::list))
        .route("/v1/events/stream", get(events::stream))
        .route("/v1/orgs/{org}/entitlements", get(ent::get))
        .route("/v1/orgs/{org}/check", post(ent::check))
        .route("/v1/orgs/{org}/overrides", put(ent::put_overrides))
        .route("/v1/orgs/{org}/resources", post(resources::create).get(resources::list))
        .route("/v1/orgs/{org}/resources/{res}", delete(resources::delete))
        .route("/v1/orgs/{org}/resources/{res}/grants/{user}", put(resources::grant).delete(resources::revoke))
        .route("/v1/orgs/{org}/resources/{res}/access", get(resources::access))
        .route("/v1/orgs/{org}/subscription", get(billing_routes::get))
        .route("/v1/orgs/{org}/checkout", post(billing_routes::checkout))
        .route("/v1/orgs/{org}/billing_portal", post(billing_routes::billing_portal))
        .route("/v1/orgs/{org}/subscription/cancel", post(billing_routes::cancel))
        .route("/v1/orgs/{org}/subscription/reactivate", post(billing_routes::reactivate))
        .route("/v1/orgs/{org}/subscription/seats", put(billing_routes::set_seats))
        .route("/v1/orgs/{org}/subscription/sync", post(billing_routes::sync))
        .route("/v1/orgs/{org}/subscription/change", post(routes::billing_change::change))
        .route("/v1/orgs/{org}/subscription/change_preview", post(routes::billing_change::change_preview))
        .route("/v1/orgs/{org}/subscription/resume", post(routes::billing_change::resume))
        .route("/v1/orgs/{org}/billing_admin", put(billing_routes::set_billing_admin))
        .route("/v1/billing/events", get(billing_routes::list_events))
        .route("/v1/billing/link", post(routes::billing_link::link))
        .route("/v1/billing/unlinked", get(routes::billing_link::unlinked))
        .route("/v1/billing/email_syncs/failures", get(routes::billing_email::failures))
        .route("/v1/orgs/{org}/invoices", get(crate::routes::invoices::list))
        .route("/v1/portal_sessions", post(portal::session::create))
        .route("/v1/orgs/{org}/portal_session", post(portal::session::create_own))
        .route("/v1/webhook_endpoints", post(whe::create).get(whe::list))
        .route("/v1/webhook_endpoints/{endpoint}", get(whe::get).patch(whe::update).delete(whe::delete))
        .route("/v1/webhook_endpoints/{endpoint}/rotate_secret", post(whe::rotate_secret))
        .route("/v1/webhook_endpoints/{endpoint}/test", post(whe::test))
        .route("/v1/webhook_endpoints/{endpoint}/deliveries", get(whe::deliveries))
        .route("/v1/webhook_endpoints/{endpoint}/replay", post(whe::replay))
        // Keys and administration (issue 11)
        .route("/v1/api_keys", get(api_keys::list_server_keys).post(api_keys::create_server_key))
        .route("/v1/api_keys/verify", post(api_keys::verify))
        .route("/v1/api_keys/{key}", delete(api_keys::revoke_server_key))
        .route("/v1/orgs/{org}/api_keys", post(api_keys::create_org_key).get(api_keys::list_org_keys))
        .route("/v1/orgs/{org}/api_keys/{org_key}", delete(api_keys::revoke_org_key))
        .route("/v1/users", get(admin::find_users))
        .route("/v1/users/{user}", get(admin::get_user).delete(admin::delete_user))
        .route("/v1/users/{user}/active_org", put(admin::set_user_active_org))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::request_timeout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::idempotency))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::limit_rate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::authentication));

    // Providers sign their deliveries; no Authorization header, no
    // Idempotency-Key. A delivery stuck on the database is stopped like any
    // request (503: the provider delivers again).
    let webhook_routes = Router::new()
        .route("/v1/webhooks/stripe", post(webhooks::stripe))
        .route("/v1/webhooks/lemonsqueezy", post(webhooks::lemonsqueezy))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::request_timeout));

    let mut open = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/openapi.json", get(ops::openapi))
        .merge(webhook_routes);
    if state.billing.sandbox_enabled() {
        open = open
            .route("/sandbox/checkout/{id}", get(sandbox::checkout_page))
            .route("/sandbox/checkout/{id}/pay", post(sandbox::pay))
            .route("/sandbox/checkout/{id}/cancel", post(sandbox::cancel))
            .route("/sandbox/portal/{id}", get(sandbox::portal_page));
    }
    if state.config.dev {
        open = open.route("/dev/token", post(dev::token)).route("/dev/jwks.json", get(dev::jwks));
    }

    // Without credentials: rate limited by peer address, or by provider for webhooks.
    let open = open.layer(axum::middleware::from_fn_with_state(state.clone(), limits::limit_rate));

    // The portal's pages: their own session cookie, no Authorization header;
    // rate limited by peer address like other requests without credentials.
    let portal_pages =
        portal::router(state.clone()).layer(axum::middleware::from_fn_with_state(state.clone(), limits::limit_rate));

    Router::new()
        .merge(api)
        .merge(open)
        .merge(portal_pages)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::limit_in_flight))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::request_context))
        .layer(axum::middleware::from_fn(unread_body::close_if_body_unread))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /v1/openapi.json for the API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "this route does not take that method; see /v1/openapi.json",
    )
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "could not listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_never_reach_messages() {
        assert_eq!(redact("postgres://app:secret@db/orgplane"), "postgres://app:***@db/orgplane");
        assert_eq!(redact("postgres://postgres@127.0.0.1/x"), "postgres://postgres@127.0.0.1/x");
        assert_eq!(redact("sqlite://orgplane-data/orgplane.db"), "sqlite://orgplane-data/orgplane.db");
    }
}
