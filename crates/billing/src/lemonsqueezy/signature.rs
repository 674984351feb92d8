//! Lemon Squeezy webhook signatures: `X-Signature` = hex(HMAC-SHA256(signing
//! secret, raw body)).
//!
//! This module owns the check and a signer for tests. It must never compare
//! in variable time. There is no timestamp, hence no replay window: the
//! caller dedupes on the event's key and re-fetches state.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::SignatureError;

/// The header Lemon Squeezy signs deliveries with.
pub const HEADER: &str = "X-Signature";
/// The header naming the event (not covered by the signature).
pub const EVENT_NAME_HEADER: &str = "X-Event-Name";

/// Verifies `x_signature_hex` over the raw `payload` with the webhook's signing secret.
pub fn verify(payload: &[u8], x_signature_hex: &str, secret: &str) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecretConfigured);
    }
    let given = x_signature_hex.trim();
    if given.is_empty() {
        return Err(SignatureError::MissingHeader);
    }
    let given = hex::decode(given).map_err(|_| SignatureError::NotHex)?;
    if bool::from(compute(payload, secret).as_slice().ct_eq(given.as_slice())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `X-Signature` value Lemon Squeezy would send for `payload`.
pub fn sign(payload: &[u8], secret: &str) -> String {
    hex::encode(compute(payload, secret))
}

fn compute(payload: &[u8], secret: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(payload);
    mac.finalize().into_bytes().to_vec()
}
