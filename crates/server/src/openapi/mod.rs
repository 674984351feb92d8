//! The OpenAPI 3.1 document served at `/v1/openapi.json`.
//!
//! The handlers' `#[utoipa::path]` annotations state what is particular to
//! each route: its `operation_id` (read as a client's method name), who may
//! call it (`security(("user_token" = []), ("api_key" = []))`, one or both),
//! its body, its success answer (`body = List<T>` for a list) and the error
//! statuses only it answers (403 for a permission, 409 for a conflict…).
//! [`build`] then completes every operation with what holds for all routes
//! alike, from what the operation takes, so that a new route gets it without
//! a line:
//!
//! - the error answers of the shared layers, as `$ref`s to
//!   `#/components/responses` ([`standard_errors`]): 401 and 503 when it
//!   needs credentials; 403 when it takes only one kind of credential; 400 and
//!   404 when its path holds ids; 400 with query parameters; 400, 413, 415
//!   and 422 with a JSON body; 400, 409 and 422 for `Idempotency-Key` on an
//!   authenticated POST; 429 and 503 everywhere (rate and in-flight limits);
//! - the path parameters, declared from the path template, each id with its
//!   prefix pattern ([`ID_SCHEMAS`], by parameter name);
//! - the `Idempotency-Key` header on authenticated POSTs;
//! - the deployment's enums (roles, features, limit keys, resource types,
//!   plans) from its config, and the fixed ones (statuses, kinds) from the
//!   types that define them ([`schema`]);
//! - the event payloads, one named schema per event type ([`events`]), and
//!   the `webhooks` section;
//! - only the routes this server serves: `/dev/*` with `--dev`, `/sandbox/*`
//!   with the sandbox provider.

pub mod events;
pub mod schema;

use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use crate::routes::{
    billing, dev, entitlements, events as event_routes, invitations, me, members, ops, orgs, resources, sandbox,
    webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orgplane",
        description = "Organizations, billing and entitlements for multi-tenant SaaS. Errors are `{\"error\": {\"code\", \"message\", \"param\"?}}`; lists are `{\"data\": [...], \"has_more\"}` with `?limit=` and `?starting_after=`; POSTs accept `Idempotency-Key`."
    ),
    paths(
        me::get_me,
        me::ensure_personal_org,
        me::set_active_org,
        orgs::create,
        orgs::list,
        orgs::get,
        orgs::update,
        orgs::delete,
        members::list,
        members::change_role,
        members::remove,
        invitations::create,
        invitations::list,
        invitations::revoke,
        invitations::resend,
        invitations::accept,
        invitations::decline,
        event_routes::list,
        event_routes::stream,
        entitlements::get,
        entitlements::check,
        entitlements::put_overrides,
        resources::create,
        resources::list,
        resources::delete,
        resources::grant,
        resources::revoke,
        resources::access,
        billing::get,
        billing::checkout,
        billing::billing_portal,
        billing::cancel,
        billing::reactivate,
        billing::set_seats,
        billing::sync,
        crate::routes::billing_change::change,
        crate::routes::billing_change::change_preview,
        crate::routes::billing_change::resume,
        billing::set_billing_admin,
        billing::list_events,
        crate::routes::billing_link::link,
        crate::routes::billing_link::unlinked,
        crate::routes::invoices::list,
        webhooks::stripe,
        webhooks::lemonsqueezy,
        sandbox::checkout_page,
        sandbox::pay,
        sandbox::cancel,
        sandbox::portal_page,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
        dev::token,
        dev::jwks,
        crate::routes::webhook_endpoints::create,
        crate::routes::webhook_endpoints::list,
        crate::routes::webhook_endpoints::get,
        crate::routes::webhook_endpoints::update,
        crate::routes::webhook_endpoints::delete,
        crate::routes::webhook_endpoints::rotate_secret,
        crate::routes::webhook_endpoints::test,
        crate::routes::webhook_endpoints::deliveries,
        crate::routes::webhook_endpoints::replay,
        crate::routes::api_keys::list_server_keys,
        crate::routes::api_keys::create_server_key,
        crate::routes::api_keys::revoke_server_key,
        crate::routes::api_keys::create_org_key,
        crate::routes::api_keys::list_org_keys,
        crate::routes::api_keys::revoke_org_key,
        crate::routes::api_keys::verify,
        crate::routes::admin::find_users,
        crate::routes::admin::get_user,
        crate::routes::admin::set_user_active_org,
        crate::routes::admin::delete_user,
        crate::portal::session::create,
        crate::portal::session::create_own,
        crate::routes::mirror::workos_failures,
        crate::routes::billing_email::failures,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail, crate::routes::Deleted))
)]
struct ApiDoc;

