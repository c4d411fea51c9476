//! A round's publishes: decoded, refused or committed, and answered.
//!
//! # Order after "not stored" (MQTT 5)
//! The spool recognises a resent event by its device's highest stored seq, so an event stored
//! after a later one of its device would be taken for a resend and dropped. MQTT 3.1.1 cannot
//! get there: a round the spool refuses closes the connection. An MQTT 5 connection goes on
//! after "quota exceeded", and the device may have later events in flight; so the session
//! remembers, per device, the seqs it answered "not stored" (`held`), and a later event of that
//! device is answered "not stored" too until the device has resent those, lowest first. A
//! device that resends in order, as MQTT devices do, never sees the difference; one that gives
//! up on an event is held until it reconnects. At most [`MAX_HELD`] seqs are held; past that
//! the connection is closed, as 3.1.1's would have been.

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::mqttbytes::QoS;
use tokio_util::sync::CancellationToken;

use super::{Session, SessionError, BUSY_HOLD, DEAD_LETTER_BYTES};
use crate::identity::OnDeny;
use crate::ingest::mqtt::codec::{AckCode, Publish, Reply, Version};
use crate::ingest::Inbound;
use crate::route::DeadLetter;
use tributary_spool::SpoolError;

/// The most seqs a session holds back after answering "not stored".
pub const MAX_HELD: usize = 4096;

/// A round's publishes, decoded.
#[derive(Default)]
struct Prepared {
    events: Vec<Inbound>,
    dead: Vec<DeadLetter>,
    codes: Vec<(AckCode, Option<String>)>,
    cut: Option<(usize, SessionError)>,
    /// Refusals to count once stored: the reason, and the publish's index.
    refusals: Vec<(&'static str, usize)>,
    /// Held seqs this round stores (released once it is stored), and the seqs of the events
    /// it answers "not stored" because an earlier one is held.
    released: Vec<(String, u64)>,
    newly_held: Vec<(String, u64)>,
}

impl Session {
    /// The device a refused publish is filed under: the connection's, or where the connection
    /// names none (anonymous), the one its topic names (`devices/{id}/...`), so its dead letter
    /// is keyed by that device and not `unknown`.
    fn letter_device(&self, topic: &str) -> Option<String> {
        self.identity
            .device_id()
            .or_else(|| tributary_protocol::topic::device_of(topic))
            .map(str::to_owned)
    }

