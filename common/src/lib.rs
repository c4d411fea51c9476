//! What every part of the gateway shares and that imports none of them.
//!
//! - [`clock`]: the wall clock, read everywhere through one function with a seam for tests.
//! - [`validate`]: the vocabulary each part's configuration is validated in.
//! - [`ratelog`]: warnings rate-limited per reason.
//! - [`backoff`]: exponential backoff for what is retried after a failure.
//!
//! Invariant: this crate depends on no other Tributary crate but the protocol's, so the spool
//! and the gateway can both stand on it (`tests/imports/check` holds the crates to that order).

pub mod backoff;
pub mod clock;
pub mod ratelog;
pub mod validate;
