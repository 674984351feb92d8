//! One trusted issuer at run time: its settings and its current keys.
//!
//! Remote keys are fetched lazily, on the first token that needs them, and
//! fetched again when a token names a key the set lacks, when a token's
//! signature fails with the key its `kid` names (the issuer may have put new
//! material under the same `kid`), or when the set is older than
//! [`KEYS_MAX_AGE`] (so that a key the issuer retired stops verifying). Each
//! fetch replaces the whole set. Fetches are single-flight (one at a time
//! per issuer, others wait and reuse the result) and rate limited: at most
//! one per `jwks_refresh_min_interval`, so a flood of tokens with made-up
//! `kid`s cannot hammer the identity provider. A `kid` still unknown because
//! the keys were fetched less than that interval ago is answered with
//! [`AuthError::KeyNotYetFetched`] (retry after the rest of the interval):
//! the issuer may have rotated its keys since. Time is the verifier's clock.
//! This module never reads claims.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use crate::AuthError;
use crate::config::IssuerSettings;
use crate::jwks::{KeyMiss, KeySet, VerifyingKey};
use crate::keys::KeyAlg;
use crate::workos::Directory;

/// Keys fetched longer ago than this are fetched again when next used.
pub(crate) const KEYS_MAX_AGE: Duration = Duration::from_secs(60 * 60);

/// A JWKS document larger than this is refused: real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

enum KeySource {
    /// Fetched over HTTP.
    Remote(reqwest::Url),
    /// Given in-process (the dev issuer); never fetched, never stale.
    Static,
}

/// The keys in use, and when they were fetched (`None`: never, or static).
#[derive(Default)]
struct CurrentKeys {
    set: Arc<KeySet>,
    fetched_at: Option<OffsetDateTime>,
}

/// Bookkeeping of fetches, behind the single-flight lock.
#[derive(Default)]
struct FetchState {
    last_attempt: Option<OffsetDateTime>,
    /// Why the last attempt failed, if it did.
    last_error: Option<String>,
}

pub(crate) struct Issuer {
    pub settings: IssuerSettings,
    /// Where e-mails missing from tokens are read (WorkOS with an API key).
    pub directory: Option<Directory>,
    source: KeySource,
    /// [`KEYS_MAX_AGE`], but for tests.
    max_age: Duration,
    current: RwLock<CurrentKeys>,
    fetch: tokio::sync::Mutex<FetchState>,
}

/// What a fetch needs from the verifier.
pub(crate) struct FetchPolicy<'a> {
    pub http: &'a reqwest::Client,
    pub min_interval: Duration,
    /// The verifier's clock, read once per token.
    pub now: OffsetDateTime,
}

/// How long ago `at` was, as seen at `now` (zero if the clock went back).
pub(crate) fn elapsed(at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    (now - at).try_into().unwrap_or(Duration::ZERO)
}

impl Issuer {
    /// An issuer whose keys are fetched from `jwks_url` when first needed.
    pub fn remote(settings: IssuerSettings, directory: Option<Directory>) -> Self {
        let jwks_url = settings.jwks_url.clone();
        Issuer {
            settings,
            directory,
            source: KeySource::Remote(jwks_url),
            max_age: KEYS_MAX_AGE,
            current: RwLock::default(),
            fetch: tokio::sync::Mutex::default(),
        }
    }

    /// An issuer whose keys are known in-process.
    pub fn with_keys(settings: IssuerSettings, keys: KeySet) -> Self {
        Issuer {
            settings,
            directory: None,
            source: KeySource::Static,
            max_age: KEYS_MAX_AGE,
            current: RwLock::new(CurrentKeys { set: Arc::new(keys), fetched_at: None }),
            fetch: tokio::sync::Mutex::default(),
        }
    }

