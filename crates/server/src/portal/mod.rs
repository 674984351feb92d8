//! The hosted portal: organization pages an app links to (issue 9).
//!
//! An app's backend mints a short-lived, single-use link for a member and an
//! org (`POST /v1/portal_sessions` with an API key, or `POST
//! /v1/orgs/{org}/portal_session` with the member's JWT, see [`session`]).
//! Opening it sets an `HttpOnly`, `SameSite=Lax` cookie bound to that
//! member and org, stored server-side (`orgplane_store::portal_sessions`),
//! and the pages under `/portal/orgs/{org}/…` ([`pages`]) manage the org.
//!
//! What this module must never do: decide a rule. Every page reads and every
//! action writes through the JSON API's own handler functions
//! (`crate::routes::*`), called with an [`crate::extract::OrgCtx`] built
//! from the session, so the portal and the API can't disagree about who may
//! do what. This module owns only sessions, CSRF, headers and HTML.
//!
//! Security: every state-changing request carries the session's CSRF token
//! (a form field or the `X-CSRF-Token` header htmx sends) and is refused on
//! a foreign `Origin`; responses carry a strict `Content-Security-Policy`
//! (scripts and styles from this server only, no inline script) and
//! `X-Frame-Options: DENY` unless `portal.frame_ancestors` names the app's
//! origins; all text is escaped by [`html::Html`].

pub mod api_keys;
pub mod html;
pub mod pages;
pub mod session;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::state::AppState;
use html::Html;

/// `[portal]` of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    /// The app's name, shown in every page's header and title.
    pub app_name: String,
    /// An absolute URL of the app's logo (its origin is allowed as an image source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    /// `#rrggbb` for links, buttons and focus rings; white text on it must
    /// keep a contrast of 4.5:1 or more (checked at start-up).
    pub accent_color: String,
    /// Origins (`https://app.example`) a `return_url` may point to. A
    /// `return_url` elsewhere is refused with 422; with an empty list, every
    /// `return_url` is.
    pub return_url_allowlist: Vec<String>,
    /// Origins allowed to frame the portal (`frame-ancestors`). Empty: no
    /// framing (`X-Frame-Options: DENY`).
    pub frame_ancestors: Vec<String>,
    /// A session unused this long is over (default one hour).
    pub idle_timeout_secs: u32,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            app_name: "orgplane".into(),
            logo_url: None,
            accent_color: "#0b57d0".into(),
            return_url_allowlist: Vec::new(),
            frame_ancestors: Vec::new(),
            idle_timeout_secs: 3600,
        }
    }
}

/// How long a minted link can be opened.
pub const LINK_TTL: time::Duration = time::Duration::minutes(5);

