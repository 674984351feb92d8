//! Turning a bearer JWT into an [`Identity`]: pick the issuer from the
//! token's `iss`, the key from the issuer's JWKS, check the signature with
//! the key's own algorithm, then the time and audience claims.
//!
//! This module owns the order of those checks and the mapping of claims to
//! an identity, completed from the issuer's directory (WorkOS) when the
//! token lacks the e-mail. It never trusts a claim before the signature checks out, and
//! never lets the token choose the algorithm: the header's `alg` must match
//! the key, or the token is refused. It knows nothing of users or orgs.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::cache::{TokenCache, TokenDigest};
use crate::config::IssuerSettings;
use crate::issuer::{FetchPolicy, Issuer};
use crate::jwks::KeySet;
use crate::jws::{Jws, numeric_date};
use crate::workos::Directory;
use crate::{AuthError, IssuerConfig};

/// The time the verifier's rate limits and refreshes go by (the server
/// passes its own clock, so that tests can move it).
pub type VerifierClock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `iss`, as configured.
    pub issuer: String,
    /// The token's `sub`: unique and stable within `issuer`.
    pub subject: String,
    /// From the issuer's `email_claim`, if the token has it.
    pub email: Option<String>,
    /// From the issuer's `email_verified_claim` (or `assume_email_verified`);
    /// always false without an e-mail.
    pub email_verified: bool,
    /// From the issuer's `name_claim`, if the token has it.
    pub name: Option<String>,
    /// The token's `exp`, unix seconds.
    pub expires_at: i64,
}

/// Tuning of a [`Verifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierOptions {
    /// At most one JWKS fetch per issuer in this interval, however many
    /// tokens name unknown keys. Keys are also fetched again when more than
    /// an hour old, at the same rate.
    pub jwks_refresh_min_interval: Duration,
    /// Timeout of a whole JWKS fetch.
    pub http_timeout: Duration,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// How many verified tokens to remember at most (0 turns the cache off).
    pub cache_capacity: usize,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        VerifierOptions {
            jwks_refresh_min_interval: Duration::from_secs(5),
            http_timeout: Duration::from_secs(5),
            leeway_secs: 30,
            cache_capacity: 100_000,
        }
    }
}

/// Verifies bearer JWTs from the configured issuers. Cheap to clone: clones
/// share keys and the cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// By every `iss` accepted: a WorkOS issuer is there under each of its shapes.
    issuers: RwLock<HashMap<String, Arc<Issuer>>>,
    clock: VerifierClock,
    http: reqwest::Client,
    options: VerifierOptions,
    leeway: i64,
    cache: TokenCache,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let issuers = self.inner.issuers.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&String> = issuers.keys().collect();
        names.sort();
        f.debug_struct("Verifier").field("issuers", &names).field("options", &self.inner.options).finish()
    }
}

impl Verifier {
    /// A verifier for these issuers, on the machine's clock. Checks their
    /// configuration (entries are named `auth.issuers[i]` in messages);
    /// fetches nothing yet.
    pub fn new(issuers: Vec<IssuerConfig>, options: VerifierOptions) -> Result<Self, String> {
        Verifier::with_clock(issuers, options, Arc::new(OffsetDateTime::now_utc))
    }

