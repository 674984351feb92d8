//! Which identity providers orgplane trusts, as read from `[[auth.issuers]]`.
//!
//! This module owns the shape of an issuer's configuration, its presets and
//! its start-up checks: [`IssuerConfig`] is what the file says, and
//! [`IssuerConfig::resolve`] turns it into [`IssuerSettings`], with every
//! key a preset fills in filled in (a key given explicitly always wins over
//! its preset). It never fetches anything and never looks at a token.

use serde::{Deserialize, Serialize};

use crate::preset::Preset;

/// One trusted identity provider, as written in the config file.
///
/// ```toml
/// [[auth.issuers]]
/// preset = "better-auth"
/// issuer = "https://app.example.com"
/// jwks_url = "https://app.example.com/api/auth/jwks"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
// A misspelt key (say `audiences`) must not silently turn a check off.
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Claim names, audience rule and `assume_email_verified` of a known
    /// provider; explicit keys below still win.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// The exact `iss` to accept, and the name users of this provider are
    /// known by. With `preset = "workos"` it defaults to
    /// `https://api.workos.com`.
    #[serde(default)]
    pub issuer: String,
    /// Where the issuer publishes its signing keys (a JWKS document). With
    /// `preset = "workos"` it defaults to
    /// `https://api.workos.com/sso/jwks/<client_id>`.
    #[serde(default)]
    pub jwks_url: String,
    /// Accept a token whose `aud` (a string or an array) contains any of
    /// these. Empty: the audience is not checked. Required without a preset;
    /// each preset says what it takes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Vec<String>>,
    /// The claim holding the user's e-mail address (default `email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_claim: Option<String>,
    /// The claim holding the user's display name (default `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_claim: Option<String>,
    /// The claim saying whether the e-mail address was verified (a bool, or
    /// the string `"true"`; default `email_verified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified_claim: Option<String>,
    /// What to assume when the token has an e-mail but no
    /// `email_verified_claim` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_email_verified: Option<bool>,
    /// WorkOS: the environment's client id (`client_…`). Required with
    /// `preset = "workos"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// WorkOS: a custom authentication domain, also accepted as `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_domain: Option<String>,
    /// WorkOS: a secret API key (`sk_…`); with it, the e-mail of a user
    /// whose token lacks one is read from WorkOS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// WorkOS: the API's base URL (default `https://api.workos.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
}

/// An issuer's configuration with its preset applied: what the verifier
/// works from, and what `orgplane doctor` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    pub preset: Option<Preset>,
    /// The name users of this issuer are known by (their identity is
    /// `(issuer, sub)`), whichever of [`IssuerSettings::accepted_iss`] their token carries.
    pub issuer: String,
    /// Every `iss` accepted, `issuer` first.
    pub accepted_iss: Vec<String>,
    pub jwks_url: reqwest::Url,
    /// Empty: `aud` is not checked.
    pub audience: Vec<String>,
    pub email_claim: String,
    pub name_claim: String,
    pub email_verified_claim: String,
    pub assume_email_verified: bool,
    /// Where to read a user's e-mail when the token lacks it (WorkOS).
    pub directory: Option<DirectorySettings>,
}

/// How to reach WorkOS's user management API.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectorySettings {
    pub api_base: reqwest::Url,
    pub api_key: String,
}

impl std::fmt::Debug for DirectorySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("DirectorySettings").field("api_base", &self.api_base.as_str()).finish_non_exhaustive()
    }
}

pub(crate) const WORKOS_API: &str = "https://api.workos.com";