/// What of the deployment the document describes.
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    /// `/dev/*` is served (`--dev`).
    pub dev: bool,
    /// `/sandbox/*` is served (the sandbox payment provider).
    pub sandbox: bool,
    /// Every role name: the built-in ones and the config's custom roles.
    pub roles: Vec<String>,
    pub features: Vec<String>,
    pub limit_keys: Vec<String>,
    pub resource_types: Vec<String>,
    pub plans: Vec<String>,
    /// The plans a checkout sells: all but the default plan.
    pub plans_for_sale: Vec<String>,
}

impl Deployment {
    pub fn of(state: &crate::state::AppState) -> Deployment {
        let catalog = &state.catalog;
        Deployment {
            dev: state.config.dev,
            sandbox: state.billing.sandbox_enabled(),
            roles: state.roles.names(),
            features: catalog.features().to_vec(),
            limit_keys: catalog.limit_keys().to_vec(),
            resource_types: catalog.resource_types().to_vec(),
            plans: catalog.plans().iter().map(|p| p.key().to_owned()).collect(),
            plans_for_sale: catalog.plans().iter().filter(|p| !p.is_default()).map(|p| p.key().to_owned()).collect(),
        }
    }
}

/// The document of a server with this deployment, as JSON text.
pub fn document(deployment: &Deployment) -> String {
    serde_json::to_string(&build(deployment)).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The document of a server with this deployment.
pub fn build(deployment: &Deployment) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    // Only what this server serves.
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        paths.retain(|path, _| {
            (deployment.dev || !path.starts_with("/dev/")) && (deployment.sandbox || !path.starts_with("/sandbox/"))
        });
    }
    let components = doc.as_object_mut().map(|d| d.entry("components").or_insert_with(|| json!({})));
    if let Some(Value::Object(components)) = components {
        security_schemes(components);
        let responses = components.entry("responses").or_insert_with(|| json!({}));
        if let Value::Object(responses) = responses {
            for (name, _, response) in standard_errors() {
                responses.insert(name.to_owned(), response);
            }
        }
        let parameters = components.entry("parameters").or_insert_with(|| json!({}));
        if let Value::Object(parameters) = parameters {
            parameters.insert("IdempotencyKey".into(), idempotency_key());
        }
        let schemas = components.entry("schemas").or_insert_with(|| json!({}));
        if let Value::Object(schemas) = schemas {
            schema::fill(schemas, deployment);
            events::fill(schemas);
        }
    }
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        for (path, item) in paths.iter_mut() {
            let Value::Object(item) = item else { continue };
            for (method, operation) in item.iter_mut() {
                if let Value::Object(operation) = operation {
                    complete_operation(path, method, operation);
                }
            }
        }
    }
    if let Value::Object(doc) = &mut doc {
        doc.insert("webhooks".into(), events::webhooks());
    }
    doc
}

fn security_schemes(components: &mut Map<String, Value>) {
    let schemes = components.entry("securitySchemes").or_insert_with(|| json!({}));
    if let Value::Object(schemes) = schemes {
        schemes.insert(
            "user_token".into(),
            json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "A signed-in user's JWT from a configured issuer (with `--dev`: from `POST /dev/token`)."}),
        );
        schemes.insert(
            "api_key".into(),
            json!({"type": "http", "scheme": "bearer", "bearerFormat": "sk_…",
                "description": "A server API key `sk_…` (`orgplane keys create`): acts with an owner's rights on any org."}),
        );
    }
}

fn idempotency_key() -> Value {
    json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "A repeat with the same key and body returns the first response; the same key with another body is `422`, and while the first is still running `409`.",
        "schema": {"type": "string", "pattern": "^[ \\t]*[\\x21-\\x7e]{1,255}[ \\t]*$",
            "description": "1 to 255 visible ASCII characters (HTTP drops blanks around a header value)"}
    })
}

