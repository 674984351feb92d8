//! Our signer and JWK encoding, checked against an independent JWT library
//! (jsonwebtoken): a bug shared by our signer and our verifier would
//! otherwise go unnoticed.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use orgplane_auth::keys::{KeyAlg, SigningKey};
use serde_json::Value;

use crate::support::{AUDIENCE, ISSUER, claims, key};

fn decode_with_jsonwebtoken(signer: &SigningKey, token: &str) -> Value {
    let jwk: Jwk = serde_json::from_value(signer.public_jwk()).expect("jsonwebtoken reads our JWK");
    let decoding_key = DecodingKey::from_jwk(&jwk).expect("a usable key");
    let algorithm = match signer.alg() {
        KeyAlg::Rs256 => Algorithm::RS256,
        KeyAlg::Es256 => Algorithm::ES256,
        KeyAlg::EdDsa => Algorithm::EdDSA,
    };
    let mut validation = Validation::new(algorithm);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    let data =
        jsonwebtoken::decode::<Value>(token, &decoding_key, &validation).expect("jsonwebtoken accepts our token");
    assert_eq!(data.header.kid.as_deref(), Some(signer.kid()));
    assert_eq!(data.header.typ.as_deref(), Some("JWT"));
    data.claims
}

#[test]
fn our_tokens_verify_with_jsonwebtoken_for_every_algorithm() {
    for alg in [KeyAlg::Rs256, KeyAlg::Es256, KeyAlg::EdDsa] {
        let signer = key(alg);
        let claims = claims("interop");
        let token = signer.sign(&claims).expect("sign");

        assert_eq!(decode_with_jsonwebtoken(signer, &token), claims, "{alg}");
    }
}

#[test]
fn signing_refuses_claims_that_are_not_an_object() {
    assert!(key(KeyAlg::EdDsa).sign(&serde_json::json!(["not", "claims"])).is_err());
}
