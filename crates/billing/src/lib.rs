//! Payment providers (filled in by the billing work).
