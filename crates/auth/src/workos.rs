//! The e-mail address of a WorkOS user whose access token carries none.
//!
//! AuthKit access tokens name the user (`sub` = `user_…`) but carry no
//! e-mail unless a JWT template adds one. With `preset = "workos"` and an
//! `api_key`, the verifier asks WorkOS (`GET /user_management/users/{sub}`)
//! for the address and whether it is verified, and remembers the answer:
//! once per user, then again after [`PROFILE_REFRESH`], one request at a
//! time per user. A failure of WorkOS never refuses a token: the caller is
//! signed in without an e-mail (or with the last one read), and the lookup
//! is tried again after [`RETRY_AFTER_FAILURE`]. This module owns WorkOS's
//! user JSON; it never logs the API key.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use crate::config::DirectorySettings;

/// A user's profile is read again when older than this.
pub(crate) const PROFILE_REFRESH: Duration = Duration::from_secs(60 * 60);

/// After a failed lookup, the next one for that user waits this long.
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// A user object larger than this is refused: real ones are under 2 KiB.
const MAX_USER_BYTES: usize = 64 * 1024;

/// What WorkOS says about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    pub email: String,
    pub email_verified: bool,
    pub name: Option<String>,
}

#[derive(Default)]
struct Slot {
    profile: Option<Profile>,
    fetched_at: Option<OffsetDateTime>,
    failed_at: Option<OffsetDateTime>,
}

pub(crate) struct Directory {
    settings: DirectorySettings,
    /// Per user: the last profile read, behind a lock that makes lookups
    /// single-flight. Bounded; an evicted user costs one more lookup.
    slots: moka::sync::Cache<String, Arc<tokio::sync::Mutex<Slot>>>,
}

impl Directory {
    pub fn new(settings: DirectorySettings, capacity: u64) -> Self {
        Directory { settings, slots: moka::sync::Cache::new(capacity.max(1)) }
    }

    /// The user's profile as last read, read again when missing or old.
    /// `None`: WorkOS has not answered for this user yet.
    pub async fn profile(&self, http: &reqwest::Client, user: &str, now: OffsetDateTime) -> Option<Profile> {
        let slot = self.slots.get_with(user.to_owned(), Arc::default);
        let mut slot = slot.lock().await;
        let older_than = |at: Option<OffsetDateTime>, limit: Duration| {
            at.is_none_or(|at| (now - at).try_into().unwrap_or(Duration::ZERO) >= limit)
        };
        if slot.profile.is_some() && !older_than(slot.fetched_at, PROFILE_REFRESH) {
            return slot.profile.clone();
        }
        if !older_than(slot.failed_at, RETRY_AFTER_FAILURE) {
            return slot.profile.clone();
        }
        match self.fetch(http, user).await {
            Ok(profile) => {
                *slot = Slot { profile: Some(profile), fetched_at: Some(now), failed_at: None };
            }
            Err(problem) => {
                tracing::warn!(%user, %problem, "could not read the user's e-mail from WorkOS; signed in without it for now");
                slot.failed_at = Some(now);
            }
        }
        slot.profile.clone()
    }

    async fn fetch(&self, http: &reqwest::Client, user: &str) -> Result<Profile, String> {
        let mut url = self.settings.api_base.clone();
        url.path_segments_mut()
            .map_err(|()| format!("{} cannot take a path", self.settings.api_base))?
            .pop_if_empty()
            .extend(["user_management", "users", user]);
        let failed = |e: reqwest::Error| format!("GET {url} failed: {}", e.without_url());
        let mut response = http
            .get(url.clone())
            .bearer_auth(&self.settings.api_key)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(format!("GET {url} answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_USER_BYTES {
                return Err(format!("GET {url} returned more than {MAX_USER_BYTES} bytes, too much for a user"));
            }
            body.extend_from_slice(&chunk);
        }
        let user_json: Value =
            serde_json::from_slice(&body).map_err(|e| format!("GET {url} did not return JSON: {e}"))?;
        profile_from_user(&user_json, user).map_err(|problem| format!("GET {url}: {problem}"))
    }
}

/// Reads WorkOS's user object: `{"object":"user","id","email","email_verified","first_name","last_name",…}`.
fn profile_from_user(user_json: &Value, user: &str) -> Result<Profile, String> {
    if user_json.get("id").and_then(Value::as_str) != Some(user) {
        return Err(format!("the answer is not the user `{user}`"));
    }
    let email = user_json
        .get("email")
        .and_then(Value::as_str)
        .filter(|email| !email.is_empty())
        .ok_or("the user has no `email`")?
        .to_owned();
    let email_verified = user_json.get("email_verified").and_then(Value::as_bool).unwrap_or(false);
    let part = |key: &str| user_json.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let name = match (part("first_name"), part("last_name")) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
        (None, None) => None,
    };
    Ok(Profile { email, email_verified, name })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_user_object_gives_the_email_its_verification_and_a_name() {
        let user = json!({"object": "user", "id": "user_01", "email": "ada@example.com", "email_verified": true,
                          "first_name": "Ada", "last_name": "Lovelace", "profile_picture_url": null});
        assert_eq!(
            profile_from_user(&user, "user_01"),
            Ok(Profile { email: "ada@example.com".into(), email_verified: true, name: Some("Ada Lovelace".into()) })
        );
    }

    #[test]
    fn another_user_or_no_email_is_refused_and_unverified_is_the_default() {
        let user = json!({"id": "user_02", "email": "x@example.com"});
        assert!(profile_from_user(&user, "user_01").is_err());
        assert!(profile_from_user(&json!({"id": "user_01", "email": ""}), "user_01").is_err());
        let profile = profile_from_user(&json!({"id": "user_01", "email": "x@example.com"}), "user_01");
        assert_eq!(profile.map(|p| (p.email_verified, p.name)), Ok((false, None)));
    }
}
