//! `GET /v1/orgs/{org}/invoices`: the org's invoices straight from its
//! provider. The Stripe and Lemon Squeezy stand-ins check each list request
//! field by field; the sandbox lists one invoice per paid period.

use reqwest::Method;
use serde_json::{Value, json};

use crate::billing_support::*;
use crate::helpers::{Backend, TestApp, TestUser};
use crate::on_both_backends;

on_both_backends!(
    stripe_invoices_are_listed_from_stripe_page_by_page,
    lemonsqueezy_invoices_are_listed_newest_first_across_its_pages,
    the_sandbox_lists_one_invoice_per_paid_period,
    invoices_need_billing_manage_and_a_cursor_of_the_list,
);

async fn clinic(app: &TestApp) -> (TestUser, String) {
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    (smith, org)
}

fn stripe_invoice(id: &str, subscription: &str, n: i64) -> Value {
    let mut invoice = stripe_object("invoice");
    invoice["id"] = json!(id);
    invoice["subscription"] = json!(subscription);
    invoice["number"] = json!(format!("CLINIC-{n:04}"));
    invoice["status"] = json!("paid");
    invoice["amount_due"] = json!(4_500 + n);
    invoice["currency"] = json!("eur");
    invoice["period_start"] = json!(1_767_225_600 + n * 2_592_000);
    invoice["period_end"] = json!(1_767_225_600 + (n + 1) * 2_592_000);
    invoice["created"] = json!(1_767_225_600 + n * 2_592_000);
    invoice["hosted_invoice_url"] = json!(format!("https://invoice.stripe.test/i/{id}"));
    invoice["invoice_pdf"] = json!(format!("https://pay.stripe.test/invoice/{id}/pdf"));
    invoice
}

async fn stripe_invoices_are_listed_from_stripe_page_by_page(backend: Backend) {
    let stripe = StandIn::stripe().await;
    let Some(app) = stripe_app(backend, &stripe, |c| c.billing.refetch_on_webhook = false).await else { return };
    let (smith, org) = clinic(&app).await;
    let path = format!("/v1/orgs/{org}/invoices");
    // No subscription, no invoices, and no provider call.
    let res = app.get(&path, &smith.token).await;
    assert_eq!(res.expect(200), &json!({"data": [], "has_more": false}));
    assert!(stripe.requests().is_empty());

    let sub = StripeSub::new("sub_clinic", Some(&org), "cus_clinic");
    let created = stripe_event("evt_created", "customer.subscription.created", now(), sub.object());
    app.stripe_webhook(&created).await.expect(200);
    for n in 1..=3 {
        stripe.add_invoice(stripe_invoice(&format!("in_clinic{n}"), "sub_clinic", n));
    }
    stripe.add_invoice(stripe_invoice("in_other", "sub_other", 9));

    let first = app.get(&format!("{path}?limit=2"), &smith.token).await;
    let body = first.expect(200);
    assert_eq!(body["has_more"], true);
    let ids: Vec<&str> = body["data"].as_array().expect("list").iter().map(|i| i["id"].as_str().expect("id")).collect();
    assert_eq!(ids, ["in_clinic3", "in_clinic2"], "newest first, this subscription's only");
    assert_eq!(
        body["data"][0],
        json!({
            "id": "in_clinic3", "number": "CLINIC-0003", "status": "paid", "amount": 4503, "currency": "eur",
            "period_start": "2026-04-01T00:00:00Z", "period_end": "2026-05-01T00:00:00Z",
            "hosted_url": "https://invoice.stripe.test/i/in_clinic3",
            "pdf_url": "https://pay.stripe.test/invoice/in_clinic3/pdf",
            "created_at": "2026-04-01T00:00:00Z",
        })
    );
    let second = app.get(&format!("{path}?limit=2&starting_after=in_clinic2"), &smith.token).await;
    let body = second.expect(200);
    assert_eq!(body["has_more"], false);
    assert_eq!(body["data"].as_array().expect("list").len(), 1);
    assert_eq!(body["data"][0]["id"], "in_clinic1");

    let sent = stripe.requests_to(Method::GET, "/v1/invoices");
    assert_eq!(sent.len(), 2);
    for req in &sent {
        assert_eq!(req.header("authorization"), Some(format!("Bearer {STRIPE_KEY}").as_str()));
        assert_eq!(req.query_field("subscription").as_deref(), Some("sub_clinic"));
        assert_eq!(req.query_field("limit").as_deref(), Some("2"));
    }
    assert_eq!(sent[0].query().len(), 2, "nothing else is sent: {:?}", sent[0].query());
    assert_eq!(sent[1].query_field("starting_after").as_deref(), Some("in_clinic2"));
    assert_eq!(sent[1].query().len(), 3, "nothing else is sent: {:?}", sent[1].query());

    // A cursor Stripe does not know is the caller's mistake, said as such.
    let res = app.get(&format!("{path}?starting_after=in_nope"), &smith.token).await;
    res.expect_error(400, "invalid_request");
    assert!(res.body["error"]["message"].as_str().is_some_and(|m| m.contains("in_nope")), "{}", res.body);
}