impl PortalConfig {
    /// What types can't say, naming the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.app_name.trim().is_empty() || self.app_name.chars().count() > 80 {
            return Err("portal.app_name: must be 1 to 80 characters".into());
        }
        let ratio = contrast_with_white(&self.accent_color).ok_or_else(|| {
            format!("portal.accent_color: `{}` is not a colour; write it as #rrggbb", self.accent_color)
        })?;
        if ratio < 4.5 {
            return Err(format!(
                "portal.accent_color: white text on `{}` has a contrast of {ratio:.2}:1, below the 4.5:1 that keeps it readable; pick a darker colour",
                self.accent_color
            ));
        }
        if let Some(logo) = &self.logo_url {
            origin_of(logo).ok_or_else(|| format!("portal.logo_url: `{logo}` is not an absolute http(s) URL"))?;
        }
        for (key, list) in
            [("return_url_allowlist", &self.return_url_allowlist), ("frame_ancestors", &self.frame_ancestors)]
        {
            for entry in list {
                match origin_of(entry) {
                    Some(origin) if origin == entry.trim_end_matches('/') => {}
                    _ => {
                        return Err(format!(
                            "portal.{key}: `{entry}` is not an origin; write scheme, host and port only, e.g. https://app.example"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// `Err(message)` unless `url` is an absolute http(s) URL on an allowed origin.
    pub fn check_return_url(&self, url: &str) -> Result<(), String> {
        let Some(origin) = origin_of(url) else {
            return Err("return_url must be an absolute http(s) URL".into());
        };
        if url.len() > 2048 {
            return Err("return_url must be at most 2048 characters".into());
        }
        if self.return_url_allowlist.iter().any(|allowed| allowed.trim_end_matches('/') == origin) {
            Ok(())
        } else if self.return_url_allowlist.is_empty() {
            Err(format!(
                "return_url {origin} is not allowed: portal.return_url_allowlist is empty; add your app's origin to it"
            ))
        } else {
            Err(format!(
                "return_url {origin} is not in portal.return_url_allowlist ({}); use one of those origins",
                self.return_url_allowlist.join(", ")
            ))
        }
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL, lower-cased.
pub fn origin_of(url: &str) -> Option<String> {
    let uri = url.parse::<axum::http::Uri>().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    Some(format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()))
}

/// WCAG contrast ratio of white on `#rrggbb`.
fn contrast_with_white(color: &str) -> Option<f64> {
    let hex = color.strip_prefix('#').filter(|h| h.len() == 6 && h.bytes().all(|b| b.is_ascii_hexdigit()))?;
    let channel = |i: usize| {
        let v = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).ok()?) / 255.0;
        Some(if v <= 0.03928 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) })
    };
    let luminance = 0.2126 * channel(0)? + 0.7152 * channel(2)? + 0.0722 * channel(4)?;
    Some(1.05 / (luminance + 0.05))
}

/// What the portal computes once at start-up.
pub struct PortalSettings {
    /// `scheme://host[:port]` of the server's public URL: the only `Origin`
    /// a state-changing request may come from.
    pub origin: String,
    /// The public URL without a trailing slash, for links.
    pub public_url: String,
    /// Whether the session cookie is `Secure` (unless the public URL is
    /// plain http on a loopback address).
    pub secure_cookie: bool,
    csp: HeaderValue,
    frame_options: Option<HeaderValue>,
    css: Vec<u8>,
}

const HTMX: &[u8] = include_bytes!("assets/htmx.min.js");
const CSS: &str = include_str!("assets/portal.css");

impl PortalSettings {
    pub fn new(config: &PortalConfig, public_url: &str) -> PortalSettings {
        let public_url = public_url.trim_end_matches('/').to_owned();
        let origin = origin_of(&public_url).unwrap_or_else(|| public_url.clone());
        let loopback_http = origin.starts_with("http://") && {
            let host = origin.trim_start_matches("http://");
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            host == "localhost"
                || host
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        if !loopback_http && origin.starts_with("http://") {
            tracing::warn!(
                public_url = %public_url,
                "portal: the public URL is plain http on a non-loopback host; browsers won't send the portal's Secure cookie back. Serve it over https"
            );
        }
        let mut img = String::from("'self' data:");
        if let Some(logo) = config.logo_url.as_deref().and_then(origin_of) {
            img.push(' ');
            img.push_str(&logo);
        }
        let frame = if config.frame_ancestors.is_empty() {
            "'none'".to_owned()
        } else {
            config.frame_ancestors.iter().map(|o| o.trim_end_matches('/')).collect::<Vec<_>>().join(" ")
        };
        // Checkout and the providers' customer portals are reached by a form
        // POST answered with a redirect, which `form-action` also governs.
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src {img}; connect-src 'self'; \
             form-action 'self' https://checkout.stripe.com https://billing.stripe.com https://*.lemonsqueezy.com; \
             frame-ancestors {frame}; base-uri 'none'"
        );
        PortalSettings {
            origin,
            public_url,
            secure_cookie: !loopback_http,
            csp: HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
            frame_options: config.frame_ancestors.is_empty().then(|| HeaderValue::from_static("DENY")),
            css: CSS.replace("__ACCENT__", &config.accent_color).into_bytes(),
        }
    }
}

/// The portal's routes: the pages, the link, log-out and the assets. The
/// two JSON routes that mint links live with the API (`crate::router`).
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/portal/link/{token}", get(session::open_link))
        .route("/portal/logout", post(session::logout))
        .route("/portal/orgs/{org}", get(pages::overview))
        .route("/portal/orgs/{org}/members", get(pages::members).post(pages::members_action))
        .route("/portal/orgs/{org}/invitations", get(pages::invitations).post(pages::invitations_action))
        .route("/portal/orgs/{org}/billing", get(pages::billing).post(pages::billing_action))
        .route("/portal/orgs/{org}/api_keys", get(api_keys::api_keys).post(api_keys::api_keys_action))
        .route("/portal/orgs/{org}/audit", get(pages::audit))
        .route("/portal/orgs/{org}/settings", get(pages::settings).post(pages::settings_action))
        .route("/portal/assets/htmx.min.js", get(htmx))
        .route("/portal/assets/portal.css", get(css))
        .fallback(portal_not_found)
        .layer(axum::middleware::from_fn_with_state(state, security_headers))
}

async fn portal_not_found() -> Response {
    PageError::not_found().into_response()
}

/// The headers every portal response carries.
async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, state.portal.csp.clone());
    if let Some(deny) = &state.portal.frame_options {
        headers.insert(header::X_FRAME_OPTIONS, deny.clone());
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn htmx() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
        ],
        HTMX,
    )
        .into_response()
}

