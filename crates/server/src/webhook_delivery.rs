//! Outgoing webhooks, the sending side: the `[webhooks]` config, signing
//! secrets (made, encrypted at rest, decrypted to sign), the Standard
//! Webhooks signature, the target checks (scheme, private addresses — at
//! creation and again against the address actually connected), and one
//! HTTP attempt with its outcome.
//!
//! What is sent when, and by which replica, is `crate::webhook_worker`'s;
//! what is stored is the store's. Nothing here touches the database.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use orgplane_core::WebhookEndpointId;
use orgplane_core::webhooks::forbidden_address;
use serde::{Deserialize, Serialize};

/// `[webhooks]`: outgoing webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Base64 of 32 random bytes: the key that encrypts endpoints' signing
    /// secrets in the database. Unset: a key file `webhook-secrets.key` in
    /// `data_dir`, made on first start. Replicas sharing a database must
    /// share the key (set it here on each).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    /// Accept `http://` endpoint URLs (default: only with `--dev`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
    /// Accept targets on loopback, private, link-local or unspecified
    /// addresses (default: only with `--dev`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_private_targets: Option<bool>,
    /// An attempt without a complete answer after this many seconds failed. 1 to 300.
    pub timeout_secs: u64,
    /// Seconds from a failed attempt to the next (±20% jitter); after the
    /// last entry the delivery is `failed`. 1 to 30 entries, each 1 to 604800.
    pub retry_schedule_secs: Vec<u64>,
    /// An endpoint failing with no success for this long is disabled. 1 to 8784.
    pub disable_after_hours: u64,
    /// Requests in flight at once, over all endpoints (per replica). 1 to 10000.
    pub max_in_flight: u64,
    /// Requests in flight at once to one endpoint. 1 keeps each endpoint's
    /// deliveries in commit order; more trade order for throughput. 1 to 100.
    pub max_in_flight_per_endpoint: u64,
    /// How often the worker looks for work when no local commit woke it
    /// (changes of other replicas on SQLite-less setups, retries coming due). 10 to 60000.
    pub poll_interval_ms: u64,
    /// Succeeded and failed deliveries (with their attempts) unchanged for
    /// this many days are deleted; pending ones never. 1 to 3650.
    pub retention_days: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            secret_key: None,
            allow_http: None,
            allow_private_targets: None,
            timeout_secs: 10,
            retry_schedule_secs: vec![5, 300, 1800, 7200, 18000, 36000, 36000],
            disable_after_hours: 120,
            max_in_flight: 64,
            max_in_flight_per_endpoint: 1,
            poll_interval_ms: 1000,
            retention_days: 30,
        }
    }
}

impl WebhooksConfig {
    /// What the range table can't say: the schedule's entries, the key's form.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.retry_schedule_secs.len();
        if !(1..=30).contains(&n) {
            return Err(format!(
                "webhooks.retry_schedule_secs: {n} entries; give 1 to 30 delays in seconds, e.g. [5, 300, 1800]"
            ));
        }
        if let Some(bad) = self.retry_schedule_secs.iter().find(|s| !(1..=604_800).contains(*s)) {
            return Err(format!(
                "webhooks.retry_schedule_secs: {bad} is out of range; each delay must be 1 to 604800 seconds"
            ));
        }
        if let Some(key) = &self.secret_key {
            decode_key(key).map_err(|e| format!("webhooks.secret_key: {e}"))?;
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let bytes =
        B64.decode(text.trim()).map_err(|_| "not base64; generate one with `openssl rand -base64 32`".to_owned())?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes; the key must be 32 bytes (`openssl rand -base64 32`)", b.len()))
}

/// A signing secret in clear: the bytes after `whsec_`, base64-decoded.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    /// 24 random bytes.
    pub fn generate() -> SigningSecret {
        let mut bytes = vec![0u8; 24];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source works");
        SigningSecret(bytes)
    }

    /// `whsec_…`, as shown to the app once.
    pub fn display(&self) -> String {
        format!("whsec_{}", B64.encode(&self.0))
    }

    /// `v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", B64.encode(ctx.sign().as_ref()))
    }
}

/// Encrypts and decrypts signing secrets for the database: AES-256-GCM
/// with a random nonce (stored first) and the endpoint's id as associated
/// data, so a ciphertext moved to another endpoint's row does not decrypt.
#[derive(Clone)]
pub struct SecretBox {
    key: Arc<LessSafeKey>,
}

impl SecretBox {
    /// The key of `webhooks.secret_key`, or else of the key file in
    /// `data_dir` (made on first start, readable by the owner only).
    pub fn load(config: &WebhooksConfig, data_dir: &Path) -> anyhow::Result<SecretBox> {
        let key = match &config.secret_key {
            Some(text) => decode_key(text).map_err(|e| anyhow::anyhow!("webhooks.secret_key: {e}"))?,
            None => key_file(&data_dir.join("webhook-secrets.key"))?,
        };
        let unbound =
            UnboundKey::new(&AES_256_GCM, &key).map_err(|_| anyhow::anyhow!("webhooks.secret_key: unusable key"))?;
        Ok(SecretBox { key: Arc::new(LessSafeKey::new(unbound)) })
    }