    /// As [`Verifier::new`], with JWKS refreshes and WorkOS profile
    /// refreshes timed by `clock` (token expiry stays on the machine's
    /// clock: it is checked against the identity provider's).
    pub fn with_clock(
        issuers: Vec<IssuerConfig>,
        options: VerifierOptions,
        clock: VerifierClock,
    ) -> Result<Self, String> {
        let mut by_iss = HashMap::with_capacity(issuers.len());
        let capacity = u64::try_from(options.cache_capacity).unwrap_or(u64::MAX);
        for (index, config) in issuers.into_iter().enumerate() {
            let at = format!("auth.issuers[{index}]");
            let settings = config.resolve(&at)?;
            if settings.jwks_url.scheme() == "http" && !is_loopback(&settings.jwks_url) {
                tracing::warn!(issuer = %settings.issuer, jwks_url = %settings.jwks_url, "JWKS fetched over plain http: anyone on the path can forge tokens; use https");
            }
            if let Some(taken) = settings.accepted_iss.iter().find(|iss| by_iss.contains_key(*iss)) {
                return Err(format!(
                    "{at} accepts issuer `{taken}`, which another entry accepts too; keep one entry per issuer"
                ));
            }
            let directory = settings.directory.clone().map(|directory| Directory::new(directory, capacity));
            let accepted = settings.accepted_iss.clone();
            let issuer = Arc::new(Issuer::remote(settings, directory));
            for iss in accepted {
                by_iss.insert(iss, Arc::clone(&issuer));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(options.http_timeout)
            .user_agent(concat!("orgplane/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("could not set up the HTTP client that fetches JWKS: {e}"))?;
        Ok(Verifier {
            inner: Arc::new(Inner {
                issuers: RwLock::new(by_iss),
                clock,
                http,
                leeway: i64::try_from(options.leeway_secs).unwrap_or(i64::MAX),
                cache: TokenCache::new(options.cache_capacity),
                options,
            }),
        })
    }

    /// Registers an issuer whose keys are known in-process (the `--dev`
    /// issuer): `jwks` is `{"keys": [...]}`, never fetched over HTTP.
    pub fn add_static_issuer(&self, issuer: IssuerConfig, jwks: Value) -> Result<(), String> {
        let settings = issuer.resolve("static issuer")?;
        let keys =
            KeySet::from_jwks(&jwks).map_err(|problem| format!("static issuer `{}`: {problem}", settings.issuer))?;
        let mut issuers = self.inner.issuers.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(taken) = settings.accepted_iss.iter().find(|iss| issuers.contains_key(*iss)) {
            return Err(format!("issuer `{taken}` is already configured; register it once"));
        }
        let accepted = settings.accepted_iss.clone();
        let issuer = Arc::new(Issuer::with_keys(settings, keys));
        for iss in accepted {
            issuers.insert(iss, Arc::clone(&issuer));
        }
        Ok(())
    }

    /// The identity in a bearer token, or why the token is refused.
    ///
    /// A token verified before (and not yet expired) is answered from the
    /// cache without checking its signature again.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_shared(token).await.map(Arc::unwrap_or_clone)
    }

    /// As [`Verifier::verify`], without copying the identity out of the cache.
    pub async fn verify_shared(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        let now = unix_now();
        let digest = TokenDigest::of(token);
        if let Some(identity) = self.inner.cache.get(&digest, now) {
            return Ok(identity);
        }
        let (identity, complete) = self.verify_at(token, now).await?;
        let identity = Arc::new(identity);
        // An identity the directory could not complete is asked for again next time.
        if complete {
            let valid_until = identity.expires_at.saturating_add(self.inner.leeway);
            self.inner.cache.insert(digest, Arc::clone(&identity), valid_until, now);
        }
        Ok(identity)
    }

    /// Hits, misses and size of the verified-token cache.
    pub fn cache_stats(&self) -> crate::CacheStats {
        self.inner.cache.stats()
    }

    /// Full verification, bypassing the cache (for benchmarks).
    #[doc(hidden)]
    pub async fn verify_uncached(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_at(token, unix_now()).await.map(|(identity, _)| identity)
    }

    /// The identity, and whether it is complete (not waiting on the directory).
    async fn verify_at(&self, token: &str, now: i64) -> Result<(Identity, bool), AuthError> {
        let jws = Jws::parse(token)?;
        let iss = jws.claims.get("iss").and_then(Value::as_str).ok_or(AuthError::WrongIssuer)?;
        let issuer = {
            let issuers = self.inner.issuers.read().unwrap_or_else(PoisonError::into_inner);
            issuers.get(iss).cloned().ok_or_else(|| AuthError::UnknownIssuer(iss.chars().take(200).collect()))?
        };
        let policy = FetchPolicy {
            http: &self.inner.http,
            min_interval: self.inner.options.jwks_refresh_min_interval,
            now: (self.inner.clock)(),
        };
        let (kid, alg) = (jws.kid.as_deref(), jws.alg);
        let key = issuer.key_for(kid, alg, &policy).await?;
        // `key_for` only returns a key of the header's algorithm, so this checks the
        // signature the way the key (not the token) says.
        if !key.verifies(jws.signing_input, &jws.signature) {
            let replaced = issuer.key_after_bad_signature(kid, alg, &key, &policy).await;
            if !replaced.is_some_and(|key| key.verifies(jws.signing_input, &jws.signature)) {
                return Err(AuthError::BadSignature);
            }
        }
        let mut identity = identity_from_claims(&issuer.settings, &jws.claims, now, self.inner.leeway)?;
        let Some(directory) = &issuer.directory else { return Ok((identity, true)) };
        let has_verified_claim = jws.claims.contains_key(&issuer.settings.email_verified_claim);
        if identity.email.is_some() && has_verified_claim {
            return Ok((identity, true));
        }
        let Some(profile) = directory.profile(&self.inner.http, &identity.subject, policy.now).await else {
            return Ok((identity, false));
        };
        identity.email_verified = match &identity.email {
            // The token's own address, verified if the directory says so of that address.
            Some(email) => profile.email.eq_ignore_ascii_case(email) && profile.email_verified,
            None => profile.email_verified,
        };
        identity.email.get_or_insert(profile.email);
        if identity.name.is_none() {
            identity.name = profile.name;
        }
        Ok((identity, true))
    }
}

/// The checks that need a verified token, and the mapping to an [`Identity`].
fn identity_from_claims(
    config: &IssuerSettings,
    claims: &Map<String, Value>,
    now: i64,
    leeway: i64,
) -> Result<Identity, AuthError> {
    let expires_at = claims
        .get("exp")
        .and_then(numeric_date)
        .ok_or(AuthError::Malformed("it has no numeric `exp` claim; orgplane only accepts tokens that expire"))?;
    if now >= expires_at.saturating_add(leeway) {
        return Err(AuthError::Expired { expired_at: expires_at });
    }
    match claims.get("nbf").map(numeric_date) {
        None => {}
        Some(None) => return Err(AuthError::Malformed("its `nbf` claim is not a number")),
        Some(Some(not_before)) if not_before > now.saturating_add(leeway) => {
            return Err(AuthError::NotYetValid { not_before });
        }
        Some(Some(_)) => {}
    }
    if !config.audience.is_empty() {
        let accepted = |aud: &Value| aud.as_str().is_some_and(|aud| config.audience.iter().any(|ok| ok == aud));
        let matches = match claims.get("aud") {
            Some(Value::Array(auds)) => auds.iter().any(accepted),
            Some(aud) => accepted(aud),
            None => false,
        };
        if !matches {
            return Err(AuthError::WrongAudience);
        }
    }
    let subject = match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => sub.to_owned(),
        _ => return Err(AuthError::MissingSubject),
    };
    let text = |claim: &str| claims.get(claim).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let email = text(&config.email_claim);
    let email_verified = match claims.get(&config.email_verified_claim) {
        Some(Value::Bool(verified)) => *verified,
        Some(Value::String(verified)) => verified.eq_ignore_ascii_case("true"),
        Some(_) => false,
        None => config.assume_email_verified,
    };
    Ok(Identity {
        issuer: config.issuer.clone(),
        subject,
        email_verified: email_verified && email.is_some(),
        email,
        name: text(&config.name_claim),
        expires_at,
    })
}

fn unix_now() -> i64 {
    // A clock before 1970 is not a state this service can work in; treat it as 1970.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX))
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("claims are objects"),
        }
    }

