//! orgplane-auth's integration tests: real keys, a real JWKS endpoint.

mod dev_issuer;
mod interop;
mod jwks_fetch;
mod support;
mod verify;
