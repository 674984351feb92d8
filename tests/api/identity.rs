//! Identity: which bearer tokens and API keys are accepted, and that every
//! refusal is a 401 `unauthenticated` that changes nothing.

use std::sync::atomic::Ordering;

use hmac::{Hmac, Mac};
use orgplane_auth::keys::{KeyAlg, SigningKey};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{AUDIENCE, Backend, ISSUER, Idp, TestApp, b64url, handmade_jwt, spawn_app, spawn_app_with};
use crate::on_both_backends;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `GET /v1/me` with `token` is refused with 401 `unauthenticated`, and no
/// user was provisioned by it.
async fn assert_refused(app: &TestApp, token: &str) {
    let users_before = app.count("SELECT COUNT(*) FROM users").await;
    let res = app.get("/v1/me", token).await;
    res.expect_error(401, "unauthenticated");
    // An org-scoped route refuses it too, before looking at the org.
    let res = app.get("/v1/orgs", token).await;
    res.expect_error(401, "unauthenticated");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, users_before, "a refused token provisions nobody");
}

/// Signs `claims` with `key` and checks `GET /v1/me` accepts it as that user.
async fn assert_accepted(app: &TestApp, key: &SigningKey, subject: &str, email: &str) {
    let token = key.sign(&Idp::claims(subject, email)).expect("sign");
    let me = app.get("/v1/me", &token).await;
    let body = me.expect(200);
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("usr_")), "{body}");
    assert_eq!(body["email"], email);
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
}

async fn rs256_token_is_accepted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    assert_accepted(&app, &app.idp.rsa, "rsa-user", "rsa@example.com").await;
}

async fn es256_token_is_accepted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    assert_accepted(&app, &app.idp.ec, "ec-user", "ec@example.com").await;
}

async fn eddsa_token_is_accepted(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    assert_accepted(&app, &app.idp.ed, "ed-user", "ed@example.com").await;
}

async fn alg_none_token_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let claims = Idp::claims("mallory", "mallory@example.com");
    for header in [json!({"alg": "none", "typ": "JWT"}), json!({"alg": "none", "kid": "rsa-1", "typ": "JWT"})] {
        let token = handmade_jwt(&header, &claims, b"");
        assert!(token.ends_with('.'), "an unsecured JWS has an empty signature: {token}");
        assert_refused(&app, &token).await;
    }
    // `None`, `NONE` and friends too.
    for alg in ["None", "NONE", "nOnE"] {
        assert_refused(&app, &handmade_jwt(&json!({"alg": alg}), &claims, b"")).await;
    }
}

/// The RSA key's public half in the forms an attacker would try as an HMAC
/// secret: PEM (SubjectPublicKeyInfo), its DER, and the JWK as published.
fn rsa_public_key_materials(key: &SigningKey) -> Vec<Vec<u8>> {
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair as _;
    use base64::Engine;
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(key.pkcs8_der()).expect("rsa pkcs8");
    let der: PublicKeyX509Der<'static> = pair.public_key().as_der().expect("spki der");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
    let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"));
    vec![
        pem.clone().into_bytes(),
        pem.trim_end().as_bytes().to_vec(),
        der.as_ref().to_vec(),
        key.public_jwk().to_string().into_bytes(),
        key.public_jwk()["n"].as_str().expect("n").as_bytes().to_vec(),
    ]
}

async fn hs256_token_signed_with_the_rsa_public_key_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let claims = Idp::claims("mallory", "mallory@example.com");
    for secret in rsa_public_key_materials(&app.idp.rsa) {
        for header in [json!({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}), json!({"alg": "HS256", "typ": "JWT"})] {
            let input = format!("{}.{}", b64url(header.to_string()), b64url(claims.to_string()));
            let mut mac = Hmac::<Sha256>::new_from_slice(&secret).expect("hmac key");
            mac.update(input.as_bytes());
            let token = format!("{input}.{}", b64url(mac.finalize().into_bytes()));
            assert_refused(&app, &token).await;
        }
    }
}