impl IssuerConfig {
    /// An issuer with the default claim names, no preset.
    pub fn new(issuer: impl Into<String>, jwks_url: impl Into<String>, audience: Vec<String>) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            jwks_url: jwks_url.into(),
            audience: Some(audience),
            ..Default::default()
        }
    }

    /// Applies the preset and checks what can be checked without the
    /// network. `at` names the entry in messages, e.g. `auth.issuers[0]`.
    pub fn resolve(&self, at: &str) -> Result<IssuerSettings, String> {
        let preset = self.preset;
        let defaults = preset.map(Preset::defaults).unwrap_or_default();
        let workos = preset == Some(Preset::Workos);

        let client_id = match (&self.client_id, workos) {
            (Some(id), true) if is_client_id(id) => Some(id.clone()),
            (Some(id), true) => {
                return Err(format!(
                    "{at}.client_id `{id}` is not a WorkOS client id; copy it (`client_…`) from the WorkOS dashboard's API keys page"
                ));
            }
            (None, true) => {
                return Err(format!(
                    "{at}: preset \"workos\" needs client_id; copy it (`client_…`) from the WorkOS dashboard's API keys page"
                ));
            }
            (None, false) => None,
            (Some(_), false) => return Err(workos_only(at, "client_id")),
        };
        for (key, given) in
            [("auth_domain", &self.auth_domain), ("api_key", &self.api_key), ("api_base", &self.api_base)]
        {
            if given.is_some() && !workos {
                return Err(workos_only(at, key));
            }
        }

        let issuer = match (self.issuer.as_str(), workos) {
            ("", true) => WORKOS_API.to_owned(),
            (issuer, _) => issuer.to_owned(),
        };
        if issuer.trim().is_empty() {
            return Err(format!("{at}.issuer is empty; set it to the exact `iss` of the identity provider's tokens"));
        }
        if issuer.trim() != issuer {
            return Err(format!(
                "{at}.issuer `{issuer}` has leading or trailing spaces; `iss` is compared exactly, so remove them"
            ));
        }
        let mut accepted_iss = vec![issuer.clone()];
        if let Some(client_id) = &client_id {
            // AuthKit's two issuer shapes: older environments, and those made since mid-2025.
            accepted_iss.push(WORKOS_API.to_owned());
            accepted_iss.push(format!("{WORKOS_API}/user_management/{client_id}"));
        }
        if let Some(domain) = &self.auth_domain {
            let url = reqwest::Url::parse(domain).ok().filter(|url| url.scheme() == "https" && url.path() == "/");
            if url.is_none() || domain.ends_with('/') {
                return Err(format!(
                    "{at}.auth_domain `{domain}` must be the https:// origin of your custom authentication domain, e.g. `https://auth.example.com` (no path, no trailing slash)"
                ));
            }
            accepted_iss.push(domain.clone());
        }
        let mut seen = std::collections::HashSet::new();
        accepted_iss.retain(|iss| seen.insert(iss.clone()));

        let jwks_url = match (self.jwks_url.as_str(), &client_id) {
            ("", Some(client_id)) => format!("{WORKOS_API}/sso/jwks/{client_id}"),
            ("", None) => {
                return Err(format!(
                    "`{at}.jwks_url` is required: set it to the identity provider's JWKS endpoint (or use a preset that knows it)"
                ));
            }
            (url, _) => url.to_owned(),
        };
        let jwks_url = reqwest::Url::parse(&jwks_url).map_err(|e| {
            format!("{at}.jwks_url `{jwks_url}` is not a URL ({e}); set it to the identity provider's JWKS endpoint")
        })?;
        if !matches!(jwks_url.scheme(), "https" | "http") {
            return Err(format!(
                "{at}.jwks_url `{jwks_url}` must be an https:// URL (http:// only for a local provider)"
            ));
        }

        let audience = match (&self.audience, preset) {
            (Some(audience), _) => audience.clone(),
            (None, None) => {
                return Err(format!(
                    "{at}.audience is required: list the audiences (`aud`) to accept, or write `audience = []` not to check it"
                ));
            }
            (None, Some(preset)) => preset.default_audience(&issuer).map_err(|why| format!("{at}.audience {why}"))?,
        };
        if audience.iter().any(|aud| aud.trim().is_empty()) {
            return Err(format!(
                "{at}.audience has an empty entry; list the audiences to accept, or `audience = []` not to check it"
            ));
        }

        let claim = |given: &Option<String>, default: &str| given.clone().unwrap_or_else(|| default.to_owned());
        let settings = IssuerSettings {
            preset,
            issuer,
            accepted_iss,
            jwks_url,
            audience,
            email_claim: claim(&self.email_claim, defaults.email_claim),
            name_claim: claim(&self.name_claim, defaults.name_claim),
            email_verified_claim: claim(&self.email_verified_claim, defaults.email_verified_claim),
            assume_email_verified: self.assume_email_verified.unwrap_or(defaults.assume_email_verified),
            directory: self.directory(at)?,
        };
        for (key, claim) in [
            ("email_claim", &settings.email_claim),
            ("name_claim", &settings.name_claim),
            ("email_verified_claim", &settings.email_verified_claim),
        ] {
            if claim.is_empty() {
                return Err(format!("{at}.{key} is empty; name the claim, or leave the key out for the default"));
            }
        }
        Ok(settings)
    }

    fn directory(&self, at: &str) -> Result<Option<DirectorySettings>, String> {
        let Some(api_key) = &self.api_key else {
            return match &self.api_base {
                Some(_) => {
                    Err(format!("{at}.api_base is set without api_key; add the WorkOS API key, or remove api_base"))
                }
                None => Ok(None),
            };
        };
        if api_key.trim().is_empty() || api_key.trim() != api_key {
            return Err(format!(
                "{at}.api_key is empty or has spaces around it; paste the WorkOS secret key (`sk_…`) exactly"
            ));
        }
        let base = self.api_base.as_deref().unwrap_or(WORKOS_API);
        let api_base = reqwest::Url::parse(base)
            .ok()
            .filter(|url| matches!(url.scheme(), "https" | "http") && url.query().is_none())
            .ok_or_else(|| format!("{at}.api_base `{base}` is not an http(s) URL; leave it out for {WORKOS_API}"))?;
        Ok(Some(DirectorySettings { api_base, api_key: api_key.clone() }))
    }
}

