//! The observe wing: what the gateway tells the people who run it, and never the devices.
//!
//! - [`stats`]: the counters every part bumps (and the spool's `Observer`), cheap and lock-free
//!   on the hot path.
//! - [`metrics`]: their names and labels, rendered for Prometheus.
//! - [`activity`]: what the status page shows and metrics must not carry (device ids): per
//!   device last seen, rate, skew, position; bounded, in memory.
//! - [`admin`]: the admin listener (health, readiness, metrics, status page, spool tools), with
//!   its guard and its config.
//!
//! Invariant: nothing here changes what happens to an event. The wing reads counts and
//! snapshots; ingest, spool and forward never wait on it.

pub mod activity;
pub mod admin;
pub mod metrics;
pub mod stats;
