//! Named schemas whose values the document lists: ids with their prefix
//! pattern, the fixed enums (statuses, kinds) from the types that define
//! them, and the deployment's own vocabularies (roles, features, limit
//! keys, resource types, plans) from its config.
//!
//! A field names one with `#[schema(value_type = schema::Role)]`; the types
//! here are placeholders that give utoipa the name, and [`fill`] writes the
//! schema itself.

use serde_json::{Map, Value, json};

use super::{Deployment, ID_SCHEMAS, id_pattern};

macro_rules! placeholders {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            #[derive(utoipa::ToSchema)]
            #[allow(dead_code)]
            pub struct $name(String);
        )*
    };
}

placeholders!(
    OrgId,
    UserId,
    InvitationId,
    ResourceId,
    SubscriptionId,
    EventId,
    ApiKeyId,
    OrgKind,
    Role,
    Feature,
    LimitKey,
    ResourceType,
    Plan,
    PlanForSale,
    SubscriptionStatus,
    InvitationStatus,
    ProviderEventStatus,
    Provider,
    EventType,
    Timestamp,
    Email,
    HttpUrl,
    /// An outgoing webhook endpoint's event filter entry.
    EventTypePattern,
    /// What became of a webhook delivery.
    DeliveryStatus,
    /// A key's name.
    KeyName,
    /// A server key's scope.
    KeyScope,
    /// One of the app's scope names on an org API key.
    OrgKeyScope,
    OrgName,
    Label,
    Text,
    /// A payment provider's subscription id.
    ProviderSubscriptionId,
    Settings,
    Overrides,
    Seats,
    Event,
);

/// No control character (the text rule of `orgplane_core::values`).
const ONE_LINE: &str = "[^\\x00-\\x1f\\x7f-\\x9f]";
/// Free text: line breaks and tabs allowed.
const MULTI_LINE: &str = "[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]";

