//! Applying payment-provider state to subscriptions (billing work).
