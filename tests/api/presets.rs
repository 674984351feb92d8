//! Identity presets: a token shaped the way each provider shapes its own
//! (real keys, a real JWKS over HTTP) provisions a verified user who can
//! accept an invitation; WorkOS users' e-mails come from a WorkOS stand-in
//! that checks each request. And key rotation: a token with a new `kid`
//! arriving just after a JWKS fetch is told when to retry, and is accepted
//! once the keys may be fetched again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use orgplane_auth::keys::{KeyAlg, SigningKey};
use orgplane_auth::{IssuerConfig, Preset};
use serde_json::{Value, json};

use crate::helpers::{Backend, Idp, TestApp, TestUser, spawn_app_with};
use crate::on_both_backends;

const WORKOS_CLIENT: &str = "client_01JPRESETTEST";
const WORKOS_KEY: &str = "sk_test_workos_presets";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The app with the test IdP's issuer (for the inviter) and `issuer`, whose
/// keys are the same IdP's JWKS.
async fn app_with(backend: Backend, issuer: IssuerConfig) -> Option<TestApp> {
    spawn_app_with(backend, move |config| {
        let jwks_url = config.auth.issuers[0].jwks_url.clone();
        config.auth.issuers.push(IssuerConfig { jwks_url, ..issuer });
    })
    .await
}

/// `GET /v1/me` with `token`: the user, who must be verified with `email`.
async fn signed_in(app: &TestApp, token: String, email: &str) -> TestUser {
    let me = app.get("/v1/me", &token).await;
    let body = me.expect(200);
    assert_eq!(body["email"], email, "{body}");
    assert_eq!(body["email_verified"], true, "{body}");
    let personal = body["memberships"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["kind"] == "personal"))
        .and_then(|m| m["org_id"].as_str())
        .expect("a new user has a personal org");
    TestUser {
        id: body["id"].as_str().expect("id").to_owned(),
        email: email.to_owned(),
        token,
        personal_org: personal.to_owned(),
    }
}

/// Alice (of the test IdP) invites `email`; `invitee` accepts and is a member.
async fn invitation_is_accepted(app: &TestApp, invitee: &TestUser) {
    let alice = app.user("alice@example.com").await;
    let team = app.team(&alice, "Preset Clinic").await;
    let invitation = app.invite(&team, &alice, &invitee.email, "member").await;
    let accepted = app.post("/v1/invitations/accept", &invitee.token, json!({"token": invitation})).await;
    assert_eq!(accepted.expect(200)["status"], "accepted");
    assert_eq!(app.role_of(&team, &alice, invitee).await.as_deref(), Some("member"));
}

async fn better_auth_token_with_camel_case_email_verified_can_accept_an_invitation(backend: Backend) {
    let issuer = "https://app.better-auth.test";
    let config = IssuerConfig { preset: Some(Preset::BetterAuth), issuer: issuer.into(), ..IssuerConfig::default() };
    let Some(app) = app_with(backend, config).await else { return };
    // better-auth 1.x's jwt plugin: the session's user object, `aud` = `iss` = baseURL, EdDSA.
    let t = now();
    let token = app
        .idp
        .ed
        .sign(&json!({
            "iss": issuer, "aud": issuer, "sub": "ba_user_1", "id": "ba_user_1",
            "email": "bob@example.com", "emailVerified": true, "name": "Bob", "image": null,
            "createdAt": "2026-11-01T10:00:00.000Z", "updatedAt": "2026-11-01T10:00:00.000Z",
            "iat": t, "exp": t + 900,
        }))
        .expect("sign");
    let bob = signed_in(&app, token, "bob@example.com").await;
    invitation_is_accepted(&app, &bob).await;
}

