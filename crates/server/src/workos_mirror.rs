//! The WorkOS mirror (`[mirror.workos]`): every orgplane org exists in WorkOS
//! as an organization whose `external_id` is the org id and whose
//! `metadata.billing_email` is the org's billing e-mail, and every member
//! who signs in through WorkOS is a member of it there, with the role
//! `role_map` gives.
//!
//! Driven from the event log like outgoing webhooks (see
//! `orgplane_store::workos_mirror`): the fan-out marks targets pending in
//! the database, this worker leases them and makes WorkOS match each
//! target's state *now* — so a retry, a repeat or a backfill changes
//! nothing that is already in step. Creating looks up the `external_id`
//! first and sends an `Idempotency-Key` derived from the target, so a
//! request that timed out after WorkOS acted creates nothing twice. Failed
//! syncs are retried on the app clock (1 s doubling to an hour, or WorkOS's
//! `Retry-After`), never dropped; requests never wait for WorkOS.
//!
//! A user is a WorkOS user when their token's issuer is
//! `https://api.workos.com` or below it (AuthKit's two issuer shapes), or
//! one of `issuers` (a custom auth domain); their WorkOS user id is the
//! token's subject.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orgplane_store::{MirrorOrg, MirrorTarget, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::Clock;

/// Targets one pass syncs, one after another.
const CLAIM_BATCH: u32 = 16;
/// Events fanned out per step.
const FAN_OUT_BATCH: u32 = 500;
/// The longest wait between two syncs of a failing target, in seconds.
const MAX_RETRY_SECS: u64 = 3600;

/// `[mirror]`: where orgs are mirrored to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workos: Option<WorkosMirrorConfig>,
}

/// `[mirror.workos]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkosMirrorConfig {
    /// The WorkOS API key (`sk_…`).
    pub api_key: String,
    pub api_base: String,
    /// orgplane role → WorkOS role slug; a role not listed gets `member`'s.
    pub role_map: BTreeMap<String, String>,
    /// Mirror personal orgs too.
    pub mirror_personal: bool,
    /// More issuers whose subjects are WorkOS user ids (a custom auth domain).
    pub issuers: Vec<String>,
    /// Seconds one WorkOS call may take. 1 to 120.
    pub timeout_secs: u64,
    /// How often the worker looks for work when nothing woke it. 10 to 60000.
    pub poll_interval_ms: u64,
}

impl Default for WorkosMirrorConfig {
    fn default() -> Self {
        let role_map = [("owner", "admin"), ("admin", "admin"), ("member", "member")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        WorkosMirrorConfig {
            api_key: String::new(),
            api_base: "https://api.workos.com".to_owned(),
            role_map,
            mirror_personal: false,
            issuers: Vec::new(),
            timeout_secs: 10,
            poll_interval_ms: 1000,
        }
    }
}

impl WorkosMirrorConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.api_key.trim().is_empty() {
            return Err("mirror.workos.api_key: must be set (the WorkOS API key, sk_…); remove [mirror.workos] to turn the mirror off".to_owned());
        }
        if !(self.api_base.starts_with("https://") || self.api_base.starts_with("http://")) {
            return Err(format!("mirror.workos.api_base: `{}` is not an http(s) URL", self.api_base));
        }
        if !self.role_map.contains_key("member") {
            return Err("mirror.workos.role_map: needs a `member` entry (the slug for roles not listed)".to_owned());
        }
        if let Some((role, _)) = self.role_map.iter().find(|(_, slug)| slug.trim().is_empty()) {
            return Err(format!("mirror.workos.role_map.{role}: the WorkOS role slug must not be empty"));
        }
        if !(1..=120).contains(&self.timeout_secs) {
            return Err(format!(
                "mirror.workos.timeout_secs: {} is out of range (1 to 120 seconds)",
                self.timeout_secs
            ));
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            return Err(format!(
                "mirror.workos.poll_interval_ms: {} is out of range (10 to 60000 milliseconds)",
                self.poll_interval_ms
            ));
        }
        Ok(())
    }

    /// Whether a user of `issuer` is a WorkOS user.
    pub fn is_workos_issuer(&self, issuer: &str) -> bool {
        let issuer = issuer.trim_end_matches('/');
        issuer == "https://api.workos.com"
            || issuer.starts_with("https://api.workos.com/")
            || self.issuers.iter().any(|i| i.trim_end_matches('/') == issuer)
    }

    fn role_slug(&self, role: &str) -> &str {
        self.role_map.get(role).or_else(|| self.role_map.get("member")).map(String::as_str).unwrap_or("member")
    }
}

