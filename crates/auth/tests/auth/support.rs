//! A real JWKS endpoint on 127.0.0.1:0 that counts its requests, real keys,
//! and tokens built from them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use orgplane_auth::keys::{KeyAlg, SigningKey};
use orgplane_auth::{IssuerConfig, Verifier, VerifierOptions};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "https://api.orgplane.test";

#[derive(Clone)]
struct ServerState {
    jwks: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

/// Serves `GET /jwks.json` with whatever JWKS it was last given.
pub struct JwksServer {
    pub jwks_url: String,
    state: ServerState,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(jwks: Value) -> Self {
        let state = ServerState { jwks: Arc::new(Mutex::new(jwks)), hits: Arc::new(AtomicUsize::new(0)) };
        let app = axum::Router::new()
            .route("/jwks.json", get(serve_jwks))
            .route("/broken", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "down for maintenance") }))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        JwksServer { jwks_url: format!("http://{addr}/jwks.json"), state, task }
    }

    /// Replaces the published keys (a key rotation).
    pub fn publish(&self, jwks: Value) {
        *self.state.jwks.lock().expect("lock") = jwks;
    }

    /// How many times the JWKS was fetched.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn url_of(&self, path: &str) -> String {
        self.jwks_url.replace("/jwks.json", path)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_jwks(State(state): State<ServerState>) -> Json<Value> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    Json(state.jwks.lock().expect("lock").clone())
}

/// One key per algorithm, generated once for all tests (RSA generation is slow).
pub fn key(alg: KeyAlg) -> &'static SigningKey {
    static RSA: OnceLock<SigningKey> = OnceLock::new();
    static EC: OnceLock<SigningKey> = OnceLock::new();
    static ED: OnceLock<SigningKey> = OnceLock::new();
    let (cell, kid) = match alg {
        KeyAlg::Rs256 => (&RSA, "rsa-1"),
        KeyAlg::Es256 => (&EC, "ec-1"),
        KeyAlg::EdDsa => (&ED, "ed-1"),
    };
    cell.get_or_init(|| SigningKey::generate(alg, kid).expect("generate key"))
}

pub fn jwks_of(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|key| key.public_jwk()).collect::<Vec<_>>() })
}

/// All three test keys.
pub fn all_keys_jwks() -> Value {
    jwks_of(&[key(KeyAlg::Rs256), key(KeyAlg::Es256), key(KeyAlg::EdDsa)])
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() as i64
}

/// Valid claims for [`ISSUER`] and [`AUDIENCE`], expiring in five minutes.
pub fn claims(sub: &str) -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "sub": sub,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "email": format!("{sub}@example.com"),
        "email_verified": true,
        "name": "Ada Lovelace",
    })
}

pub fn issuer_config(jwks_url: &str) -> IssuerConfig {
    IssuerConfig::new(ISSUER, jwks_url, vec![AUDIENCE.to_owned()])
}

/// Options for tests: no refetch limit unless a test sets one.
pub fn options() -> VerifierOptions {
    VerifierOptions { jwks_refresh_min_interval: Duration::ZERO, ..VerifierOptions::default() }
}

pub fn verifier(server: &JwksServer, options: VerifierOptions) -> Verifier {
    Verifier::new(vec![issuer_config(&server.jwks_url)], options).expect("valid config")
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with any header and signature, for tokens a real key would not sign.
pub fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!("{}.{}.{}", b64(header.to_string()), b64(claims.to_string()), b64(signature))
}