fn ls_invoice(id: u64, n: i64) -> Value {
    let day = n % 28 + 1;
    let month = n / 28 % 12 + 1;
    let year = 2020 + n / (28 * 12);
    json!({
        "id": id, "subscription_id": 1, "store_id": 4242, "customer_id": 67890,
        "billing_reason": if n == 0 { "initial" } else { "renewal" },
        "status": "paid", "total": 1999, "currency": "USD",
        "created_at": format!("{year}-{month:02}-{day:02}T10:00:00.000000Z"),
        "urls": {"invoice_url": format!("https://app.lemonsqueezy.com/my-orders/{id}/subscription-invoice/{id}?signature=x")},
    })
}

async fn lemonsqueezy_invoices_are_listed_newest_first_across_its_pages(backend: Backend) {
    let ls = StandIn::lemonsqueezy().await;
    let Some(app) = lemonsqueezy_app(backend, &ls, |c| c.billing.refetch_on_webhook = false).await else { return };
    let (smith, org) = clinic(&app).await;
    let created = ls_event("subscription_created", Some(&org), "active", "2026-01-01T10:00:00.000000Z", None);
    app.ls_webhook(&created).await.expect(200);
    // 150 invoices: two of Lemon Squeezy's pages of 100, oldest first there.
    for n in 0..150 {
        ls.add_invoice(ls_invoice(9000 + n as u64, n));
    }
    ls.add_invoice(json!({"id": 1, "subscription_id": 2, "status": "paid", "total": 1, "currency": "USD",
        "created_at": "2030-01-01T10:00:00.000000Z"}));

    let path = format!("/v1/orgs/{org}/invoices");
    let res = app.get(&format!("{path}?limit=100"), &smith.token).await;
    let body = res.expect(200).clone();
    assert_eq!(body["has_more"], true);
    let data = body["data"].as_array().expect("list");
    assert_eq!(data.len(), 100);
    assert_eq!(data[0]["id"], "9149", "newest first");
    assert_eq!(data[99]["id"], "9050");
    assert_eq!(
        data[0],
        json!({
            "id": "9149", "number": null, "status": "paid", "amount": 1999, "currency": "usd",
            "period_start": null, "period_end": null,
            "hosted_url": "https://app.lemonsqueezy.com/my-orders/9149/subscription-invoice/9149?signature=x",
            "pdf_url": null, "created_at": "2020-06-10T10:00:00Z",
        })
    );
    let res = app.get(&format!("{path}?limit=100&starting_after=9050"), &smith.token).await;
    let body = res.expect(200);
    assert_eq!(body["has_more"], false);
    let data = body["data"].as_array().expect("list");
    assert_eq!(data.len(), 50);
    assert_eq!(data[49]["id"], "9000");

    let sent = ls.requests_to(Method::GET, "/v1/subscription-invoices");
    assert_eq!(sent.len(), 4, "two pages per list");
    for (req, page) in sent.iter().zip(["1", "2", "1", "2"]) {
        assert_eq!(req.header("authorization"), Some(format!("Bearer {LS_KEY}").as_str()));
        assert_eq!(req.header("accept"), Some("application/vnd.api+json"));
        assert_eq!(req.query_field("filter[subscription_id]").as_deref(), Some("1"));
        assert_eq!(req.query_field("page[number]").as_deref(), Some(page));
        assert_eq!(req.query_field("page[size]").as_deref(), Some("100"));
        assert_eq!(req.query().len(), 3, "nothing else is sent: {:?}", req.query());
    }
    let res = app.get(&format!("{path}?starting_after=1"), &smith.token).await;
    res.expect_error(400, "invalid_request");
}