    fn current(&self) -> (Arc<KeySet>, Option<OffsetDateTime>) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (Arc::clone(&current.set), current.fetched_at)
    }

    /// The key that must verify a token with this `kid` and `alg`.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: KeyAlg,
        policy: &FetchPolicy<'_>,
    ) -> Result<Arc<VerifyingKey>, AuthError> {
        let (keys, fetched_at) = self.current();
        let miss = match keys.find(kid, alg) {
            Ok(key) => {
                if fetched_at.is_some_and(|at| elapsed(at, policy.now) >= self.max_age) {
                    return self.key_after_stale_refresh(kid, alg, key, policy).await;
                }
                return Ok(key);
            }
            Err(miss) => miss,
        };
        let KeySource::Remote(url) = &self.source else {
            return Err(miss_error(miss, kid, alg));
        };
        if miss != KeyMiss::Unknown {
            return Err(miss_error(miss, kid, alg));
        }

        let mut state = self.fetch.lock().await;
        // Another task may have fetched while this one waited for the lock.
        let (keys, _) = self.current();
        match keys.find(kid, alg) {
            Ok(key) => return Ok(key),
            Err(KeyMiss::Unknown) => {}
            Err(miss) => return Err(miss_error(miss, kid, alg)),
        }
        if let Some(wait) = state.last_attempt.and_then(|at| policy.min_interval.checked_sub(elapsed(at, policy.now)))
            && !wait.is_zero()
        {
            // Fetched a moment ago: answer from that, whatever the token claims.
            return Err(match (&state.last_error, kid) {
                (Some(problem), _) => AuthError::JwksUnavailable(problem.clone()),
                // The issuer may have rotated since: the token may be fine.
                (None, Some(kid)) => {
                    AuthError::KeyNotYetFetched { kid: kid.to_owned(), retry_after_secs: whole_secs_up(wait) }
                }
                (None, None) => miss_error(KeyMiss::Unknown, kid, alg),
            });
        }
        self.refresh(&mut state, url, policy).await.map_err(AuthError::JwksUnavailable)?;
        let (keys, _) = self.current();
        keys.find(kid, alg).map_err(|miss| miss_error(miss, kid, alg))
    }

    /// The keys are old: fetch them again if no one else is, so that a key
    /// the issuer retired stops verifying. Failing that, the old keys serve.
    async fn key_after_stale_refresh(
        &self,
        kid: Option<&str>,
        alg: KeyAlg,
        key: Arc<VerifyingKey>,
        policy: &FetchPolicy<'_>,
    ) -> Result<Arc<VerifyingKey>, AuthError> {
        let (KeySource::Remote(url), Ok(mut state)) = (&self.source, self.fetch.try_lock()) else {
            return Ok(key);
        };
        if state.last_attempt.is_some_and(|at| elapsed(at, policy.now) < policy.min_interval)
            || self.refresh(&mut state, url, policy).await.is_err()
        {
            return Ok(key);
        }
        let (keys, _) = self.current();
        keys.find(kid, alg).map_err(|miss| miss_error(miss, kid, alg))
    }

    /// The token's signature failed with `tried`: if the keys may be
    /// fetched again, fetch them and return the key now under that `kid`,
    /// unless it is the same material. The issuer may have replaced the
    /// key's material without changing its `kid`.
    pub async fn key_after_bad_signature(
        &self,
        kid: Option<&str>,
        alg: KeyAlg,
        tried: &VerifyingKey,
        policy: &FetchPolicy<'_>,
    ) -> Option<Arc<VerifyingKey>> {
        let KeySource::Remote(url) = &self.source else { return None };
        let mut state = self.fetch.lock().await;
        let (keys, _) = self.current();
        if let Ok(key) = keys.find(kid, alg)
            && !key.same_material(tried)
        {
            return Some(key); // another task fetched while this one waited
        }
        if state.last_attempt.is_some_and(|at| elapsed(at, policy.now) < policy.min_interval) {
            return None;
        }
        self.refresh(&mut state, url, policy).await.ok()?;
        let (keys, _) = self.current();
        keys.find(kid, alg).ok().filter(|key| !key.same_material(tried))
    }

    /// Fetches the JWKS and installs it; on failure the old keys stay.
    async fn refresh(
        &self,
        state: &mut FetchState,
        url: &reqwest::Url,
        policy: &FetchPolicy<'_>,
    ) -> Result<(), String> {
        state.last_attempt = Some(policy.now);
        match fetch_jwks(policy.http, url).await {
            Ok(set) => {
                tracing::info!(issuer = %self.settings.issuer, keys = set.len(), "fetched the issuer's signing keys");
                state.last_error = None;
                let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
                *current = CurrentKeys { set: Arc::new(set), fetched_at: Some(policy.now) };
                Ok(())
            }
            Err(problem) => {
                tracing::warn!(issuer = %self.settings.issuer, %problem, "could not fetch the issuer's signing keys");
                state.last_error = Some(problem.clone());
                Err(problem)
            }
        }
    }
}

