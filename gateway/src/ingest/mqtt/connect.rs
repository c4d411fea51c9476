//! A session's CONNECT: who the device is, and what the CONNACK grants it.
//!
//! - **Identity** ([`crate::identity`]): a client certificate, or username (= the client id =
//!   the device id) and password. Refused: "bad user name or password" (unknown device, wrong
//!   password) or "not authorized" (the rest), with the reason as MQTT 5's reason string.
//! - **Client id.** 3.1.1 refuses an empty one without clean session ("identifier rejected").
//!   MQTT 5 assigns one, as the specification requires, and says so in the CONNACK (Assigned
//!   Client Identifier): the device id a certificate proves, else the username, else a fresh
//!   `tributary-<n>`.
//! - **MQTT 5 grants** ([`Grant`]):
//!   - Receive Maximum: `mqtt.receive_maximum`, lowered while the spool is over half full, in
//!     proportion to the room left, down to 1 when it is full. The device keeps at most that many
//!     QoS 1 and 2 publishes unanswered, so a full spool slows it down instead of cutting it off.
//!   - Maximum Packet Size: what `mqtt.max_payload_bytes` needs, with room for the topic and
//!     properties.
//!   - Topic Alias Maximum: [`TOPIC_ALIAS_MAX`].
//!   - Server Keep Alive, when the device asked for none (0) or for more than
//!     `mqtt.max_keep_alive_s`: that maximum instead.
//!   - Session Present, from [`super::sessions`]. Enhanced authentication (AUTH) is not offered:
//!     a CONNECT naming a method is refused with "bad authentication method".

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::codec::{Connect, ConnectCode, Grant, Reply, Version, TOPIC_ALIAS_MAX};
use super::session::{Session, SessionError};
use crate::identity::{Claim, Refusal};

/// The Receive Maximum for a spool `fill` (0 to 1) full: `configured` up to half full, then in
/// proportion to the room left, and at least 1.
pub fn receive_maximum(configured: u16, fill: f64) -> u16 {
    let room = ((1.0 - fill) * 2.0).clamp(0.0, 1.0);
    ((f64::from(configured) * room) as u16).max(1)
}

impl Session {
    /// Answers the CONNECT; `Ok` with the idle timeout (1.5 × the keep-alive in force) once
    /// accepted.
    pub(super) async fn connect(&mut self, c: Connect) -> Result<Duration, SessionError> {
        let v5 = c.version == Version::V5;
        if c.auth_method.is_some() {
            self.refuse(ConnectCode::BadAuthMethod, "enhanced authentication (AUTH) is not offered; use a password or a client certificate".into()).await?;
            return Err(SessionError::Protocol("enhanced authentication requested"));
        }
        let mut assigned = None;
        let client_id = if !c.client_id.is_empty() {
            c.client_id.clone()
        } else if v5 {
            let id = self.assign_id(c.username.as_deref());
            assigned = Some(id.clone());
            id
        } else if !c.clean_start {
            self.refuse(ConnectCode::BadClientId, String::new()).await?;
            return Err(SessionError::Protocol(
                "empty client id without clean session",
            ));
        } else {
            String::new()
        };
        let claim = Claim {
            device_id: &client_id,
            username: c.username.as_deref(),
            password: c.password.as_deref(),
        };
        let authority = self.ingest.authority.clone();
        match authority.authenticate(&self.peer, claim).await {
            Ok(identity) => {
                tracing::Span::current().record("device_id", client_id.as_str());
                self.identity = identity;
                self.connected = Some(self.ingest.stats.activity.connected(
                    &client_id,
                    crate::transport::Transport::Mqtt,
                    tributary_common::clock::now_ms(),
                ));
            }
            Err(refusal) => {
                let reason = refusal.reason();
                self.ingest.stats.record_refusal(
                    crate::transport::Transport::Mqtt,
                    reason,
                    Some(&client_id),
                    Some(self.peer.addr),
                );
                refusal.log("CONNECT", &client_id, self.peer.addr);
                let code = match refusal {
                    Refusal::UnknownDevice(_) | Refusal::WrongPassword(_) => {
                        ConnectCode::BadCredentials
                    }
                    Refusal::Busy => ConnectCode::Busy,
                    _ => ConnectCode::NotAuthorized,
                };
                self.refuse(code, refusal.to_device()).await?;
                return Err(SessionError::Refused(refusal));
            }
        }
        let max_keep_alive = self.settings.max_keep_alive;
        let (keep_alive, server_keep_alive) = match c.keep_alive {
            k if v5 && (k == 0 || k > max_keep_alive) => (max_keep_alive, Some(max_keep_alive)),
            k => (k, None),
        };
        self.will = c.will;
        self.generation = self.settings.sessions.connected(&client_id);
        let (session_present, grant) = if v5 {
            self.grant = receive_maximum(self.settings.receive_maximum, self.ingest.spool.fill());
            self.session_expiry = c.session_expiry;
            let resumed = self.settings.sessions.resume(&client_id, c.clean_start);
            let present = resumed.is_some();
            self.resumed = resumed.unwrap_or_default();
            let max_packet = u32::try_from(self.settings.max_packet() + 5).unwrap_or(u32::MAX);
            let grant = Grant {
                receive_max: self.grant,
                max_packet,
                topic_alias_max: TOPIC_ALIAS_MAX,
                session_expiry: None,
                server_keep_alive,
                assigned_client_id: assigned,
            };
            (present, Some(Box::new(grant)))
        } else {
            // 3.1.1: CleanSession 0 asks for a session that lasts until a CleanSession 1
            // connection ends it ([MQTT-3.1.2-4]), and Session Present must say it is there
            // ([MQTT-3.2.2-2]). An empty client id has none to keep.
            self.session_expiry = if c.clean_start || client_id.is_empty() {
                0
            } else {
                u32::MAX
            };
            let resumed = self.settings.sessions.resume(&client_id, c.clean_start);
            let present = resumed.is_some();
            self.resumed = resumed.unwrap_or_default();
            (present, None)
        };
        self.client_id = client_id;
        self.send(&[Reply::ConnAck {
            code: ConnectCode::Accepted,
            session_present,
            grant,
            reason: None,
        }])
        .await?;
        tracing::debug!(message = "MQTT device connected.", client_id = %self.client_id, level = c.level, peer = %self.peer.addr, identity = ?self.identity);
        Ok(match keep_alive {
            0 => Duration::from_secs(24 * 3600),
            secs => Duration::from_millis(u64::from(secs) * 1500),
        })
    }

    async fn refuse(&mut self, code: ConnectCode, reason: String) -> Result<(), SessionError> {
        self.send(&[Reply::ConnAck {
            code,
            session_present: false,
            grant: None,
            reason: Some(reason).filter(|r| !r.is_empty()),
        }])
        .await
    }

    /// The client id MQTT 5 assigns to a CONNECT without one.
    fn assign_id(&self, username: Option<&str>) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        if let Some(Ok(proven)) = &self.peer.certificate {
            return proven.clone();
        }
        match username {
            Some(user) if !user.is_empty() => user.to_owned(),
            _ => format!(
                "tributary-{}-{}",
                tributary_common::clock::now_ms(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::receive_maximum;

    #[test]
    fn the_grant_shrinks_with_the_room_left_past_half_full() {
        assert_eq!(receive_maximum(32, 0.0), 32);
        assert_eq!(receive_maximum(32, 0.5), 32);
        assert_eq!(receive_maximum(32, 0.75), 16);
        assert_eq!(receive_maximum(32, 0.99), 1);
        assert_eq!(receive_maximum(32, 1.5), 1, "over the bound");
    }
}
