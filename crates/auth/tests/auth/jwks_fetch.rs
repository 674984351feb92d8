//! When the issuer's JWKS is fetched, how often, and what happens when it
//! can't be; and that verified tokens are served from the cache.

use std::sync::Arc;
use std::time::Duration;

use orgplane_auth::keys::{KeyAlg, SigningKey};
use orgplane_auth::{AuthError, Verifier, VerifierClock, VerifierOptions};
use time::OffsetDateTime;

use crate::support::*;

fn rate_limited() -> VerifierOptions {
    VerifierOptions { jwks_refresh_min_interval: Duration::from_secs(3600), ..VerifierOptions::default() }
}

#[tokio::test]
async fn keys_are_fetched_lazily_on_first_use() {
    let server = JwksServer::start(all_keys_jwks()).await;
    let verifier = verifier(&server, options());
    assert_eq!(server.hits(), 0, "nothing fetched at construction");

    verifier.verify(&key(KeyAlg::Rs256).sign(&claims("a")).expect("sign")).await.expect("valid");
    verifier.verify(&key(KeyAlg::EdDsa).sign(&claims("b")).expect("sign")).await.expect("valid");

    assert_eq!(server.hits(), 1, "one fetch serves every key in the set");
}

#[tokio::test]
async fn unknown_kid_triggers_exactly_one_refetch_and_succeeds_after_rotation() {
    let old = key(KeyAlg::EdDsa);
    let server = JwksServer::start(jwks_of(&[old])).await;
    let verifier = verifier(&server, options());
    verifier.verify(&old.sign(&claims("before")).expect("sign")).await.expect("old key verifies");
    assert_eq!(server.hits(), 1);

    let new = SigningKey::generate(KeyAlg::Es256, "rotated-2").expect("generate");
    server.publish(jwks_of(&[old, &new]));
    let identity = verifier.verify(&new.sign(&claims("after")).expect("sign")).await.expect("new key verifies");

    assert_eq!(identity.subject, "after");
    assert_eq!(server.hits(), 2, "exactly one refetch for the new kid");
    verifier.verify(&new.sign(&claims("again")).expect("sign")).await.expect("new key verifies");
    assert_eq!(server.hits(), 2, "the new key is now known");
}

