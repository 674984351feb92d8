//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! served at `/v1/openapi.json`.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    admin, api_keys, billing, dev, entitlements, events, invitations, me, members, ops, orgs, resources, sandbox,
    webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "orgplane", description = "Organizations, billing and entitlements for multi-tenant SaaS. Errors are `{\"error\": {\"code\", \"message\", \"param\"?}}`; lists are `{\"data\": [...], \"has_more\"}` with `?limit=` and `?starting_after=`; POSTs accept `Idempotency-Key`."),
    paths(
        me::get_me, me::ensure_personal_org, me::set_active_org,
        orgs::create, orgs::list, orgs::get, orgs::update, orgs::delete,
        members::list, members::change_role, members::remove,
        invitations::create, invitations::list, invitations::revoke, invitations::resend,
        invitations::accept, invitations::decline,
        events::list, events::stream,
        entitlements::get, entitlements::check, entitlements::put_overrides,
        resources::create, resources::list, resources::delete, resources::grant, resources::revoke, resources::access,
        billing::get, billing::checkout, billing::billing_portal, billing::cancel, billing::reactivate,
        billing::set_seats, billing::sync, billing::set_billing_admin, billing::list_events,
        webhooks::stripe, webhooks::lemonsqueezy,
        sandbox::checkout_page, sandbox::pay, sandbox::cancel, sandbox::portal_page,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        dev::token, dev::jwks,
        api_keys::list_server_keys, api_keys::create_server_key, api_keys::revoke_server_key,
        api_keys::create_org_key, api_keys::list_org_keys, api_keys::revoke_org_key, api_keys::verify,
        admin::find_users, admin::get_user, admin::set_user_active_org, admin::delete_user,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail, crate::routes::Deleted)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A user's JWT from a configured issuer, or a server API key `sk_…`."))
                    .build(),
            ),
        );
    }
}

/// The document as JSON, built once.
pub fn document() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))).clone()
}
