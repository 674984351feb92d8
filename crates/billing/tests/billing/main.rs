//! orgplane-billing's integration tests, one binary: webhook signatures
//! against Stripe's official vectors, normalization of each event type from
//! Stripe's reference objects and Lemon Squeezy's documented payloads, and
//! the REST clients against a local stand-in server that records each
//! request exactly.

mod clients;
mod fixtures;
mod lemonsqueezy_events;
mod plan_changes;
mod signatures;
mod stand_in;
mod stripe_events;
