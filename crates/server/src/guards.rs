//! The guards of DESIGN.md, one place each. Handlers declare which apply:
//!
//! - structural: personal orgs take no invitations (held by the store, which
//!   checks the org's kind inside its lock);
//! - permission: [`crate::extract::OrgCtx::require`];
//! - feature: [`feature`], and [`custom_role`] for roles beyond the built-in;
//! - quota: [`limit`], [`seats_to_invite`], [`seats_to_join`], [`org_api_key`]: closures the
//!   store runs inside the org's lock with usage counted in the same
//!   transaction, so check and write are one atomic step.

use orgplane_core::DomainError;
use orgplane_core::roles::RoleName;
use orgplane_core::{OrgId, Timestamp};
use orgplane_store::{EntitlementInputs, Usage};

use crate::entitlements::{current, resolve_inputs};
use crate::error::ApiResult;
use crate::state::AppState;

/// The org's plan must include `name`.
pub async fn feature(state: &AppState, org: OrgId, name: &str) -> ApiResult<()> {
    let resolved = current(state, org).await?;
    resolved.entitlements.require_feature(name, &state.catalog)?;
    Ok(())
}

/// A custom role needs the `custom_roles` feature; built-in roles don't.
pub async fn custom_role(state: &AppState, org: OrgId, role: &RoleName) -> ApiResult<()> {
    if role.is_builtin() { Ok(()) } else { feature(state, org, "custom_roles").await }
}

/// A store guard: one more of `key` must fit the org's limit.
pub fn limit<'a>(
    state: &'a AppState,
    key: &'a str,
    now: Timestamp,
) -> impl Fn(&EntitlementInputs, &Usage) -> Result<(), DomainError> + Send + Sync + 'a {
    move |inputs, usage| {
        let entitlements = resolve_inputs(&state.catalog, inputs, now);
        entitlements.check_limit(key, usage.used(key), 1, &state.catalog)
    }
}

/// A store guard for a new invitation: the `invitations` feature, and one
/// more seat (members + pending invitations) within the limit.
pub fn seats_to_invite(
    state: &AppState,
    now: Timestamp,
) -> impl Fn(&EntitlementInputs, &Usage) -> Result<(), DomainError> + Send + Sync + '_ {
    move |inputs, usage| {
        let entitlements = resolve_inputs(&state.catalog, inputs, now);
        entitlements.require_feature("invitations", &state.catalog)?;
        entitlements.check_limit(orgplane_core::plans::SEATS, usage.seats(), 1, &state.catalog)
    }
}

/// A store guard for accepting: one more member within the seat limit (the
/// plan may have shrunk since the invitation was sent).
pub fn seats_to_join(
    state: &AppState,
    now: Timestamp,
) -> impl Fn(&EntitlementInputs, &Usage) -> Result<(), DomainError> + Send + Sync + '_ {
    move |inputs, usage| {
        let entitlements = resolve_inputs(&state.catalog, inputs, now);
        entitlements.check_limit(orgplane_core::plans::SEATS, usage.members, 1, &state.catalog)
    }
}

/// A store guard for a new org API key: the `api_tokens` feature, and one
/// more live key within the `api_keys` limit.
pub fn org_api_key(
    state: &AppState,
    now: Timestamp,
) -> impl Fn(&EntitlementInputs, &Usage) -> Result<(), DomainError> + Send + Sync + '_ {
    move |inputs, usage| {
        let entitlements = resolve_inputs(&state.catalog, inputs, now);
        entitlements.require_feature(crate::keys::FEATURE, &state.catalog)?;
        let key = orgplane_core::plans::API_KEYS;
        entitlements.check_limit(key, usage.used(key), 1, &state.catalog)
    }
}
