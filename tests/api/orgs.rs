//! Organizations: create, list, get, update, delete, and the audit log.

use std::collections::HashSet;

use serde_json::json;

use crate::billing_support::{StripeSub, now, stripe_event, stripe_webhook_app};
use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

async fn creating_an_org_makes_a_team_org_with_the_caller_as_owner(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let res = app
        .post(
            "/v1/orgs",
            &alice.token,
            json!({"name": "  Downtown Clinic ", "billing_email": "Billing@Clinic.Example"}),
        )
        .await;
    let body = res.expect(201).clone();
    let id = body["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("org_"), "{body}");
    assert_eq!(body["kind"], "team");
    assert_eq!(body["name"], "Downtown Clinic");
    assert_eq!(body["billing_email"], "billing@clinic.example");
    assert_eq!(body["role"], "owner");
    assert_eq!(body["settings"], json!({}));
    assert!(body["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "RFC 3339 UTC: {body}");

    // The caller is its one owner.
    let members = app.get(&format!("/v1/orgs/{id}/members"), &alice.token).await;
    let members = members.expect(200)["data"].as_array().expect("data").clone();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["user_id"], alice.id.as_str());
    assert_eq!(members[0]["role"], "owner");
    assert_eq!(app.owner_count(&id).await, 1);

    // And /v1/me lists it beside the personal org.
    let me = app.get("/v1/me", &alice.token).await;
    let memberships = me.expect(200)["memberships"].as_array().expect("memberships").clone();
    assert_eq!(memberships.len(), 2);
    assert!(memberships.iter().any(|m| m["org_id"] == id.as_str() && m["kind"] == "team" && m["role"] == "owner"));

    // Without a billing e-mail it is null.
    let res = app.post("/v1/orgs", &alice.token, json!({"name": "Uptown"})).await;
    assert_eq!(res.expect(201)["billing_email"], json!(null));
}

async fn listing_orgs_paginates_with_limit_and_starting_after(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let mut expected: HashSet<String> = HashSet::from([alice.personal_org.clone()]);
    for name in ["One", "Two", "Three", "Four"] {
        expected.insert(app.team(&alice, name).await);
    }
    let bobs = app.team(&bob, "Bob's").await;

    let all = app.get("/v1/orgs", &alice.token).await;
    let all = all.expect(200).clone();
    assert_eq!(all["data"].as_array().expect("data").len(), 5);
    assert_eq!(all["has_more"], false);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/orgs?limit=2&starting_after={c}"),
            None => "/v1/orgs?limit=2".to_owned(),
        };
        let page = app.get(&path, &alice.token).await;
        let page = page.expect(200).clone();
        let data = page["data"].as_array().expect("data");
        assert!(data.len() <= 2, "{page}");
        for org in data {
            assert!(org["role"].is_string(), "{org}");
            seen.push(org["id"].as_str().expect("id").to_owned());
        }
        pages += 1;
        if page["has_more"] == false {
            break;
        }
        assert_eq!(data.len(), 2, "a page with more after it is full: {page}");
        cursor = data.last().and_then(|o| o["id"].as_str()).map(str::to_owned);
        assert!(pages < 10, "pagination never ends");
    }
    assert_eq!(pages, 3, "5 orgs in pages of 2");
    assert_eq!(seen.len(), 5, "no org twice: {seen:?}");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), expected);
    assert!(!seen.contains(&bobs), "another user's org never shows");
}

async fn getting_an_org_shows_it_to_its_members(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    app.add_member(&team, &alice, &bob, "member").await;
    let res = app.get(&format!("/v1/orgs/{team}"), &alice.token).await;
    let body = res.expect(200);
    assert_eq!(body["id"], team.as_str());
    assert_eq!(body["kind"], "team");
    assert_eq!(body["name"], "Downtown Clinic");
    assert_eq!(body["role"], "owner");
    // A new team org is on the free plan, without a subscription.
    assert_eq!(body["plan"], "free", "{body}");
    assert_eq!(body["tier"], "free", "{body}");
    assert!(body["subscription"].is_null(), "{body}");
    let res = app.get(&format!("/v1/orgs/{team}"), &bob.token).await;
    assert_eq!(res.expect(200)["role"], "member");
    let res = app.get(&format!("/v1/orgs/{}", alice.personal_org), &alice.token).await;
    assert_eq!(res.expect(200)["kind"], "personal");
}

