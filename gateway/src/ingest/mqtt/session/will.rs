//! Will Messages, and what a DISCONNECT says about the session.
//!
//! A CONNECT's Will is kept for the life of the connection. A normal DISCONNECT discards it
//! ([MQTT-3.1.2-10]); MQTT 5's reason 0x04 "disconnect with Will Message" keeps it. When the
//! connection ends any other way (the device vanished, its keep-alive expired, it broke the
//! protocol), the Will is the device's last word: it is **stored as the device's event**, through
//! the same ACL, mapping and spool path as any publish it made, and copied to the embedded
//! broker's subscribers (RETAIN kept) ([MQTT-3.1.2-8]). For a fleet, "this device dropped off"
//! is what the data team wants in Kafka.
//!
//! MQTT 5's Will Delay Interval is honoured: the Will waits that long (at most the session's
//! expiry), and is not stored if the same client id connects again meanwhile
//! ([MQTT-3.1.3-9]). Not stored either: when the gateway itself shuts down (the device did not
//! drop off; the gateway stopped), and when the device's credential was revoked.
//!
//! A DISCONNECT's Session Expiry Interval replaces the CONNECT's (§3.14.2.2.2), except that a
//! session the CONNECT asked to end with the connection cannot be given one now
//! ([MQTT-3.14.2-2]: a protocol error).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Session, SessionError};
use crate::ingest::mqtt::codec::Will;

impl Session {
    /// A DISCONNECT: its new Session Expiry Interval, and whether it keeps the Will.
    pub(super) fn disconnecting(
        &mut self,
        session_expiry: Option<u32>,
        with_will: bool,
    ) -> Result<(), SessionError> {
        if let Some(expiry) = session_expiry {
            if self.session_expiry == 0 && expiry != 0 {
                return Err(SessionError::Protocol(
                    "DISCONNECT sets a Session Expiry Interval the CONNECT had at 0 [MQTT-3.14.2-2]",
                ));
            }
            self.session_expiry = expiry;
        }
        if !with_will {
            self.will = None;
        }
        Ok(())
    }

    /// Stores the Will as the device's publish, after its delay unless the client id connected
    /// again meanwhile or the gateway stops.
    pub(super) async fn store_will(&mut self, will: Will, stop: &CancellationToken) {
        let delay = will.delay_s.min(self.session_expiry);
        if delay > 0 {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(u64::from(delay))) => {}
            }
            if self
                .settings
                .sessions
                .superseded(&self.client_id, self.generation)
            {
                tracing::debug!(message = "Will not stored: the client connected again within its delay.", client_id = %self.client_id);
                return;
            }
        }
        let topic = will.publish.topic.clone();
        match self.commit(vec![will.publish], stop).await {
            Ok(_) => {
                tracing::info!(message = "The connection ended without DISCONNECT: its Will was stored.", client_id = %self.client_id, %topic);
            }
            Err(error) => {
                tracing::warn!(message = "The connection's Will was not stored.", client_id = %self.client_id, %topic, %error);
            }
        }
    }
}
