//! What a verification costs: a full one (parse, key lookup, signature,
//! claims) per algorithm, and a cache hit.
//!
//! Run with `cargo bench -p orgplane-auth --bench verify`. Keys are static
//! (no HTTP), so every verification completes on its first poll and is
//! driven without a runtime, which would only add noise.

use std::future::Future;
use std::pin::pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use divan::Bencher;
use orgplane_auth::keys::{KeyAlg, SigningKey};
use orgplane_auth::{IssuerConfig, Verifier, VerifierOptions};
use serde_json::json;

const ISSUER: &str = "https://issuer.bench";
const AUDIENCE: &str = "https://api.orgplane.bench";

fn main() {
    divan::main();
}

struct Fixture {
    verifier: Verifier,
    rs256: String,
    es256: String,
    eddsa: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let keys: Vec<SigningKey> = [(KeyAlg::Rs256, "rsa"), (KeyAlg::Es256, "ec"), (KeyAlg::EdDsa, "ed")]
        .into_iter()
        .map(|(alg, kid)| SigningKey::generate(alg, kid).expect("generate key"))
        .collect();
    let verifier = Verifier::new(vec![], VerifierOptions::default()).expect("verifier");
    let config = IssuerConfig::new(ISSUER, format!("{ISSUER}/jwks"), vec![AUDIENCE.to_owned()]);
    let jwks = json!({ "keys": keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>() });
    verifier.add_static_issuer(config, jwks).expect("static issuer");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    // A token of typical size: the registered claims, an e-mail, a name, a few custom claims.
    let claims = json!({
        "iss": ISSUER, "sub": "user_01HZY8K3V4Q9W2E7R5T6Y8U0I1", "aud": AUDIENCE,
        "iat": now, "exp": now + 3600, "sid": "session_01HZY8K3V4Q9W2E7R5T6Y8U0I1",
        "email": "ada.lovelace@example.com", "email_verified": true, "name": "Ada Lovelace",
        "org_id": "org_01HZY8K3V4Q9W2E7R5T6Y8U0I1", "role": "admin", "permissions": ["billing:read", "members:write"],
    });
    let sign = |index: usize| keys[index].sign(&claims).expect("sign");
    Fixture { rs256: sign(0), es256: sign(1), eddsa: sign(2), verifier }
});

/// Drives a future that is ready on its first poll.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a verification with static keys never waits"),
    }
}

fn uncached(bencher: Bencher, token: &str) {
    let verifier = &FIXTURE.verifier;
    assert!(ready(verifier.verify_uncached(token)).is_ok());
    bencher.bench(|| ready(verifier.verify_uncached(divan::black_box(token))));
}

#[divan::bench]
fn uncached_rs256(bencher: Bencher) {
    uncached(bencher, &FIXTURE.rs256);
}

#[divan::bench]
fn uncached_es256(bencher: Bencher) {
    uncached(bencher, &FIXTURE.es256);
}

#[divan::bench]
fn uncached_eddsa(bencher: Bencher) {
    uncached(bencher, &FIXTURE.eddsa);
}

/// A cache hit, copying the identity out (what `verify` returns).
#[divan::bench(threads = [1, 2])]
fn cached_verify(bencher: Bencher) {
    let verifier = &FIXTURE.verifier;
    let token = FIXTURE.eddsa.as_str();
    assert!(ready(verifier.verify(token)).is_ok());
    bencher.bench(|| ready(verifier.verify(divan::black_box(token))));
}

/// A cache hit, sharing the cached identity (`verify_shared`).
#[divan::bench(threads = [1, 2])]
fn cached_verify_shared(bencher: Bencher) {
    let verifier = &FIXTURE.verifier;
    let token = FIXTURE.eddsa.as_str();
    assert!(ready(verifier.verify_shared(token)).is_ok());
    bencher.bench(|| ready(verifier.verify_shared(divan::black_box(token))));
}