fn workos_only(at: &str, key: &str) -> String {
    format!("{at}.{key} only applies to preset = \"workos\"; remove it, or set the preset")
}

/// `client_` followed by letters and digits: safe to put in a URL path.
fn is_client_id(id: &str) -> bool {
    id.strip_prefix("client_").is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Auth {
        issuers: Vec<IssuerConfig>,
    }

    fn parse(toml: &str) -> IssuerConfig {
        let mut auth: Auth = toml::from_str(toml).expect("valid toml");
        auth.issuers.remove(0)
    }

    #[test]
    fn toml_issuer_gets_default_claim_names() {
        let issuer = parse(
            r#"
            [[issuers]]
            issuer = "https://auth.example.com"
            jwks_url = "https://auth.example.com/api/auth/jwks"
            audience = ["https://auth.example.com"]
            "#,
        )
        .resolve("auth.issuers[0]")
        .expect("valid");
        assert_eq!(issuer.email_claim, "email");
        assert_eq!(issuer.name_claim, "name");
        assert_eq!(issuer.email_verified_claim, "email_verified");
        assert!(!issuer.assume_email_verified);
        assert_eq!(issuer.accepted_iss, ["https://auth.example.com"]);
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
    fn missing_audience_without_a_preset_is_refused_so_that_skipping_the_check_is_explicit() {
        let config = parse(
            r#"
            [[issuers]]
            issuer = "https://auth.example.com"
            jwks_url = "https://auth.example.com/jwks"
            "#,
        );
        let refused = config.resolve("auth.issuers[0]").unwrap_err();
        assert!(refused.starts_with("auth.issuers[0].audience is required"), "{refused}");
    }

    #[test]
    fn better_auth_preset_reads_camel_case_email_verified_and_expects_its_own_audience() {
        let settings = parse(
            r#"
            [[issuers]]
            preset = "better-auth"
            issuer = "https://app.example.com"
            jwks_url = "https://app.example.com/api/auth/jwks"
            "#,
        )
        .resolve("auth.issuers[0]")
        .expect("valid");
        assert_eq!(settings.email_verified_claim, "emailVerified");
        assert_eq!(settings.audience, ["https://app.example.com"]);
    }

    #[test]
    fn explicit_keys_win_over_the_preset() {
        let settings = parse(
            r#"
            [[issuers]]
            preset = "better-auth"
            issuer = "https://app.example.com"
            jwks_url = "https://app.example.com/api/auth/jwks"
            audience = []
            email_verified_claim = "verified"
            assume_email_verified = true
            "#,
        )
        .resolve("auth.issuers[0]")
        .expect("valid");
        assert_eq!(settings.email_verified_claim, "verified");
        assert!(settings.audience.is_empty());
        assert!(settings.assume_email_verified);
    }

    #[test]
    fn workos_preset_accepts_both_issuer_shapes_and_the_auth_domain() {
        let settings = parse(
            r#"
            [[issuers]]
            preset = "workos"
            client_id = "client_01ABC"
            auth_domain = "https://auth.example.com"
            api_key = "sk_test_123"
            "#,
        )
        .resolve("auth.issuers[0]")
        .expect("valid");
        assert_eq!(settings.issuer, "https://api.workos.com");
        assert_eq!(
            settings.accepted_iss,
            [
                "https://api.workos.com",
                "https://api.workos.com/user_management/client_01ABC",
                "https://auth.example.com"
            ]
        );
        assert_eq!(settings.jwks_url.as_str(), "https://api.workos.com/sso/jwks/client_01ABC");
        assert!(settings.audience.is_empty());
        assert_eq!(settings.directory.map(|d| d.api_base.to_string()).as_deref(), Some("https://api.workos.com/"));
        assert!(!format!("{:?}", parse_workos_with_key().directory).contains("sk_test"), "the key is never printed");
    }

    fn parse_workos_with_key() -> IssuerSettings {
        IssuerConfig {
            preset: Some(Preset::Workos),
            client_id: Some("client_1".into()),
            api_key: Some("sk_test_secret".into()),
            ..Default::default()
        }
        .resolve("x")
        .expect("valid")
    }

    #[test]
    fn workos_keys_are_refused_without_the_preset_and_the_preset_needs_a_client_id() {
        let mut config = IssuerConfig::new("https://a.example", "https://a.example/jwks", vec![]);
        config.client_id = Some("client_1".into());
        assert!(config.resolve("auth.issuers[1]").unwrap_err().starts_with("auth.issuers[1].client_id only applies"));
        let config = IssuerConfig { preset: Some(Preset::Workos), ..Default::default() };
        assert!(config.resolve("auth.issuers[1]").unwrap_err().contains("needs client_id"));
        let config = IssuerConfig {
            preset: Some(Preset::Workos),
            client_id: Some("client_1/../x".into()),
            ..Default::default()
        };
        assert!(config.resolve("auth.issuers[1]").unwrap_err().starts_with("auth.issuers[1].client_id"));
        let config = IssuerConfig {
            preset: Some(Preset::Workos),
            client_id: Some("client_1".into()),
            auth_domain: Some("https://auth.example.com/path".into()),
            ..Default::default()
        };
        assert!(config.resolve("auth.issuers[1]").unwrap_err().starts_with("auth.issuers[1].auth_domain"));
    }

    #[test]
    fn auth0_preset_needs_the_api_audience() {
        let config = IssuerConfig {
            preset: Some(Preset::Auth0),
            issuer: "https://tenant.eu.auth0.com/".into(),
            jwks_url: "https://tenant.eu.auth0.com/.well-known/jwks.json".into(),
            ..Default::default()
        };
        assert!(config.resolve("auth.issuers[0]").unwrap_err().starts_with("auth.issuers[0].audience"));
    }

    #[test]
    fn validation_names_the_key_at_fault() {
        let mut config = IssuerConfig::new("", "https://a.example/jwks", vec![]);
        assert!(config.resolve("auth.issuers[2]").unwrap_err().starts_with("auth.issuers[2].issuer"));
        config.issuer = "https://a.example".into();
        config.jwks_url = "not a url".into();
        assert!(config.resolve("auth.issuers[2]").unwrap_err().starts_with("auth.issuers[2].jwks_url"));
        config.jwks_url = "ftp://a.example/jwks".into();
        assert!(config.resolve("auth.issuers[2]").unwrap_err().starts_with("auth.issuers[2].jwks_url"));
        config.jwks_url = "https://a.example/jwks".into();
        config.audience = Some(vec![" ".into()]);
        assert!(config.resolve("auth.issuers[2]").unwrap_err().starts_with("auth.issuers[2].audience"));
    }
}