/// A failed WorkOS call: what to show, and when WorkOS asked to be called again.
#[derive(Debug)]
struct CallError {
    message: String,
    retry_after_secs: Option<u64>,
}

type Call<T> = Result<T, CallError>;

/// The WorkOS API calls the mirror makes.
struct WorkosApi {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl WorkosApi {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Call<Option<Value>> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let fail = |message: String| CallError { message, retry_after_secs: None };
        let response = request.send().await.map_err(|e| fail(format!("{method} {path}: {e}")))?;
        let status = response.status();
        let retry_after_secs = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let excerpt: String = text.chars().take(300).collect();
            return Err(CallError {
                message: format!("{method} {path}: WorkOS answered {status}: {excerpt}"),
                retry_after_secs,
            });
        }
        if text.trim().is_empty() {
            return Ok(Some(Value::Null));
        }
        serde_json::from_str(&text).map(Some).map_err(|e| fail(format!("{method} {path}: unreadable answer: {e}")))
    }

    async fn found(&self, method: reqwest::Method, path: &str, body: Option<Value>, key: Option<&str>) -> Call<Value> {
        self.call(method.clone(), path, body, key).await?.ok_or_else(|| CallError {
            message: format!("{method} {path}: WorkOS answered 404"),
            retry_after_secs: None,
        })
    }
}

fn id_of(value: &Value, path: &str) -> Call<String> {
    value
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CallError { message: format!("{path}: WorkOS's answer has no `id`"), retry_after_secs: None })
}

/// Whether WorkOS takes `config.api_key`, by one read-only call
/// (`GET /organizations?limit=1`), for `orgplane doctor`: `Ok` with where it
/// was checked, or `Err` with what to do.
pub async fn check_api_key(config: &WorkosMirrorConfig) -> Result<String, String> {
    let base = config.api_base.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout_secs))
        .build()
        .map_err(|e| format!("WorkOS mirror: no HTTP client: {e}"))?;
    let response = http
        .get(format!("{base}/organizations?limit=1"))
        .bearer_auth(&config.api_key)
        .send()
        .await
        .map_err(|e| format!("WorkOS mirror: {base} can't be reached ({e}); check mirror.workos.api_base and that this host can reach it"))?;
    match response.status() {
        status if status.is_success() => Ok(format!("WorkOS mirror: the API key works ({base})")),
        status @ (reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN) => Err(format!(
            "WorkOS mirror: WorkOS refused the API key ({status}); set mirror.workos.api_key to an `sk_…` key of the environment whose users sign in"
        )),
        status => Err(format!(
            "WorkOS mirror: GET {base}/organizations answered {status}; check mirror.workos.api_base (https://api.workos.com)"
        )),
    }
}

/// Seconds to wait before the next try of a call that failed `failures`
/// times in a row before this failure: 1 s doubling to an hour, or what the
/// provider asked for (`Retry-After`), at most an hour. Shared by the
/// background workers that keep a provider in step (this mirror, the
/// billing e-mail sync).
pub(crate) fn retry_delay_secs(failures: u32, retry_after_secs: Option<u64>) -> u64 {
    retry_after_secs.unwrap_or(1u64 << failures.min(12)).min(MAX_RETRY_SECS)
}

/// One replica's mirror worker.
pub struct WorkosMirror {
    store: Store,
    clock: Arc<dyn Clock>,
    config: WorkosMirrorConfig,
    api: WorkosApi,
    /// Names this replica in target leases.
    holder: String,
}

