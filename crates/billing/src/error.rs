//! The billing crate's three error types, one per job: a webhook whose
//! signature doesn't hold ([`SignatureError`]), a verified webhook whose body
//! can't be normalized ([`ParseError`]), and a REST call that failed
//! ([`ProviderError`]).
//!
//! Messages are sentences an operator can act on. They never include a
//! secret, an API key or a whole request body.

use orgplane_core::subscription::Provider;

/// Why a webhook's signature was refused. The server answers 400 to each of
/// these and does not store the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no webhook signing secret is configured; set the provider's webhook secret before accepting webhooks")]
    NoSecretConfigured,
    #[error("the signature header is missing or empty")]
    MissingHeader,
    #[error("the Stripe-Signature header has no valid `t=` timestamp")]
    MissingTimestamp,
    #[error("the Stripe-Signature header carries no v1 signature (only the v1 scheme is accepted)")]
    NoV1Signature,
    #[error("no v1 signature matched any configured webhook secret; check the endpoint's signing secret")]
    NoMatch,
    #[error(
        "the signature timestamp is {age_secs} s away from now, outside the {tolerance_secs} s tolerance; \
         the event is a replay or the server's clock is off"
    )]
    OutsideTolerance { age_secs: i64, tolerance_secs: u64 },
    #[error("the X-Signature header is not a hex HMAC-SHA256 digest")]
    NotHex,
    #[error("the X-Signature does not match the webhook signing secret; check the webhook's signing secret")]
    Mismatch,
}

/// Why a verified webhook body could not be turned into a [`crate::BillingEvent`].
/// The server keeps the raw event and shows it as failed: nothing is lost.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the {} payload is not the JSON orgplane expects: {source}", provider_name(.provider))]
    Json {
        provider: Provider,
        #[source]
        source: serde_json::Error,
    },
    #[error("the {} payload has no `{field}`, so it can't be applied", provider_name(.provider))]
    MissingField { provider: Provider, field: &'static str },
    #[error("the {} payload's `{field}` is `{value}`, which is not {expected}", provider_name(.provider))]
    InvalidField { provider: Provider, field: &'static str, value: String, expected: &'static str },
}

/// Why a call to a payment provider's REST API failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered and refused (4xx) or failed (5xx) the request.
    #[error("{} refused the request (HTTP {status}{}): {message}", provider_name(.provider), code_suffix(.code))]
    Api { provider: Provider, status: u16, code: Option<String>, message: String },
    /// The provider could not be reached, or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// The provider answered 2xx with a body orgplane can't read.
    #[error("{} answered with a body orgplane can't read: {detail}", provider_name(.provider))]
    InvalidResponse { provider: Provider, detail: String },
    /// The request can't be sent as asked (e.g. a Lemon Squeezy variant id that is not a number).
    #[error("{0}")]
    InvalidRequest(String),
    /// The client can't be built from its configuration.
    #[error("{0}")]
    Config(String),
}

/// The provider's name as people write it.
pub(crate) fn provider_name(provider: &Provider) -> &'static str {
    match provider {
        Provider::Stripe => "Stripe",
        Provider::Lemonsqueezy => "Lemon Squeezy",
        Provider::Sandbox => "Sandbox",
    }
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_deref().map(|c| format!(", {c}")).unwrap_or_default()
}

impl ProviderError {
    /// Worth trying again later: the provider was unreachable, rate limited
    /// the call, or failed on its side.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Unavailable(_) => true,
            ProviderError::Api { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
