//! An issuer's published public keys (a JWKS document), parsed once into
//! keys ready to verify signatures, and the rule for picking one for a token.
//!
//! Each key's algorithm comes from its key type (RSA → RS256, EC P-256 →
//! ES256, OKP Ed25519 → EdDSA), never from a token. Keys orgplane cannot use
//! (other curves, RSA under 2048 bits, encryption keys, symmetric keys) are
//! skipped, not errors: an issuer may publish them alongside usable ones.
//! This module never fetches: see [`crate::issuer`].

use std::sync::Arc;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use serde_json::Value;

use crate::jws::b64_decode;
use crate::keys::KeyAlg;

/// A public key that verifies signatures of exactly one algorithm.
pub(crate) struct VerifyingKey {
    pub kid: Option<String>,
    pub alg: KeyAlg,
    key: ParsedPublicKey,
    /// The JWK's key members as decoded, to tell a replaced key from the same one.
    material: Vec<u8>,
}

impl VerifyingKey {
    /// The key a JWK describes; `Ok(None)` for a key orgplane does not use.
    fn from_jwk(jwk: &Value) -> Result<Option<Self>, String> {
        let text = |name: &str| jwk.get(name).and_then(Value::as_str);
        let bytes = |name: &str| {
            text(name).and_then(b64_decode).ok_or_else(|| format!("member `{name}` is missing or not base64url"))
        };
        if text("use").is_some_and(|usage| usage != "sig") {
            return Ok(None);
        }
        if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array)
            && !ops.iter().any(|op| op == "verify")
        {
            return Ok(None);
        }
        let alg = match (text("kty"), text("crv")) {
            (Some("RSA"), _) => KeyAlg::Rs256,
            (Some("EC"), Some("P-256")) => KeyAlg::Es256,
            (Some("OKP"), Some("Ed25519")) => KeyAlg::EdDsa,
            _ => return Ok(None),
        };
        // A key may pin its algorithm; one pinned to another (say PS256) is not ours to use.
        if let Some(pinned) = text("alg")
            && KeyAlg::from_jws(pinned) != Some(alg)
        {
            return Ok(None);
        }
        let rejected = |e: aws_lc_rs::error::KeyRejected| format!("not a valid {} public key: {e}", alg.key_type());
        let mut material = Vec::new();
        let key = match alg {
            KeyAlg::Rs256 => {
                let (n, e) = (bytes("n")?, bytes("e")?);
                // Some issuers pad the modulus with a zero byte; the integer is the same.
                let n = strip_leading_zeros(&n);
                let e = strip_leading_zeros(&e);
                if n.len() < 256 {
                    return Ok(None); // under 2048 bits: never accepted
                }
                material.extend_from_slice(n);
                material.extend_from_slice(e);
                RsaPublicKeyComponents { n, e }.to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256).map_err(rejected)?
            }
            KeyAlg::Es256 => {
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err("P-256 coordinates must be 32 bytes each".to_owned());
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04); // uncompressed SEC1 point
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                material.clone_from(&point);
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).map_err(rejected)?
            }
            KeyAlg::EdDsa => {
                material = bytes("x")?;
                ParsedPublicKey::new(&ED25519, &material).map_err(rejected)?
            }
        };
        Ok(Some(VerifyingKey { kid: text("kid").map(str::to_owned), alg, key, material }))
    }

    /// Whether `other` is this very key (same algorithm and key material).
    pub fn same_material(&self, other: &VerifyingKey) -> bool {
        self.alg == other.alg && self.material == other.material
    }

    /// Whether `signature` signs `message` under this key.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Why no key was found for a token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyMiss {
    /// No such `kid`, or (without a `kid`) no key for the algorithm. A fresher
    /// key set might have it.
    Unknown,
    /// No `kid`, and several keys for the algorithm: refused, never guessed.
    Ambiguous,
    /// The `kid` names a key of another algorithm.
    WrongAlgorithm(KeyAlg),
}

/// The usable keys of one JWKS document.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
}

