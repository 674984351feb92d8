//! Reading a compact JWS (`header.claims.signature`, base64url without
//! padding) into its parts, before anything about it is trusted.
//!
//! This module only parses. It never decides which key or issuer applies and
//! never treats a parsed claim as true: that happens after the signature
//! checks out, in [`crate::verifier`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::AuthError;
use crate::keys::KeyAlg;

/// Longer tokens are refused before any decoding: real access tokens are a
/// few kilobytes at most, and this bounds the work a stranger can cause.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// base64url without padding, as JOSE uses it.
pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url: no padding, no stray bits.
pub(crate) fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// A token split into its parts; nothing in it is verified yet.
#[derive(Debug)]
pub(crate) struct Jws<'t> {
    /// The algorithm the header claims. Only a key of this algorithm may
    /// verify the token.
    pub alg: KeyAlg,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.claims`, the bytes the signature covers.
    pub signing_input: &'t [u8],
    pub signature: Vec<u8>,
}

impl<'t> Jws<'t> {
    pub(crate) fn parse(token: &'t str) -> Result<Self, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("it is longer than 16 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("a JWT has three dot-separated parts"));
        };
        let header = b64_decode(header).ok_or(AuthError::Malformed("the header is not base64url"))?;
        let header: Header = serde_json::from_slice(&header)
            .map_err(|_| AuthError::Malformed("the header is not a JSON object with `alg`"))?;
        // Decided on the header alone: `none`, HS* and the rest never reach a key.
        let alg = KeyAlg::from_jws(&header.alg).ok_or_else(|| AuthError::UnsupportedAlgorithm(header.alg.clone()))?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; orgplane understands none.
            return Err(AuthError::Malformed(
                "the header lists critical extensions (`crit`) orgplane does not support",
            ));
        }
        let claims = b64_decode(claims).ok_or(AuthError::Malformed("the claims are not base64url"))?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&claims).map_err(|_| AuthError::Malformed("the claims are not a JSON object"))?;
        let signature = b64_decode(signature).ok_or(AuthError::Malformed("the signature is not base64url"))?;
        let signing_input_len = token.rfind('.').unwrap_or(0);
        Ok(Jws { alg, kid: header.kid, claims, signing_input: &token.as_bytes()[..signing_input_len], signature })
    }
}

/// A JWT NumericDate (seconds since the epoch, possibly fractional) as whole
/// seconds, rounded down.
pub(crate) fn numeric_date(value: &Value) -> Option<i64> {
    if let Some(seconds) = value.as_i64() {
        return Some(seconds);
    }
    let seconds = value.as_f64()?;
    // `as` saturates; the range check keeps absurd values from becoming i64::MAX.
    (seconds.is_finite() && seconds.abs() < 1e15).then(|| seconds.floor() as i64)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn token(header: &Value, claims: &Value, signature: &[u8]) -> String {
        format!("{}.{}.{}", b64(header.to_string()), b64(claims.to_string()), b64(signature))
    }

    #[test]
    fn parses_parts_and_keeps_the_signing_input() {
        let text = token(&json!({"alg": "ES256", "kid": "k1"}), &json!({"sub": "u"}), b"sig");
        let jws = Jws::parse(&text).expect("parses");
        assert_eq!(jws.alg, KeyAlg::Es256);
        assert_eq!(jws.kid.as_deref(), Some("k1"));
        assert_eq!(jws.claims["sub"], "u");
        assert_eq!(jws.signature, b"sig");
        assert_eq!(jws.signing_input, text.rsplit_once('.').expect("dots").0.as_bytes());
    }

    #[test]
    fn refuses_alg_none_and_hmac_from_the_header_alone() {
        for alg in ["none", "HS256", "HS512", "RS512", "PS256", "ES384"] {
            let text = token(&json!({"alg": alg}), &json!({}), b"");
            assert_eq!(Jws::parse(&text).unwrap_err(), AuthError::UnsupportedAlgorithm(alg.to_owned()));
        }
    }

    #[test]
    fn refuses_shapes_that_are_not_a_compact_jws() {
        let good_header = b64(json!({"alg": "RS256"}).to_string());
        let good_claims = b64(json!({"sub": "u"}).to_string());
        let cases = [
            String::new(),
            "abc".to_owned(),
            format!("{good_header}.{good_claims}"),
            format!("{good_header}.{good_claims}.c2ln.extra"),
            format!("{good_header}=.{good_claims}.c2ln"),
            format!("{good_header}.{good_claims}.c2ln="),
            format!("{}.{good_claims}.c2ln", b64("[]")),
            format!("{}.{good_claims}.c2ln", b64(json!({"alg": "RS256", "kid": 7}).to_string())),
            format!("{good_header}.{}.c2ln", b64("[1,2]")),
            format!("{good_header}.{}.c2ln", b64("not json")),
            format!("{good_header}.{good_claims}.{}", "A".repeat(MAX_TOKEN_LEN)),
            token(&json!({"alg": "RS256", "crit": ["exp"]}), &json!({}), b"s"),
        ];
        for case in cases {
            assert!(matches!(Jws::parse(&case), Err(AuthError::Malformed(_))), "{case:.80}");
        }
    }

    #[test]
    fn numeric_dates_may_be_fractional() {
        assert_eq!(numeric_date(&json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(numeric_date(&json!(1_700_000_000.9)), Some(1_700_000_000));
        assert_eq!(numeric_date(&json!("1700000000")), None);
        assert_eq!(numeric_date(&json!(1e300)), None);
    }
}