/// Each standard error answer: its component name, status and response.
fn standard_errors() -> Vec<(&'static str, &'static str, Value)> {
    let error = |description: &str| {
        json!({"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
    };
    let retry = |description: &str| {
        let mut response = error(description);
        response["headers"] = json!({"Retry-After": {"description": "seconds to wait before trying again",
            "schema": {"type": "integer", "minimum": 0}}});
        response
    };
    vec![
        (
            "BadRequest",
            "400",
            error(
                "`invalid_request`: a malformed id in the path, a bad query parameter, malformed JSON or a bad `Idempotency-Key`; `param` names the culprit",
            ),
        ),
        ("Unauthenticated", "401", error("`unauthenticated`: no credentials, or ones that are not valid")),
        (
            "Forbidden",
            "403",
            error(
                "`forbidden`: the route takes the other kind of credential (a user's token or an API key), or the caller's role lacks the permission",
            ),
        ),
        ("NotFound", "404", error("`not_found`: no such object among those the caller may see")),
        (
            "Conflict",
            "409",
            error(
                "`conflict`: the request conflicts with the current state, or one with the same `Idempotency-Key` is still running",
            ),
        ),
        ("PayloadTooLarge", "413", error("`payload_too_large`: the body is larger than `max_body_bytes`")),
        (
            "UnsupportedMediaType",
            "415",
            error("`invalid_request`: the body must be sent with `Content-Type: application/json`"),
        ),
        (
            "UnprocessableEntity",
            "422",
            error(
                "`invalid_request`: the body is JSON but not a valid request (wrong type, missing or unknown field, a key twice, a control character), or an `Idempotency-Key` reused with another body; `param` names the field",
            ),
        ),
        ("RateLimited", "429", retry("`rate_limited`: too many requests from this caller; wait `Retry-After` seconds")),
        (
            "Unavailable",
            "503",
            retry(
                "`unavailable`: the server is at capacity, the database or identity provider does not answer, or the request took too long; nothing was changed, retry after `Retry-After` seconds",
            ),
        ),
    ]
}

/// What an operation takes, from its description in the document.
struct Facts {
    secured: bool,
    /// Only one kind of credential is taken.
    one_kind: bool,
    path_params: bool,
    query_params: bool,
    json_body: bool,
    idempotent_post: bool,
}

fn complete_operation(path: &str, method: &str, operation: &mut Map<String, Value>) {
    declare_path_params(path, operation);
    // An optional body (`Option<T>`) is left out, never sent as `null`.
    if let Some(schema) =
        operation.get_mut("requestBody").and_then(|b| b.pointer_mut("/content/application~1json/schema"))
        && let Some(Value::Array(alternatives)) = schema.get("oneOf")
        && alternatives.len() == 2
        && let Some(other) = alternatives.iter().find(|a| a.get("type") != Some(&json!("null"))).cloned()
    {
        *schema = other;
    }
    let schemes: Vec<String> = operation
        .get("security")
        .and_then(Value::as_array)
        .map(|alternatives| alternatives.iter().filter_map(Value::as_object).flat_map(|o| o.keys().cloned()).collect())
        .unwrap_or_default();
    let params = operation.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
    let json_body = operation
        .get("requestBody")
        .and_then(|b| b.get("content"))
        .and_then(Value::as_object)
        .is_some_and(|c| c.keys().any(|k| k == "application/json"));
    let facts = Facts {
        secured: !schemes.is_empty(),
        one_kind: schemes.len() == 1,
        path_params: params.iter().any(|p| p["in"] == "path"),
        query_params: params.iter().any(|p| p["in"] == "query"),
        json_body,
        idempotent_post: method == "post" && !schemes.is_empty(),
    };
    if facts.idempotent_post {
        let params = operation.entry("parameters").or_insert_with(|| json!([]));
        if let Value::Array(params) = params {
            params.push(json!({"$ref": "#/components/parameters/IdempotencyKey"}));
        }
    }
    let summary = operation.get("summary").and_then(Value::as_str).unwrap_or("").to_owned();
    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    let Value::Object(responses) = responses else { return };
    let standard = standard_errors();
    let applies = |status: &str| -> bool {
        match status {
            "400" => facts.path_params || facts.query_params || facts.json_body || facts.idempotent_post,
            "401" => facts.secured,
            "403" => facts.one_kind,
            "404" => facts.path_params,
            "409" => facts.idempotent_post,
            "413" | "415" => facts.json_body,
            "422" => facts.json_body || facts.idempotent_post,
            "429" | "503" => true,
            _ => false,
        }
    };
    for (name, status, response) in &standard {
        match responses.get_mut(*status) {
            None if applies(status) => {
                responses.insert((*status).to_owned(), json!({"$ref": format!("#/components/responses/{name}")}));
            }
            // Declared by the route: it keeps its words, or gets the standard ones.
            Some(Value::Object(declared)) => {
                let empty = declared.get("description").and_then(Value::as_str).is_none_or(str::is_empty);
                if empty {
                    declared.insert("description".into(), response["description"].clone());
                }
                if let Some(headers) = response.get("headers") {
                    declared.entry("headers").or_insert_with(|| headers.clone());
                }
            }
            _ => {}
        }
    }
    // A success answer without words says what the operation does.
    for (status, response) in responses.iter_mut() {
        if let Value::Object(response) = response
            && !response.contains_key("$ref")
            && response.get("description").and_then(Value::as_str).is_none_or(str::is_empty)
        {
            let words = if summary.is_empty() { format!("status {status}") } else { summary.clone() };
            response.insert("description".into(), Value::String(words));
        }
    }
}

/// Declares each `{name}` of the path template as a required path
/// parameter, an id's with its prefix pattern.
fn declare_path_params(path: &str, operation: &mut Map<String, Value>) {
    let names: Vec<&str> =
        path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
    if names.is_empty() {
        return;
    }
    let params = operation.entry("parameters").or_insert_with(|| json!([]));
    let Value::Array(params) = params else { return };
    for name in names {
        let (schema, description) = match ID_SCHEMAS.iter().find(|id| id.param == Some(name)) {
            Some(id) => (json!({"$ref": format!("#/components/schemas/{}", id.schema)}), id.description.to_owned()),
            None => (json!({"type": "string", "minLength": 1}), String::new()),
        };
        let mut param = json!({"name": name, "in": "path", "required": true, "schema": schema});
        if !description.is_empty() {
            param["description"] = Value::String(description);
        }
        match params.iter_mut().find(|p| p["in"] == "path" && p["name"] == name) {
            Some(existing) => {
                // The route's own words stay; the schema is the id's.
                if let Some(words) = existing.get("description").cloned() {
                    param["description"] = words;
                }
                *existing = param;
            }
            None => params.insert(0, param),
        }
    }
}

/// An id type of the API: its schema name, prefix, and the path parameter
/// that carries it (if any).
pub struct IdSchema {
    pub schema: &'static str,
    pub prefix: &'static str,
    pub param: Option<&'static str>,
    pub description: &'static str,
}

/// Every id of the API. A route's `{org}`, `{user}`, `{inv}` or `{res}` gets
/// its pattern from here; a new id type is one line.
pub const ID_SCHEMAS: &[IdSchema] = &[
    IdSchema {
        schema: "OrgId",
        prefix: orgplane_core::OrgId::PREFIX,
        param: Some("org"),
        description: "An organization id, `org_…`.",
    },
    IdSchema {
        schema: "UserId",
        prefix: orgplane_core::UserId::PREFIX,
        param: Some("user"),
        description: "A user id, `usr_…`.",
    },
    IdSchema {
        schema: "InvitationId",
        prefix: orgplane_core::InvitationId::PREFIX,
        param: Some("inv"),
        description: "An invitation id, `inv_…`.",
    },
    IdSchema {
        schema: "ResourceId",
        prefix: orgplane_core::ResourceId::PREFIX,
        param: Some("res"),
        description: "A resource id, `res_…`.",
    },
    IdSchema {
        schema: "SubscriptionId",
        prefix: orgplane_core::SubscriptionId::PREFIX,
        param: None,
        description: "A subscription id, `sub_…`.",
    },
    IdSchema {
        schema: "WebhookEndpointId",
        prefix: orgplane_core::WebhookEndpointId::PREFIX,
        param: Some("endpoint"),
        description: "An outgoing webhook endpoint id, `whe_…`.",
    },
    IdSchema {
        schema: "OrgApiKeyId",
        prefix: orgplane_core::OrgApiKeyId::PREFIX,
        param: Some("org_key"),
        description: "An org API key id, `oky_…`.",
    },
    IdSchema {
        schema: "EventId",
        prefix: orgplane_core::EventId::PREFIX,
        param: None,
        description: "An event id, `evt_…`.",
    },
    IdSchema {
        schema: "ApiKeyId",
        prefix: orgplane_core::ApiKeyId::PREFIX,
        param: Some("key"),
        description: "An API key id, `key_…`.",
    },
];

/// The pattern of an id with this prefix: the prefix, `_`, and 26
/// characters of Crockford base32 of which the first carries 3 bits
/// (see `orgplane_core::id`).
pub fn id_pattern(prefix: &str) -> String {
    format!("^{prefix}_[0-7][0-9a-hjkmnp-tv-z]{{25}}$")
}