#[tokio::test]
async fn burst_of_unknown_kids_fetches_the_jwks_at_most_once_per_interval() {
    let server = JwksServer::start(all_keys_jwks()).await;
    let verifier = verifier(&server, rate_limited());
    let tokens: Vec<String> = (0..32)
        .map(|i| {
            let stranger =
                SigningKey::from_pkcs8(KeyAlg::EdDsa, format!("random-kid-{i}"), key(KeyAlg::EdDsa).pkcs8_der());
            stranger.expect("key").sign(&claims("flood")).expect("sign")
        })
        .collect();

    let results = futures_join_all(&verifier, &tokens).await;
    let mut refused_after_a_fetch = 0;
    for (i, result) in results.iter().enumerate() {
        let kid = format!("random-kid-{i}");
        match result {
            // The token whose fetch found no such key.
            Err(AuthError::UnknownKey { kid: Some(named) }) if *named == kid => refused_after_a_fetch += 1,
            // Keys fetched a moment ago: retry when they may be fetched again.
            Err(AuthError::KeyNotYetFetched { kid: named, retry_after_secs }) if *named == kid => {
                assert!((1..=3600).contains(retry_after_secs), "{result:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(refused_after_a_fetch, 1, "{results:?}");
    assert_eq!(server.hits(), 1, "a burst within the interval fetches once");

    let results = futures_join_all(&verifier, &tokens).await;
    assert!(results.iter().all(Result::is_err));
    assert_eq!(server.hits(), 1, "and a second burst not at all");

    let known = key(KeyAlg::Rs256).sign(&claims("regular")).expect("sign");
    assert!(verifier.verify(&known).await.is_ok(), "known keys keep working during the flood");
}

/// A clock the test moves by hand.
fn manual_clock() -> (Arc<std::sync::Mutex<OffsetDateTime>>, VerifierClock) {
    let now = Arc::new(std::sync::Mutex::new(OffsetDateTime::now_utc()));
    let read = Arc::clone(&now);
    (now, Arc::new(move || *read.lock().expect("clock")))
}

#[tokio::test]
async fn rotation_within_the_interval_answers_retry_after_and_is_accepted_after_it() {
    let old = key(KeyAlg::EdDsa);
    let server = JwksServer::start(jwks_of(&[old])).await;
    let (now, clock) = manual_clock();
    let options = VerifierOptions { jwks_refresh_min_interval: Duration::from_secs(5), ..VerifierOptions::default() };
    let verifier = Verifier::with_clock(vec![issuer_config(&server.jwks_url)], options, clock).expect("config");
    verifier.verify(&old.sign(&claims("before")).expect("sign")).await.expect("old key verifies");

    let new = SigningKey::generate(KeyAlg::EdDsa, "rotated-too-soon").expect("generate");
    server.publish(jwks_of(&[old, &new]));
    let token = new.sign(&claims("after")).expect("sign");
    *now.lock().expect("clock") += time::Duration::seconds(2);

    let refused = verifier.verify(&token).await;
    assert_eq!(refused, Err(AuthError::KeyNotYetFetched { kid: "rotated-too-soon".into(), retry_after_secs: 3 }));
    assert!(refused.unwrap_err().is_retryable());
    assert_eq!(server.hits(), 1, "no fetch within the interval");

    *now.lock().expect("clock") += time::Duration::seconds(3);
    let identity = verifier.verify(&token).await.expect("accepted once the interval is over");
    assert_eq!(identity.subject, "after");
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn new_material_under_a_known_kid_is_picked_up_at_the_next_refresh() {
    let (now, clock) = manual_clock();
    let original = SigningKey::generate(KeyAlg::EdDsa, "same-kid").expect("generate");
    let server = JwksServer::start(jwks_of(&[&original])).await;
    let options = VerifierOptions { jwks_refresh_min_interval: Duration::from_secs(5), ..VerifierOptions::default() };
    let verifier = Verifier::with_clock(vec![issuer_config(&server.jwks_url)], options, clock).expect("config");
    verifier.verify(&original.sign(&claims("before")).expect("sign")).await.expect("verifies");

    let replaced = SigningKey::generate(KeyAlg::EdDsa, "same-kid").expect("generate");
    server.publish(jwks_of(&[&replaced]));
    let token = replaced.sign(&claims("after")).expect("sign");
    assert_eq!(verifier.verify(&token).await, Err(AuthError::BadSignature), "keys fetched a moment ago");
    assert_eq!(server.hits(), 1);

    *now.lock().expect("clock") += time::Duration::seconds(5);
    assert_eq!(verifier.verify(&token).await.map(|id| id.subject), Ok("after".to_owned()));
    assert_eq!(server.hits(), 2, "one refresh picked the new material up");
    let stale = original.sign(&claims("old")).expect("sign");
    assert_eq!(verifier.verify(&stale).await, Err(AuthError::BadSignature), "the old material is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_fetch() {
    let server = JwksServer::start(all_keys_jwks()).await;
    let verifier = verifier(&server, options());
    let tokens: Vec<String> =
        (0..32).map(|i| key(KeyAlg::Es256).sign(&claims(&format!("user{i}"))).expect("sign")).collect();

    let results = futures_join_all(&verifier, &tokens).await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn jwks_server_down_gives_jwks_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }; // closed again: connections are refused
    let config = issuer_config(&format!("http://127.0.0.1:{port}/jwks.json"));
    let verifier = Verifier::new(vec![config], options()).expect("valid config");
    let token = key(KeyAlg::Rs256).sign(&claims("someone")).expect("sign");

    let refused = verifier.verify(&token).await;

    let Err(AuthError::JwksUnavailable(problem)) = &refused else {
        panic!("expected JwksUnavailable, got {refused:?}")
    };
    assert!(problem.contains(&format!("127.0.0.1:{port}")), "{problem}");
    assert!(refused.unwrap_err().to_string().contains("retry"));
}

#[tokio::test]
async fn jwks_error_status_gives_jwks_unavailable_and_is_not_retried_within_the_interval() {
    let server = JwksServer::start(all_keys_jwks()).await;
    let verifier = Verifier::new(vec![issuer_config(&server.url_of("/broken"))], rate_limited()).expect("config");
    let token = key(KeyAlg::Rs256).sign(&claims("someone")).expect("sign");

    let first = verifier.verify(&token).await;
    let second = verifier.verify(&token).await;

    assert!(matches!(&first, Err(AuthError::JwksUnavailable(problem)) if problem.contains("500")), "{first:?}");
    assert_eq!(first, second, "the failure is remembered for the interval");
}

#[tokio::test]
async fn verified_token_is_served_from_the_cache_without_the_jwks() {
    let server = JwksServer::start(all_keys_jwks()).await;
    let verifier = verifier(&server, options());
    let token = key(KeyAlg::Rs256).sign(&claims("cached")).expect("sign");

    let first = verifier.verify_shared(&token).await.expect("valid");
    drop(server); // the JWKS endpoint is gone
    let second = verifier.verify_shared(&token).await.expect("still valid");
    let plain = verifier.verify(&token).await.expect("still valid");

    assert!(Arc::ptr_eq(&first, &second), "the same cached identity, not a second verification");
    assert_eq!(plain, *first);
}

#[tokio::test]
async fn cache_is_shared_by_clones_and_keyed_by_the_whole_token() {
    let server = JwksServer::start(all_keys_jwks()).await;
    let verifier = verifier(&server, options());
    let clone = verifier.clone();
    let token = key(KeyAlg::EdDsa).sign(&claims("shared")).expect("sign");

    let first = verifier.verify_shared(&token).await.expect("valid");
    let second = clone.verify_shared(&token).await.expect("valid");
    assert!(Arc::ptr_eq(&first, &second));

    let (signing_input, _) = token.rsplit_once('.').expect("three parts");
    let forged = format!("{signing_input}.{}", b64([0u8; 64]));
    assert_eq!(
        verifier.verify(&forged).await,
        Err(AuthError::BadSignature),
        "same claims, other signature: no cache hit"
    );
}

async fn futures_join_all(verifier: &Verifier, tokens: &[String]) -> Vec<Result<orgplane_auth::Identity, AuthError>> {
    let handles: Vec<_> = tokens
        .iter()
        .map(|token| {
            let verifier = verifier.clone();
            let token = token.clone();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.expect("task"));
    }
    results
}
