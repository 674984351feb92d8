//! The request and response bodies of the routes this client calls, written
//! by hand from the OpenAPI document (`/v1/openapi.json`). Fields a newer
//! server adds are ignored; enums keep values they don't know.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One page of a list: `{"data": [...], "has_more": bool}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

/// What a list item is paged after (`?starting_after=`).
pub trait Cursor {
    fn cursor(&self) -> &str;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgKind {
    Personal,
    Team,
}

/// A subscription's status, as orgplane names it for every provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
    /// A status this client does not know yet.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Declined,
    Revoked,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MembershipSummary {
    pub org_id: String,
    pub org_name: String,
    pub kind: OrgKind,
    /// `owner`, `admin`, `member` or a custom role.
    pub role: String,
    pub joined_at: String,
}

/// `GET /v1/me`.
#[derive(Debug, Clone, Deserialize)]
pub struct Me {
    pub id: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub active_org_id: Option<String>,
    pub memberships: Vec<MembershipSummary>,
    pub created_at: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionSummary {
    pub status: SubscriptionStatus,
    pub seats: i64,
    pub cancel_at_period_end: bool,
    pub current_period_end: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Org {
    pub id: String,
    pub kind: OrgKind,
    pub name: String,
    pub billing_email: Option<String>,
    #[serde(default)]
    pub settings: serde_json::Map<String, Value>,
    /// The plan in effect (`get_org` only).
    pub plan: Option<String>,
    pub tier: Option<String>,
    /// The caller's role, when the caller is a member.
    pub role: Option<String>,
    /// The subscription, when the org has one (`get_org` only).
    pub subscription: Option<SubscriptionSummary>,
    pub created_at: String,
    pub updated_at: String,
}

impl Cursor for Org {
    fn cursor(&self) -> &str {
        &self.id
    }
}

/// `POST /v1/orgs`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateOrg {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_email: Option<String>,
}

/// `PATCH /v1/orgs/{org}`: only the fields set are sent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateOrg {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Some(None)` clears it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_email: Option<Option<String>>,
    /// Merged key by key; a `null` value deletes the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Map<String, Value>>,
}

/// `{"id", "deleted": true}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    pub user_id: String,
    pub role: String,
    /// Whether this member manages the org's subscription.
    pub billing_admin: bool,
    pub email: Option<String>,
    pub name: Option<String>,
    pub joined_at: String,
}

impl Cursor for Member {
    fn cursor(&self) -> &str {
        &self.user_id
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Invitation {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub role: String,
    pub status: InvitationStatus,
    pub invited_by: Option<String>,
    /// The accept token: only in the answer that created it (or resent it).
    pub token: Option<String>,
    pub expires_at: String,
    pub created_at: String,
}

impl Cursor for Invitation {
    fn cursor(&self) -> &str {
        &self.id
    }
}

/// How much of a limit is used; `limit: None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct LimitUsage {
    pub limit: Option<i64>,
    pub used: i64,
}

/// `GET /v1/orgs/{org}/entitlements`.
#[derive(Debug, Clone, Deserialize)]
pub struct Entitlements {
    pub org_id: String,
    pub kind: OrgKind,
    pub plan: String,
    pub tier: String,
    /// The subscription's status, `None` without one.
    pub status: Option<SubscriptionStatus>,
    pub features: HashMap<String, bool>,
    pub limits: HashMap<String, LimitUsage>,
}

/// How many more of a limit an org may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remaining {
    Unlimited,
    /// 0 also for a limit the plan does not know.
    Count(i64),
}

impl Remaining {
    pub fn allows(self, amount: i64) -> bool {
        match self {
            Remaining::Unlimited => true,
            Remaining::Count(n) => n >= amount,
        }
    }
}

impl Entitlements {
    /// Whether the plan has `feature` (false for a name it does not know).
    pub fn has(&self, feature: &str) -> bool {
        self.features.get(feature).copied().unwrap_or(false)
    }

    pub fn remaining(&self, limit: &str) -> Remaining {
        match self.limits.get(limit) {
            None => Remaining::Count(0),
            Some(LimitUsage { limit: None, .. }) => Remaining::Unlimited,
            Some(LimitUsage { limit: Some(max), used }) => Remaining::Count((max - used).max(0)),
        }
    }
}

/// `POST /v1/orgs/{org}/check`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum CheckRequest {
    Feature { feature: String },
    Limit { limit: String, amount: i64 },
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckResult {
    pub allowed: bool,
    /// Why not, in words a user can act on.
    pub reason: Option<String>,
}

