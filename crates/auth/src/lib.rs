//! Identity for orgplane: who is calling.
//!
//! - End users: bearer JWTs from configured issuers, verified against the
//!   issuers' published keys ([`Verifier`]). RS256, ES256 and EdDSA only.
//! - Servers: API keys, stored as hashes ([`api_key`]).
//! - Development: a local issuer with its own key ([`dev`]).
//!
//! This crate answers "who is this?" and nothing more: it knows no users,
//! orgs or roles, never touches the database, and never logs a token or a
//! key.
//!
//! # Why JWS verification is written here, not taken from `jsonwebtoken`
//!
//! Verification is a few hundred lines over aws-lc-rs (`jws`, `jwks`,
//! `issuer`, `verifier`), and stays so on purpose. What it does:
//!
//! - **Three algorithms, decided before any key is touched.** The header's
//!   `alg` must be `RS256`, `ES256` or `EdDSA`; `none`, `HS*`, `PS*`,
//!   `ES384` and the rest are refused on the header alone ([`keys::KeyAlg::from_jws`]).
//! - **The key decides the algorithm, never the token.** A JWKS key's
//!   algorithm follows from its type (RSA ≥ 2048 bits → RS256, EC P-256 →
//!   ES256, OKP Ed25519 → EdDSA); a key pinned to another `alg`, an
//!   encryption key (`use: enc`, `key_ops` without `verify`) and symmetric
//!   keys are never loaded. A token is checked only with a key of its
//!   header's algorithm, so an RSA public key can never be used as an HMAC
//!   secret (the classic algorithm confusion).
//! - **`kid` lookup that never guesses.** A `kid` names one key; a `kid`
//!   naming a key of another algorithm is refused. Without a `kid`, only a
//!   sole key of the algorithm is used; several is refused, not tried in turn.
//!   An unknown `kid` refreshes the JWKS, single-flight and at most once per
//!   `jwks_refresh_min_interval` per issuer (within it, the answer is "retry
//!   after the rest of the interval": the issuer may just have rotated), a
//!   signature failing under a known `kid` refreshes it at the same rate (new
//!   material under an old `kid`), and keys older than an hour are fetched
//!   again so that retired keys stop verifying (`issuer`).
//! - **`crit` is refused** (RFC 7515 §4.1.11: orgplane understands no
//!   extension), tokens over 16 KiB are refused before decoding, `exp` is
//!   required, and claims are read once into a map from which the issuer's
//!   configured claim names (`email_claim`, …) are taken.
//!
//! `jsonwebtoken` (11.x) would replace only the parsing and the signature
//! call: the JWKS fetching, refresh policy, `kid` rules and claim mapping
//! above would remain ours. In exchange it would bring HS*/PS*/ES384 support
//! that must be configured away per key, a `Validation` whose claim rules
//! differ from ours (leeway, required claims), a global crypto-provider
//! setup, and, in 11.1, a `crit` header that is parsed but not enforced and
//! claims deserialized twice per token. So it stays a dev-dependency: an
//! independent implementation that the tests use to check our signer and
//! JWK encoding against (`tests/auth/interop.rs`).

pub mod api_key;
mod cache;
mod config;
pub mod dev;
mod error;
mod inspect;
mod issuer;
mod jwks;
mod jws;
pub mod keys;
mod preset;
mod verifier;
mod workos;

pub use cache::CacheStats;
pub use config::{DirectorySettings, IssuerConfig, IssuerSettings};
pub use error::AuthError;
pub use inspect::{JwksReport, inspect_jwks};
pub use preset::Preset;
pub use verifier::{Identity, Verifier, VerifierClock, VerifierOptions};
