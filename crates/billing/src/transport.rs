//! HTTP plumbing the REST clients share: building the `reqwest` client,
//! joining ids onto the base URL, sending a request and sorting its outcome
//! into a value or a [`ProviderError`].
//!
//! It must never know a provider's endpoints or JSON beyond the error body
//! reader each client hands in, and never log a request's headers or body
//! (they hold API keys and customer data).

use std::error::Error as _;
use std::time::Duration;

use orgplane_core::subscription::Provider;
use reqwest::{RequestBuilder, Url};
use serde::de::DeserializeOwned;

use crate::error::{ProviderError, provider_name};

/// Reads a provider's error body into `(code, message)`, or `None` when the
/// body is not one.
pub(crate) type ErrorBodyReader = fn(&[u8]) -> Option<(Option<String>, String)>;

pub(crate) fn http_client(provider: Provider, timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("orgplane/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            ProviderError::Config(format!("the HTTP client for {} can't be built: {e}", provider_name(&provider)))
        })
}

/// Parses a configured base URL once, at construction, so that joining ids
/// onto it later can't fail.
pub(crate) fn parse_base(provider: Provider, base: &str) -> Result<Url, ProviderError> {
    let invalid =
        || ProviderError::Config(format!("the {} API base `{base}` is not an http(s) URL", provider_name(&provider)));
    let url = Url::parse(base).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(invalid());
    }
    Ok(url)
}

/// `base` + `segments`, each segment percent-encoded: an id holding `/` or
/// `?` can't reach another endpoint.
pub(crate) fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.path_segments_mut().expect("parse_base refused URLs that can't be a base").pop_if_empty().extend(segments);
    url
}

/// Sends `request`; 2xx bodies become `T`, other statuses [`ProviderError::Api`],
/// transport failures [`ProviderError::Unavailable`].
pub(crate) async fn send<T: DeserializeOwned>(
    provider: Provider,
    request: RequestBuilder,
    read_error: ErrorBodyReader,
) -> Result<T, ProviderError> {
    let response = request.send().await.map_err(|e| unavailable(provider, &e))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| unavailable(provider, &e))?;
    if !status.is_success() {
        let (code, message) = read_error(&body)
            .unwrap_or_else(|| (None, format!("HTTP {} without an error body orgplane can read", status.as_u16())));
        tracing::warn!(provider = provider.as_str(), status = status.as_u16(), code, %message, "payment provider refused a call");
        return Err(ProviderError::Api { provider, status: status.as_u16(), code, message });
    }
    serde_json::from_slice(&body)
        .map_err(|e| ProviderError::InvalidResponse { provider, detail: format!("HTTP {}: {e}", status.as_u16()) })
}

fn unavailable(provider: Provider, err: &reqwest::Error) -> ProviderError {
    // reqwest's own message repeats the whole URL; the causes say what went wrong.
    let mut causes = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let what = if err.is_timeout() { "did not answer in time" } else { "could not be reached" };
    let target = err.url().map(|u| format!(" at {}", u.origin().ascii_serialization())).unwrap_or_default();
    let detail = if causes.is_empty() { String::new() } else { format!(" ({})", causes.join(": ")) };
    tracing::warn!(provider = provider.as_str(), timeout = err.is_timeout(), %detail, "payment provider unavailable");
    ProviderError::Unavailable(format!("{}{target} {what}{detail}; try again later", provider_name(&provider)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        let base = parse_base(Provider::Stripe, "https://api.stripe.com").expect("valid");
        assert_eq!(
            endpoint(&base, &["v1", "subscriptions", "sub_1"]).as_str(),
            "https://api.stripe.com/v1/subscriptions/sub_1"
        );
        let sneaky = endpoint(&base, &["v1", "subscriptions", "../customers?x=1"]);
        assert_eq!(sneaky.path(), "/v1/subscriptions/..%2Fcustomers%3Fx=1");
        let ls = parse_base(Provider::Lemonsqueezy, "https://api.lemonsqueezy.com/v1/").expect("valid");
        assert_eq!(endpoint(&ls, &["subscriptions", "7"]).as_str(), "https://api.lemonsqueezy.com/v1/subscriptions/7");
    }

    #[test]
    fn a_base_that_is_not_http_is_refused() {
        assert!(parse_base(Provider::Stripe, "mailto:a@b.c").is_err());
        assert!(parse_base(Provider::Stripe, "ftp://x").is_err());
        assert!(parse_base(Provider::Stripe, "").is_err());
    }
}
