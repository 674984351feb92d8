//! Identity for orgplane (filled in by the auth work).
