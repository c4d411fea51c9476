//! Commands to the device on this connection ([`crate::commands`]): its subscription, what was
//! sent, and the answers.
//!
//! A device subscribes to its own commands (`devices/{id}/commands/#`, or a narrower filter
//! of its own); any other filter is refused in the SUBACK (3.1.1: failure; 5: "not
//! authorized", with the reason), and so is a device's filter for another device's commands:
//! an authenticated connection takes only its own id's, an anonymous one (where the operator
//! lets anyone in) one device's. Once subscribed, the session sends the device's undelivered
//! commands in queue order, QoS 1, at most [`crate::commands::BATCH`] unacknowledged at once,
//! and again whenever a command is queued for it. A PUBACK marks the command delivered (its
//! outcome stored). Each command is sent once per connection ([`Inbox`]'s cursor); a new
//! connection gets again every command not yet answered (`commands.redeliver =
//! "until-answered"`, the default: an answer lost with a connection is given again), or only
//! those never acknowledged (`"until-delivered"`). MQTT 5 commands carry the answer's topic (Response Topic) and the command id
//! (Correlation Data). A publish to `devices/{id}/results/{command id}` is the device's answer:
//! it settles the command (outcome "answered") and is acknowledged after that commit, like an
//! event.

use std::collections::HashMap;

use super::{Session, SessionError};
use crate::commands::outbox::Outbox;
use crate::ingest::mqtt::codec::{AckCode, Outbound, Publish, Reply, Version};
use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use tributary_client::command as contract;
use tributary_spool::commands::Queued;

/// The connection's command subscription.
pub(in crate::ingest::mqtt) struct Inbox {
    /// The device's queue, read once per connection in order.
    pub(super) outbox: Outbox,
    /// The filters granted (a command is sent if any matches its name).
    filters: Vec<String>,
    /// QoS 0 when every filter asked for at most once: commands are then sent at QoS 0 and
    /// count as delivered once written (no PUBACK will come).
    qos: QoS,
    /// Sent and not yet acknowledged, by packet id.
    in_flight: HashMap<u16, Queued>,
    next_pkid: u16,
}

impl Session {
    /// Answers a SUBSCRIBE: grants the filters for this device's own commands, refuses the rest.
    pub(super) fn subscribe(&mut self, filters: &[(String, QoS)]) -> Vec<Option<QoS>> {
        let Some(commands) = self.ingest.commands.clone() else {
            return vec![None; filters.len()];
        };
        let mut granted = Vec::with_capacity(filters.len());
        for (filter, qos) in filters {
            let device = contract::subscribed_device(filter).filter(|d| {
                let own = match self.identity.device_id() {
                    Some(id) => id == *d,
                    None => tributary_protocol::device_id::validate_device_id(d).is_ok(),
                };
                own && self.inbox.as_ref().is_none_or(|i| i.outbox.device() == *d)
            });
            let Some(device) = device else {
                self.ingest.stats.record_refusal(
                    crate::transport::Transport::Mqtt,
                    "subscribe_denied",
                    self.identity.device_id(),
                    Some(self.peer.addr),
                );
                granted.push(None);
                continue;
            };
            let inbox = self.inbox.get_or_insert_with(|| {
                Box::new(Inbox {
                    outbox: Outbox::new(commands.clone(), device, false),
                    filters: Vec::new(),
                    qos: QoS::AtMostOnce,
                    in_flight: HashMap::new(),
                    next_pkid: 1,
                })
            });
            if !inbox.filters.contains(filter) {
                inbox.filters.push(filter.clone());
            }
            if *qos != QoS::AtMostOnce {
                inbox.qos = QoS::AtLeastOnce;
            }
            // Queued for delivery on the next pass.
            inbox.outbox.wake.notify_one();
            granted.push(Some(if *qos == QoS::AtMostOnce {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            }));
        }
        granted
    }

    /// Answers an UNSUBSCRIBE: drops the filters this connection held.
    pub(super) fn unsubscribe(&mut self, filters: &[String]) -> Vec<bool> {
        let Some(inbox) = self.inbox.as_mut() else {
            return vec![false; filters.len()];
        };
        let existed = filters
            .iter()
            .map(|f| {
                let before = inbox.filters.len();
                inbox.filters.retain(|g| g != f);
                inbox.filters.len() < before
            })
            .collect();
        if inbox.filters.is_empty() && inbox.in_flight.is_empty() {
            self.inbox = None;
        }
        existed
    }

