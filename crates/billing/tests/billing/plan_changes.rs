//! Plan changes, previews and resumes against the local stand-in: each
//! request asserted field by field, answers parsed.

use std::time::Duration;

use axum::http::Method;
use orgplane_billing::{LemonSqueezyClient, PaymentProvider, PlanChange, Proration, StripeClient};
use orgplane_core::subscription::SubscriptionStatus;
use serde_json::json;

use crate::fixtures::{ls_subscription, stripe_object};
use crate::stand_in::StandIn;

const TIMEOUT: Duration = Duration::from_secs(5);

fn stripe(stand_in: &StandIn) -> PaymentProvider {
    PaymentProvider::Stripe(StripeClient::new("sk_test_orgplane", &stand_in.origin, TIMEOUT).expect("client builds"))
}

fn lemonsqueezy(stand_in: &StandIn) -> PaymentProvider {
    let client = LemonSqueezyClient::new("ls_test_key", "12345", &format!("{}/v1", stand_in.origin), TIMEOUT);
    PaymentProvider::LemonSqueezy(client.expect("client builds"))
}

fn change(price: &str, quantity: Option<u32>, proration: Proration) -> PlanChange {
    PlanChange {
        subscription_id: "sub_1".into(),
        item_id: "si_1".into(),
        price_id: price.into(),
        quantity,
        proration,
        idempotency_key: "change-org-1".into(),
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[tokio::test]
async fn stripe_change_swaps_the_price_of_the_same_item_with_proration_and_idempotency_key() {
    let stand_in = StandIn::start(200, stripe_object("subscription").to_string()).await;
    let provider = stripe(&stand_in);
    provider.change_plan(&change("price_ent", Some(7), Proration::AlwaysInvoice)).await.expect("changed");
    provider.change_plan(&change("price_biz", None, Proration::CreateProrations)).await.expect("changed");
    let requests = stand_in.requests();
    assert_eq!((&requests[0].method, requests[0].path.as_str()), (&Method::POST, "/v1/subscriptions/sub_1"));
    assert_eq!(requests[0].header("idempotency-key"), Some("change-org-1"));
    assert_eq!(
        requests[0].form(),
        pairs(&[
            ("items[0][id]", "si_1"),
            ("items[0][price]", "price_ent"),
            ("items[0][quantity]", "7"),
            ("proration_behavior", "always_invoice"),
        ])
    );
    assert_eq!(
        requests[1].form(),
        pairs(&[
            ("items[0][id]", "si_1"),
            ("items[0][price]", "price_biz"),
            ("proration_behavior", "create_prorations")
        ])
    );
}

#[tokio::test]
async fn stripe_preview_reads_amount_lines_and_prorations_from_the_invoice() {
    let answer = json!({
        "object": "invoice", "amount_due": 4150, "currency": "usd", "next_payment_attempt": 1_767_225_600,
        "lines": {"object": "list", "data": [
            {"amount": -1000, "description": "Unused time on Business", "quantity": 5,
             "period": {"start": 1_764_547_200, "end": 1_767_225_600},
             "parent": {"subscription_item_details": {"proration": true}}},
            {"amount": 5150, "description": "5 × Enterprise", "quantity": 5,
             "period": {"start": 1_767_225_600, "end": 1_769_904_000},
             "parent": {"subscription_item_details": {"proration": false}}}
        ]}
    });
    let stand_in = StandIn::start(200, answer.to_string()).await;
    let preview =
        stripe(&stand_in).preview_change(&change("price_ent", Some(5), Proration::None)).await.expect("preview");
    let request = stand_in.only_request();
    assert_eq!((&request.method, request.path.as_str()), (&Method::POST, "/v1/invoices/create_preview"));
    assert_eq!(
        request.form(),
        pairs(&[
            ("subscription", "sub_1"),
            ("subscription_details[items][0][id]", "si_1"),
            ("subscription_details[items][0][price]", "price_ent"),
            ("subscription_details[items][0][quantity]", "5"),
            ("subscription_details[proration_behavior]", "none"),
        ])
    );
    assert_eq!((preview.amount_due, preview.currency.as_deref()), (Some(4150), Some("usd")));
    assert_eq!(
        preview.lines.iter().map(|l| (l.amount, l.proration)).collect::<Vec<_>>(),
        [(-1000, true), (5150, false)]
    );
    assert_eq!(preview.next_payment_at.map(|t| t.unix_timestamp()), Some(1_767_225_600));
    assert!(!preview.proration_by_provider);
}

#[tokio::test]
async fn stripe_resume_posts_to_resume_with_a_new_cycle() {
    let stand_in = StandIn::start(200, stripe_object("subscription").to_string()).await;
    stripe(&stand_in).resume("sub_1", "resume-org-1").await.expect("resumed");
    let request = stand_in.only_request();
    assert_eq!((&request.method, request.path.as_str()), (&Method::POST, "/v1/subscriptions/sub_1/resume"));
    assert_eq!(request.header("idempotency-key"), Some("resume-org-1"));
    assert_eq!(request.form(), pairs(&[("billing_cycle_anchor", "now")]));
}

#[tokio::test]
async fn lemonsqueezy_change_patches_the_variant_with_mapped_proration_flags_and_unpause_clears_pause() {
    let mut document = ls_subscription("subscription_updated", "active");
    document.as_object_mut().expect("object").remove("meta");
    let stand_in = StandIn::start(200, document.to_string()).await;
    let provider = lemonsqueezy(&stand_in);
    let mut ls_change = change("334", None, Proration::None);
    ls_change.subscription_id = "1".into();
    let snapshot = provider.change_plan(&ls_change).await.expect("changed");
    assert_eq!(snapshot.status, SubscriptionStatus::Active);
    ls_change.proration = Proration::AlwaysInvoice;
    provider.change_plan(&ls_change).await.expect("changed");
    ls_change.proration = Proration::CreateProrations;
    provider.change_plan(&ls_change).await.expect("changed");
    provider.resume("1", "ignored").await.expect("unpaused");
    let requests = stand_in.requests();
    assert!(requests.iter().all(|r| (&r.method, r.path.as_str()) == (&Method::PATCH, "/v1/subscriptions/1")));
    let attributes: Vec<_> = requests.iter().map(|r| r.json()["data"]["attributes"].clone()).collect();
    assert_eq!(
        attributes,
        [
            json!({"variant_id": 334, "disable_prorations": true}),
            json!({"variant_id": 334, "invoice_immediately": true}),
            json!({"variant_id": 334}),
            json!({"pause": null}),
        ]
    );
    assert_eq!(requests[0].json()["data"]["id"], "1");
    assert_eq!(requests[0].json()["data"]["type"], "subscriptions");
}

#[tokio::test]
async fn lemonsqueezy_preview_is_the_variant_price_per_period_and_says_the_provider_prorates() {
    let variant = json!({"data": {"type": "variants", "id": "334",
        "attributes": {"name": "Enterprise", "price": 9900, "interval": "month", "interval_count": 1}}});
    let stand_in = StandIn::start(200, variant.to_string()).await;
    let preview =
        lemonsqueezy(&stand_in).preview_change(&change("334", Some(3), Proration::default())).await.expect("preview");
    let request = stand_in.only_request();
    assert_eq!((&request.method, request.path.as_str()), (&Method::GET, "/v1/variants/334"));
    assert!(preview.proration_by_provider);
    assert_eq!(preview.amount_due, None);
    assert_eq!(preview.lines[0].amount, 29_700);
    assert_eq!(preview.lines[0].description.as_deref(), Some("3 × Enterprise per month"));
}
