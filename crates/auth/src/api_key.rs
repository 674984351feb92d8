//! Server API keys (`sk_…`): making new ones and the hash they are stored as.
//!
//! A key is shown once, at creation; only `hash(key)` is stored, and a
//! request's key is found by its hash. This module never stores, logs or
//! compares keys itself.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// Every server API key starts with this.
pub const PREFIX: &str = "sk_";

/// Every org API key (a key an org's member makes for the app) starts with this.
pub const ORG_PREFIX: &str = "ok_";

/// A new server key and its hash: `("sk_" + 43 base64url characters of 32
/// random bytes, hex(sha256(key)))`.
pub fn generate() -> (String, String) {
    generate_with(PREFIX)
}

/// A new org key (`ok_…`) and its hash, made like [`generate`].
pub fn generate_org_key() -> (String, String) {
    generate_with(ORG_PREFIX)
}

fn generate_with(prefix: &str) -> (String, String) {
    let mut secret = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut secret);
    let key = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash(&key);
    (key, hash)
}

/// What a list shows of a key to tell it apart: its type prefix and the
/// next 8 characters (48 of its 256 bits: no help to a guesser).
pub fn display_prefix(key: &str) -> String {
    key.chars().take(11).collect()
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
    fn org_keys_have_their_own_prefix_and_a_short_display_prefix() {
        let (key, stored) = generate_org_key();
        assert!(key.starts_with(ORG_PREFIX));
        assert_eq!(hash(&key), stored);
        let shown = display_prefix(&key);
        assert_eq!(shown.len(), 11);
        assert!(key.starts_with(&shown));
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