/// `PUT /v1/orgs/{org}/overrides` (API key): `{}` clears them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    pub features: BTreeMap<String, bool>,
    /// `None` = unlimited.
    pub limits: BTreeMap<String, Option<i64>>,
}

/// `POST /v1/orgs/{org}/resources`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewResource {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl NewResource {
    pub fn of_type(kind: impl Into<String>) -> NewResource {
        NewResource { kind: kind.into(), ..NewResource::default() }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Resource {
    pub id: String,
    pub org_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub created_at: String,
}

impl Cursor for Resource {
    fn cursor(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Grant {
    pub resource_id: String,
    pub user_id: String,
    pub granted: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Access {
    pub allowed: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub org_id: String,
    /// `stripe`, `lemonsqueezy` or `sandbox`.
    pub provider: String,
    pub provider_subscription_id: String,
    pub provider_customer_id: Option<String>,
    pub status: SubscriptionStatus,
    /// Not ended (`canceled` and `incomplete_expired` are ended).
    pub live: bool,
    pub plan: Option<String>,
    pub price_id: Option<String>,
    pub seats: i64,
    pub cancel_at_period_end: bool,
    pub current_period_end: Option<String>,
    pub trial_end: Option<String>,
    pub past_due_since: Option<String>,
    /// While `past_due`: when the grace period ends and the plan stops.
    #[serde(default)]
    pub grace_ends_at: Option<String>,
    pub billing_admin_user_id: Option<String>,
    pub observed_at: String,
}

/// `POST /v1/orgs/{org}/subscription/change` and `…/change_preview`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanChangeRequest {
    pub plan: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats: Option<u32>,
    /// `create_prorations` (default), `none` or `always_invoice`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proration: Option<String>,
    /// Change even when more seats are in use than the plan allows (not
    /// sent by a preview).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PreviewLine {
    pub description: Option<String>,
    /// Cents; negative for a credit.
    pub amount: i64,
    pub quantity: Option<i64>,
    pub proration: bool,
    pub period_start: Option<String>,
    pub period_end: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct OverLimit {
    pub used: i64,
    pub limit: i64,
}

/// What a plan change would cost and leave behind.
#[derive(Debug, Clone, Deserialize)]
pub struct PlanChangePreview {
    pub plan: String,
    pub seats: u32,
    /// `None` when the provider prorates itself (Lemon Squeezy).
    pub amount_due: Option<i64>,
    pub currency: Option<String>,
    pub lines: Vec<PreviewLine>,
    pub next_payment_at: Option<String>,
    pub proration_by_provider: bool,
    pub over_limits: BTreeMap<String, OverLimit>,
    pub features_lost: Vec<String>,
}

/// `POST /v1/orgs/{org}/checkout`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutRequest {
    pub plan: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats: Option<u32>,
    pub success_url: String,
    pub cancel_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Checkout {
    /// Where to send the buyer.
    pub url: String,
    /// `chk_…`
    pub checkout_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UrlResponse {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BillingAdmin {
    pub org_id: String,
    pub billing_admin_user_id: String,
}

/// A committed change, as the audit log, the event stream and outgoing
/// webhooks carry it. `data` differs per `type` (the document's
/// `*Event` schemas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `evt_…`; also the stream's `id` and the webhook's `webhook-id`.
    pub id: String,
    /// The org the change belongs to; `None` for user- or key-level events.
    pub org_id: Option<String>,
    /// e.g. `org.created`, `subscription.updated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `usr_…`, `key_…`, `provider:<event id>` or `system`.
    pub actor: String,
    #[serde(default)]
    pub data: Value,
    pub created_at: String,
    /// The event's place in the commit-ordered log (the org's change
    /// generation): of two events about one org, the higher `seq` is the
    /// newer state. 0 for `webhook.test`.
    #[serde(default)]
    pub seq: i64,
}

impl Cursor for Event {
    fn cursor(&self) -> &str {
        &self.id
    }
}

/// `GET /v1/billing/events`: a payment provider's webhook as received.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderEvent {
    /// `pev_…`
    pub id: String,
    pub provider: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `unmatched`, `failed` or `applied`.
    pub status: String,
    pub org_id: Option<String>,
    pub error: Option<String>,
    pub outcome: Option<String>,
    pub attempts: i64,
    pub received_at: String,
    pub processed_at: String,
}

impl Cursor for ProviderEvent {
    fn cursor(&self) -> &str {
        &self.id
    }
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    /// `ok`
    pub status: String,
}