    pub fn seal(&self, endpoint: WebhookEndpointId, secret: &SigningSecret) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system's random source works");
        let mut data = secret.0.clone();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(endpoint.to_string().as_bytes()),
                &mut data,
            )
            .expect("AES-GCM seals any secret of ours");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        out
    }

    /// `None`: not sealed with this key (another key, or changed).
    pub fn open(&self, endpoint: WebhookEndpointId, sealed: &[u8]) -> Option<SigningSecret> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let clear = self.key.open_in_place(nonce, Aad::from(endpoint.to_string().as_bytes()), &mut data).ok()?.to_vec();
        Some(SigningSecret(clear))
    }
}

fn key_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    use anyhow::Context;
    match std::fs::read_to_string(path) {
        Ok(text) => decode_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            aws_lc_rs::rand::fill(&mut key).expect("the system's random source works");
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    use std::io::Write;
                    file.write_all(B64.encode(key).as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    tracing::info!(path = %path.display(), "made the key that encrypts webhook signing secrets; back it up with the database");
                    Ok(key)
                }
                // Another process made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => key_file(path),
                Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Whether the scheme and the target's addresses may be sent to.
#[derive(Debug, Clone, Copy)]
pub struct TargetPolicy {
    pub allow_http: bool,
    pub allow_private: bool,
}

impl TargetPolicy {
    pub fn from_config(config: &WebhooksConfig, dev: bool) -> Self {
        TargetPolicy {
            allow_http: config.allow_http.unwrap_or(dev),
            allow_private: config.allow_private_targets.unwrap_or(dev),
        }
    }

    /// Checks an endpoint URL as given at creation or in a change: its
    /// form, its scheme and (unless private targets are allowed) every
    /// address its host resolves to now. `Err` says what is wrong.
    pub async fn check_url(&self, url: &str) -> Result<(), String> {
        if url.len() > 2048 {
            return Err("the URL is longer than 2048 characters".into());
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(
                    "the URL must be https:// (http:// is accepted only with webhooks.allow_http = true, as --dev sets)"
                        .into(),
                );
            }
            other => return Err(format!("the URL's scheme must be https, not `{other}`")),
        }
        let Some(host) = parsed.host_str() else { return Err("the URL has no host".into()) };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("the URL must not carry a user name or password".into());
        }
        if self.allow_private {
            return Ok(());
        }
        let port = parsed.port_or_known_default().unwrap_or(443);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("the host `{host}` does not resolve ({e})"))?
                .collect(),
        };
        for addr in addrs {
            if let Some(why) = forbidden_address(addr.ip()) {
                return Err(format!(
                    "the host `{host}` resolves to {} ({why}); such targets are refused unless webhooks.allow_private_targets = true",
                    addr.ip()
                ));
            }
        }
        Ok(())
    }
}

