//! What tokens are accepted, what identity they give, and what is refused.

use aws_lc_rs::hmac;
use orgplane_auth::keys::{KeyAlg, SigningKey};
use orgplane_auth::{AuthError, IssuerConfig, Verifier};
use serde_json::json;

use crate::support::*;

async fn setup() -> (JwksServer, Verifier) {
    let server = JwksServer::start(all_keys_jwks()).await;
    let verifier = verifier(&server, options());
    (server, verifier)
}

#[tokio::test]
async fn rs256_token_is_accepted_with_identity_mapped() {
    let (_server, verifier) = setup().await;
    let claims = claims("user_rsa");
    let token = key(KeyAlg::Rs256).sign(&claims).expect("sign");

    let identity = verifier.verify(&token).await.expect("valid RS256 token");

    assert_eq!(identity.issuer, ISSUER);
    assert_eq!(identity.subject, "user_rsa");
    assert_eq!(identity.email.as_deref(), Some("user_rsa@example.com"));
    assert!(identity.email_verified);
    assert_eq!(identity.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(Some(identity.expires_at), claims["exp"].as_i64());
}

#[tokio::test]
async fn es256_token_is_accepted_with_custom_claim_names() {
    let server = JwksServer::start(all_keys_jwks()).await;
    let config = IssuerConfig {
        email_claim: Some("https://orgplane.test/email".into()),
        name_claim: Some("display_name".into()),
        email_verified_claim: Some("https://orgplane.test/email_verified".into()),
        ..issuer_config(&server.jwks_url)
    };
    let verifier = Verifier::new(vec![config], options()).expect("valid config");
    let now = now();
    let token = key(KeyAlg::Es256)
        .sign(&json!({
            "iss": ISSUER, "sub": "user_ec", "aud": [AUDIENCE, "another"], "exp": now + 60,
            "https://orgplane.test/email": "grace@example.com",
            "https://orgplane.test/email_verified": "true",
            "display_name": "Grace Hopper",
            "email": "ignored@example.com", "name": "Ignored",
        }))
        .expect("sign");

    let identity = verifier.verify(&token).await.expect("valid ES256 token");

    assert_eq!(identity.subject, "user_ec");
    assert_eq!(identity.email.as_deref(), Some("grace@example.com"));
    assert!(identity.email_verified, "the string \"true\" counts as verified");
    assert_eq!(identity.name.as_deref(), Some("Grace Hopper"));
}

#[tokio::test]
async fn eddsa_token_is_accepted() {
    let (_server, verifier) = setup().await;
    let token = key(KeyAlg::EdDsa).sign(&claims("user_ed")).expect("sign");

    let identity = verifier.verify(&token).await.expect("valid EdDSA token");

    assert_eq!(identity.subject, "user_ed");
    assert_eq!(identity.email.as_deref(), Some("user_ed@example.com"));
}

#[tokio::test]
async fn workos_style_token_without_email_or_audience_is_accepted() {
    // WorkOS access tokens: no `aud`, no e-mail; the issuer is configured with `audience = []`.
    let server = JwksServer::start(all_keys_jwks()).await;
    let config =
        IssuerConfig { assume_email_verified: Some(true), ..IssuerConfig::new(ISSUER, &server.jwks_url, vec![]) };
    let verifier = Verifier::new(vec![config], options()).expect("valid config");
    let now = now();
    let token = key(KeyAlg::Rs256)
        .sign(&json!({"iss": ISSUER, "sub": "user_01H", "sid": "session_01H", "org_id": "org_01H", "exp": now + 300, "iat": now}))
        .expect("sign");

    let identity = verifier.verify(&token).await.expect("valid token");

    assert_eq!(identity.subject, "user_01H");
    assert_eq!((identity.email, identity.email_verified, identity.name), (None, false, None));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (_server, verifier) = setup().await;
    let token = forge(&json!({"alg": "none", "typ": "JWT"}), &claims("attacker"), b"");

    assert_eq!(verifier.verify(&token).await, Err(AuthError::UnsupportedAlgorithm("none".into())));
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: a verifier that lets the header pick the algorithm
    // would check this HMAC with the (public) RSA key bytes as the secret.
    let (_server, verifier) = setup().await;
    let rsa = key(KeyAlg::Rs256);
    let public_key_bytes = rsa.public_jwk().to_string();
    let header = json!({"alg": "HS256", "kid": rsa.kid(), "typ": "JWT"});
    let signing_input = format!("{}.{}", b64(header.to_string()), b64(claims("attacker").to_string()));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, public_key_bytes.as_bytes()), signing_input.as_bytes());
    let token = format!("{signing_input}.{}", b64(tag.as_ref()));

    assert_eq!(verifier.verify(&token).await, Err(AuthError::UnsupportedAlgorithm("HS256".into())));
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let (_server, verifier) = setup().await;
    for alg in [KeyAlg::Rs256, KeyAlg::Es256, KeyAlg::EdDsa] {
        let token = key(alg).sign(&claims("victim")).expect("sign");
        let parts: Vec<&str> = token.split('.').collect();
        let mut escalated = claims("victim");
        escalated["sub"] = json!("admin");
        let tampered = format!("{}.{}.{}", parts[0], b64(escalated.to_string()), parts[2]);

        assert_eq!(verifier.verify(&tampered).await, Err(AuthError::BadSignature), "{alg}");
    }
}

