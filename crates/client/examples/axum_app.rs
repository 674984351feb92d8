//! An axum app guarded by orgplane: `/orgs/{org}/audit` needs the
//! `audit_log` feature, `POST /orgs/{org}/customers` room under the
//! `customers` limit, and `/webhooks/orgplane` verifies deliveries and hands
//! them to the cache.
//!
//! ```text
//! ORGPLANE_URL=http://127.0.0.1:8080 ORGPLANE_API_KEY=sk_… \
//! ORGPLANE_WEBHOOK_SECRET=whsec_… cargo run -p orgplane-client --example axum_app
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use orgplane_client::{
    CacheOptions, Client, Credentials, EntitlementCache, NewResource, RequireFeature, RequireLimit, verify_webhook,
};

#[derive(Clone)]
struct App {
    orgplane: Client,
    cache: EntitlementCache,
    webhook_secret: String,
}

/// The org of `/orgs/{org}/…`.
fn org_in_path(req: &Request) -> Option<String> {
    let mut segments = req.uri().path().trim_start_matches('/').split('/');
    (segments.next() == Some("orgs")).then(|| segments.next().map(str::to_owned)).flatten()
}

async fn audit(Path(org): Path<String>) -> String {
    format!("the audit log of {org}")
}

async fn create_customer(State(app): State<App>, Path(org): Path<String>) -> (StatusCode, String) {
    // The guard is a fast pre-check; creating the resource holds the limit atomically.
    match app.orgplane.create_resource(&org, &NewResource::of_type("customers")).await {
        Ok(customer) => (StatusCode::CREATED, customer.id),
        Err(e) => (StatusCode::from_u16(e.status().unwrap_or(503)).unwrap_or(StatusCode::BAD_GATEWAY), e.to_string()),
    }
}

async fn webhook(State(app): State<App>, headers: HeaderMap, body: Bytes) -> StatusCode {
    match verify_webhook(&[&app.webhook_secret], &headers, &body) {
        Ok(event) => {
            app.cache.handle_event(&event);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/orgs/{org}/audit", get(audit).route_layer(RequireFeature::new("audit_log", org_in_path)))
        .route("/orgs/{org}/customers", post(create_customer).route_layer(RequireLimit::new("customers", org_in_path)))
        .route("/webhooks/orgplane", post(webhook))
        // The guards find the cache here.
        .layer(axum::Extension(app.cache.clone()))
        .with_state(app)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("ORGPLANE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = std::env::var("ORGPLANE_API_KEY").map_err(|_| "set ORGPLANE_API_KEY to a server key (sk_…)")?;
    let orgplane = Client::new(url, Credentials::ApiKey(key));
    let cache = EntitlementCache::new(orgplane.clone(), CacheOptions::default());
    cache.follow_events();
    let webhook_secret = std::env::var("ORGPLANE_WEBHOOK_SECRET").unwrap_or_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router(App { orgplane, cache, webhook_secret })).await?;
    Ok(())
}
