//! Signing keys orgplane holds itself: generating them, persisting them as
//! PKCS#8, publishing their public half as a JWK, and signing JWTs.
//!
//! Used by the dev issuer and by tests. This module never verifies tokens
//! (that is [`crate::Verifier`]'s job) and never writes key material anywhere.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::jws::b64;

/// The JWS algorithms orgplane signs and verifies with. Each is bound to one
/// key type, so the key decides the algorithm, never the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256; `kty: RSA`.
    Rs256,
    /// ECDSA on P-256 with SHA-256; `kty: EC`, `crv: P-256`.
    Es256,
    /// Ed25519; `kty: OKP`, `crv: Ed25519`.
    EdDsa,
}

impl KeyAlg {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::Rs256 => "RS256",
            KeyAlg::Es256 => "ES256",
            KeyAlg::EdDsa => "EdDSA",
        }
    }

    /// The algorithm a JWS header names, if orgplane accepts it. `Ed25519` is
    /// the fully-specified name RFC 9864 gives EdDSA on Ed25519.
    pub fn from_jws(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(KeyAlg::Rs256),
            "ES256" => Some(KeyAlg::Es256),
            "EdDSA" | "Ed25519" => Some(KeyAlg::EdDsa),
            _ => None,
        }
    }

    /// How a key for this algorithm is described, for messages.
    pub(crate) fn key_type(self) -> &'static str {
        match self {
            KeyAlg::Rs256 => "RSA (RS256)",
            KeyAlg::Es256 => "P-256 (ES256)",
            KeyAlg::EdDsa => "Ed25519 (EdDSA)",
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

enum KeyPair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private signing key with its `kid`. Its `Debug` never shows the key.
pub struct SigningKey {
    alg: KeyAlg,
    kid: String,
    pkcs8: Vec<u8>,
    pair: KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("alg", &self.alg).field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key: RSA 2048, P-256 or Ed25519.
    pub fn generate(alg: KeyAlg, kid: impl Into<String>) -> Result<Self, String> {
        let failed = |_| format!("could not generate a {} key", alg.key_type());
        let pkcs8 = match alg {
            KeyAlg::Rs256 => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?;
                let der: Pkcs8V1Der<'static> = pair.as_der().map_err(failed)?;
                der.as_ref().to_vec()
            }
            KeyAlg::Es256 => {
                let rng = SystemRandom::new();
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(failed)?.as_ref().to_vec()
            }
            KeyAlg::EdDsa => {
                Ed25519KeyPair::generate().map_err(failed)?.to_pkcs8v1().map_err(failed)?.as_ref().to_vec()
            }
        };
        Self::from_pkcs8(alg, kid, &pkcs8)
    }

    /// A key from its PKCS#8 DER encoding, as [`SigningKey::pkcs8_der`] gives it.
    pub fn from_pkcs8(alg: KeyAlg, kid: impl Into<String>, der: &[u8]) -> Result<Self, String> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| format!("not a PKCS#8 {} private key: {e}", alg.key_type());
        let pair = match alg {
            KeyAlg::Rs256 => KeyPair::Rsa(RsaKeyPair::from_pkcs8(der).map_err(rejected)?),
            KeyAlg::Es256 => {
                KeyPair::Ec(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(rejected)?)
            }
            KeyAlg::EdDsa => KeyPair::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(rejected)?),
        };
        Ok(SigningKey { alg, kid: kid.into(), pkcs8: der.to_vec(), pair })
    }

    /// The same key under another `kid`.
    pub(crate) fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = kid.into();
        self
    }

    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The private key, PKCS#8 DER. Secret: store it as such.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK: `{"kty","kid","alg","use":"sig", …}` with
    /// `n`/`e` (RSA), `crv`/`x`/`y` (EC) or `crv`/`x` (OKP).
    pub fn public_jwk(&self) -> Value {
        let mut jwk: serde_json::Map<String, Value> =
            self.public_members().into_iter().map(|(name, value)| (name.to_owned(), Value::String(value))).collect();
        jwk.insert("kid".into(), Value::String(self.kid.clone()));
        jwk.insert("alg".into(), Value::String(self.alg.as_str().into()));
        jwk.insert("use".into(), Value::String("sig".into()));
        Value::Object(jwk)
    }

    /// The RFC 7638 thumbprint of the public key: base64url(SHA-256) of its
    /// required members in lexicographic order. Stable for a key, so a good `kid`.
    pub fn thumbprint(&self) -> String {
        thumbprint_of(&self.public_members())
    }

    /// The members that define the public key, and nothing else, sorted by name.
    fn public_members(&self) -> Vec<(&'static str, String)> {
        match &self.pair {
            KeyPair::Rsa(pair) => {
                let public = pair.public_key();
                vec![
                    ("e", b64(public.exponent().big_endian_without_leading_zero())),
                    ("kty", "RSA".to_owned()),
                    ("n", b64(public.modulus().big_endian_without_leading_zero())),
                ]
            }
            KeyPair::Ec(pair) => {
                // An uncompressed SEC1 point: 0x04 || x || y, 32 bytes each.
                let point = pair.public_key().as_ref();
                let (x, y) = point.get(1..).unwrap_or_default().split_at(point.len().saturating_sub(1) / 2);
                vec![("crv", "P-256".to_owned()), ("kty", "EC".to_owned()), ("x", b64(x)), ("y", b64(y))]
            }
            KeyPair::Ed(pair) => {
                vec![("crv", "Ed25519".to_owned()), ("kty", "OKP".to_owned()), ("x", b64(pair.public_key().as_ref()))]
            }
        }
    }

    /// A compact JWS of `claims` (a JSON object), with header `{alg, kid, typ: "JWT"}`.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        if !claims.is_object() {
            return Err("JWT claims must be a JSON object".to_owned());
        }
        let header = json!({ "alg": self.alg.as_str(), "kid": self.kid, "typ": "JWT" });
        let mut token = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let failed = |_| format!("could not sign with the {} key `{}`", self.alg.key_type(), self.kid);
        let signature = match &self.pair {
            KeyPair::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), token.as_bytes(), &mut signature).map_err(failed)?;
                signature
            }
            KeyPair::Ec(pair) => pair.sign(&SystemRandom::new(), token.as_bytes()).map_err(failed)?.as_ref().to_vec(),
            KeyPair::Ed(pair) => pair.sign(token.as_bytes()).as_ref().to_vec(),
        };
        token.push('.');
        token.push_str(&b64(signature));
        Ok(token)
    }
}