async fn patching_an_org_changes_name_billing_email_and_merges_settings(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let res = app
        .post("/v1/orgs", &alice.token, json!({"name": "Old Name", "billing_email": "billing@clinic.example"}))
        .await;
    let team = res.expect(201)["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/orgs/{team}");
    assert_eq!(app.me_membership(&alice, &team).await, Some(("owner".into(), "Old Name".into())));

    let res = app.patch(&path, &alice.token, json!({"name": "New Name", "settings": {"a": 1, "b": {"x": true}}})).await;
    let body = res.expect(200);
    assert_eq!(body["name"], "New Name");
    assert_eq!(body["billing_email"], "billing@clinic.example", "an absent field is unchanged");
    assert_eq!(body["settings"], json!({"a": 1, "b": {"x": true}}));

    let res = app.patch(&path, &alice.token, json!({"settings": {"a": 2, "c": "z"}})).await;
    assert_eq!(res.expect(200)["settings"], json!({"a": 2, "b": {"x": true}, "c": "z"}), "settings merge key by key");

    let res = app.patch(&path, &alice.token, json!({"billing_email": null})).await;
    let body = res.expect(200);
    assert_eq!(body["billing_email"], json!(null), "null clears");
    assert_eq!(body["name"], "New Name");

    let res = app.patch(&path, &alice.token, json!({"settings": {"b": null}})).await;
    assert_eq!(res.expect(200)["settings"], json!({"a": 2, "c": "z"}), "a null value deletes the key");

    let res = app.patch(&path, &alice.token, json!({"billing_email": "Accounts@Clinic.Example"})).await;
    assert_eq!(res.expect(200)["billing_email"], "accounts@clinic.example");

    assert_eq!(app.me_membership(&alice, &team).await, Some(("owner".into(), "New Name".into())), "/v1/me is fresh");
    let got = app.get(&path, &alice.token).await;
    let body = got.expect(200);
    assert_eq!(body["name"], "New Name");
    assert_eq!(body["billing_email"], "accounts@clinic.example");
    assert_eq!(body["settings"], json!({"a": 2, "c": "z"}));

    // Invalid values are refused and change nothing.
    let res = app.patch(&path, &alice.token, json!({"name": "   "})).await;
    assert_eq!(res.code(), "invalid_request", "{}", res.body);
    assert_eq!(res.body["error"]["param"], "name");
    let res = app.patch(&path, &alice.token, json!({"billing_email": "not-an-email"})).await;
    assert_eq!(res.code(), "invalid_request", "{}", res.body);
    assert_eq!(res.body["error"]["param"], "billing_email");
    let got = app.get(&path, &alice.token).await;
    assert_eq!(got.expect(200)["name"], "New Name");
    assert_eq!(got.body["billing_email"], "accounts@clinic.example");
}

async fn a_plain_member_cannot_patch_the_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    app.add_member(&team, &alice, &bob, "member").await;
    let events = app.count(&format!("SELECT COUNT(*) FROM events WHERE org_id = '{team}'")).await;
    let res =
        app.patch(&format!("/v1/orgs/{team}"), &bob.token, json!({"name": "Bob's now", "settings": {"x": 1}})).await;
    res.expect_error(403, "forbidden");
    let got = app.get(&format!("/v1/orgs/{team}"), &alice.token).await;
    assert_eq!(got.expect(200)["name"], "Downtown Clinic");
    assert_eq!(got.body["settings"], json!({}));
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM events WHERE org_id = '{team}'")).await, events);
}

async fn an_owner_deletes_a_team_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    app.add_member(&team, &alice, &bob, "member").await;
    app.put("/v1/me/active_org", &bob.token, json!({"org_id": team})).await.expect(200);
    assert_eq!(app.me_membership(&bob, &team).await, Some(("member".into(), "Downtown Clinic".into())));

    let res = app.delete(&format!("/v1/orgs/{team}"), &alice.token).await;
    let body = res.expect(200);
    assert_eq!(body["id"], team.as_str());
    assert_eq!(body["deleted"], true);

    app.get(&format!("/v1/orgs/{team}"), &alice.token).await.expect_error(404, "not_found");
    app.get(&format!("/v1/orgs/{team}"), &bob.token).await.expect_error(404, "not_found");
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM orgs WHERE id = '{team}'")).await, 0);
    assert_eq!(app.member_count(&team).await, 0);
    let me = app.get("/v1/me", &bob.token).await;
    assert_eq!(me.expect(200)["active_org_id"], bob.personal_org.as_str(), "bob falls back to his personal org");
    assert_eq!(app.me_membership(&bob, &team).await, None);
    assert_eq!(app.me_membership(&alice, &team).await, None);
    // Deleting it again finds nothing.
    app.delete(&format!("/v1/orgs/{team}"), &alice.token).await.expect_error(404, "not_found");
}