async fn tampered_payload_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let genuine = app.idp.rsa.sign(&Idp::claims("alice", "alice@example.com")).expect("sign");
    let parts: Vec<&str> = genuine.split('.').collect();
    assert_eq!(parts.len(), 3);
    let forged_claims = Idp::claims("admin", "admin@example.com");
    let tampered = format!("{}.{}.{}", parts[0], b64url(forged_claims.to_string()), parts[2]);
    assert_refused(&app, &tampered).await;
    // A flipped character in the signature is refused as well.
    let mut sig = parts[2].to_owned();
    let flipped = if sig.ends_with('A') { 'B' } else { 'A' };
    sig.pop();
    sig.push(flipped);
    assert_refused(&app, &format!("{}.{}.{sig}", parts[0], parts[1])).await;
    // Nobody was provisioned: neither the forged subject nor the genuine one.
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
}

fn claims_with(changes: Value) -> Value {
    let mut claims = Idp::claims("someone", "someone@example.com");
    for (k, v) in changes.as_object().expect("object") {
        claims[k] = v.clone();
    }
    claims
}

async fn expired_token_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let t = now();
    let claims = claims_with(json!({"iat": t - 7200, "nbf": t - 7200, "exp": t - 3600}));
    assert_refused(&app, &app.idp.rsa.sign(&claims).expect("sign")).await;
}

async fn not_yet_valid_token_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let t = now();
    let claims = claims_with(json!({"nbf": t + 365 * 86_400, "exp": t + 366 * 86_400}));
    assert_refused(&app, &app.idp.rsa.sign(&claims).expect("sign")).await;
}

async fn token_from_another_issuer_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    for iss in [json!("https://evil.example"), json!(format!("{ISSUER}/")), json!(null)] {
        let claims = claims_with(json!({ "iss": iss }));
        assert_refused(&app, &app.idp.rsa.sign(&claims).expect("sign")).await;
    }
}

async fn token_for_another_audience_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    for aud in [json!("someone-else"), json!(["someone-else", "another"]), json!(format!("{AUDIENCE}x")), json!(null)] {
        let claims = claims_with(json!({ "aud": aud }));
        assert_refused(&app, &app.idp.rsa.sign(&claims).expect("sign")).await;
    }
}

async fn missing_authorization_is_unauthenticated(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    for path in ["/v1/me", "/v1/orgs"] {
        app.get_anonymous(path).await.expect_error(401, "unauthenticated");
    }
    let res = app.send(reqwest::Method::POST, "/v1/orgs", None, Some(json!({"name": "Nobody's"}))).await;
    res.expect_error(401, "unauthenticated");
    assert_eq!(app.count("SELECT COUNT(*) FROM orgs").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
}

async fn garbage_bearer_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    for token in ["garbage", "a.b.c", "e30.e30.", "....", "Bearer", &"x".repeat(20_000)] {
        assert_refused(&app, token).await;
    }
    // Not a bearer scheme at all.
    let req = app.http.get(app.url("/v1/me")).header("authorization", "Basic YWxpY2U6c2VjcmV0");
    app.send_request(req).await.expect_error(401, "unauthenticated");
    let req = app.http.get(app.url("/v1/me")).header("authorization", "Bearer ");
    app.send_request(req).await.expect_error(401, "unauthenticated");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
}

async fn unknown_api_key_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let (unknown, _) = orgplane_auth::api_key::generate();
    assert!(unknown.starts_with("sk_"));
    let alice = app.user("alice@example.com").await;
    for key in [unknown.as_str(), "sk_", "sk_nope"] {
        let res = app.get(&format!("/v1/orgs/{}", alice.personal_org), key).await;
        res.expect_error(401, "unauthenticated");
    }
    // A real key with one character changed is unknown too.
    let real = app.api_key().await;
    let mut altered = real.clone();
    let last = altered.pop().expect("non-empty");
    altered.push(if last == 'a' { 'b' } else { 'a' });
    app.get(&format!("/v1/orgs/{}", alice.personal_org), &altered).await.expect_error(401, "unauthenticated");
}

async fn api_key_reads_any_org_but_is_not_a_user(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let team = app.team(&alice, "Downtown Clinic").await;
    let key = app.api_key().await;
    for org in [&team, &alice.personal_org, &bob.personal_org] {
        let res = app.get(&format!("/v1/orgs/{org}"), &key).await;
        assert_eq!(res.expect(200)["id"], org.as_str());
    }
    let res = app.get(&format!("/v1/orgs/{team}"), &key).await;
    assert_eq!(res.body["kind"], "team");
    assert_eq!(res.body["name"], "Downtown Clinic");
    app.get("/v1/me", &key).await.expect_error(403, "forbidden");
    // An API key is no user: it is never provisioned as one.
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 2);
}