    fn config() -> IssuerSettings {
        IssuerConfig::new("https://issuer.example", "https://issuer.example/jwks", vec!["api".into()])
            .resolve("test")
            .expect("valid")
    }

    #[test]
    fn verifier_and_its_futures_can_cross_threads() {
        fn assert_send_sync<T: Send + Sync>(_: &T) {}
        fn assert_send<T: Send>(_: T) {}
        let config = IssuerConfig::new("https://issuer.example", "https://issuer.example/jwks", vec!["api".into()]);
        let verifier = Verifier::new(vec![config], VerifierOptions::default()).expect("valid config");
        assert_send_sync(&verifier);
        assert_send(verifier.verify("token"));
        assert_send(verifier.verify_shared("token"));
    }

    #[test]
    fn email_verified_may_be_a_bool_or_the_string_true() {
        for (value, expected) in
            [(json!(true), true), (json!("true"), true), (json!("false"), false), (json!(1), false)]
        {
            let c = claims(json!({"sub": "u", "exp": 2_000, "aud": "api", "email": "a@b.co", "email_verified": value}));
            assert_eq!(identity_from_claims(&config(), &c, 1_000, 0).map(|id| id.email_verified), Ok(expected));
        }
    }

    #[test]
    fn absent_email_verified_claim_takes_the_issuer_default() {
        let mut config = config();
        let c = claims(json!({"sub": "u", "exp": 2_000, "aud": "api", "email": "a@b.co"}));
        assert_eq!(identity_from_claims(&config, &c, 1_000, 0).map(|id| id.email_verified), Ok(false));
        config.assume_email_verified = true;
        assert_eq!(identity_from_claims(&config, &c, 1_000, 0).map(|id| id.email_verified), Ok(true));
    }

