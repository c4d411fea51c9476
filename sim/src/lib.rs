//! The fleet simulator's library: event generators and device clients.
//!
//! - [`generate`]: readings and positions for simulated devices.
//! - [`tcp`]: a device speaking the TCP protocol, with ack-driven resend.
//! - [`mqtt`]: devices publishing over MQTT.
//! - [`run`]: N devices sending M events each, and what was acknowledged.
//!
//! The `tributary-sim` binary and the end-to-end tests both use these.

pub mod generate;
pub mod mqtt;
pub mod run;
pub mod tcp;