async fn rotated_signing_key_is_picked_up_with_one_more_jwks_fetch(backend: Backend) {
    let Some(app) = spawn_app(backend).await else { return };
    app.get("/v1/me", &app.idp.token("alice", "alice@example.com")).await.expect(200);
    let before = app.idp.fetches.load(Ordering::SeqCst);
    assert_eq!(before, 1, "the first token fetches the JWKS once");

    let rotated = SigningKey::generate(KeyAlg::Rs256, "rsa-2").expect("rsa key");
    *app.idp.keys.lock().expect("jwks") = json!({"keys": [rotated.public_jwk()]});
    let token = rotated.sign(&Idp::claims("bob", "bob@example.com")).expect("sign");
    let me = app.get("/v1/me", &token).await;
    assert_eq!(me.expect(200)["email"], "bob@example.com");
    assert_eq!(app.idp.fetches.load(Ordering::SeqCst), before + 1, "an unknown kid costs exactly one fetch");

    // Known now: more tokens signed by it need no fetch.
    let token = rotated.sign(&Idp::claims("carol", "carol@example.com")).expect("sign");
    app.get("/v1/me", &token).await.expect(200);
    assert_eq!(app.idp.fetches.load(Ordering::SeqCst), before + 1);
}

async fn a_revoked_api_key_is_refused(backend: Backend) {
    // API keys are trusted from a cache for at most the cache TTL (1 s by
    // default); with the TTL at zero, revocation holds from the next request.
    let Some(app) = spawn_app_with(backend, |config| config.cache.entitlements_ttl_ms = 0).await else { return };
    let alice = app.user("alice@example.com").await;
    let key = app.api_key().await;
    app.get(&format!("/v1/orgs/{}", alice.personal_org), &key).await.expect(200);
    // Revoked (as `orgplane keys` would, or another replica): refused from the next request on.
    app.sql("UPDATE api_keys SET revoked_at = 1").await;
    let res = app.get(&format!("/v1/orgs/{}", alice.personal_org), &key).await;
    res.expect_error(401, "unauthenticated");
    let res =
        app.patch(&format!("/v1/orgs/{}", alice.personal_org), &key, json!({"name": "Revoked key was here"})).await;
    res.expect_error(401, "unauthenticated");
    let got = app.get(&format!("/v1/orgs/{}", alice.personal_org), &alice.token).await;
    assert_ne!(got.expect(200)["name"], "Revoked key was here");
}

async fn tokens_naming_unknown_keys_fetch_the_jwks_at_most_once_per_interval(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |config| config.auth.jwks_refresh_min_interval_secs = 3600).await else {
        return;
    };
    app.get("/v1/me", &app.idp.token("alice", "alice@example.com")).await.expect(200);
    assert_eq!(app.idp.fetches.load(Ordering::SeqCst), 1);
    // A stranger's key, under made-up kids: refused without hammering the IdP. The
    // keys were fetched a moment ago, so the answer is "retry after the interval"
    // (the IdP may have rotated since), and nobody is provisioned.
    for i in 0..10 {
        let stranger = SigningKey::generate(KeyAlg::Es256, format!("made-up-{i}")).expect("key");
        let res =
            app.get("/v1/me", &stranger.sign(&Idp::claims("mallory", "mallory@example.com")).expect("sign")).await;
        res.expect_error(503, "unavailable");
        let wait: u64 = res.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
        assert!((1..=3600).contains(&wait), "{wait}");
    }
    assert_eq!(app.idp.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1, "only alice");
    // Known keys keep working meanwhile.
    app.get("/v1/me", &app.idp.ec.sign(&Idp::claims("bob", "bob@example.com")).expect("sign")).await.expect(200);
}

on_both_backends!(
    rs256_token_is_accepted,
    es256_token_is_accepted,
    eddsa_token_is_accepted,
    alg_none_token_is_refused,
    hs256_token_signed_with_the_rsa_public_key_is_refused,
    tampered_payload_is_refused,
    expired_token_is_refused,
    not_yet_valid_token_is_refused,
    token_from_another_issuer_is_refused,
    token_for_another_audience_is_refused,
    missing_authorization_is_unauthenticated,
    garbage_bearer_is_refused,
    unknown_api_key_is_refused,
    api_key_reads_any_org_but_is_not_a_user,
    rotated_signing_key_is_picked_up_with_one_more_jwks_fetch,
    a_revoked_api_key_is_refused,
    tokens_naming_unknown_keys_fetch_the_jwks_at_most_once_per_interval,
);