#[tokio::test]
async fn tampered_signature_is_refused() {
    let (_server, verifier) = setup().await;
    let token = key(KeyAlg::EdDsa).sign(&claims("victim")).expect("sign");
    let (signing_input, signature) = token.rsplit_once('.').expect("three parts");
    let mut signature = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
        .expect("base64url signature");
    signature[0] ^= 1;
    let tampered = format!("{signing_input}.{}", b64(&signature));

    assert_eq!(verifier.verify(&tampered).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn token_signed_by_another_key_under_a_known_kid_is_refused() {
    let (_server, verifier) = setup().await;
    let impostor = SigningKey::generate(KeyAlg::EdDsa, key(KeyAlg::EdDsa).kid()).expect("generate");
    let token = impostor.sign(&claims("attacker")).expect("sign");

    assert_eq!(verifier.verify(&token).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn expired_token_is_refused() {
    let (_server, verifier) = setup().await;
    let mut claims = claims("late");
    let expired_at = now() - 120; // beyond the 30 s leeway
    claims["exp"] = json!(expired_at);
    let token = key(KeyAlg::Rs256).sign(&claims).expect("sign");

    let refused = verifier.verify(&token).await;

    assert_eq!(refused, Err(AuthError::Expired { expired_at }));
    let message = refused.unwrap_err().to_string();
    assert!(message.starts_with("the token expired at 20") && message.contains("get a fresh token"), "{message}");
}

#[tokio::test]
async fn token_expired_within_the_leeway_is_still_accepted() {
    let (_server, verifier) = setup().await;
    let mut claims = claims("skewed");
    claims["exp"] = json!(now() - 5);
    let token = key(KeyAlg::EdDsa).sign(&claims).expect("sign");

    assert!(verifier.verify(&token).await.is_ok());
}

#[tokio::test]
async fn token_without_exp_is_refused() {
    let (_server, verifier) = setup().await;
    let mut claims = claims("forever");
    claims.as_object_mut().expect("object").remove("exp");
    let token = key(KeyAlg::EdDsa).sign(&claims).expect("sign");

    assert!(matches!(verifier.verify(&token).await, Err(AuthError::Malformed(_))));
}

#[tokio::test]
async fn not_yet_valid_token_is_refused() {
    let (_server, verifier) = setup().await;
    let mut claims = claims("early");
    let not_before = now() + 600;
    claims["nbf"] = json!(not_before);
    claims["exp"] = json!(not_before + 300);
    let token = key(KeyAlg::Es256).sign(&claims).expect("sign");

    assert_eq!(verifier.verify(&token).await, Err(AuthError::NotYetValid { not_before }));
}

#[tokio::test]
async fn token_from_an_unconfigured_issuer_is_refused() {
    let (_server, verifier) = setup().await;
    let mut claims = claims("someone");
    claims["iss"] = json!("https://evil.test");
    let token = key(KeyAlg::Rs256).sign(&claims).expect("sign");

    assert_eq!(verifier.verify(&token).await, Err(AuthError::UnknownIssuer("https://evil.test".into())));
}

#[tokio::test]
async fn token_without_issuer_is_refused() {
    let (_server, verifier) = setup().await;
    let mut claims = claims("someone");
    claims.as_object_mut().expect("object").remove("iss");
    let token = key(KeyAlg::Rs256).sign(&claims).expect("sign");

    assert_eq!(verifier.verify(&token).await, Err(AuthError::WrongIssuer));
}

#[tokio::test]
async fn token_for_another_audience_is_refused() {
    let (_server, verifier) = setup().await;
    let mut claims = claims("someone");
    claims["aud"] = json!(["https://other-service.test"]);
    let token = key(KeyAlg::EdDsa).sign(&claims).expect("sign");

    assert_eq!(verifier.verify(&token).await, Err(AuthError::WrongAudience));
}

#[tokio::test]
async fn token_without_audience_is_refused_when_one_is_configured() {
    let (_server, verifier) = setup().await;
    let mut claims = claims("someone");
    claims.as_object_mut().expect("object").remove("aud");
    let token = key(KeyAlg::EdDsa).sign(&claims).expect("sign");

    assert_eq!(verifier.verify(&token).await, Err(AuthError::WrongAudience));
}

#[tokio::test]
async fn token_without_subject_is_refused() {
    let (_server, verifier) = setup().await;
    let mut claims = claims("someone");
    claims.as_object_mut().expect("object").remove("sub");
    let token = key(KeyAlg::Rs256).sign(&claims).expect("sign");

    assert_eq!(verifier.verify(&token).await, Err(AuthError::MissingSubject));
}

#[tokio::test]
async fn header_alg_not_matching_the_key_type_is_refused() {
    let (_server, verifier) = setup().await;
    // Each key's kid under each other supported alg, signed (for what it's worth)
    // by a real key of the claimed alg.
    for (claimed, named) in [
        (KeyAlg::Rs256, KeyAlg::Es256),
        (KeyAlg::Es256, KeyAlg::EdDsa),
        (KeyAlg::EdDsa, KeyAlg::Rs256),
        (KeyAlg::Es256, KeyAlg::Rs256),
    ] {
        let signer = SigningKey::from_pkcs8(claimed, key(named).kid(), key(claimed).pkcs8_der()).expect("same key");
        let token = signer.sign(&claims("attacker")).expect("sign");

        let refused = verifier.verify(&token).await;

        assert!(
            matches!(&refused, Err(AuthError::AlgorithmMismatch { alg, kid, .. }) if alg == claimed.as_str() && kid == key(named).kid()),
            "{claimed} with the {named} key's kid: {refused:?}"
        );
    }
}

#[tokio::test]
async fn token_without_kid_is_accepted_only_if_one_key_fits_its_alg() {
    let second_rsa = SigningKey::generate(KeyAlg::Rs256, "rsa-2").expect("generate");
    let server = JwksServer::start(jwks_of(&[key(KeyAlg::Rs256), &second_rsa, key(KeyAlg::EdDsa)])).await;
    let verifier = verifier(&server, options());
    let sign_without_kid = |signer: &SigningKey| {
        let header = json!({"alg": signer.alg().as_str(), "typ": "JWT"});
        let body = claims("nokid");
        let unsigned = format!("{}.{}", b64(header.to_string()), b64(body.to_string()));
        sign_raw(signer, &unsigned)
    };

    let sole_ed25519 = sign_without_kid(key(KeyAlg::EdDsa));
    assert!(verifier.verify(&sole_ed25519).await.is_ok(), "one EdDSA key: accepted");

    let one_of_two_rsa = sign_without_kid(key(KeyAlg::Rs256));
    assert_eq!(verifier.verify(&one_of_two_rsa).await, Err(AuthError::UnknownKey { kid: None }));
}

#[tokio::test]
async fn garbage_is_refused_as_malformed() {
    let (_server, verifier) = setup().await;
    for token in ["", "Bearer", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30"] {
        assert!(matches!(verifier.verify(token).await, Err(AuthError::Malformed(_))), "{token}");
    }
}

/// Signs any `header.claims` with the key's own primitive, for headers
/// `SigningKey::sign` does not write (here: one without `kid`).
fn sign_raw(signer: &SigningKey, signing_input: &str) -> String {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
    let der = signer.pkcs8_der();
    let message = signing_input.as_bytes();
    let signature: Vec<u8> = match signer.alg() {
        KeyAlg::Rs256 => {
            let pair = RsaKeyPair::from_pkcs8(der).expect("rsa");
            let mut out = vec![0; pair.public_modulus_len()];
            pair.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut out).expect("sign");
            out
        }
        KeyAlg::Es256 => EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .expect("ec")
            .sign(&SystemRandom::new(), message)
            .expect("sign")
            .as_ref()
            .to_vec(),
        KeyAlg::EdDsa => Ed25519KeyPair::from_pkcs8(der).expect("ed").sign(message).as_ref().to_vec(),
    };
    format!("{signing_input}.{}", b64(signature))
}
