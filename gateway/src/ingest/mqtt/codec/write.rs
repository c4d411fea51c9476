//! Answers into bytes: MQTT 5's reason codes and properties, or 3.1.1's plain packets.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5 as v5p;

use rumqttc::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::QoS as V5QoS;

use super::{AckCode, Closing, Codec, ConnectCode, Reply, Version};

impl Codec {
    /// Appends `reply` to `out` in the connection's version (3.1.1 before a CONNECT was read).
    pub fn write(&self, reply: &Reply, out: &mut BytesMut) -> Result<(), String> {
        match self.version {
            Some(Version::V5) => self.write_v5(reply, out),
            _ => write_v4(reply, out),
        }
    }

    fn write_v5(&self, reply: &Reply, out: &mut BytesMut) -> Result<(), String> {
        let packet = self.v5_packet(reply, true);
        let packet = match self.client_max_packet {
            // A reason string is the first thing to go when the client's limit is small.
            Some(max) if packet.size() > max as usize => self.v5_packet(reply, false),
            _ => packet,
        };
        if let v5p::Packet::Disconnect(v5p::Disconnect {
            reason_code,
            properties: None,
        }) = &packet
        {
            // rumqttc writes a reason code without properties one byte past the length it
            // declares; this is the packet it means: the code and an empty property length.
            out.extend_from_slice(&[0xE0, 0x02, *reason_code as u8, 0x00]);
            return Ok(());
        }
        packet
            .write(out, self.client_max_packet)
            .map(|_| ())
            .map_err(|e| match e {
                rumqttc::v5::mqttbytes::Error::OutgoingPacketTooLarge { pkt_size, max } => {
                    format!(
                        "a {pkt_size}-byte answer is over the client's Maximum Packet Size ({max})"
                    )
                }
                e => format!("{e:?}"),
            })
    }