async fn auth0_access_token_can_accept_an_invitation(backend: Backend) {
    let issuer = "https://tenant.eu.auth0.test/";
    let config = IssuerConfig {
        preset: Some(Preset::Auth0),
        issuer: issuer.into(),
        audience: Some(vec!["https://api.example.test".into()]),
        ..IssuerConfig::default()
    };
    let Some(app) = app_with(backend, config).await else { return };
    // An access token for an API, with e-mail claims added by a post-login Action.
    let t = now();
    let token = app
        .idp
        .rsa
        .sign(&json!({
            "iss": issuer, "sub": "auth0|6650f0c1", "aud": ["https://api.example.test", format!("{issuer}userinfo")],
            "azp": "Xy12AbCd", "scope": "openid profile email", "gty": "client-credentials",
            "email": "bob@example.com", "email_verified": true, "iat": t, "exp": t + 86_400,
        }))
        .expect("sign");
    let bob = signed_in(&app, token, "bob@example.com").await;
    invitation_is_accepted(&app, &bob).await;
}

async fn clerk_session_token_can_accept_an_invitation(backend: Backend) {
    let issuer = "https://clerk.example.test";
    let config = IssuerConfig { preset: Some(Preset::Clerk), issuer: issuer.into(), ..IssuerConfig::default() };
    let Some(app) = app_with(backend, config).await else { return };
    // A session token (no `aud`; the origin in `azp`), customized with the e-mail claims.
    let t = now();
    let token = app
        .idp
        .rsa
        .sign(&json!({
            "iss": issuer, "sub": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC", "azp": "https://app.example.test",
            "sid": "sess_2NNEqL2nrIRdJ194ndJqAHwEfxC", "v": 2, "fva": [0, -1],
            "email": "bob@example.com", "email_verified": true, "name": "Bob",
            "iat": t, "nbf": t - 10, "exp": t + 60,
        }))
        .expect("sign");
    let bob = signed_in(&app, token, "bob@example.com").await;
    invitation_is_accepted(&app, &bob).await;
}

async fn keycloak_access_token_can_accept_an_invitation(backend: Backend) {
    let issuer = "https://kc.example.test/realms/acme";
    let config = IssuerConfig {
        preset: Some(Preset::Keycloak),
        issuer: issuer.into(),
        audience: Some(vec!["orgplane".into()]),
        ..IssuerConfig::default()
    };
    let Some(app) = app_with(backend, config).await else { return };
    let t = now();
    let token = app
        .idp
        .ec
        .sign(&json!({
            "iss": issuer, "sub": "f1b2c3d4-0000-4000-8000-000000000001", "aud": ["orgplane", "account"],
            "azp": "acme-web", "typ": "Bearer", "scope": "openid email profile", "sid": "5e1c",
            "email": "bob@example.com", "email_verified": true, "name": "Bob Builder",
            "preferred_username": "bob", "given_name": "Bob", "family_name": "Builder",
            "iat": t, "exp": t + 300,
        }))
        .expect("sign");
    let bob = signed_in(&app, token, "bob@example.com").await;
    invitation_is_accepted(&app, &bob).await;
}

/// A WorkOS user management stand-in: `GET /user_management/users/{id}`
/// with the API key, answering from `users`; counts requests per user.
struct WorkosStandIn {
    base: String,
    users: Arc<Mutex<Value>>,
    hits: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct StandInState {
    users: Arc<Mutex<Value>>,
    hits: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
}

async fn workos_user(
    State(state): State<StandInState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {WORKOS_KEY}")) {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"code": "unauthorized", "message": "bad key"})));
    }
    state.hits.lock().expect("hits").push(id.clone());
    match state.users.lock().expect("users").get(&id) {
        Some(Value::Null) | None => {
            (StatusCode::NOT_FOUND, axum::Json(json!({"code": "entity_not_found", "message": "User not found"})))
        }
        Some(user) if user["fail"] == true => {
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"message": "Internal Server Error"})))
        }
        Some(user) => (StatusCode::OK, axum::Json(user.clone())),
    }
}

impl WorkosStandIn {
    async fn start(users: Value) -> WorkosStandIn {
        let state = StandInState { users: Arc::new(Mutex::new(users)), hits: Arc::default(), refused: Arc::default() };
        let router = axum::Router::new()
            .route("/user_management/users/{id}", axum::routing::get(workos_user))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        WorkosStandIn { base, users: state.users, hits: state.hits, refused: state.refused }
    }

