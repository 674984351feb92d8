//! The typed calls, one per route, named after the OpenAPI document's
//! `operationId`s. Ids go into paths escaped (see [`segment`]).

use futures_util::Stream;
use reqwest::Method;
use serde_json::json;

use crate::client::{Client, segment};
use crate::error::Result;
use crate::types::*;

fn org_path(org: &str, rest: &str) -> String {
    format!("/v1/orgs/{}{rest}", segment(org))
}

impl Client {
    // -- Users -----------------------------------------------------------------

    /// `GET /v1/me` (user token): the caller, with memberships.
    pub async fn get_me(&self) -> Result<Me> {
        self.get("/v1/me").await
    }

    /// `POST /v1/me/personal_org`: the caller's personal org, created if missing.
    pub async fn ensure_personal_org(&self) -> Result<Org> {
        self.post("/v1/me/personal_org", &json!({})).await
    }

    /// `PUT /v1/me/active_org`.
    pub async fn set_active_org(&self, org: &str) -> Result<Me> {
        self.send(Method::PUT, "/v1/me/active_org", &[], Some(&json!({"org_id": org}))).await
    }

    // -- Organizations ---------------------------------------------------------

    /// `POST /v1/orgs` (user token): a team org on the free plan, the caller its owner.
    pub async fn create_org(&self, org: &CreateOrg) -> Result<Org> {
        self.post("/v1/orgs", org).await
    }