impl KeySet {
    /// Parses `{"keys": [...]}`. Fails if the document has no `keys` array, or
    /// no key orgplane can use; a malformed key among usable ones is skipped.
    pub fn from_jwks(jwks: &Value) -> Result<Self, String> {
        let entries = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "the JWKS document has no `keys` array".to_owned())?;
        let mut keys = Vec::with_capacity(entries.len());
        let mut problems = Vec::new();
        for (index, jwk) in entries.iter().enumerate() {
            match VerifyingKey::from_jwk(jwk) {
                Ok(Some(key)) => keys.push(Arc::new(key)),
                Ok(None) => tracing::debug!(index, "skipping a JWKS key orgplane does not use"),
                Err(problem) => {
                    tracing::warn!(index, %problem, "skipping a malformed JWKS key");
                    problems.push(format!("keys[{index}]: {problem}"));
                }
            }
        }
        if keys.is_empty() {
            let detail = if problems.is_empty() { String::new() } else { format!(" ({})", problems.join("; ")) };
            return Err(format!("the JWKS document has no RS256, ES256 or EdDSA signing key{detail}"));
        }
        Ok(KeySet { keys })
    }

    /// The usable keys: `kid` (if any) and algorithm.
    pub fn describe(&self) -> impl Iterator<Item = (Option<&str>, KeyAlg)> {
        self.keys.iter().map(|key| (key.kid.as_deref(), key.alg))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key for a token's `kid` and `alg`. Without a `kid`, only a sole
    /// key of that algorithm qualifies.
    pub fn find(&self, kid: Option<&str>, alg: KeyAlg) -> Result<Arc<VerifyingKey>, KeyMiss> {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|key| key.kid.as_deref() == Some(kid)).peekable();
                let first_alg = named.peek().map(|key| key.alg);
                match named.find(|key| key.alg == alg) {
                    Some(key) => Ok(Arc::clone(key)),
                    None => Err(first_alg.map_or(KeyMiss::Unknown, KeyMiss::WrongAlgorithm)),
                }
            }
            None => {
                let mut candidates = self.keys.iter().filter(|key| key.alg == alg);
                match (candidates.next(), candidates.next()) {
                    (Some(key), None) => Ok(Arc::clone(key)),
                    (None, _) => Err(KeyMiss::Unknown),
                    (Some(_), Some(_)) => Err(KeyMiss::Ambiguous),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::keys::SigningKey;

    fn jwk(alg: KeyAlg, kid: &str) -> Value {
        SigningKey::generate(alg, kid).expect("generate").public_jwk()
    }

    #[test]
    fn each_key_type_gets_its_one_algorithm() {
        let set = KeySet::from_jwks(
            &json!({"keys": [jwk(KeyAlg::Rs256, "r"), jwk(KeyAlg::Es256, "e"), jwk(KeyAlg::EdDsa, "d")]}),
        )
        .expect("parses");
        assert_eq!(set.len(), 3);
        assert_eq!(set.find(Some("r"), KeyAlg::Rs256).map(|k| k.alg).ok(), Some(KeyAlg::Rs256));
        assert_eq!(set.find(Some("e"), KeyAlg::Es256).map(|k| k.alg).ok(), Some(KeyAlg::Es256));
        assert_eq!(set.find(Some("d"), KeyAlg::EdDsa).map(|k| k.alg).ok(), Some(KeyAlg::EdDsa));
        assert_eq!(set.find(Some("r"), KeyAlg::Es256).err(), Some(KeyMiss::WrongAlgorithm(KeyAlg::Rs256)));
        assert_eq!(set.find(Some("zzz"), KeyAlg::Rs256).err(), Some(KeyMiss::Unknown));
    }

    #[test]
    fn without_kid_only_a_sole_key_of_the_algorithm_is_used() {
        let set = KeySet::from_jwks(
            &json!({"keys": [jwk(KeyAlg::Rs256, "r1"), jwk(KeyAlg::Rs256, "r2"), jwk(KeyAlg::EdDsa, "d")]}),
        )
        .expect("parses");
        assert_eq!(set.find(None, KeyAlg::Rs256).err(), Some(KeyMiss::Ambiguous));
        assert_eq!(set.find(None, KeyAlg::EdDsa).map(|k| k.kid.clone()).ok(), Some(Some("d".to_owned())));
        assert_eq!(set.find(None, KeyAlg::Es256).err(), Some(KeyMiss::Unknown));
    }

    #[test]
    fn unusable_keys_are_skipped_and_an_empty_result_is_an_error() {
        let mut pinned_elsewhere = jwk(KeyAlg::Rs256, "ps");
        pinned_elsewhere["alg"] = json!("PS256");
        let mut encryption = jwk(KeyAlg::Rs256, "enc");
        encryption["use"] = json!("enc");
        let symmetric = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"});
        let p384 = json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "kid": "p384"});
        let unusable = json!({"keys": [pinned_elsewhere, encryption, symmetric, p384]});
        assert!(KeySet::from_jwks(&unusable).is_err());
        let mut with_one = unusable.clone();
        with_one["keys"].as_array_mut().expect("array").push(jwk(KeyAlg::EdDsa, "d"));
        assert_eq!(KeySet::from_jwks(&with_one).expect("parses").len(), 1);
        assert!(KeySet::from_jwks(&json!({"nokeys": []})).is_err());
    }

    #[test]
    fn off_curve_point_is_rejected() {
        let mut ec = jwk(KeyAlg::Es256, "e");
        ec["y"] = ec["x"].clone();
        let bad = json!({"keys": [ec]});
        assert!(KeySet::from_jwks(&bad).is_err());
    }

    #[test]
    fn rsa_modulus_with_a_leading_zero_byte_is_accepted() {
        let mut rsa = jwk(KeyAlg::Rs256, "r");
        let mut n = b64_decode(rsa["n"].as_str().expect("n")).expect("b64");
        n.insert(0, 0);
        rsa["n"] = json!(crate::jws::b64(n));
        assert!(KeySet::from_jwks(&json!({"keys": [rsa]})).is_ok());
    }
}
