//! The device side of Tributary's contract, shared by the fleet simulator (`tributary-sim`,
//! async, thousands of devices) and the node agent on a Pi (`tributary-node`, blocking, one
//! device). Both drive their own connections; what they must agree on lives here, once:
//!
//! - [`publish`]: the topic and payload of an event on MQTT (the protocol crate's
//!   `devices/{id}/{kind}` topic, the JSON form with the boot session).
//! - [`options`]: how a device connects with rumqttc, MQTT 3.1.1 or 5: its client id and user
//!   name are its device id, a clean session, TLS and password where it has them.
//! - [`answer`]: what the gateway said, read from rumqttc's events ([`answer::Polled`]): stored,
//!   busy (send again later, in order) or refused for good (with the gateway's reason).
//! - [`inflight`]: which event a packet id stands for, from rumqttc's order of writes to the
//!   PUBACK that answers it.
//! - [`tcp`]: the TCP protocol's HELLO and what each reply to an EVENTS batch means.
//!
//! The module is sans-IO: no sockets, no clock, no runtime. Each caller owns its loop, its
//! timeouts and its retry policy; what a reply means is decided here, so the simulator that
//! tests the gateway and the agent that runs in the field cannot drift apart.

pub mod answer;
pub mod command;
pub mod inflight;
pub mod options;
pub mod publish;
pub mod tcp;