    /// `GET /v1/orgs`: every org the caller belongs to.
    pub fn list_orgs(&self) -> impl Stream<Item = Result<Org>> + Send + 'static {
        self.paginate("/v1/orgs".to_owned(), Vec::new())
    }

    /// `GET /v1/orgs/{org}`: with kind, plan, tier and subscription summary.
    pub async fn get_org(&self, org: &str) -> Result<Org> {
        self.get(&org_path(org, "")).await
    }

    /// `PATCH /v1/orgs/{org}` (never retried: see [`crate::RetryPolicy`]).
    pub async fn update_org(&self, org: &str, change: &UpdateOrg) -> Result<Org> {
        self.send(Method::PATCH, &org_path(org, ""), &[], Some(change)).await
    }

    /// `DELETE /v1/orgs/{org}` (owner): `conflict` while a subscription is live.
    pub async fn delete_org(&self, org: &str) -> Result<Deleted> {
        self.send::<(), _>(Method::DELETE, &org_path(org, ""), &[], None).await
    }

    // -- Members ---------------------------------------------------------------

    /// `GET /v1/orgs/{org}/members`.
    pub fn list_members(&self, org: &str) -> impl Stream<Item = Result<Member>> + Send + 'static {
        self.paginate(org_path(org, "/members"), Vec::new())
    }

    /// `PATCH /v1/orgs/{org}/members/{user}`: `{"role"}` (never retried).
    pub async fn change_member_role(&self, org: &str, user: &str, role: &str) -> Result<Member> {
        let path = org_path(org, &format!("/members/{}", segment(user)));
        self.send(Method::PATCH, &path, &[], Some(&json!({"role": role}))).await
    }

    /// `DELETE /v1/orgs/{org}/members/{user}`: removes a member, or leaves.
    pub async fn remove_member(&self, org: &str, user: &str) -> Result<Deleted> {
        let path = org_path(org, &format!("/members/{}", segment(user)));
        self.send::<(), _>(Method::DELETE, &path, &[], None).await
    }

    // -- Invitations -----------------------------------------------------------

    /// `POST /v1/orgs/{org}/invitations`: the answer carries the accept token once.
    /// `role` defaults to `member`.
    pub async fn create_invitation(&self, org: &str, email: &str, role: Option<&str>) -> Result<Invitation> {
        let mut body = json!({"email": email});
        if let Some(role) = role {
            body["role"] = json!(role);
        }
        self.post(&org_path(org, "/invitations"), &body).await
    }

    /// `GET /v1/orgs/{org}/invitations`: the pending ones.
    pub fn list_invitations(&self, org: &str) -> impl Stream<Item = Result<Invitation>> + Send + 'static {
        self.paginate(org_path(org, "/invitations"), Vec::new())
    }

    /// `DELETE /v1/orgs/{org}/invitations/{inv}`.
    pub async fn revoke_invitation(&self, org: &str, invitation: &str) -> Result<Invitation> {
        let path = org_path(org, &format!("/invitations/{}", segment(invitation)));
        self.send::<(), _>(Method::DELETE, &path, &[], None).await
    }

    /// `POST /v1/orgs/{org}/invitations/{inv}/resend`: a new token and expiry.
    pub async fn resend_invitation(&self, org: &str, invitation: &str) -> Result<Invitation> {
        let path = org_path(org, &format!("/invitations/{}/resend", segment(invitation)));
        self.post(&path, &json!({})).await
    }

    /// `POST /v1/invitations/accept` (user token; the verified email must match).
    pub async fn accept_invitation(&self, token: &str) -> Result<Invitation> {
        self.post("/v1/invitations/accept", &json!({"token": token})).await
    }

    /// `POST /v1/invitations/decline`.
    pub async fn decline_invitation(&self, token: &str) -> Result<Invitation> {
        self.post("/v1/invitations/decline", &json!({"token": token})).await
    }

    // -- Entitlements ----------------------------------------------------------

    /// `GET /v1/orgs/{org}/entitlements`.
    pub async fn get_entitlements(&self, org: &str) -> Result<Entitlements> {
        self.get(&org_path(org, "/entitlements")).await
    }

    /// `POST /v1/orgs/{org}/check` with `{"feature"}`.
    pub async fn check_feature(&self, org: &str, feature: &str) -> Result<CheckResult> {
        self.check_entitlement(org, &CheckRequest::Feature { feature: feature.to_owned() }).await
    }

    /// `POST /v1/orgs/{org}/check` with `{"limit", "amount"}`.
    pub async fn check_limit(&self, org: &str, limit: &str, amount: i64) -> Result<CheckResult> {
        self.check_entitlement(org, &CheckRequest::Limit { limit: limit.to_owned(), amount }).await
    }

    /// `POST /v1/orgs/{org}/check`.
    pub async fn check_entitlement(&self, org: &str, check: &CheckRequest) -> Result<CheckResult> {
        self.post(&org_path(org, "/check"), check).await
    }

    /// `PUT /v1/orgs/{org}/overrides` (API key): for sales-led deals.
    pub async fn set_overrides(&self, org: &str, overrides: &Overrides) -> Result<Entitlements> {
        self.send(Method::PUT, &org_path(org, "/overrides"), &[], Some(overrides)).await
    }

    // -- Resources -------------------------------------------------------------

    /// `POST /v1/orgs/{org}/resources`: `limit_reached` past the plan's limit (atomic).
    pub async fn create_resource(&self, org: &str, resource: &NewResource) -> Result<Resource> {
        self.post(&org_path(org, "/resources"), resource).await
    }

    /// `GET /v1/orgs/{org}/resources`, only of `kind` when given.
    pub fn list_resources(
        &self,
        org: &str,
        kind: Option<&str>,
    ) -> impl Stream<Item = Result<Resource>> + Send + 'static {
        let filters = kind.map(|k| vec![("type", k.to_owned())]).unwrap_or_default();
        self.paginate(org_path(org, "/resources"), filters)
    }

    /// `DELETE /v1/orgs/{org}/resources/{res}`: frees the quota.
    pub async fn delete_resource(&self, org: &str, resource: &str) -> Result<Deleted> {
        let path = org_path(org, &format!("/resources/{}", segment(resource)));
        self.send::<(), _>(Method::DELETE, &path, &[], None).await
    }

    /// `PUT /v1/orgs/{org}/resources/{res}/grants/{user}`.
    pub async fn grant_resource_access(&self, org: &str, resource: &str, user: &str) -> Result<Grant> {
        let path = org_path(org, &format!("/resources/{}/grants/{}", segment(resource), segment(user)));
        self.send::<(), _>(Method::PUT, &path, &[], None).await
    }

    /// `DELETE /v1/orgs/{org}/resources/{res}/grants/{user}`.
    pub async fn revoke_resource_access(&self, org: &str, resource: &str, user: &str) -> Result<Grant> {
        let path = org_path(org, &format!("/resources/{}/grants/{}", segment(resource), segment(user)));
        self.send::<(), _>(Method::DELETE, &path, &[], None).await
    }

    /// `GET /v1/orgs/{org}/resources/{res}/access?user_id=`.
    pub async fn check_resource_access(&self, org: &str, resource: &str, user: &str) -> Result<Access> {
        let path = org_path(org, &format!("/resources/{}/access", segment(resource)));
        self.send::<(), _>(Method::GET, &path, &[("user_id", user.to_owned())], None).await
    }

    // -- Billing ---------------------------------------------------------------

    /// `GET /v1/orgs/{org}/subscription`: `not_found` when it has none.
    pub async fn get_subscription(&self, org: &str) -> Result<Subscription> {
        self.get(&org_path(org, "/subscription")).await
    }

    /// `POST /v1/orgs/{org}/checkout`: `subscription_exists` if one is live.
    pub async fn start_checkout(&self, org: &str, checkout: &CheckoutRequest) -> Result<Checkout> {
        self.post(&org_path(org, "/checkout"), checkout).await
    }

    /// `POST /v1/orgs/{org}/billing_portal`.
    pub async fn create_billing_portal_session(&self, org: &str, return_url: &str) -> Result<UrlResponse> {
        self.post(&org_path(org, "/billing_portal"), &json!({"return_url": return_url})).await
    }

    /// `POST /v1/orgs/{org}/subscription/cancel`: at period end, or now.
    pub async fn cancel_subscription(&self, org: &str, immediately: bool) -> Result<Subscription> {
        self.post(&org_path(org, "/subscription/cancel"), &json!({"immediately": immediately})).await
    }

    /// `POST /v1/orgs/{org}/subscription/reactivate`: undoes a pending cancel.
    pub async fn reactivate_subscription(&self, org: &str) -> Result<Subscription> {
        self.post(&org_path(org, "/subscription/reactivate"), &json!({})).await
    }

    /// `PUT /v1/orgs/{org}/subscription/seats`.
    pub async fn set_subscription_seats(&self, org: &str, seats: u32) -> Result<Subscription> {
        self.send(Method::PUT, &org_path(org, "/subscription/seats"), &[], Some(&json!({"seats": seats}))).await
    }

    /// `POST /v1/orgs/{org}/subscription/sync` (owner): reconcile with the provider now.
    pub async fn sync_subscription(&self, org: &str) -> Result<Subscription> {
        self.post(&org_path(org, "/subscription/sync"), &json!({})).await
    }

    /// `POST /v1/orgs/{org}/subscription/change`: another plan at the
    /// provider; `409 conflict` when seats in use exceed it, unless `force`.
    pub async fn change_subscription_plan(&self, org: &str, change: &PlanChangeRequest) -> Result<Subscription> {
        self.post(&org_path(org, "/subscription/change"), change).await
    }

    /// `POST /v1/orgs/{org}/subscription/change_preview` (`force` is not sent).
    pub async fn preview_subscription_change(
        &self,
        org: &str,
        change: &PlanChangeRequest,
    ) -> Result<PlanChangePreview> {
        let body = PlanChangeRequest { force: false, ..change.clone() };
        self.post(&org_path(org, "/subscription/change_preview"), &body).await
    }

    /// `POST /v1/orgs/{org}/subscription/resume`: a paused subscription.
    pub async fn resume_subscription(&self, org: &str) -> Result<Subscription> {
        self.post(&org_path(org, "/subscription/resume"), &json!({})).await
    }

    /// `PUT /v1/orgs/{org}/billing_admin`.
    pub async fn set_billing_admin(&self, org: &str, user: &str) -> Result<BillingAdmin> {
        self.send(Method::PUT, &org_path(org, "/billing_admin"), &[], Some(&json!({"user_id": user}))).await
    }

    /// `GET /v1/billing/events` (API key), only of `status` when given.
    pub fn list_provider_events(
        &self,
        status: Option<&str>,
    ) -> impl Stream<Item = Result<ProviderEvent>> + Send + 'static {
        let filters = status.map(|s| vec![("status", s.to_owned())]).unwrap_or_default();
        self.paginate("/v1/billing/events".to_owned(), filters)
    }

    // -- Operations ------------------------------------------------------------

    /// `GET /healthz`: the process is up.
    pub async fn healthz(&self) -> Result<Health> {
        self.get("/healthz").await
    }

    /// `GET /readyz`: the database is reachable (`unavailable` when it is not).
    pub async fn readyz(&self) -> Result<Health> {
        self.get("/readyz").await
    }

    /// `GET /v1/openapi.json`: the OpenAPI document this server serves.
    pub async fn get_openapi(&self) -> Result<serde_json::Value> {
        self.get("/v1/openapi.json").await
    }

    // -- Events ----------------------------------------------------------------

    /// `GET /v1/orgs/{org}/events` (`org:audit`): the audit log, newest first.
    pub fn list_org_events(&self, org: &str) -> impl Stream<Item = Result<Event>> + Send + 'static {
        self.paginate(org_path(org, "/events"), Vec::new())
    }
}
