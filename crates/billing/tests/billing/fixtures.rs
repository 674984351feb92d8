//! Test data: Stripe's reference objects (copied into `tests/fixtures/`),
//! event envelopes around them, and Lemon Squeezy payloads built from the
//! documented field list.

use std::path::PathBuf;

use orgplane_core::OrgId;
use serde_json::{Value, json};

pub const EVENT_CREATED: i64 = 1_750_000_000;

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One object from Stripe's reference objects (`resources.<name>`).
pub fn stripe_object(name: &str) -> Value {
    let all: Value = serde_json::from_slice(&fixture_bytes("stripe/objects.json")).expect("objects.json is JSON");
    all["resources"][name].clone()
}

/// A Stripe event envelope around `object`, as a webhook body.
pub fn stripe_event(kind: &str, object: Value) -> Vec<u8> {
    let event = json!({
        "id": "evt_1TestEnvelope",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": EVENT_CREATED,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": kind,
        "data": { "object": object },
    });
    serde_json::to_vec(&event).expect("serializes")
}

/// A fixed, valid org id.
pub fn org() -> OrgId {
    "org_01jx7k2m3n4p5q6r7s8t9v0w1x".parse().expect("valid org id")
}

pub const LS_UPDATED_AT: &str = "2024-05-01T10:00:00.000000Z";

/// A Lemon Squeezy `subscriptions` webhook, with the attributes PROVIDERS.md lists.
pub fn ls_subscription(event_name: &str, status: &str) -> Value {
    json!({
        "meta": {
            "test_mode": true,
            "event_name": event_name,
            "webhook_id": "6f0e0c3d-1f5b-4a8e-9a43-5d1c5b1c2f10",
            "custom_data": { "org_id": org().to_string() },
        },
        "data": {
            "type": "subscriptions",
            "id": "1",
            "attributes": {
                "store_id": 12345,
                "customer_id": 67890,
                "order_id": 111,
                "order_item_id": 112,
                "product_id": 222,
                "variant_id": 333,
                "product_name": "orgplane",
                "variant_name": "Team monthly",
                "user_name": "Ada",
                "user_email": "ada@example.com",
                "status": status,
                "status_formatted": status,
                "cancelled": status == "cancelled",
                "pause": null,
                "trial_ends_at": "2024-05-08T10:00:00.000000Z",
                "billing_anchor": 1,
                "first_subscription_item": {
                    "id": 444,
                    "subscription_id": 1,
                    "price_id": 555,
                    "quantity": 4,
                    "is_usage_based": false,
                    "created_at": "2024-04-01T10:00:00.000000Z",
                    "updated_at": "2024-04-01T10:00:00.000000Z"
                },
                "urls": {
                    "update_payment_method": "https://orgplane.lemonsqueezy.com/subscription/1/payment-details?signature=abc",
                    "customer_portal": "https://orgplane.lemonsqueezy.com/billing?expires=1714600000&signature=def"
                },
                "renews_at": "2024-06-01T10:00:00.000000Z",
                "ends_at": if status == "cancelled" || status == "expired" { json!("2024-05-20T10:00:00.000000Z") } else { Value::Null },
                "created_at": "2024-04-01T10:00:00.000000Z",
                "updated_at": LS_UPDATED_AT,
                "test_mode": true
            },
            "relationships": {},
            "links": { "self": "https://api.lemonsqueezy.com/v1/subscriptions/1" }
        }
    })
}

/// A Lemon Squeezy `subscription-invoices` webhook.
pub fn ls_invoice(event_name: &str) -> Value {
    json!({
        "meta": { "test_mode": true, "event_name": event_name, "custom_data": { "org_id": org().to_string() } },
        "data": {
            "type": "subscription-invoices",
            "id": "9001",
            "attributes": {
                "store_id": 12345,
                "subscription_id": 1,
                "customer_id": 67890,
                "billing_reason": "renewal",
                "status": if event_name == "subscription_payment_failed" { "pending" } else { "paid" },
                "total": 2000,
                "currency": "USD",
                "urls": { "invoice_url": "https://app.lemonsqueezy.com/my-orders/invoice/9001" },
                "created_at": LS_UPDATED_AT,
                "updated_at": LS_UPDATED_AT,
                "test_mode": true
            }
        }
    })
}

pub fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serializes")
}