/// A live subscription holds the org; each of core's terminal statuses
/// (`canceled`, `incomplete_expired`) lets it go.
async fn an_org_whose_subscription_has_ended_can_be_deleted(backend: Backend) {
    let Some(app) = stripe_webhook_app(backend, |_| {}).await else { return };
    let alice = app.user("alice@example.com").await;
    let started = now();
    for (n, (live, ended)) in [("active", "canceled"), ("incomplete", "incomplete_expired")].into_iter().enumerate() {
        let team = app.team(&alice, &format!("Clinic {n}")).await;
        let sub = StripeSub::new(&format!("sub_{n}"), Some(&team), &format!("cus_{n}"));
        let body = stripe_event(&format!("evt_live_{n}"), "customer.subscription.updated", started, {
            sub.clone().with(|s| s.status = live).object()
        });
        app.stripe_webhook(&body).await.expect(200);
        assert_eq!(app.subscription(&team, &alice.token).await.expect(200)["status"], live);
        let res = app.delete(&format!("/v1/orgs/{team}"), &alice.token).await;
        res.expect_error(409, "conflict");
        assert!(res.body["error"]["message"].as_str().is_some_and(|m| m.contains(live)), "{}", res.body);

        let body = stripe_event(&format!("evt_ended_{n}"), "customer.subscription.updated", started + 10, {
            sub.with(|s| s.status = ended).object()
        });
        app.stripe_webhook(&body).await.expect(200);
        assert_eq!(app.subscription(&team, &alice.token).await.expect(200)["status"], ended);
        let res = app.delete(&format!("/v1/orgs/{team}"), &alice.token).await;
        assert_eq!(res.expect(200)["deleted"], true, "a {ended} subscription no longer holds the org");
    }
}

async fn an_admin_cannot_delete_the_org(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    app.add_member(&team, &alice, &bob, "admin").await;
    app.delete(&format!("/v1/orgs/{team}"), &bob.token).await.expect_error(403, "forbidden");
    assert_eq!(app.get(&format!("/v1/orgs/{team}"), &alice.token).await.expect(200)["id"], team.as_str());
    assert_eq!(app.member_count(&team).await, 2);
}

async fn a_personal_org_cannot_be_deleted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let res = app.delete(&format!("/v1/orgs/{}", alice.personal_org), &alice.token).await;
    res.expect_error(403, "personal_org");
    let got = app.get(&format!("/v1/orgs/{}", alice.personal_org), &alice.token).await;
    assert_eq!(got.expect(200)["kind"], "personal");
    assert_eq!(app.member_count(&alice.personal_org).await, 1);
}

async fn the_audit_log_lists_the_orgs_events_newest_first(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    app.patch(&format!("/v1/orgs/{team}"), &alice.token, json!({"name": "Uptown Clinic"})).await.expect(200);
    // (Bob's invitation and membership keep the org within the free plan's two seats.)
    let bob_token = app.invite(&team, &alice, "bob@example.com", "member").await;
    let path = format!("/v1/orgs/{team}/events");

    let res = app.get(&path, &alice.token).await;
    let body = res.expect(200).clone();
    let data = body["data"].as_array().expect("data");
    let types: Vec<&str> = data.iter().map(|e| e["type"].as_str().expect("type")).collect();
    assert_eq!(types, ["invitation.created", "org.updated", "org.created"], "{body}");
    assert_eq!(body["has_more"], false);
    for event in data {
        assert!(event["id"].as_str().is_some_and(|id| id.starts_with("evt_")), "{event}");
        assert_eq!(event["org_id"], team.as_str());
        assert_eq!(event["actor"], alice.id.as_str());
        assert!(event["created_at"].is_string(), "{event}");
    }
    assert_eq!(data[2]["data"]["name"], "Downtown Clinic");

    // Paginated, still newest first.
    let first = app.get(&format!("{path}?limit=2"), &alice.token).await;
    let first = first.expect(200).clone();
    assert_eq!(first["has_more"], true);
    let last_id = first["data"][1]["id"].as_str().expect("id");
    let rest = app.get(&format!("{path}?limit=2&starting_after={last_id}"), &alice.token).await;
    let rest = rest.expect(200);
    assert_eq!(rest["data"].as_array().expect("data").len(), 1);
    assert_eq!(rest["data"][0]["type"], "org.created");
    assert_eq!(rest["has_more"], false);

    // Another org's events never show, and a plain member may not read the log.
    app.team(&alice, "Elsewhere").await;
    let again = app.get(&path, &alice.token).await;
    assert_eq!(again.expect(200)["data"].as_array().expect("data").len(), 3);
    app.post("/v1/invitations/accept", &bob.token, json!({"token": bob_token})).await.expect(200);
    app.get(&path, &bob.token).await.expect_error(403, "forbidden");
}

on_both_backends!(
    creating_an_org_makes_a_team_org_with_the_caller_as_owner,
    listing_orgs_paginates_with_limit_and_starting_after,
    getting_an_org_shows_it_to_its_members,
    patching_an_org_changes_name_billing_email_and_merges_settings,
    a_plain_member_cannot_patch_the_org,
    an_owner_deletes_a_team_org,
    an_admin_cannot_delete_the_org,
    a_personal_org_cannot_be_deleted,
    an_org_whose_subscription_has_ended_can_be_deleted,
    the_audit_log_lists_the_orgs_events_newest_first,
);