    fn hits_for(&self, user: &str) -> usize {
        self.hits.lock().expect("hits").iter().filter(|id| *id == user).count()
    }
}

fn workos_user_json(id: &str, email: &str, verified: bool) -> Value {
    json!({
        "object": "user", "id": id, "email": email, "email_verified": verified,
        "first_name": "Bob", "last_name": "Builder", "profile_picture_url": null,
        "created_at": "2026-11-01T10:00:00.000Z", "updated_at": "2026-11-01T10:00:00.000Z",
    })
}

/// An AuthKit access token: no `aud`, no e-mail, RS256.
fn workos_token(idp: &Idp, iss: &str, user: &str) -> String {
    let t = now();
    idp.rsa
        .sign(&json!({
            "iss": iss, "sub": user, "sid": "session_01JPRESET", "org_id": "org_01JPRESET", "role": "member",
            "permissions": [], "jti": format!("jti-{iss}"), "iat": t, "exp": t + 300,
        }))
        .expect("sign")
}

async fn workos_app(backend: Backend, stand_in: &WorkosStandIn) -> Option<TestApp> {
    let config = IssuerConfig {
        preset: Some(Preset::Workos),
        client_id: Some(WORKOS_CLIENT.into()),
        auth_domain: Some("https://auth.example.test".into()),
        api_key: Some(WORKOS_KEY.into()),
        api_base: Some(stand_in.base.clone()),
        ..IssuerConfig::default()
    };
    app_with(backend, config).await
}

async fn workos_tokens_of_either_issuer_shape_without_email_can_accept_an_invitation(backend: Backend) {
    let user = "user_01JPRESETBOB";
    let stand_in = WorkosStandIn::start(json!({ user: workos_user_json(user, "Bob@Example.com", true) })).await;
    let Some(app) = workos_app(backend, &stand_in).await else { return };

    let older = workos_token(&app.idp, "https://api.workos.com", user);
    let bob = signed_in(&app, older, "bob@example.com").await;
    assert_eq!(app.get("/v1/me", &bob.token).await.expect(200)["name"], "Bob Builder");
    let newer = workos_token(&app.idp, &format!("https://api.workos.com/user_management/{WORKOS_CLIENT}"), user);
    let same_bob = signed_in(&app, newer, "bob@example.com").await;
    let custom_domain = workos_token(&app.idp, "https://auth.example.test", user);
    let also_bob = signed_in(&app, custom_domain, "bob@example.com").await;
    assert_eq!((&same_bob.id, &also_bob.id), (&bob.id, &bob.id), "one user, whichever issuer shape");
    assert_eq!(stand_in.hits_for(user), 1, "the e-mail is read once per user");
    assert_eq!(stand_in.refused.load(Ordering::SeqCst), 0, "every request carried the API key");

    invitation_is_accepted(&app, &same_bob).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 2, "alice and bob");
}

async fn workos_email_is_read_again_after_an_hour(backend: Backend) {
    let user = "user_01JPRESETMOVED";
    let stand_in = WorkosStandIn::start(json!({ user: workos_user_json(user, "old@example.com", true) })).await;
    let Some(app) = workos_app(backend, &stand_in).await else { return };
    signed_in(&app, workos_token(&app.idp, "https://api.workos.com", user), "old@example.com").await;

    *stand_in.users.lock().expect("users") = json!({ user: workos_user_json(user, "new@example.com", true) });
    app.clock.advance(time::Duration::minutes(59));
    let token = workos_token(&app.idp, &format!("https://api.workos.com/user_management/{WORKOS_CLIENT}"), user);
    signed_in(&app, token, "old@example.com").await;
    assert_eq!(stand_in.hits_for(user), 1, "within the hour, from memory");

    app.clock.advance(time::Duration::minutes(1));
    signed_in(&app, workos_token(&app.idp, "https://auth.example.test", user), "new@example.com").await;
    assert_eq!(stand_in.hits_for(user), 2);
}