impl WorkosMirror {
    pub fn new(store: Store, clock: Arc<dyn Clock>, config: WorkosMirrorConfig) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(config.timeout_secs)).build()?;
        let api =
            WorkosApi { http, base: config.api_base.trim_end_matches('/').to_owned(), key: config.api_key.clone() };
        Ok(Arc::new(WorkosMirror {
            store,
            clock,
            config,
            api,
            holder: format!("{}:{}", std::process::id(), uuid::Uuid::now_v7().simple()),
        }))
    }

    /// A lease covers a whole claimed batch, each call at its time limit.
    fn lease(&self) -> time::Duration {
        time::Duration::seconds((self.config.timeout_secs * 4 * u64::from(CLAIM_BATCH)) as i64)
    }

    /// Runs until the store closes or `stop` turns true; then frees this
    /// replica's leases so that another takes its targets at once.
    pub fn spawn(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mirror = self.clone();
        tokio::spawn(async move {
            let poll = Duration::from_millis(mirror.config.poll_interval_ms);
            loop {
                if mirror.store.is_closed() || *stop.borrow() {
                    break;
                }
                if let Err(e) = mirror.run_once().await {
                    tracing::warn!(error = %e, "workos mirror: a pass failed; the next one tries again");
                }
                tokio::select! {
                    _ = mirror.store.changed() => {}
                    _ = tokio::time::sleep(poll) => {}
                    changed = stop.changed() => if changed.is_err() { break },
                }
            }
            if !mirror.store.is_closed() {
                let _ = mirror.store.release_workos_leases(&mirror.holder).await;
            }
        });
    }

    /// Marks every existing org and WorkOS membership pending (the backfill).
    pub async fn backfill(&self) -> anyhow::Result<usize> {
        let config = &self.config;
        Ok(self.store.workos_mirror_backfill(self.clock.now(), &|i| config.is_workos_issuer(i)).await?)
    }

    /// One pass: the fan-out until caught up, then the due targets synced.
    /// Returns how many targets were synced (or attempted).
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let config = &self.config;
        loop {
            let step = self
                .store
                .workos_mirror_fan_out(FAN_OUT_BATCH, self.clock.now(), &|i| config.is_workos_issuer(i))
                .await?;
            if step.busy || step.events < FAN_OUT_BATCH as usize {
                break;
            }
        }
        let now = self.clock.now();
        let targets = self.store.claim_workos_targets(&self.holder, now, now + self.lease(), CLAIM_BATCH).await?;
        for target in &targets {
            let outcome = self.sync(target).await;
            let now = self.clock.now();
            let failure = outcome.err().map(|e| {
                let delay = retry_delay_secs(target.failures, e.retry_after_secs);
                tracing::warn!(org = %target.org_id, user = ?target.user_id, error = %e.message, "workos mirror: sync failed");
                (e.message, now + time::Duration::seconds(delay as i64))
            });
            self.store.record_workos_sync(target, &self.holder, now, failure).await?;
        }
        Ok(targets.len())
    }

    async fn sync(&self, target: &MirrorTarget) -> Call<()> {
        let store_err =
            |e: orgplane_store::StoreError| CallError { message: format!("database: {e}"), retry_after_secs: None };
        let org = self.store.workos_mirror_org(&target.org_id).await.map_err(store_err)?;
        let skipped = |org: &MirrorOrg| org.personal && !self.config.mirror_personal;
        match (&target.user_id, org) {
            (None, None) => self.delete_org(&target.org_id).await,
            (None, Some(org)) if skipped(&org) => Ok(()),
            (None, Some(org)) => self.ensure_org(&target.org_id, &org).await.map(|_| ()),
            // The org's deletion takes its memberships in WorkOS with it.
            (Some(_), None) => Ok(()),
            (Some(_), Some(org)) if skipped(&org) => Ok(()),
            (Some(user), Some(org)) => {
                let role = self.store.workos_mirror_member_role(&target.org_id, user).await.map_err(store_err)?;
                self.sync_membership(target, &org, role.as_deref()).await
            }
        }
    }

    fn metadata(org: &MirrorOrg) -> Value {
        match &org.billing_email {
            Some(email) => json!({"billing_email": email}),
            None => json!({"billing_email": ""}),
        }
    }

    /// The org's WorkOS id, created (or brought up to date) as needed.
    async fn ensure_org(&self, org_id: &str, org: &MirrorOrg) -> Call<String> {
        let metadata = Self::metadata(org);
        let lookup = format!("/organizations/external_id/{org_id}");
        let id = match self.api.call(reqwest::Method::GET, &lookup, None, None).await? {
            Some(found) => {
                let id = id_of(&found, &lookup)?;
                let same_name = found.get("name").and_then(Value::as_str) == Some(org.name.as_str());
                let same_email = found.pointer("/metadata/billing_email").unwrap_or(&Value::String(String::new()))
                    == &metadata["billing_email"];
                if !same_name || !same_email {
                    let body = json!({"name": org.name, "metadata": metadata});
                    self.api.found(reqwest::Method::PUT, &format!("/organizations/{id}"), Some(body), None).await?;
                }
                id
            }
            None => {
                let body = json!({"name": org.name, "external_id": org_id, "metadata": metadata});
                // One key per org: a repeated create returns the first answer.
                let key = format!("orgplane-org-{org_id}");
                let created = self.api.found(reqwest::Method::POST, "/organizations", Some(body), Some(&key)).await?;
                id_of(&created, "/organizations")?
            }
        };
        let now = self.clock.now();
        self.store
            .set_workos_organization_id(org_id, Some(&id), now)
            .await
            .map_err(|e| CallError { message: format!("database: {e}"), retry_after_secs: None })?;
        Ok(id)
    }

    async fn delete_org(&self, org_id: &str) -> Call<()> {
        let lookup = format!("/organizations/external_id/{org_id}");
        if let Some(found) = self.api.call(reqwest::Method::GET, &lookup, None, None).await? {
            let id = id_of(&found, &lookup)?;
            self.api.call(reqwest::Method::DELETE, &format!("/organizations/{id}"), None, None).await?;
        }
        self.store
            .set_workos_organization_id(org_id, None, self.clock.now())
            .await
            .map_err(|e| CallError { message: format!("database: {e}"), retry_after_secs: None })
    }

    async fn sync_membership(&self, target: &MirrorTarget, org: &MirrorOrg, role: Option<&str>) -> Call<()> {
        let organization = self.ensure_org(&target.org_id, org).await?;
        let user = &target.workos_user_id;
        let list = format!("/user_management/organization_memberships?user_id={user}&organization_id={organization}");
        let listed = self.api.found(reqwest::Method::GET, &list, None, None).await?;
        let existing = listed.get("data").and_then(Value::as_array).and_then(|d| d.first()).cloned();
        match (role, existing) {
            (Some(role), None) => {
                let body =
                    json!({"user_id": user, "organization_id": organization, "role_slug": self.config.role_slug(role)});
                // One key per (membership, event): a member removed and added
                // again is a new create, a retry of this one is not.
                let key = format!("orgplane-membership-{}-{}-{}", target.org_id, user, target.generation);
                self.api
                    .found(reqwest::Method::POST, "/user_management/organization_memberships", Some(body), Some(&key))
                    .await?;
            }
            (Some(role), Some(membership)) => {
                let slug = self.config.role_slug(role);
                if membership.pointer("/role/slug").and_then(Value::as_str) != Some(slug) {
                    let id = id_of(&membership, &list)?;
                    let path = format!("/user_management/organization_memberships/{id}");
                    self.api.found(reqwest::Method::PUT, &path, Some(json!({"role_slug": slug})), None).await?;
                }
            }
            (None, Some(membership)) => {
                let id = id_of(&membership, &list)?;
                let path = format!("/user_management/organization_memberships/{id}");
                self.api.call(reqwest::Method::DELETE, &path, None, None).await?;
            }
            (None, None) => {}
        }
        Ok(())
    }
}
