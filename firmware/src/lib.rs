//! The device side of Tributary.
//!
//! - Sensor drivers, `no_std`, generic over embedded-hal 1.0, allocating nothing and never
//!   panicking: [`bme280`] (temperature, humidity, pressure), [`ads1115`] (a 16-bit ADC for
//!   analog sensors: current clamps, vibration, fuel level), [`nmea`] and [`gnss`] (a GNSS
//!   receiver on a UART: GGA and RMC sentences into a `Position`).
//! - [`frame`] (feature `alloc`): protocol frames encoded in place into a caller's buffer.
//! - [`device`] (feature `alloc`): the device loop: sample on a schedule, stamp seq and time,
//!   keep unacknowledged events in a bounded buffer, send and resend over a [`device::Transport`].
//! - `node` (feature `node`, std): the `tributary-node` agent for a Raspberry Pi.
#![cfg_attr(not(any(feature = "node", test)), no_std)]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod ads1115;
pub mod bme280;
#[cfg(feature = "alloc")]
pub mod frame;
pub mod gnss;
pub mod nmea;

#[cfg(feature = "alloc")]
pub mod device;
#[cfg(feature = "node")]
pub mod node;
