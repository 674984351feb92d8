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

pub mod api_key;
mod cache;
mod config;
pub mod dev;
mod error;
mod issuer;
mod jwks;
mod jws;
pub mod keys;
mod verifier;

pub use config::IssuerConfig;
pub use error::AuthError;
pub use verifier::{Identity, Verifier, VerifierOptions};