    #[test]
    fn without_email_nothing_is_verified() {
        let mut config = config();
        config.assume_email_verified = true;
        let id = identity_from_claims(&config, &claims(json!({"sub": "u", "exp": 2_000, "aud": "api"})), 1_000, 0);
        assert_eq!(id.map(|id| (id.email, id.email_verified)), Ok((None, false)));
    }

    #[test]
    fn time_claims_honour_the_leeway() {
        let c = claims(json!({"sub": "u", "exp": 1_000, "nbf": 1_030, "aud": "api"}));
        assert!(identity_from_claims(&config(), &c, 999, 30).is_err(), "nbf 31s ahead");
        assert!(identity_from_claims(&config(), &c, 1_000, 30).is_ok(), "nbf 30s ahead, exp 0s ago");
        assert!(identity_from_claims(&config(), &c, 1_029, 30).is_ok(), "exp 29s ago");
        assert_eq!(identity_from_claims(&config(), &c, 1_030, 30), Err(AuthError::Expired { expired_at: 1_000 }));
    }

    #[test]
    fn audience_may_be_a_string_or_an_array_and_is_required_when_configured() {
        let ok = |aud: Value| {
            identity_from_claims(&config(), &claims(json!({"sub": "u", "exp": 2_000, "aud": aud})), 1_000, 0)
        };
        assert!(ok(json!("api")).is_ok());
        assert!(ok(json!(["other", "api"])).is_ok());
        assert_eq!(ok(json!(["other"])), Err(AuthError::WrongAudience));
        assert_eq!(ok(json!(null)), Err(AuthError::WrongAudience));
        let missing = identity_from_claims(&config(), &claims(json!({"sub": "u", "exp": 2_000})), 1_000, 0);
        assert_eq!(missing, Err(AuthError::WrongAudience));
    }

    #[test]
    fn exp_is_required_and_sub_must_be_a_non_empty_string() {
        let c = claims(json!({"sub": "u", "aud": "api"}));
        assert!(matches!(identity_from_claims(&config(), &c, 1_000, 0), Err(AuthError::Malformed(_))));
        for sub in [json!(""), json!(42), json!(null)] {
            let c = claims(json!({"sub": sub, "exp": 2_000, "aud": "api"}));
            assert_eq!(identity_from_claims(&config(), &c, 1_000, 0), Err(AuthError::MissingSubject));
        }
    }
}
