//! The events of the log as the document names them: one schema per event
//! type (`OrgCreatedEvent` for `org.created`…), `Event` as the one of them
//! a given event is, and the `webhooks` section that outgoing webhooks
//! deliver them by. Each type's `data` lists what the store writes for it
//! (`crates/store/src`, every `record_event` call); a test reads those
//! calls and checks that each type written is listed here.

use serde_json::{Map, Value, json};

/// A field of an event's `data`.
#[derive(Clone, Copy)]
pub enum Field {
    Text,
    NullableText,
    Integer,
    NullableInteger,
    Boolean,
    /// A named schema (an id, an enum).
    Named(&'static str),
    NullableNamed(&'static str),
    Timestamp,
    NullableTimestamp,
    /// Any JSON object.
    Object,
    /// A list of strings.
    TextList,
    /// A list of a named schema (ids).
    NamedList(&'static str),
}

pub struct EventType {
    pub name: &'static str,
    pub description: &'static str,
    /// Whether the event belongs to an org (`org_id` set) or to the
    /// deployment (users, API keys: `org_id` null).
    pub org: bool,
    pub data: &'static [(&'static str, Field)],
}

use Field::*;

const ORG: (&str, Field) = ("org_id", Named("OrgId"));

/// Every event type the store writes.
pub const EVENT_TYPES: &[EventType] = &[
    EventType {
        name: "org.created",
        description: "An org was created (a team org, or a user's personal org).",
        org: true,
        data: &[ORG, ("kind", Named("OrgKind")), ("name", Text)],
    },
    EventType {
        name: "org.updated",
        description: "An org's name, billing e-mail or settings changed.",
        org: true,
        data: &[ORG, ("name", Text), ("billing_email", NullableText), ("settings", Object)],
    },
    EventType { name: "org.deleted", description: "An org was deleted.", org: true, data: &[ORG] },
    EventType {
        name: "org.converted",
        description: "A personal org became a team org (it got an entitling subscription).",
        org: true,
        data: &[ORG, ("from", Named("OrgKind")), ("to", Named("OrgKind")), ("reason", Text)],
    },
    EventType {
        name: "member.added",
        description: "A user joined an org.",
        org: true,
        data: &[ORG, ("user_id", Named("UserId")), ("role", Text)],
    },
    EventType {
        name: "member.role_changed",
        description: "A member's role changed.",
        org: true,
        data: &[ORG, ("user_id", Named("UserId")), ("from", Text), ("to", Text)],
    },
    EventType {
        name: "member.removed",
        description: "A member was removed.",
        org: true,
        data: &[ORG, ("user_id", Named("UserId"))],
    },
    EventType {
        name: "member.left",
        description: "A member left.",
        org: true,
        data: &[ORG, ("user_id", Named("UserId"))],
    },
    EventType {
        name: "invitation.created",
        description: "An e-mail address was invited.",
        org: true,
        data: &[ORG, ("invitation_id", Named("InvitationId")), ("email", Text), ("role", Text)],
    },
    EventType {
        name: "invitation.resent",
        description: "An invitation got a new token and expiry.",
        org: true,
        data: &[ORG, ("invitation_id", Named("InvitationId"))],
    },
    EventType {
        name: "invitation.revoked",
        description: "An invitation was revoked.",
        org: true,
        data: &[ORG, ("invitation_id", Named("InvitationId"))],
    },
    EventType {
        name: "invitation.accepted",
        description: "An invitation was accepted (a `member.added` follows).",
        org: true,
        data: &[ORG, ("invitation_id", Named("InvitationId")), ("user_id", Named("UserId")), ("role", Text)],
    },
    EventType {
        name: "invitation.declined",
        description: "An invitation was declined.",
        org: true,
        data: &[ORG, ("invitation_id", Named("InvitationId")), ("user_id", Named("UserId")), ("role", Text)],
    },
    EventType {
        name: "resource.created",
        description: "A counted resource was registered.",
        org: true,
        data: &[ORG, ("resource_id", Named("ResourceId")), ("type", Text), ("external_id", NullableText)],
    },
    EventType {
        name: "resource.deleted",
        description: "A counted resource was deleted (its quota is free).",
        org: true,
        data: &[ORG, ("resource_id", Named("ResourceId"))],
    },
    EventType {
        name: "grant.created",
        description: "A member was granted access to a resource.",
        org: true,
        data: &[ORG, ("resource_id", Named("ResourceId")), ("user_id", Named("UserId"))],
    },
    EventType {
        name: "grant.deleted",
        description: "A member's access to a resource was taken away.",
        org: true,
        data: &[ORG, ("resource_id", Named("ResourceId")), ("user_id", Named("UserId"))],
    },
    EventType {
        name: "overrides.updated",
        description: "The org's per-org overrides were replaced.",
        org: true,
        data: &[ORG, ("features", Object), ("limits", Object)],
    },
    EventType {
        name: "checkout.started",
        description: "A checkout was started.",
        org: true,
        data: &[ORG, ("checkout_id", Text), ("provider", Named("Provider")), ("plan", Text), ("seats", Integer)],
    },
    EventType {
        name: "subscription.created",
        description: "The org got a subscription.",
        org: true,
        data: SUBSCRIPTION,
    },
    EventType {
        name: "subscription.updated",
        description: "The org's subscription changed (status, plan, seats, period).",
        org: true,
        data: SUBSCRIPTION,
    },
    EventType {
        name: "subscription.canceled",
        description: "The org's subscription ended.",
        org: true,
        data: SUBSCRIPTION,
    },
    EventType {
        name: "subscription.payment_failed",
        description: "A payment of the org's subscription failed: show a banner linking to `hosted_invoice_url`. \
                      Written once per provider delivery, and not when a later payment of the subscription is already \
                      known; the subscription's status and `grace_ends_at` come from `GET /v1/orgs/{org}/subscription`.",
        org: true,
        data: &[
            ORG,
            ("provider", Named("Provider")),
            ("provider_subscription_id", Text),
            ("invoice_id", Text),
            ("amount_due", NullableInteger),
            ("currency", NullableText),
            ("hosted_invoice_url", NullableText),
            ("attempt_count", NullableInteger),
            ("next_payment_attempt", NullableTimestamp),
            ("failed_at", Timestamp),
        ],
    },
    EventType {
        name: "subscription.linked",
        description: "A subscription made elsewhere (a payment link, the provider's dashboard, a migration) was tied \
                      to the org by `POST /v1/billing/link` or `orgplane billing link`; it follows, in the same \
                      transaction, the `subscription.created` (or `.updated`) that applying it wrote.",
        org: true,
        data: &[
            ORG,
            ("provider", Named("Provider")),
            ("provider_subscription_id", Text),
            ("provider_customer_id", NullableText),
            ("status", Named("SubscriptionStatus")),
        ],
    },
    EventType {
        name: "billing_admin.changed",
        description: "The billing admin changed (a checkout, or a transfer).",
        org: true,
        data: &[ORG, ("from", NullableNamed("UserId")), ("to", Named("UserId")), ("reason", Text)],
    },
    EventType {
        name: "user.created",
        description: "A user signed in for the first time.",
        org: false,
        data: &[("user_id", Named("UserId")), ("email", NullableText)],
    },
    EventType {
        name: "api_key.created",
        description: "An API key was created.",
        org: false,
        data: &[("key_id", Named("ApiKeyId")), ("name", Text)],
    },
    EventType {
        name: "api_key.revoked",
        description: "An API key was revoked.",
        org: false,
        data: &[("key_id", Named("ApiKeyId")), ("name", Text)],
    },
    EventType {
        name: "user.deleted",
        description: "A user was deleted by an administrator: their memberships and personal org went with them.",
        org: false,
        data: &[
            ("user_id", Named("UserId")),
            ("email", NullableText),
            ("left", NamedList("OrgId")),
            ("personal_org", NullableNamed("OrgId")),
        ],
    },
    EventType {
        name: "org_api_key.created",
        description: "An org API key (`ok_…`) was created.",
        org: true,
        data: &[ORG, ("key_id", Named("OrgApiKeyId")), ("name", Text), ("scopes", TextList), ("prefix", Text)],
    },
    EventType {
        name: "org_api_key.revoked",
        description: "An org API key was revoked.",
        org: true,
        data: &[ORG, ("key_id", Named("OrgApiKeyId")), ("name", Text)],
    },
    EventType {
        name: "webhook_endpoint.disabled",
        description: "An outgoing webhook endpoint was disabled: it answered 410, or failed for `webhooks.disable_after_hours`.",
        org: false,
        data: &[("endpoint_id", Named("WebhookEndpointId")), ("org_id", NullableNamed("OrgId")), ("reason", Text)],
    },
    EventType {
        name: "webhook.test",
        description: "Sent by `POST /v1/webhook_endpoints/{endpoint}/test` to that endpoint only; not in the log (`seq` 0).",
        org: false,
        data: &[("endpoint_id", Named("WebhookEndpointId"))],
    },
];

const SUBSCRIPTION: &[(&str, Field)] = &[
    ("subscription_id", Named("SubscriptionId")),
    ORG,
    ("provider", Named("Provider")),
    ("provider_subscription_id", Text),
    ("status", Named("SubscriptionStatus")),
    ("previous_status", NullableNamed("SubscriptionStatus")),
    ("price_id", NullableText),
    ("seats", Integer),
    ("cancel_at_period_end", Boolean),
    ("current_period_end", NullableTimestamp),
    ("trial_end", NullableTimestamp),
];

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn field_schema(field: Field) -> Value {
    match field {
        Text => json!({"type": "string"}),
        NullableText => json!({"type": ["string", "null"]}),
        Integer => json!({"type": "integer"}),
        NullableInteger => json!({"type": ["integer", "null"]}),
        Boolean => json!({"type": "boolean"}),
        Named(name) => reference(name),
        NullableNamed(name) => json!({"anyOf": [reference(name), {"type": "null"}]}),
        Timestamp => json!({"type": "string", "format": "date-time"}),
        NullableTimestamp => json!({"type": ["string", "null"], "format": "date-time"}),
        Object => json!({"type": "object"}),
        TextList => json!({"type": "array", "items": {"type": "string"}}),
        NamedList(name) => json!({"type": "array", "items": reference(name)}),
    }
}

/// `OrgCreatedEvent` for `org.created`.
pub fn schema_name(event_type: &str) -> String {
    let mut name = String::new();
    for word in event_type.split(['.', '_']) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name.push_str("Event");
    name
}

fn event_schema(event: &EventType) -> Value {
    let data_properties: Map<String, Value> =
        event.data.iter().map(|(name, field)| ((*name).to_owned(), field_schema(*field))).collect();
    let data_required: Vec<&str> = event.data.iter().map(|(name, _)| *name).collect();
    let org_id = if event.org { reference("OrgId") } else { json!({"type": "null"}) };
    json!({
        "type": "object",
        "description": event.description,
        "required": ["id", "org_id", "type", "actor", "data", "created_at", "seq"],
        "properties": {
            "id": reference("EventId"),
            "org_id": org_id,
            "type": {"type": "string", "const": event.name},
            "actor": {"type": "string", "description": "`usr_…`, `key_…`, `provider:<event id>` or `system`"},
            "data": {"type": "object", "required": data_required, "properties": data_properties},
            "created_at": reference("Timestamp"),
            "seq": {"type": "integer", "minimum": 0, "description": "The event's place in the commit-ordered log (not contiguous): of two events about one org, the higher `seq` is the newer state. The org's change generation."},
        }
    })
}

/// Writes one schema per event type, and `Event`: one of them.
pub fn fill(schemas: &mut Map<String, Value>) {
    let mut one_of = Vec::new();
    let mut mapping = Map::new();
    for event in EVENT_TYPES {
        let name = schema_name(event.name);
        schemas.insert(name.clone(), event_schema(event));
        one_of.push(reference(&name));
        mapping.insert(event.name.to_owned(), Value::String(format!("#/components/schemas/{name}")));
    }
    // utoipa writes a generic's argument inline; the audit log's page holds events.
    if let Some(items) = schemas.get_mut("List_Event").and_then(|list| list.pointer_mut("/properties/data/items")) {
        *items = reference("Event");
    }
    schemas.insert(
        "Event".into(),
        json!({
            "description": "A committed change, as the audit log, the event stream and outgoing webhooks carry it.",
            "oneOf": one_of,
            "discriminator": {"propertyName": "type", "mapping": mapping},
        }),
    );
}

/// The `webhooks` section: what an outgoing webhook endpoint receives for
/// each event type (Standard Webhooks signatures).
pub fn webhooks() -> Value {
    let mut hooks = Map::new();
    for event in EVENT_TYPES {
        hooks.insert(
            event.name.to_owned(),
            json!({"post": {
                "operationId": format!("on_{}", event.name.replace('.', "_")),
                "summary": event.description,
                "parameters": [
                    {"name": "webhook-id", "in": "header", "required": true, "description": "the event id", "schema": reference("EventId")},
                    {"name": "webhook-timestamp", "in": "header", "required": true, "description": "unix seconds", "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                    {"name": "webhook-signature", "in": "header", "required": true,
                        "description": "`v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">`, space-separated during a secret rotation",
                        "schema": {"type": "string"}},
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": reference(&schema_name(event.name))}}},
                "responses": {"2XX": {"description": "delivered; anything else is retried"}},
            }}),
        );
    }
    Value::Object(hooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string literal shaped like an event type (`word.word`, lower
    /// case) in the store's sources: what its `record_event` calls write.
    fn written_by_the_store() -> Vec<String> {
        let mut dirs = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../store/src"))];
        let mut files = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).expect("the store's sources") {
                let path = entry.expect("an entry").path();
                if path.is_dir() { dirs.push(path) } else { files.push(path) }
            }
        }
        let mut types = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(path).expect("a source file");
            if !text.contains("record_event(") && !text.contains("record_user_event(") {
                continue;
            }
            for literal in text.split('"').skip(1).step_by(2) {
                let parts: Vec<&str> = literal.split('.').collect();
                let shaped = parts.len() == 2
                    && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
                if shaped {
                    types.push(literal.to_owned());
                }
            }
        }
        types.sort();
        types.dedup();
        types
    }

    #[test]
    fn every_event_type_the_store_writes_has_a_schema() {
        let listed: Vec<&str> = EVENT_TYPES.iter().map(|e| e.name).collect();
        let written = written_by_the_store();
        assert!(
            written.iter().any(|t| t == "member.role_changed"),
            "the store's event types were not read: {written:?}"
        );
        let missing: Vec<&String> = written.iter().filter(|t| !listed.contains(&t.as_str())).collect();
        assert!(missing.is_empty(), "event types without a schema in openapi/events.rs: {missing:?}");
    }

    #[test]
    fn schema_names_read_as_type_names() {
        assert_eq!(schema_name("org.created"), "OrgCreatedEvent");
        assert_eq!(schema_name("billing_admin.changed"), "BillingAdminChangedEvent");
    }
}
