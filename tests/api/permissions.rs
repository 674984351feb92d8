//! Routes ask for a permission, never for a role: a custom role holding
//! `org:delete`, `billing:sync` or `billing:set_admin` may do what an owner
//! does with it, and a role without it is refused with `forbidden`.

use serde_json::json;

use crate::billing_support::sandbox_app;
use crate::helpers::{Backend, TestApp, TestUser, spawn_app_with};
use crate::on_both_backends;

on_both_backends!(
    a_custom_role_with_org_delete_deletes_the_org,
    a_custom_role_with_the_billing_permissions_syncs_and_hands_over_the_billing_admin,
);

fn role(permissions: &[&str]) -> orgplane_core::roles::CustomRoleConfig {
    orgplane_core::roles::CustomRoleConfig {
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        description: None,
    }
}

/// The refusal names the missing permission.
#[track_caller]
fn refused_for_lacking(res: &crate::helpers::Res, permission: &str) {
    res.expect_error(403, "forbidden");
    let message = res.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(permission), "{message}");
}

async fn a_custom_role_with_org_delete_deletes_the_org(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |c| {
        c.roles.insert("closer".into(), role(&["org:delete"]));
        c.roles.insert("support".into(), role(&["members:invite"]));
    })
    .await
    else {
        return;
    };
    let key = app.api_key().await;
    let alice = app.user("alice@example.com").await;
    let org = app.team(&alice, "Agency").await;
    app.put(
        &format!("/v1/orgs/{org}/overrides"),
        &key,
        json!({"features": {"custom_roles": true}, "limits": {"seats": 5}}),
    )
    .await
    .expect(200);
    let bob = app.user("bob@example.com").await;
    let carol = app.user("carol@example.com").await;
    app.add_member(&org, &alice, &bob, "closer").await;
    app.add_member(&org, &alice, &carol, "support").await;

    refused_for_lacking(&app.delete(&format!("/v1/orgs/{org}"), &carol.token).await, "org:delete");
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM orgs WHERE id = '{org}'")).await, 1);

    let res = app.delete(&format!("/v1/orgs/{org}"), &bob.token).await;
    assert_eq!(res.expect(200)["deleted"], true);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM orgs WHERE id = '{org}'")).await, 0);
    app.get(&format!("/v1/orgs/{org}"), &alice.token).await.expect_error(404, "not_found");
}

/// A clinic on the sandbox's business plan (which has `custom_roles`), five seats.
async fn subscribed_clinic(app: &TestApp) -> (TestUser, String) {
    let smith = app.user("dr.smith@clinic.example").await;
    let org = app.team(&smith, "Downtown Clinic").await;
    let body = json!({"plan": "business", "seats": 5, "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"});
    let res = app.post(&format!("/v1/orgs/{org}/checkout"), &smith.token, body).await;
    let url = res.expect(200)["url"].as_str().expect("url").to_owned();
    app.send_request(app.http.post(format!("{url}/pay")).header("accept", "application/json")).await.expect(200);
    (smith, org)
}

async fn a_custom_role_with_the_billing_permissions_syncs_and_hands_over_the_billing_admin(backend: Backend) {
    let Some(app) = sandbox_app(backend, |c| {
        c.roles.insert("bookkeeper".into(), role(&["billing:sync", "billing:set_admin"]));
        c.roles.insert("support".into(), role(&["members:invite"]));
    })
    .await
    else {
        return;
    };
    let (smith, org) = subscribed_clinic(&app).await;
    let johnson = app.user("dr.johnson@clinic.example").await;
    let lee = app.user("dr.lee@clinic.example").await;
    let kim = app.user("dr.kim@clinic.example").await;
    app.add_member(&org, &smith, &johnson, "bookkeeper").await;
    app.add_member(&org, &smith, &lee, "support").await;
    app.add_member(&org, &smith, &kim, "admin").await;
    let sync = format!("/v1/orgs/{org}/subscription/sync");
    let billing_admin = format!("/v1/orgs/{org}/billing_admin");

    // Neither a role without the permission nor the built-in admin may sync.
    refused_for_lacking(&app.post(&sync, &lee.token, json!({})).await, "billing:sync");
    refused_for_lacking(&app.post(&sync, &kim.token, json!({})).await, "billing:sync");
    let res = app.post(&sync, &johnson.token, json!({})).await;
    assert_eq!(res.expect(200)["status"], "active");

    // Nor may they choose the billing admin; the bookkeeper may.
    refused_for_lacking(&app.put(&billing_admin, &lee.token, json!({"user_id": lee.id})).await, "billing:set_admin");
    refused_for_lacking(&app.put(&billing_admin, &kim.token, json!({"user_id": kim.id})).await, "billing:set_admin");
    assert_eq!(app.subscription(&org, &smith.token).await.body["billing_admin_user_id"], smith.id.as_str());
    let res = app.put(&billing_admin, &johnson.token, json!({"user_id": lee.id})).await;
    assert_eq!(res.expect(200)["billing_admin_user_id"], lee.id.as_str());
    assert_eq!(app.subscription(&org, &smith.token).await.body["billing_admin_user_id"], lee.id.as_str());
}