/// Resolves host names for deliveries and drops the addresses a target
/// may not have, so that the connection can only go to an allowed one
/// (a name that pointed elsewhere at creation is checked again here: DNS
/// rebinding).
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.iter().copied().filter(|a| forbidden_address(a.ip()).is_none()).collect();
            if allowed.is_empty() {
                let shown = found.first().map(|a| a.ip().to_string()).unwrap_or_default();
                return Err(format!(
                    "refused: `{host}` resolves to {shown}, a private, loopback, link-local or unspecified address (webhooks.allow_private_targets is false)"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP side of deliveries: one client (no redirects, no proxy, the
/// guarded resolver unless private targets are allowed).
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: TargetPolicy,
    timeout: Duration,
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: Option<u16>,
    pub excerpt: Option<String>,
    pub error: Option<String>,
    pub duration: Duration,
}

impl Answer {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// No answer at all (refused, reset, timed out, refused address): the
    /// endpoint is down rather than one event unwelcome.
    pub fn unreachable(&self) -> bool {
        self.status.is_none()
    }
}

/// The most of an answer's body kept in the delivery log.
const EXCERPT_BYTES: usize = 1024;

impl Sender {
    pub fn new(policy: TargetPolicy, timeout: Duration) -> anyhow::Result<Sender> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("orgplane/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30));
        if !policy.allow_private {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        let client = builder.build().map_err(|e| anyhow::anyhow!("webhook HTTP client: {e}"))?;
        Ok(Sender { client, policy, timeout })
    }

    pub fn policy(&self) -> TargetPolicy {
        self.policy
    }

    /// POSTs `body` to `url` with the Standard Webhooks headers, one
    /// signature per secret.
    pub async fn send(&self, url: &str, event_id: &str, body: &[u8], secrets: &[SigningSecret]) -> Answer {
        let started = Instant::now();
        let done =
            |status, excerpt, error: Option<String>| Answer { status, excerpt, error, duration: started.elapsed() };
        // An address in the URL itself never reaches the resolver.
        if !self.policy.allow_private
            && let Ok(parsed) = reqwest::Url::parse(url)
            && let Some(ip) =
                parsed.host_str().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok())
            && let Some(why) = forbidden_address(ip)
        {
            return done(
                None,
                None,
                Some(format!("refused: the target {ip} is {why} (webhooks.allow_private_targets is false)")),
            );
        }
        // Unix seconds of this attempt, on the machine's clock: receivers
        // compare it with theirs.
        let timestamp = orgplane_core::Timestamp::now_utc().unix_timestamp();
        let signature = secrets.iter().map(|s| s.sign(event_id, timestamp, body)).collect::<Vec<_>>().join(" ");
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec());
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return done(None, None, Some(describe(&e, self.timeout))),
        };
        if !self.policy.allow_private
            && let Some(addr) = response.remote_addr()
            && let Some(why) = forbidden_address(addr.ip())
        {
            return done(None, None, Some(format!("refused: connected to {} ({why})", addr.ip())));
        }
        let status = response.status().as_u16();
        let mut excerpt = Vec::new();
        let mut error = None;
        while excerpt.len() < EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk[..chunk.len().min(EXCERPT_BYTES - excerpt.len())]),
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("reading the answer: {}", describe(&e, self.timeout)));
                    break;
                }
            }
        }
        let excerpt = (!excerpt.is_empty()).then(|| String::from_utf8_lossy(&excerpt).into_owned());
        let error = error.or_else(|| {
            (!(200..300).contains(&status)).then(|| {
                if (300..400).contains(&status) {
                    format!("answered {status}; redirects are not followed, register the final URL")
                } else {
                    format!("answered {status}")
                }
            })
        });
        done(Some(status), excerpt, error)
    }
}

/// A reqwest error in a few words, with its cause chain.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s (webhooks.timeout_secs)", timeout.as_secs());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = SigningSecret(B64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("b64"));
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_endpoint_and_key() {
        let config = WebhooksConfig { secret_key: Some(B64.encode([7u8; 32])), ..WebhooksConfig::default() };
        let sealer = SecretBox::load(&config, Path::new("/nonexistent")).expect("key");
        let (a, b) = (WebhookEndpointId::new(), WebhookEndpointId::new());
        let secret = SigningSecret::generate();
        let sealed = sealer.seal(a, &secret);
        assert!(!sealed.windows(secret.0.len()).any(|w| w == secret.0.as_slice()), "not stored in clear");
        assert_eq!(sealer.open(a, &sealed).map(|s| s.0), Some(secret.0.clone()));
        assert!(sealer.open(b, &sealed).is_none(), "bound to its endpoint");
        let other = WebhooksConfig { secret_key: Some(B64.encode([8u8; 32])), ..WebhooksConfig::default() };
        assert!(SecretBox::load(&other, Path::new("/nonexistent")).expect("key").open(a, &sealed).is_none());
        assert!(secret.display().starts_with("whsec_") && secret.display().len() == 6 + 32);
    }

    #[test]
    fn bad_schedules_and_keys_are_named() {
        let with = |schedule: Vec<u64>| WebhooksConfig { retry_schedule_secs: schedule, ..WebhooksConfig::default() };
        assert!(with(vec![]).validate().expect_err("empty").contains("webhooks.retry_schedule_secs"));
        assert!(with(vec![5, 0]).validate().expect_err("zero").contains("webhooks.retry_schedule_secs"));
        assert!(WebhooksConfig::default().validate().is_ok());
        let key = WebhooksConfig { secret_key: Some("c2hvcnQ=".into()), ..WebhooksConfig::default() };
        assert!(key.validate().expect_err("short").contains("webhooks.secret_key"));
    }

    #[tokio::test]
    async fn urls_need_https_and_a_public_address_unless_allowed() {
        let strict = TargetPolicy { allow_http: false, allow_private: false };
        assert!(strict.check_url("http://example.com/hook").await.expect_err("http").contains("https"));
        assert!(strict.check_url("ftp://example.com/").await.is_err());
        assert!(strict.check_url("not a url").await.is_err());
        for private in ["https://127.0.0.1/x", "https://10.0.0.8/x", "https://[::1]:8443/x", "https://169.254.169.254/"]
        {
            let err = strict.check_url(private).await.expect_err(private);
            assert!(err.contains("webhooks.allow_private_targets"), "{err}");
        }
        let dev = TargetPolicy { allow_http: true, allow_private: true };
        assert!(dev.check_url("http://127.0.0.1:9/x").await.is_ok());
    }
}