async fn workos_failure_signs_the_user_in_without_an_email(backend: Backend) {
    let failing = "user_01JPRESETFAIL";
    let unverified = "user_01JPRESETUNVERIFIED";
    let stand_in = WorkosStandIn::start(json!({
        failing: {"fail": true},
        unverified: workos_user_json(unverified, "carol@example.com", false),
    }))
    .await;
    let Some(app) = workos_app(backend, &stand_in).await else { return };

    // WorkOS answers 500: the token is still good, the user just has no e-mail yet.
    let token = workos_token(&app.idp, "https://api.workos.com", failing);
    let me = app.get("/v1/me", &token).await;
    let body = me.expect(200);
    assert_eq!((&body["email"], &body["email_verified"]), (&Value::Null, &json!(false)), "{body}");
    app.get("/v1/me", &token).await.expect(200);
    assert_eq!(stand_in.hits_for(failing), 1, "retried only after a pause");

    // WorkOS is back: the next request after the pause reads the e-mail.
    stand_in.users.lock().expect("users")[failing] = workos_user_json(failing, "dave@example.com", true);
    app.clock.advance(time::Duration::seconds(30));
    assert_eq!(app.get("/v1/me", &token).await.expect(200)["email"], "dave@example.com");

    // An address WorkOS has not verified stays unverified: no invitation for it.
    let carol_token = workos_token(&app.idp, "https://api.workos.com", unverified);
    let carol = app.get("/v1/me", &carol_token).await;
    assert_eq!(
        (&carol.expect(200)["email"], &carol.body["email_verified"]),
        (&json!("carol@example.com"), &json!(false))
    );
}

async fn a_rotated_key_is_answered_503_with_retry_after_then_accepted_after_the_interval(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |config| config.auth.jwks_refresh_min_interval_secs = 5).await else {
        return;
    };
    app.get("/v1/me", &app.idp.token("alice", "alice@example.com")).await.expect(200);
    assert_eq!(app.idp.fetches.load(Ordering::SeqCst), 1);

    // The provider rotates: a new kid, published after orgplane's fetch.
    let rotated = SigningKey::generate(KeyAlg::EdDsa, "rotated-1").expect("key");
    let mut jwks = app.idp.keys.lock().expect("jwks").clone();
    jwks["keys"].as_array_mut().expect("keys").push(rotated.public_jwk());
    *app.idp.keys.lock().expect("jwks") = jwks;
    let token = rotated.sign(&Idp::claims("bob", "bob@example.com")).expect("sign");

    app.clock.advance(time::Duration::seconds(2));
    let early = app.get("/v1/me", &token).await;
    early.expect_error(503, "unavailable");
    assert_eq!(early.headers["retry-after"], "3", "the rest of the 5 s interval");
    assert!(early.body["error"]["message"].as_str().is_some_and(|m| m.contains("rotated-1")), "{}", early.body);
    assert_eq!(app.idp.fetches.load(Ordering::SeqCst), 1, "no fetch within the interval");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1, "bob is not provisioned by a refused token");

    app.clock.advance(time::Duration::seconds(3));
    assert_eq!(app.get("/v1/me", &token).await.expect(200)["email"], "bob@example.com");
    assert_eq!(app.idp.fetches.load(Ordering::SeqCst), 2, "one fetch picked the new key up");
}

on_both_backends!(
    better_auth_token_with_camel_case_email_verified_can_accept_an_invitation,
    auth0_access_token_can_accept_an_invitation,
    clerk_session_token_can_accept_an_invitation,
    keycloak_access_token_can_accept_an_invitation,
    workos_tokens_of_either_issuer_shape_without_email_can_accept_an_invitation,
    workos_email_is_read_again_after_an_hour,
    workos_failure_signs_the_user_in_without_an_email,
    a_rotated_key_is_answered_503_with_retry_after_then_accepted_after_the_interval,
);