async fn the_sandbox_lists_one_invoice_per_paid_period(backend: Backend) {
    let Some(app) = sandbox_app(backend, |c| {
        c.billing.retry_interval_secs = 0;
        c.billing.reconcile_interval_secs = 0;
    })
    .await
    else {
        return;
    };
    let (smith, org) = clinic(&app).await;
    let body = json!({"plan": "business", "seats": 3, "success_url": "https://app.example/done", "cancel_url": "https://app.example/"});
    let url = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, body).await.expect(200)["url"]
        .as_str()
        .expect("url")
        .to_owned();
    app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await.expect(200);
    let path = format!("/v1/orgs/{org}/invoices");
    let first = app.get(&path, &smith.token).await.expect(200).clone();
    let data = first["data"].as_array().expect("list");
    assert_eq!(data.len(), 1, "the first period, paid at checkout");
    let sub = app.subscription(&org, &smith.token).await.expect(200).clone();
    assert_eq!(data[0]["status"], "paid");
    assert_eq!(data[0]["amount"], 3 * 1_000, "10.00 a seat a period");
    assert_eq!(data[0]["currency"], "usd");
    assert_eq!(data[0]["period_end"], sub["current_period_end"]);
    assert_eq!(data[0]["number"], format!("{}-0001", sub["provider_subscription_id"].as_str().expect("id")));

    // Two periods and a day pass (30-day periods): the two renewed periods
    // are invoiced once each, however often reconciliation runs.
    app.clock.advance(time::Duration::days(61));
    app.state.billing.reconcile_once(None).await.expect("a reconciliation pass");
    app.state.billing.reconcile_once(None).await.expect("a second pass");
    let all = app.get(&path, &smith.token).await.expect(200).clone();
    let data = all["data"].as_array().expect("list");
    assert_eq!(data.len(), 3, "{all}");
    for pair in data.windows(2) {
        assert_eq!(pair[0]["period_start"], pair[1]["period_end"], "newest first, back to back");
    }
    let sub = app.subscription(&org, &smith.token).await.expect(200).clone();
    assert_eq!(data[0]["period_end"], sub["current_period_end"]);
    assert_eq!(data[0]["number"], format!("{}-0003", sub["provider_subscription_id"].as_str().expect("id")));
    // Paged by id.
    let page = app.get(&format!("{path}?limit=2"), &smith.token).await.expect(200).clone();
    assert_eq!(page["has_more"], true);
    let last = page["data"][1]["id"].as_str().expect("id");
    let rest = app.get(&format!("{path}?starting_after={last}"), &smith.token).await.expect(200).clone();
    assert_eq!(rest["data"].as_array().expect("list").len(), 1);
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["data"][0], data[2]);
}

async fn invoices_need_billing_manage_and_a_cursor_of_the_list(backend: Backend) {
    let Some(app) = sandbox_app(backend, |_| {}).await else { return };
    let (smith, org) = clinic(&app).await;
    let path = format!("/v1/orgs/{org}/invoices");
    let lee = app.user("dr.lee@clinic.example").await;
    app.add_member(&org, &smith, &lee, "member").await;
    app.get(&path, &lee.token).await.expect_error(403, "forbidden");
    let stranger = app.user("someone@else.example").await;
    app.get(&path, &stranger.token).await.expect_error(404, "not_found");
    let key = app.api_key().await;
    app.get(&path, &key).await.expect(200);
    for bad in ["?limit=0", "?limit=101", "?limit=x"] {
        let res = app.get(&format!("{path}{bad}"), &smith.token).await;
        assert_eq!(res.status.as_u16(), 400, "{bad}: {}", res.body);
    }
    // An empty cursor is no invoice of any list, even an org's empty one
    // (found by schemathesis).
    let res = app.get(&format!("{path}?starting_after="), &smith.token).await;
    res.expect_error(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "starting_after", "{}", res.body);
    // A sandbox subscription: a cursor that is no invoice of its list is refused.
    let body =
        json!({"plan": "business", "success_url": "https://app.example/done", "cancel_url": "https://app.example/"});
    let url = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, body).await.expect(200)["url"]
        .as_str()
        .expect("url")
        .to_owned();
    app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await.expect(200);
    let res = app.get(&format!("{path}?starting_after=sbxin_unknown"), &smith.token).await;
    res.expect_error(400, "invalid_request");
}
