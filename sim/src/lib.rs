//! The fleet simulator's library: realistic device streams, devices that behave like
//! firmware, the verifier and the load benchmark.
//!
//! - [`model`]: signal models (environment stations, machines, vehicles on a road network)
//!   and injected faults.
//! - [`stream`]: one device's seeded stream of events.
//! - [`scenario`]: the fleet, its transports and its pace, from TOML plus flags.
//! - [`device`]: a device on TCP or MQTT, with an outbox, reconnects and resends.
//! - [`run`]: a whole fleet at once, its summary table and [`manifest`].
//! - [`verify`]: topics (Kafka or the file sink) checked against a manifest.
//! - [`bench`]: open-loop load with latency percentiles and the gateway's CPU and memory.
//! - [`tcp`]: the TCP protocol client; [`mqtt`]: MQTT topics and payloads; [`generate`]: fixed
//!   test events; [`security`]: TLS, passwords and boot sessions; [`corpus`]: the gateway's fuzz
//!   seeds, from these streams.
//!
//! The `tributary-sim` binary and the end-to-end tests both use these.

pub mod bench;
pub mod corpus;
pub mod device;
pub mod generate;
pub mod manifest;
pub mod model;
pub mod murmur2;
pub mod progress;
pub mod run;
pub mod scenario;
pub mod security;
pub mod stream;
pub mod tcp;
pub mod verify;