/// Writes every named schema of this module into `schemas`.
pub fn fill(schemas: &mut Map<String, Value>, deployment: &Deployment) {
    for id in ID_SCHEMAS {
        schemas.insert(
            id.schema.into(),
            json!({"type": "string", "pattern": id_pattern(id.prefix), "description": id.description,
                "example": format!("{}_0mk3r8w1b5c2d7e9f4g6h8j0ka", id.prefix)}),
        );
    }
    let enumeration =
        |values: Vec<String>, description: &str| json!({"type": "string", "enum": values, "description": description});
    let strings = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
    use orgplane_core::org::OrgKind as Kind;
    use orgplane_core::subscription::{Provider as Prov, SubscriptionStatus as Status};
    let entries = [
        (
            "OrgKind",
            enumeration(
                vec![Kind::Personal.as_str().into(), Kind::Team.as_str().into()],
                "A personal org (one member) or a team org.",
            ),
        ),
        (
            "Role",
            enumeration(
                deployment.roles.clone(),
                "A member's role: `owner`, `admin`, `member`, or a custom role of this deployment.",
            ),
        ),
        ("Feature", enumeration(deployment.features.clone(), "A feature of this deployment's plan catalog.")),
        (
            "LimitKey",
            enumeration(
                deployment.limit_keys.clone(),
                "A limit of this deployment's plan catalog: `seats` or a resource type.",
            ),
        ),
        ("ResourceType", enumeration(deployment.resource_types.clone(), "A resource type this deployment counts.")),
        ("Plan", enumeration(deployment.plans.clone(), "A plan of this deployment's catalog.")),
        (
            "PlanForSale",
            enumeration(deployment.plans_for_sale.clone(), "A plan a checkout sells: any but the default plan."),
        ),
        (
            "SubscriptionStatus",
            enumeration(
                Status::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
                "A subscription's status, as orgplane names it for every provider.",
            ),
        ),
        ("InvitationStatus", enumeration(strings(&invitation_statuses()), "An invitation's status.")),
        (
            "ProviderEventStatus",
            enumeration(
                orgplane_store::ProviderEventStatus::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
                "What became of a stored provider event.",
            ),
        ),
        (
            "Provider",
            enumeration(
                [Prov::Stripe, Prov::Lemonsqueezy, Prov::Sandbox].iter().map(|p| p.as_str().to_owned()).collect(),
                "A payment provider.",
            ),
        ),
        (
            "EventType",
            enumeration(
                super::events::EVENT_TYPES.iter().map(|e| e.name.to_owned()).collect(),
                "The type of an event of the log (the audit log, the event stream, outgoing webhooks).",
            ),
        ),
        ("Timestamp", json!({"type": "string", "format": "date-time", "description": "RFC 3339, UTC."})),
        // ASCII only here, though the server also takes other letters: the
        // 64-byte local part is then easy to state.
        (
            "Email",
            json!({"type": "string", "maxLength": 254, "description": "An e-mail address (compared lower-cased).",
            "pattern": "^[!#-?A-~]{1,64}@[!#--/-?A-~]+(\\.[!#--/-?A-~]+)+$", "example": "dr.smith@clinic.example"}),
        ),
        (
            "EventTypePattern",
            json!({"type": "string", "maxLength": 100, "pattern": "^(\\*|[a-z0-9_]+(\\.[a-z0-9_]+)*(\\.\\*)?)$",
                "description": "An exact event type (`org.updated`), a prefix (`subscription.*`) or `*` (every event).",
                "example": "subscription.*"}),
        ),
        (
            "DeliveryStatus",
            enumeration(strings(&["pending", "succeeded", "failed"]), "What became of a webhook delivery."),
        ),
        ("KeyScope", enumeration(strings(&["read", "write", "admin"]), "What a server key may do.")),
        (
            "KeyName",
            json!({"type": "string", "minLength": 1, "maxLength": 100,
                "pattern": format!("^{ONE_LINE}*[^\\s\\x00-\\x1f\\x7f-\\x9f]{ONE_LINE}*$"),
                "description": "1 to 100 characters, one line, not only blanks (blanks around it are dropped)."}),
        ),
        (
            "OrgKeyScope",
            json!({"type": "string", "pattern": "^[A-Za-z0-9_:.-]{1,64}$",
                "description": "A scope name of the app's: 1 to 64 letters, digits, `_`, `-`, `:` and `.`."}),
        ),
        (
            "HttpUrl",
            json!({"type": "string", "format": "uri", "maxLength": 2048, "description": "An absolute http(s) URL.",
            "pattern": "^https?://[a-z0-9]+(\\.[a-z0-9]+)*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]*)*$", "example": "https://app.example/billing"}),
        ),
        (
            "OrgName",
            json!({"type": "string", "minLength": 1, "maxLength": 100,
            "description": "An organization's name: 1 to 100 characters once trimmed, one line.",
            "pattern": format!("^{ONE_LINE}*[^\\s\\x00-\\x1f\\x7f-\\x9f]{ONE_LINE}*$"), "example": "Downtown Clinic"}),
        ),
        (
            "Label",
            json!({"type": "string", "minLength": 1, "maxLength": 256, "description": "1 to 256 characters, one line.",
            "pattern": format!("^{ONE_LINE}*$")}),
        ),
        (
            "ProviderSubscriptionId",
            json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[A-Za-z0-9_-]+$",
                "description": "A subscription's id at its provider: Stripe `sub_…`, a Lemon Squeezy number, a sandbox `sbxsub_…`.",
                "example": "sub_1QxYz2AbCdEfGh"}),
        ),
        (
            "Text",
            json!({"type": "string", "description": "One line of text: no control characters.", "pattern": format!("^{ONE_LINE}*$")}),
        ),
        (
            "Settings",
            json!({"type": "object", "description": "Free-form settings: keys are one line of text; string values may break lines.",
            "propertyNames": {"$ref": "#/components/schemas/Text"},
            "additionalProperties": {"$ref": "#/components/schemas/SettingsValue"}}),
        ),
        (
            "SettingsValue",
            json!({"anyOf": [
                {"type": "null"}, {"type": "boolean"}, {"type": "number"},
                {"type": "string", "pattern": format!("^{MULTI_LINE}*$")},
                {"type": "array", "items": {"$ref": "#/components/schemas/SettingsValue"}},
                {"$ref": "#/components/schemas/Settings"},
            ]}),
        ),
        (
            "Overrides",
            json!({"type": "object", "additionalProperties": false,
            "description": "Per-org overrides: features on or off, limits replaced (`null` = unlimited). `{}` clears them.",
            "properties": {
                "features": {"type": "object", "propertyNames": {"$ref": "#/components/schemas/Feature"}, "additionalProperties": {"type": "boolean"}},
                "limits": {"type": "object", "propertyNames": {"$ref": "#/components/schemas/LimitKey"},
                    "additionalProperties": {"type": ["integer", "null"], "minimum": 0, "maximum": i64::MAX}},
            }}),
        ),
        (
            "Seats",
            json!({"type": "integer", "minimum": orgplane_core::subscription::SEATS.start(),
            "maximum": orgplane_core::subscription::SEATS.end(), "description": "A purchased quantity of seats."}),
        ),
    ];
    for (name, schema) in entries {
        schemas.insert(name.into(), schema);
    }
}

fn invitation_statuses() -> [&'static str; 4] {
    use orgplane_core::invitation::InvitationStatus as S;
    [S::Pending.as_str(), S::Accepted.as_str(), S::Declined.as_str(), S::Revoked.as_str()]
}
