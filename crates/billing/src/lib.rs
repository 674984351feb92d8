//! Payment-provider adapters: Stripe and Lemon Squeezy.
//!
//! This crate owns everything that speaks a payment provider's language:
//! webhook signature checks, turning a provider's webhook JSON into one
//! normalized [`BillingEvent`], and the hand-written REST clients behind one
//! [`PaymentProvider`] enum. The server never sees a provider's JSON.
//!
//! It must never touch the database, decide entitlements or apply events: it
//! reports what the provider said, and the store decides what to do with it.
//! It never reads the clock for a decision that a caller can pass in (webhook
//! verification takes `now`).

pub mod change;
pub mod config;
pub mod error;
pub mod event;
pub mod invoice;
pub mod lemonsqueezy;
pub mod provider;
pub mod stripe;
mod transport;

pub use change::{ChangePreview, PlanChange, PreviewLine, Proration};
pub use config::{LemonSqueezyConfig, StripeConfig};
pub use error::{ParseError, ProviderError, SignatureError};
pub use event::{BillingEvent, ParsedWebhook};
pub use invoice::{Invoice, InvoicePage};
pub use lemonsqueezy::LemonSqueezyClient;
pub use provider::{CatalogItemStatus, CheckoutRequest, CheckoutSession, PaymentProvider};
pub use stripe::StripeClient;