    /// The v5 packet for `reply`; reason strings only where the client takes them and
    /// `reasons` allows.
    fn v5_packet(&self, reply: &Reply, reasons: bool) -> v5p::Packet {
        let problem = reasons && self.problem_info;
        let why = |reason: &Option<String>, allowed: bool| reason.clone().filter(|_| allowed);
        match reply {
            Reply::ConnAck {
                code,
                session_present,
                grant,
                reason,
            } => {
                let mut props = grant.as_deref().map(|g| v5p::ConnAckProperties {
                    session_expiry_interval: g.session_expiry,
                    receive_max: Some(g.receive_max),
                    max_qos: None,
                    retain_available: None,
                    max_packet_size: Some(g.max_packet),
                    assigned_client_identifier: g.assigned_client_id.clone(),
                    topic_alias_max: Some(g.topic_alias_max),
                    reason_string: None,
                    user_properties: Vec::new(),
                    wildcard_subscription_available: Some(0),
                    subscription_identifiers_available: Some(0),
                    shared_subscription_available: Some(0),
                    server_keep_alive: g.server_keep_alive,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                });
                if let Some(reason) = why(reason, reasons) {
                    props
                        .get_or_insert_with(empty_connack_properties)
                        .reason_string = Some(reason);
                }
                v5p::Packet::ConnAck(v5p::ConnAck {
                    session_present: *session_present,
                    code: match code {
                        ConnectCode::Accepted => v5p::ConnectReturnCode::Success,
                        ConnectCode::UnsupportedVersion => {
                            v5p::ConnectReturnCode::UnsupportedProtocolVersion
                        }
                        ConnectCode::BadClientId => {
                            v5p::ConnectReturnCode::ClientIdentifierNotValid
                        }
                        ConnectCode::BadCredentials => v5p::ConnectReturnCode::BadUserNamePassword,
                        ConnectCode::NotAuthorized => v5p::ConnectReturnCode::NotAuthorized,
                        ConnectCode::Busy => v5p::ConnectReturnCode::ServerBusy,
                        ConnectCode::BadAuthMethod => {
                            v5p::ConnectReturnCode::BadAuthenticationMethod
                        }
                    },
                    properties: props,
                })
            }
            Reply::PubAck { pkid, code, reason } => v5p::Packet::PubAck(v5p::PubAck {
                pkid: *pkid,
                reason: puback_reason(*code),
                properties: why(reason, problem).map(|r| v5p::PubAckProperties {
                    reason_string: Some(r),
                    user_properties: Vec::new(),
                }),
            }),
            Reply::PubRec { pkid, code, reason } => v5p::Packet::PubRec(v5p::PubRec {
                pkid: *pkid,
                reason: pubrec_reason(*code),
                properties: why(reason, problem).map(|r| v5p::PubRecProperties {
                    reason_string: Some(r),
                    user_properties: Vec::new(),
                }),
            }),
            Reply::PubComp { pkid, found } => v5p::Packet::PubComp(v5p::PubComp {
                pkid: *pkid,
                reason: if *found {
                    v5p::PubCompReason::Success
                } else {
                    v5p::PubCompReason::PacketIdentifierNotFound
                },
                properties: None,
            }),
            Reply::PingResp => v5p::Packet::PingResp(v5p::PingResp),
            Reply::SubAck { pkid, granted } => v5p::Packet::SubAck(v5p::SubAck {
                pkid: *pkid,
                return_codes: granted
                    .iter()
                    .map(|g| match g {
                        Some(QoS::AtMostOnce) => {
                            v5p::SubscribeReasonCode::Success(V5QoS::AtMostOnce)
                        }
                        Some(_) => v5p::SubscribeReasonCode::Success(V5QoS::AtLeastOnce),
                        None => v5p::SubscribeReasonCode::NotAuthorized,
                    })
                    .collect(),
                properties: (problem && granted.iter().any(Option::is_none)).then(|| {
                    v5p::SubAckProperties {
                        reason_string: Some(SUBSCRIBE_ELSEWHERE.to_owned()),
                        user_properties: Vec::new(),
                    }
                }),
            }),
            Reply::UnsubAck { pkid, existed } => v5p::Packet::UnsubAck(v5p::UnsubAck {
                pkid: *pkid,
                reasons: existed
                    .iter()
                    .map(|e| {
                        if *e {
                            v5p::UnsubAckReason::Success
                        } else {
                            v5p::UnsubAckReason::NoSubscriptionExisted
                        }
                    })
                    .collect(),
                properties: None,
            }),
            Reply::Publish(o) => {
                let mut p = v5p::Publish::new(
                    o.topic.clone(),
                    if o.qos == QoS::AtMostOnce {
                        V5QoS::AtMostOnce
                    } else {
                        V5QoS::AtLeastOnce
                    },
                    o.payload.clone(),
                    None,
                );
                p.pkid = o.pkid;
                p.dup = o.dup;
                if o.response_topic.is_some() || o.correlation.is_some() {
                    p.properties = Some(v5p::PublishProperties {
                        response_topic: o.response_topic.clone(),
                        correlation_data: o.correlation.clone(),
                        payload_format_indicator: Some(1),
                        content_type: Some("application/json".to_owned()),
                        ..Default::default()
                    });
                }
                v5p::Packet::Publish(p)
            }
            Reply::Disconnect { reason, detail } => {
                let mut d = v5p::Disconnect::new(disconnect_reason(*reason));
                d.properties = why(detail, reasons).map(|r| v5p::DisconnectProperties {
                    session_expiry_interval: None,
                    reason_string: Some(r),
                    user_properties: Vec::new(),
                    server_reference: None,
                });
                v5p::Packet::Disconnect(d)
            }
        }
    }
}

/// Why a SUBSCRIBE's filter is refused on the device listener (MQTT 5's SUBACK reason string).
const SUBSCRIBE_ELSEWHERE: &str =
    "a device subscribes here only to its own commands (devices/{id}/commands/#); other subscribers use the gateway's broker (mqtt.broker_listen)";

