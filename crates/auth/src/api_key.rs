//! Server API keys (`sk_…`): making new ones and the hash they are stored as.
//!
//! A key is shown once, at creation; only `hash(key)` is stored, and a
//! request's key is found by its hash. This module never stores, logs or
//! compares keys itself.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// Every API key starts with this.
pub const PREFIX: &str = "sk_";

/// A new key and its hash: `("sk_" + 43 base64url characters of 32 random
/// bytes, hex(sha256(key)))`.
pub fn generate() -> (String, String) {
    let mut secret = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut secret);
    let key = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash(&key);
    (key, hash)
}

/// What a key is stored and looked up as: lower-case hex of its SHA-256.
/// 256 random bits need no salt or slow hash: they cannot be guessed.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_has_the_prefix_and_hashes_to_its_hash() {
        let (key, stored) = generate();
        assert!(key.starts_with(PREFIX));
        assert_eq!(key.len(), PREFIX.len() + 43);
        assert!(key[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(hash(&key), stored);
        assert_eq!(stored.len(), 64);
    }

    #[test]
    fn keys_are_distinct() {
        let (a, hash_a) = generate();
        let (b, hash_b) = generate();
        assert_ne!(a, b);
        assert_ne!(hash_a, hash_b);
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(hash("sk_test"), hex::encode(Sha256::digest(b"sk_test")));
        assert_eq!(hash(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_ne!(hash("sk_a"), hash("sk_b"));
    }
}