/// RFC 7638: SHA-256 over the members as JSON without whitespace, in the
/// order given (which must be lexicographic). Values are base64url or fixed
/// names, so they need no escaping. Written out by hand rather than through
/// `serde_json`, whose key order depends on a crate feature.
fn thumbprint_of(members: &[(&'static str, String)]) -> String {
    let body: Vec<String> = members.iter().map(|(name, value)| format!("\"{name}\":\"{value}\"")).collect();
    b64(Sha256::digest(format!("{{{}}}", body.join(",")).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_round_trip_keeps_the_public_key() {
        for alg in [KeyAlg::Rs256, KeyAlg::Es256, KeyAlg::EdDsa] {
            let key = SigningKey::generate(alg, "k").expect("generate");
            let again = SigningKey::from_pkcs8(alg, "k", key.pkcs8_der()).expect("parse");
            assert_eq!(key.public_jwk(), again.public_jwk(), "{alg}");
        }
    }

    #[test]
    fn pkcs8_of_another_algorithm_is_refused() {
        let ed = SigningKey::generate(KeyAlg::EdDsa, "k").expect("generate");
        assert!(SigningKey::from_pkcs8(KeyAlg::Es256, "k", ed.pkcs8_der()).is_err());
        assert!(SigningKey::from_pkcs8(KeyAlg::Rs256, "k", ed.pkcs8_der()).is_err());
    }

    #[test]
    fn public_jwk_has_the_members_of_its_key_type() {
        let rsa = SigningKey::generate(KeyAlg::Rs256, "r").expect("generate").public_jwk();
        assert_eq!(
            (rsa["kty"].as_str(), rsa["alg"].as_str(), rsa["use"].as_str()),
            (Some("RSA"), Some("RS256"), Some("sig"))
        );
        assert_eq!(rsa["e"], "AQAB");
        assert_eq!(rsa["n"].as_str().map(str::len), Some(342)); // 256 bytes
        let ec = SigningKey::generate(KeyAlg::Es256, "e").expect("generate").public_jwk();
        assert_eq!((ec["crv"].as_str(), ec["kid"].as_str()), (Some("P-256"), Some("e")));
        assert_eq!(ec["x"].as_str().map(str::len), Some(43));
        assert_eq!(ec["y"].as_str().map(str::len), Some(43));
        let ed = SigningKey::generate(KeyAlg::EdDsa, "d").expect("generate").public_jwk();
        assert_eq!(
            (ed["kty"].as_str(), ed["crv"].as_str(), ed["alg"].as_str()),
            (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
        );
        assert_eq!(ed["x"].as_str().map(str::len), Some(43));
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 section 3.1.
        let members = [
            ("e", "AQAB".to_owned()),
            ("kty", "RSA".to_owned()),
            ("n", "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".to_owned()),
        ];
        assert_eq!(thumbprint_of(&members), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }
}