fn empty_connack_properties() -> v5p::ConnAckProperties {
    v5p::ConnAckProperties {
        session_expiry_interval: None,
        receive_max: None,
        max_qos: None,
        retain_available: None,
        max_packet_size: None,
        assigned_client_identifier: None,
        topic_alias_max: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: None,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

fn puback_reason(code: AckCode) -> v5p::PubAckReason {
    match code {
        AckCode::Success => v5p::PubAckReason::Success,
        AckCode::PayloadFormatInvalid => v5p::PubAckReason::PayloadFormatInvalid,
        AckCode::TopicNameInvalid => v5p::PubAckReason::TopicNameInvalid,
        AckCode::NotAuthorized => v5p::PubAckReason::NotAuthorized,
        AckCode::ImplementationSpecific => v5p::PubAckReason::ImplementationSpecificError,
        AckCode::QuotaExceeded => v5p::PubAckReason::QuotaExceeded,
        AckCode::Unspecified => v5p::PubAckReason::UnspecifiedError,
    }
}

fn pubrec_reason(code: AckCode) -> v5p::PubRecReason {
    match code {
        AckCode::Success => v5p::PubRecReason::Success,
        AckCode::PayloadFormatInvalid => v5p::PubRecReason::PayloadFormatInvalid,
        AckCode::TopicNameInvalid => v5p::PubRecReason::TopicNameInvalid,
        AckCode::NotAuthorized => v5p::PubRecReason::NotAuthorized,
        AckCode::ImplementationSpecific => v5p::PubRecReason::ImplementationSpecificError,
        AckCode::QuotaExceeded => v5p::PubRecReason::QuotaExceeded,
        AckCode::Unspecified => v5p::PubRecReason::UnspecifiedError,
    }
}

fn disconnect_reason(reason: Closing) -> v5p::DisconnectReasonCode {
    use v5p::DisconnectReasonCode as D;
    match reason {
        Closing::Malformed => D::MalformedPacket,
        Closing::ProtocolError => D::ProtocolError,
        Closing::NotAuthorized => D::NotAuthorized,
        Closing::ShuttingDown => D::ServerShuttingDown,
        Closing::KeepAliveTimeout => D::KeepAliveTimeout,
        Closing::ReceiveMaximumExceeded => D::ReceiveMaximumExceeded,
        Closing::TopicAliasInvalid => D::TopicAliasInvalid,
        Closing::TopicNameInvalid => D::TopicNameInvalid,
        Closing::PacketTooLarge => D::PacketTooLarge,
        Closing::Unspecified => D::UnspecifiedError,
    }
}

/// 3.1.1's packets for `reply`: no reason codes beyond CONNACK's, no server DISCONNECT.
fn write_v4(reply: &Reply, out: &mut BytesMut) -> Result<(), String> {
    let packet = match reply {
        Reply::ConnAck {
            code,
            session_present,
            ..
        } => v4::Packet::ConnAck(v4::ConnAck::new(
            match code {
                ConnectCode::Accepted => v4::ConnectReturnCode::Success,
                ConnectCode::UnsupportedVersion => v4::ConnectReturnCode::RefusedProtocolVersion,
                ConnectCode::BadClientId => v4::ConnectReturnCode::BadClientId,
                ConnectCode::BadCredentials => v4::ConnectReturnCode::BadUserNamePassword,
                ConnectCode::NotAuthorized | ConnectCode::BadAuthMethod => {
                    v4::ConnectReturnCode::NotAuthorized
                }
                ConnectCode::Busy => v4::ConnectReturnCode::ServiceUnavailable,
            },
            // [MQTT-3.2.2-4]: 0 on any refusal.
            *session_present && *code == ConnectCode::Accepted,
        )),
        Reply::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck::new(*pkid)),
        Reply::PubRec { pkid, .. } => v4::Packet::PubRec(v4::PubRec::new(*pkid)),
        Reply::PubComp { pkid, .. } => v4::Packet::PubComp(v4::PubComp::new(*pkid)),
        Reply::PingResp => v4::Packet::PingResp,
        Reply::SubAck { pkid, granted } => v4::Packet::SubAck(v4::SubAck::new(
            *pkid,
            granted
                .iter()
                .map(|g| match g {
                    Some(QoS::AtMostOnce) => v4::SubscribeReasonCode::Success(QoS::AtMostOnce),
                    Some(_) => v4::SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    None => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Reply::Publish(o) => {
            let mut p = v4::Publish::new(o.topic.clone(), o.qos, o.payload.clone());
            p.pkid = o.pkid;
            p.dup = o.dup;
            v4::Packet::Publish(p)
        }
        Reply::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(*pkid)),
        Reply::Disconnect { .. } => return Ok(()),
    };
    packet
        .write(out, usize::MAX)
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}
