//! What `preset = "…"` means for each identity provider orgplane knows by
//! name: the claims its tokens carry, the audience they are issued for, and
//! whether their e-mail is verified by the provider.
//!
//! This module only holds those facts; [`crate::IssuerConfig::resolve`]
//! applies them under any key the operator set explicitly.

use serde::{Deserialize, Serialize};

/// A known identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Better Auth's `jwt` plugin: the session's user object, so
    /// `emailVerified` in camelCase; `aud` = `iss` = the app's base URL.
    BetterAuth,
    /// WorkOS AuthKit access tokens: no `aud`, and no e-mail unless a JWT
    /// template adds one (then read from the user management API).
    Workos,
    /// Auth0 access tokens for an API: `aud` is the API identifier; e-mail
    /// claims are added by a post-login Action.
    Auth0,
    /// Clerk session tokens: no `aud` (the origin is in `azp`); e-mail claims
    /// are added by customizing the session token.
    Clerk,
    /// Keycloak access tokens with the `email` and `profile` scopes.
    Keycloak,
}

/// Claim names and the e-mail assumption a preset fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PresetDefaults {
    pub email_claim: &'static str,
    pub name_claim: &'static str,
    pub email_verified_claim: &'static str,
    pub assume_email_verified: bool,
}

impl Default for PresetDefaults {
    /// The OIDC standard claims, and nothing assumed: what an issuer
    /// without a preset gets.
    fn default() -> Self {
        PresetDefaults {
            email_claim: "email",
            name_claim: "name",
            email_verified_claim: "email_verified",
            assume_email_verified: false,
        }
    }
}

impl Preset {
    /// The name written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::BetterAuth => "better-auth",
            Preset::Workos => "workos",
            Preset::Auth0 => "auth0",
            Preset::Clerk => "clerk",
            Preset::Keycloak => "keycloak",
        }
    }

    pub(crate) fn defaults(self) -> PresetDefaults {
        let standard = PresetDefaults::default();
        match self {
            Preset::BetterAuth => PresetDefaults { email_verified_claim: "emailVerified", ..standard },
            // AuthKit verifies an address before the user can sign in with it;
            // the user management API's `email_verified` still wins when read.
            Preset::Workos => PresetDefaults { assume_email_verified: true, ..standard },
            Preset::Auth0 | Preset::Clerk | Preset::Keycloak => standard,
        }
    }

    /// The audiences to accept when `audience` is not given, or why it must be.
    pub(crate) fn default_audience(self, issuer: &str) -> Result<Vec<String>, String> {
        match self {
            Preset::BetterAuth => Ok(vec![issuer.to_owned()]),
            Preset::Workos | Preset::Clerk => Ok(Vec::new()),
            Preset::Auth0 => Err("is required with preset \"auth0\": set it to your API's identifier \
                                  (the `audience` your app requests access tokens for)"
                .to_owned()),
            Preset::Keycloak => Err("is required with preset \"keycloak\": set it to the client id that an \
                                     Audience mapper puts in `aud`, or `audience = []` not to check it"
                .to_owned()),
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