fn miss_error(miss: KeyMiss, kid: Option<&str>, alg: KeyAlg) -> AuthError {
    match miss {
        KeyMiss::Unknown | KeyMiss::Ambiguous => AuthError::UnknownKey { kid: kid.map(str::to_owned) },
        KeyMiss::WrongAlgorithm(key_alg) => AuthError::AlgorithmMismatch {
            alg: alg.as_str().to_owned(),
            kid: kid.unwrap_or_default().to_owned(),
            key_alg: key_alg.key_type(),
        },
    }
}

/// Whole seconds, rounded up, at least one: a `Retry-After`.
fn whole_secs_up(wait: Duration) -> u64 {
    wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1)
}

async fn fetch_jwks(http: &reqwest::Client, url: &reqwest::Url) -> Result<KeySet, String> {
    let jwks = fetch_jwks_document(http, url).await?;
    KeySet::from_jwks(&jwks).map_err(|problem| format!("GET {url}: {problem}"))
}

/// Fetches a JWKS document as JSON, size-limited.
pub(crate) async fn fetch_jwks_document(http: &reqwest::Client, url: &reqwest::Url) -> Result<Value, String> {
    let failed = |e: reqwest::Error| format!("GET {url} failed: {}", error_chain(&e.without_url()));
    let mut response =
        http.get(url.clone()).header(reqwest::header::ACCEPT, "application/json").send().await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(format!("GET {url} answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("GET {url} returned more than {MAX_JWKS_BYTES} bytes, too much for a JWKS"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url} did not return JSON: {e}"))
}

/// An error and its causes, as one line: reqwest's own message alone says
/// "error sending request" without saying that the connection was refused.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::IssuerConfig;
    use crate::keys::SigningKey;

    fn settings(jwks_url: &reqwest::Url) -> IssuerSettings {
        IssuerConfig::new("https://issuer.test", jwks_url.as_str(), vec![]).resolve("test").expect("valid")
    }

    /// Serves `jwks` at `/jwks.json` on 127.0.0.1:0; returns its URL and a fetch counter.
    async fn serve(jwks: Arc<std::sync::Mutex<Value>>) -> (reqwest::Url, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = jwks.lock().expect("lock").clone();
                async move { axum::Json(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (reqwest::Url::parse(&url).expect("url"), hits)
    }

    #[tokio::test]
    async fn old_keys_are_fetched_again_so_a_retired_key_stops_verifying() {
        let retired = SigningKey::generate(KeyAlg::EdDsa, "retired").expect("generate");
        let successor = SigningKey::generate(KeyAlg::EdDsa, "successor").expect("generate");
        let jwks = Arc::new(std::sync::Mutex::new(json!({"keys": [retired.public_jwk()]})));
        let (url, hits) = serve(Arc::clone(&jwks)).await;
        let mut issuer = Issuer::remote(settings(&url), None);
        let http = reqwest::Client::new();
        let policy = FetchPolicy { http: &http, min_interval: Duration::ZERO, now: OffsetDateTime::now_utc() };

        assert!(issuer.key_for(Some("retired"), KeyAlg::EdDsa, &policy).await.is_ok());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        *jwks.lock().expect("lock") = json!({"keys": [successor.public_jwk()]});
        assert!(issuer.key_for(Some("retired"), KeyAlg::EdDsa, &policy).await.is_ok(), "keys still fresh");
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        issuer.max_age = Duration::ZERO; // the keys are now "old"
        let refused = issuer.key_for(Some("retired"), KeyAlg::EdDsa, &policy).await;

        assert_eq!(refused.err(), Some(AuthError::UnknownKey { kid: Some("retired".into()) }));
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn old_keys_still_serve_when_the_refetch_fails() {
        let key = SigningKey::generate(KeyAlg::EdDsa, "k").expect("generate");
        let jwks = Arc::new(std::sync::Mutex::new(json!({"keys": [key.public_jwk()]})));
        let (url, _hits) = serve(Arc::clone(&jwks)).await;
        let mut issuer = Issuer::remote(settings(&url), None);
        let http = reqwest::Client::new();
        let policy = FetchPolicy { http: &http, min_interval: Duration::ZERO, now: OffsetDateTime::now_utc() };
        assert!(issuer.key_for(Some("k"), KeyAlg::EdDsa, &policy).await.is_ok());

        *jwks.lock().expect("lock") = json!({"not": "a jwks"});
        issuer.max_age = Duration::ZERO;

        assert!(issuer.key_for(Some("k"), KeyAlg::EdDsa, &policy).await.is_ok());
    }
}
