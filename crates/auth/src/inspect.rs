//! What can be learnt of an issuer without a token, for `orgplane doctor`:
//! whether its JWKS can be fetched, which of its keys orgplane can use, and
//! which claims it reads. Nothing here is on the request path.

use std::time::Duration;

use serde_json::Value;

use crate::IssuerSettings;
use crate::issuer::fetch_jwks_document;
use crate::jwks::KeySet;

/// An issuer's published keys, as orgplane sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksReport {
    /// Each usable key, e.g. "RS256 `key_1`".
    pub usable: Vec<String>,
    /// Keys in the document that orgplane will not use (other algorithms,
    /// encryption keys, RSA under 2048 bits, malformed).
    pub skipped: usize,
}

/// Fetches the issuer's JWKS once; `Err` says why no token of it could be
/// verified (unreachable, not JSON, no usable key).
pub async fn inspect_jwks(settings: &IssuerSettings, timeout: Duration) -> Result<JwksReport, String> {
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("orgplane/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("could not set up an HTTP client: {e}"))?;
    let document = fetch_jwks_document(&http, &settings.jwks_url).await?;
    let keys = KeySet::from_jwks(&document).map_err(|problem| format!("GET {}: {problem}", settings.jwks_url))?;
    let published = document.get("keys").and_then(Value::as_array).map_or(0, Vec::len);
    let usable: Vec<String> = keys
        .describe()
        .map(|(kid, alg)| match kid {
            Some(kid) => format!("{alg} `{kid}`"),
            None => format!("{alg} (no kid)"),
        })
        .collect();
    Ok(JwksReport { skipped: published.saturating_sub(usable.len()), usable })
}

impl IssuerSettings {
    /// Which claims this issuer's tokens are read from, in one line.
    pub fn claims_summary(&self) -> String {
        let audience = if self.audience.is_empty() {
            "audience not checked".to_owned()
        } else {
            format!("aud ∋ {}", self.audience.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(" or "))
        };
        let assumed = if self.assume_email_verified { "verified" } else { "unverified" };
        let directory = match (&self.directory, self.preset) {
            (Some(_), _) => "; e-mail from WorkOS when the token has none",
            (None, Some(crate::Preset::Workos)) => {
                "; no api_key, so a user's e-mail comes only from a JWT template adding `email`"
            }
            (None, _) => "",
        };
        format!(
            "e-mail `{}`, verified `{}` (absent: {assumed}), name `{}`; {audience}{directory}",
            self.email_claim, self.email_verified_claim, self.name_claim
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::{IssuerConfig, Preset};

    #[test]
    fn the_summary_names_the_claims_the_audience_and_where_the_email_comes_from() {
        let better_auth = IssuerConfig {
            preset: Some(Preset::BetterAuth),
            issuer: "https://app.example.com".into(),
            jwks_url: "https://app.example.com/api/auth/jwks".into(),
            ..IssuerConfig::default()
        };
        assert_eq!(
            better_auth.resolve("x").expect("valid").claims_summary(),
            "e-mail `email`, verified `emailVerified` (absent: unverified), name `name`; aud ∋ `https://app.example.com`"
        );
        let workos = IssuerConfig {
            preset: Some(Preset::Workos),
            client_id: Some("client_1".into()),
            ..IssuerConfig::default()
        };
        let summary = workos.resolve("x").expect("valid").claims_summary();
        assert!(summary.contains("(absent: verified)") && summary.contains("audience not checked"), "{summary}");
        assert!(summary.ends_with("no api_key, so a user's e-mail comes only from a JWT template adding `email`"));
    }
}
