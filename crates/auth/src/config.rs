//! Which identity providers orgplane trusts, as read from `[[auth.issuers]]`.
//!
//! This module owns the shape of an issuer's configuration and its start-up
//! checks. It never fetches anything and never looks at a token.

use serde::{Deserialize, Serialize};

/// One trusted identity provider.
///
/// ```toml
/// [[auth.issuers]]
/// issuer = "https://api.workos.com"
/// jwks_url = "https://api.workos.com/sso/jwks/client_123"
/// audience = []                 # WorkOS access tokens carry no `aud`
/// assume_email_verified = true
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// A misspelt key (say `audiences`) must not silently turn a check off.
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` to accept.
    pub issuer: String,
    /// Where the issuer publishes its signing keys (a JWKS document).
    pub jwks_url: String,
    /// Accept a token whose `aud` (a string or an array) contains any of
    /// these. Empty: the audience is not checked.
    pub audience: Vec<String>,
    /// The claim holding the user's e-mail address.
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    /// The claim holding the user's display name.
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// The claim saying whether the e-mail address was verified (a bool, or
    /// the string `"true"`).
    #[serde(default = "default_email_verified_claim")]
    pub email_verified_claim: String,
    /// What to assume when the token has no `email_verified_claim` (WorkOS
    /// tokens don't carry one).
    #[serde(default)]
    pub assume_email_verified: bool,
}

fn default_email_claim() -> String {
    "email".to_owned()
}

fn default_name_claim() -> String {
    "name".to_owned()
}

fn default_email_verified_claim() -> String {
    "email_verified".to_owned()
}

impl IssuerConfig {
    /// An issuer with the default claim names.
    pub fn new(issuer: impl Into<String>, jwks_url: impl Into<String>, audience: Vec<String>) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            jwks_url: jwks_url.into(),
            audience,
            email_claim: default_email_claim(),
            name_claim: default_name_claim(),
            email_verified_claim: default_email_verified_claim(),
            assume_email_verified: false,
        }
    }

    /// Checks what can be checked without the network. `at` names the entry
    /// in messages, e.g. `auth.issuers[0]`.
    pub(crate) fn validate(&self, at: &str) -> Result<reqwest::Url, String> {
        if self.issuer.trim().is_empty() {
            return Err(format!("{at}.issuer is empty; set it to the exact `iss` of the identity provider's tokens"));
        }
        if self.issuer.trim() != self.issuer {
            return Err(format!(
                "{at}.issuer `{}` has leading or trailing spaces; `iss` is compared exactly, so remove them",
                self.issuer
            ));
        }
        let url = reqwest::Url::parse(&self.jwks_url).map_err(|e| {
            format!(
                "{at}.jwks_url `{}` is not a URL ({e}); set it to the identity provider's JWKS endpoint",
                self.jwks_url
            )
        })?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(format!(
                "{at}.jwks_url `{}` must be an https:// URL (http:// only for a local provider)",
                self.jwks_url
            ));
        }
        if self.audience.iter().any(|aud| aud.trim().is_empty()) {
            return Err(format!(
                "{at}.audience has an empty entry; list the audiences to accept, or `audience = []` not to check it"
            ));
        }
        for (key, claim) in [
            ("email_claim", &self.email_claim),
            ("name_claim", &self.name_claim),
            ("email_verified_claim", &self.email_verified_claim),
        ] {
            if claim.is_empty() {
                return Err(format!("{at}.{key} is empty; name the claim, or leave the key out for the default"));
            }
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Auth {
        issuers: Vec<IssuerConfig>,
    }

    #[test]
    fn toml_issuer_gets_default_claim_names() {
        let auth: Auth = toml::from_str(
            r#"
            [[issuers]]
            issuer = "https://auth.example.com"
            jwks_url = "https://auth.example.com/api/auth/jwks"
            audience = ["https://auth.example.com"]
            "#,
        )
        .expect("valid config");
        let issuer = &auth.issuers[0];
        assert_eq!(issuer.email_claim, "email");
        assert_eq!(issuer.name_claim, "name");
        assert_eq!(issuer.email_verified_claim, "email_verified");
        assert!(!issuer.assume_email_verified);
        assert!(issuer.validate("auth.issuers[0]").is_ok());
    }

    #[test]
    fn misspelt_key_is_refused_rather_than_ignored() {
        let parsed = toml::from_str::<Auth>(
            r#"
            [[issuers]]
            issuer = "https://auth.example.com"
            jwks_url = "https://auth.example.com/jwks"
            audience = []
            audiences = ["x"]
            "#,
        );
        assert!(parsed.is_err());
    }

    #[test]
    fn missing_audience_is_refused_so_that_skipping_the_check_is_explicit() {
        let parsed = toml::from_str::<Auth>(
            r#"
            [[issuers]]
            issuer = "https://auth.example.com"
            jwks_url = "https://auth.example.com/jwks"
            "#,
        );
        assert!(parsed.is_err());
    }

    #[test]
    fn validation_names_the_key_at_fault() {
        let mut config = IssuerConfig::new("", "https://a.example/jwks", vec![]);
        assert!(config.validate("auth.issuers[2]").unwrap_err().starts_with("auth.issuers[2].issuer"));
        config.issuer = "https://a.example".into();
        config.jwks_url = "not a url".into();
        assert!(config.validate("auth.issuers[2]").unwrap_err().starts_with("auth.issuers[2].jwks_url"));
        config.jwks_url = "ftp://a.example/jwks".into();
        assert!(config.validate("auth.issuers[2]").unwrap_err().starts_with("auth.issuers[2].jwks_url"));
        config.jwks_url = "https://a.example/jwks".into();
        config.audience = vec![" ".into()];
        assert!(config.validate("auth.issuers[2]").unwrap_err().starts_with("auth.issuers[2].audience"));
    }
}