    /// Stores the publishes and returns their answers, and the error that ends the session at
    /// one of them (a denial under `on_deny = "disconnect"`, an MQTT 5 packet over the
    /// Maximum Packet Size): then the answers stop before it. An error means "not stored" on
    /// 3.1.1; MQTT 5 hears it in each answer instead.
    pub(super) async fn commit(
        &mut self,
        publishes: Vec<Publish>,
        stop: &CancellationToken,
    ) -> Result<(Vec<Reply>, Option<SessionError>), SessionError> {
        if publishes.is_empty() {
            return Ok((Vec::new(), None));
        }
        let v5 = self.codec.version() == Some(Version::V5);
        let held = tokio::time::Instant::now();
        let (codes, cut) = loop {
            let prepared = self.prepare(&publishes);
            let submitted = self
                .ingest
                .submit(
                    crate::transport::Transport::Mqtt,
                    prepared.events,
                    prepared.dead,
                )
                .await;
            match submitted {
                Ok(_) => {
                    // Counted once, when stored: a held round is prepared again.
                    for (reason, i) in &prepared.refusals {
                        self.count_refusal(reason, &publishes[*i].topic);
                    }
                    self.release(&prepared.released);
                    self.hold(prepared.newly_held)?;
                    break (prepared.codes, prepared.cut);
                }
                Err(error) if !v5 => {
                    tracing::warn!(message = "MQTT events not stored; closing the connection unacknowledged.", peer = %self.peer.addr, %error);
                    return Err(SessionError::NotStored(error.to_string()));
                }
                Err(SpoolError::Full { .. })
                    if held.elapsed() < BUSY_HOLD && !stop.is_cancelled() =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    let refused = prepared_seqs(&publishes, self);
                    self.hold(refused)?;
                    break (self.not_stored(&publishes, &error), None);
                }
            }
        };
        let cut_at = cut.as_ref().map_or(publishes.len(), |(i, _)| *i);
        let mut answers = Vec::new();
        for (p, (code, reason)) in publishes.into_iter().zip(codes).take(cut_at) {
            match p.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => answers.push(Reply::PubAck {
                    pkid: p.pkid,
                    code,
                    reason,
                }),
                QoS::ExactlyOnce => {
                    // A PUBREC with a failure code ends the exchange; 3.1.1 has no such code.
                    if code == AckCode::Success || !v5 {
                        self.awaiting_rel += 1;
                    } else {
                        if self.refused_rel.len() == super::REFUSED_REL {
                            self.refused_rel.pop_front();
                        }
                        self.refused_rel.push_back(p.pkid);
                    }
                    answers.push(Reply::PubRec {
                        pkid: p.pkid,
                        code,
                        reason,
                    });
                }
            }
            if let (AckCode::Success, Some(r)) = (code, &self.republish) {
                r.publish(p.topic, p.payload, p.retain);
            }
        }
        Ok((answers, cut.map(|(_, e)| e)))
    }

    /// The answers when the spool did not store a round (MQTT 5): "quota exceeded" when full,
    /// "unspecified error" when failing; the device resends either later. Counted.
    fn not_stored(
        &self,
        publishes: &[Publish],
        error: &SpoolError,
    ) -> Vec<(AckCode, Option<String>)> {
        let (code, reason) = match error {
            SpoolError::Full { .. } => (AckCode::QuotaExceeded, "spool_full"),
            _ => (AckCode::Unspecified, "spool_failed"),
        };
        let device = self.identity.device_id();
        self.ingest.stats.record_refusal(
            crate::transport::Transport::Mqtt,
            reason,
            device,
            Some(self.peer.addr),
        );
        if let Some(suppressed) = tributary_common::ratelog::allow("mqtt_not_stored") {
            tracing::warn!(message = "MQTT events not stored; answered so the device resends later.", peer = %self.peer.addr, %error, suppressed);
        }
        let why = format!("not stored ({error}); resend later");
        publishes
            .iter()
            .map(|_| (code, Some(why.clone())))
            .collect()
    }

    /// Holds `seqs` back (see the module doc); too many end the session.
    fn hold(&mut self, seqs: Vec<(String, u64)>) -> Result<(), SessionError> {
        for (device, seq) in seqs {
            self.held.entry(device).or_default().insert(seq);
        }
        let total: usize = self.held.values().map(BTreeSet::len).sum();
        if total > MAX_HELD {
            return Err(SessionError::NotStored(format!(
                "{total} events answered \"not stored\" were not resent"
            )));
        }
        Ok(())
    }

    /// Releases held seqs a commit stored.
    fn release(&mut self, stored: &[(String, u64)]) {
        for (device, seq) in stored {
            if let Some(set) = self.held.get_mut(device) {
                set.remove(seq);
                if set.is_empty() {
                    self.held.remove(device);
                }
            }
        }
    }

    /// Whether every event may be stored now: none has a lower held seq of its device that this
    /// round does not store first. Held seqs the events store are added to `released`.
    fn in_order(&self, events: &[Inbound], released: &mut Vec<(String, u64)>) -> bool {
        let mut taken = Vec::new();
        for e in events {
            let device = &e.event.device_id;
            let Some(set) = self.held.get(device) else {
                continue;
            };
            let lowest = set.iter().find(|s| {
                !released
                    .iter()
                    .chain(&taken)
                    .any(|(d, t)| d == device && t == *s)
            });
            match lowest {
                Some(lowest) if e.event.seq > *lowest => return false,
                _ if set.contains(&e.event.seq) => taken.push((device.clone(), e.event.seq)),
                _ => {}
            }
        }
        released.extend(taken);
        true
    }

    /// Decodes a round's publishes: the events, the dead letters, each publish's answer, and
    /// where the session is cut (if it is).
    fn prepare(&self, publishes: &[Publish]) -> Prepared {
        let mut prepared = Prepared::default();
        let v5 = self.codec.version() == Some(Version::V5);
        for (i, p) in publishes.iter().enumerate() {
            let (code, reason) = match self.decode(p) {
                Ok(events) if !self.in_order(&events, &mut prepared.released) => {
                    prepared.refusals.push(("held_back", i));
                    prepared.newly_held.extend(
                        events
                            .iter()
                            .map(|e| (e.event.device_id.clone(), e.event.seq)),
                    );
                    let why = "not stored: an earlier event of this device was answered \
                               \"not stored\" and must be resent first";
                    (AckCode::QuotaExceeded, Some(why.to_owned()))
                }
                Ok(events) => {
                    prepared.events.extend(events);
                    (AckCode::Success, None)
                }
                Err(refused) => {
                    let (code, letter) = *refused;
                    match code {
                        AckCode::NotAuthorized => prepared.refusals.push(("acl", i)),
                        _ if p.size > self.settings.max_payload => {
                            prepared.refusals.push(("too_large", i))
                        }
                        _ => {}
                    }
                    let reason = letter.reason.clone();
                    prepared.dead.push(letter);
                    (code, Some(reason))
                }
            };
            if prepared.cut.is_none() {
                if v5 && p.size > self.settings.max_packet() {
                    prepared.cut = Some((i, SessionError::PacketTooLarge(p.size)));
                } else if code == AckCode::NotAuthorized
                    && self.ingest.authority.on_deny() == OnDeny::Disconnect
                {
                    prepared.cut = Some((i, SessionError::Denied));
                }
            }
            prepared.codes.push((code, reason));
        }
        prepared
    }

    /// One publish's events, or its answer and dead letter.
    fn decode(&self, p: &Publish) -> Result<Vec<Inbound>, Box<(AckCode, DeadLetter)>> {
        if p.size > self.settings.max_payload {
            let letter = self.too_large(&p.topic, &p.payload, p.size);
            return Err(Box::new((AckCode::ImplementationSpecific, letter)));
        }
        if !self.ingest.authority.may_publish(&self.identity, &p.topic) {
            return Err(Box::new((
                AckCode::NotAuthorized,
                self.denied(&p.topic, &p.payload),
            )));
        }
        let headers = match &p.properties {
            None => Vec::new(),
            Some(props) => super::super::properties::headers(
                props,
                &p.topic,
                &p.payload,
                self.settings.user_property_bounds,
            )
            .map_err(|(code, reason)| {
                let letter = DeadLetter::new(
                    "mqtt",
                    p.topic.clone(),
                    self.letter_device(&p.topic),
                    reason,
                    &p.payload,
                );
                Box::new((code, letter))
            })?,
        };
        let mappings = &self.ingest.mappings;
        let sparkplug = self.ingest.sparkplug.as_deref();
        let connection = self.identity.device_id();
        match super::super::decode_publish(mappings, sparkplug, &p.topic, &p.payload, connection) {
            Ok(events) => Ok(events
                .into_iter()
                .map(|d| Inbound {
                    writer: Inbound::writer_of(&d.event.device_id, connection),
                    event: d.event,
                    session: d.session,
                    mqtt_topic: Some(p.topic.clone()),
                    headers: headers.iter().cloned().chain(d.headers).collect(),
                })
                .collect()),
            Err(letter) => {
                let code = if super::super::topic_is_known(mappings, sparkplug.is_some(), &p.topic)
                {
                    AckCode::PayloadFormatInvalid
                } else {
                    AckCode::TopicNameInvalid
                };
                Err(Box::new((code, *letter)))
            }
        }
    }

    /// The dead letter for a payload over `mqtt.max_payload_bytes` (its first
    /// [`DEAD_LETTER_BYTES`] kept). It is answered like any dead letter, so the device does not
    /// resend it forever.
    fn too_large(&self, topic: &str, payload: &[u8], size: usize) -> DeadLetter {
        DeadLetter::new(
            "mqtt",
            topic.to_owned(),
            self.letter_device(topic),
            format!(
                "payload too large: {size} bytes, limit {} (mqtt.max_payload_bytes)",
                self.settings.max_payload
            ),
            &payload[..payload.len().min(DEAD_LETTER_BYTES)],
        )
    }

    /// The dead letter for a publish the ACL denies.
    fn denied(&self, topic: &str, payload: &[u8]) -> DeadLetter {
        let device = self.identity.device_id().unwrap_or("unknown");
        DeadLetter::new(
            "mqtt",
            topic.to_owned(),
            Some(device.to_owned()),
            format!("acl: device {device:?} may not publish on {topic:?}"),
            payload,
        )
    }

    /// Counts and logs (rate-limited) a publish refused as `too_large`, `acl` or `held_back`.
    fn count_refusal(&self, reason: &'static str, topic: &str) {
        let device = self.identity.device_id();
        self.ingest.stats.record_refusal(
            crate::transport::Transport::Mqtt,
            reason,
            device,
            Some(self.peer.addr),
        );
        let (key, message) = match reason {
            "acl" => ("acl", "Publish refused by the ACL."),
            "held_back" => (
                "mqtt_held_back",
                "MQTT publish not stored: an earlier event of its device must be resent first.",
            ),
            _ => ("mqtt_too_large", "MQTT payload over the limit."),
        };
        if let Some(suppressed) = tributary_common::ratelog::allow(key) {
            tracing::warn!(message, device_id = device.unwrap_or("unknown"), %topic, peer = %self.peer.addr, suppressed);
        }
    }
}

/// The (device, seq) of every event in `publishes` that decodes: what a refused round holds.
fn prepared_seqs(publishes: &[Publish], session: &Session) -> Vec<(String, u64)> {
    publishes
        .iter()
        .filter_map(|p| session.decode(p).ok())
        .flatten()
        .map(|e| (e.event.device_id, e.event.seq))
        .collect()
}