    /// Sends the device's undelivered commands it has not been sent on this connection, in
    /// queue order, up to the window.
    pub(super) async fn deliver(&mut self) -> Result<(), SessionError> {
        let v5 = self.codec.version() == Some(Version::V5);
        let Some(inbox) = self.inbox.as_mut() else {
            return Ok(());
        };
        let room = crate::commands::BATCH.saturating_sub(inbox.in_flight.len());
        if inbox.filters.is_empty() || room == 0 {
            return Ok(());
        }
        let (filters, device) = (&inbox.filters, inbox.outbox.device().to_owned());
        let wanted = |c: &Queued| {
            filters
                .iter()
                .any(|f| contract::matches(f, &device, &c.name))
        };
        let queued = match inbox.outbox.next(room, wanted).await {
            Ok(q) => q,
            Err(error) => {
                tracing::warn!(message = "Reading the device's commands failed; trying at its next wake.", device_id = %device, %error);
                return Ok(());
            }
        };
        let qos = inbox.qos;
        let mut out = Vec::new();
        let mut written = Vec::new();
        for command in queued {
            let pkid = match qos {
                QoS::AtMostOnce => 0,
                _ => inbox.take_pkid(),
            };
            out.push(Reply::Publish(Box::new(Outbound {
                pkid,
                qos,
                topic: contract::command_topic(&device, &command.name),
                payload: Bytes::from(command.body.clone()),
                dup: false,
                response_topic: v5.then(|| contract::result_topic(&device, &command.command_id)),
                correlation: v5.then(|| Bytes::from(command.command_id.clone().into_bytes())),
            })));
            match qos {
                QoS::AtMostOnce => written.push(command),
                _ => {
                    inbox.in_flight.insert(pkid, command);
                }
            }
        }
        self.send(&out).await?;
        // At most once, as the device asked: written is delivered.
        if let Some(inbox) = self.inbox.as_ref() {
            for command in written {
                inbox.record_delivery(&command).await;
            }
        }
        Ok(())
    }

    /// The device acknowledged command publishes: each is delivered.
    pub(super) async fn acknowledged(&mut self, pkids: Vec<u16>) {
        let Some(inbox) = self.inbox.as_mut() else {
            return;
        };
        for pkid in pkids {
            let Some(command) = inbox.in_flight.remove(&pkid) else {
                continue;
            };
            inbox.record_delivery(&command).await;
        }
        inbox.outbox.wake.notify_one();
    }

    /// Takes the publishes that answer commands out of `publishes`, settles them, and returns
    /// their acknowledgements.
    pub(super) async fn answers(
        &mut self,
        publishes: &mut Vec<Publish>,
    ) -> Result<Vec<Reply>, SessionError> {
        let Some(commands) = self.ingest.commands.clone() else {
            return Ok(Vec::new());
        };
        if !publishes
            .iter()
            .any(|p| contract::parse_result_topic(&p.topic).is_some())
        {
            return Ok(Vec::new());
        }
        let v5 = self.codec.version() == Some(Version::V5);
        let mut replies = Vec::new();
        let mut rest = Vec::with_capacity(publishes.len());
        for p in std::mem::take(publishes) {
            let Some((device, id)) = contract::parse_result_topic(&p.topic) else {
                rest.push(p);
                continue;
            };
            // An answer for another device is the ACL's to refuse: it goes the events' way.
            if self.identity.device_id().is_some_and(|own| own != device) {
                rest.push(p);
                continue;
            }
            let code = match commands.answered(device, id, &p.payload).await {
                Ok(_) => AckCode::Success,
                Err(error) if !v5 => {
                    tracing::warn!(message = "A command's answer was not stored; closing unacknowledged.", peer = %self.peer.addr, %error);
                    return Err(SessionError::NotStored(error.to_string()));
                }
                Err(_) => AckCode::QuotaExceeded,
            };
            match p.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => replies.push(Reply::PubAck {
                    pkid: p.pkid,
                    code,
                    reason: None,
                }),
                QoS::ExactlyOnce => {
                    if code == AckCode::Success {
                        self.awaiting_rel += 1;
                    }
                    replies.push(Reply::PubRec {
                        pkid: p.pkid,
                        code,
                        reason: None,
                    });
                }
            }
        }
        *publishes = rest;
        Ok(replies)
    }
}

impl Inbox {
    /// The filters granted, with the QoS this connection sends at: kept with the session.
    pub(in crate::ingest::mqtt) fn filters(&self) -> Vec<(String, QoS)> {
        self.filters.iter().map(|f| (f.clone(), self.qos)).collect()
    }

    async fn record_delivery(&self, command: &Queued) {
        if let Err(error) = self.outbox.commands().delivered(command).await {
            // Not recorded: it stays undelivered and is sent again on the next connection.
            tracing::warn!(message = "A command's delivery could not be recorded; it will be sent again.", device_id = %self.outbox.device(), command_id = %command.command_id, %error);
        }
    }

    fn take_pkid(&mut self) -> u16 {
        loop {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains_key(&pkid) {
                return pkid;
            }
        }
    }
}
