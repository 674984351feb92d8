//! The HTTP API, a module per resource. Handlers extract, call one store
//! function, and map the result; guards are declared through the
//! extractors (`AuthUser`, `OrgCtx::require`), never re-implemented.

pub mod admin;
pub mod api_keys;
pub mod billing;
pub mod billing_change;
pub mod billing_email;
pub mod billing_link;
pub mod dev;
pub mod entitlements;
pub mod events;
pub mod invitations;
pub mod invoices;
pub mod me;
pub mod members;
pub mod mirror;
pub mod ops;
pub mod orgs;
pub mod resources;
pub mod sandbox;
pub mod webhook_endpoints;
pub mod webhooks;

use serde::Serialize;

use orgplane_core::Timestamp;

/// RFC 3339, UTC, as every timestamp of the API.
pub fn rfc3339(at: Timestamp) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// `{"data": [...], "has_more": bool}`: a page of a list. `has_more`: pass
/// the last item's id as `?starting_after=` for the next page.
#[derive(Serialize, utoipa::ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

/// `{"id": ..., "deleted": true}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}