async fn css(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        state.portal.css.clone(),
    )
        .into_response()
}

/// A page that stands alone: an error, a used link, a signed-out session.
/// Carries the way back to the app when it is known.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
    pub return_url: Option<String>,
    pub app_name: Option<String>,
}

impl PageError {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        PageError { status, title, message: message.into(), return_url: None, app_name: None }
    }

    pub fn not_found() -> Self {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Page not found",
            "There is no such page, or it belongs to an organization this session can't see.",
        )
    }

    pub fn with_return(mut self, url: Option<String>, app_name: &str) -> Self {
        self.return_url = url;
        self.app_name = Some(app_name.to_owned());
        self
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let mut h = Html::new();
        h.raw("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">")
            .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
            .wrap("<title>", self.title, "</title>")
            .raw("<link rel=\"stylesheet\" href=\"/portal/assets/portal.css\"></head><body>")
            .raw("<main id=\"main\"><section class=\"card\">")
            .wrap("<h1>", self.title, "</h1>")
            .wrap("<p>", &self.message, "</p>");
        if let Some(url) = &self.return_url {
            h.raw("<p><a class=\"button\" id=\"return\" href=\"").text(url).raw("\">Back to ");
            h.text(self.app_name.as_deref().unwrap_or("the app")).raw("</a></p>");
        } else {
            h.raw("<p class=\"muted\">Open the organization's settings from the app again to get a new link.</p>");
        }
        h.raw("</section></main></body></html>");
        (self.status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], h.into_string()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_accent_is_readable_and_a_pale_one_is_refused() {
        PortalConfig::default().validate().expect("the default config is valid");
        let pale = PortalConfig { accent_color: "#7fb3ff".into(), ..PortalConfig::default() };
        let err = pale.validate().expect_err("too pale");
        assert!(err.contains("portal.accent_color") && err.contains("4.5:1"), "{err}");
        let black = contrast_with_white("#000000").expect("a colour");
        assert!((black - 21.0).abs() < 0.01, "{black}");
    }

    #[test]
    fn return_urls_must_be_on_an_allowed_origin() {
        let config = PortalConfig {
            return_url_allowlist: vec!["https://app.example".into(), "http://localhost:3000".into()],
            ..PortalConfig::default()
        };
        config.validate().expect("valid");
        config.check_return_url("https://app.example/settings?x=1").expect("allowed");
        config.check_return_url("http://localhost:3000/").expect("allowed");
        for bad in [
            "https://evil.example/",
            "https://app.example.evil.example/",
            "http://app.example/",
            "javascript:alert(1)",
            "https://user@app.example/",
            "/relative",
        ] {
            assert!(config.check_return_url(bad).is_err(), "{bad}");
        }
        let empty = PortalConfig::default();
        assert!(empty.check_return_url("https://app.example/").unwrap_err().contains("empty"));
    }

    #[test]
    fn allowlist_entries_must_be_origins() {
        let config =
            PortalConfig { return_url_allowlist: vec!["https://app.example/path".into()], ..PortalConfig::default() };
        assert!(config.validate().unwrap_err().contains("portal.return_url_allowlist"));
    }

    #[test]
    fn the_cookie_is_secure_except_on_plain_http_loopback() {
        let config = PortalConfig::default();
        assert!(!PortalSettings::new(&config, "http://127.0.0.1:8080").secure_cookie);
        assert!(!PortalSettings::new(&config, "http://localhost:8080/").secure_cookie);
        assert!(PortalSettings::new(&config, "https://orgs.example").secure_cookie);
        assert!(PortalSettings::new(&config, "http://10.0.0.5:8080").secure_cookie);
    }
}
