//! The device listener's MQTT codec: one set of packets for every protocol version it speaks.
//!
//! The session ([`super::session`]) deals only in the types here; this module turns bytes into
//! them and answers into bytes, with rumqttc's codecs underneath (`mqttbytes::v4` for 3.1.1,
//! `v5::mqttbytes::v5` for 5). The CONNECT decides the version for the life of the connection:
//! - protocol level 4 (`MQTT`): MQTT 3.1.1;
//! - protocol level 3 (`MQIsdp`): MQTT 3.1, which older device libraries still send. Its
//!   packets are 3.1.1's but for the CONNECT's protocol name, so that CONNECT is rewritten to
//!   3.1.1's before it is parsed, and the connection is served as 3.1.1;
//! - protocol level 5 (`MQTT`): MQTT 5, with properties and reason codes;
//! - anything else is refused with "unacceptable protocol version".
//!
//! What MQTT 5 adds that the session must not see twice is resolved here: topic aliases (a
//! PUBLISH with an alias and no topic gets the topic the alias was last given), and what an
//! answer may carry (no reason strings for a client that asked for no problem information, and
//! none that would take a packet past the client's Maximum Packet Size). MQTT 3.1.1 has no way
//! to say why: its answers carry only the packet id, and a DISCONNECT from the server does not
//! exist, so the connection is just closed.

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::{v4, Error as V4Error, QoS};
use rumqttc::v5::mqttbytes::v5 as v5p;
use rumqttc::v5::mqttbytes::{Error as V5Error, QoS as V5QoS};

/// The protocol version a connection speaks, as its CONNECT said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (level 4), and 3.1 (level 3), served alike.
    V311,
    V5,
}

/// A CONNECT, whatever its version.
#[derive(Debug, Clone)]
pub struct Connect {
    pub version: Version,
    /// The protocol level as sent: 3, 4 or 5.
    pub level: u8,
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    /// MQTT 5: how long the client asks its session to outlive the connection (seconds).
    pub session_expiry: u32,
    /// MQTT 5: an enhanced-authentication method, which this listener does not offer.
    pub auth_method: Option<String>,
    /// The Will: published (stored as the device's event) when the connection ends abnormally.
    pub will: Option<Box<Will>>,
}

/// A CONNECT's Will Message.
#[derive(Debug, Clone)]
pub struct Will {
    pub publish: Publish,
    /// MQTT 5: Will Delay Interval, seconds.
    pub delay_s: u32,
}

/// A PUBLISH, whatever its version, with its topic alias resolved.
#[derive(Debug, Clone)]
pub struct Publish {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub pkid: u16,
    /// The payload's real size: larger than `payload` for one read through
    /// ([`super::oversize::Oversize`]).
    pub size: usize,
    /// MQTT 5 properties the gateway acts on; `None` when there were none.
    pub properties: Option<Box<Properties>>,
    /// The RETAIN flag: kept on the copy for the embedded broker's subscribers.
    pub retain: bool,
}

impl Publish {
    pub fn new(topic: String, payload: Bytes, qos: QoS, pkid: u16) -> Self {
        let size = payload.len();
        Self {
            topic,
            payload,
            qos,
            pkid,
            size,
            properties: None,
            retain: false,
        }
    }
}

/// A PUBLISH's (or Will's) topic name as the specification allows it: no wildcard
/// ([MQTT-3.3.2-2]: `+`, `#`) and no U+0000 ([MQTT-1.5.3-2]). Refused, the connection closes
/// (MQTT 5: 0x90 Topic Name invalid).
pub fn check_topic_name(topic: &str) -> Result<(), ReadError> {
    match topic.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
        None => Ok(()),
        Some(c) => Err(ReadError::TopicName(format!(
            "topic name {:?} holds {c:?}, which a PUBLISH may not have",
            crate::logline::clip(topic)
        ))),
    }
}

/// A PUBLISH's fixed-header flags as the specification allows them: DUP only with QoS 1 or 2
/// ([MQTT-3.3.1-2]).
fn check_dup(dup: bool, qos: QoS) -> Result<(), ReadError> {
    if dup && qos == QoS::AtMostOnce {
        return Err(ReadError::Malformed(
            "QoS 0 PUBLISH with the DUP flag set [MQTT-3.3.1-2]".into(),
        ));
    }
    Ok(())
}

/// The MQTT 5 publish properties the gateway acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// Payload Format Indicator 1: the payload says it is UTF-8.
    pub utf8: bool,
    pub content_type: Option<String>,
    pub user: Vec<(String, String)>,
}

impl Properties {
    /// The properties the gateway acts on, from a PUBLISH's or a Will's; `None` without any.
    fn kept(
        format: Option<u8>,
        content_type: Option<String>,
        user: Vec<(String, String)>,
    ) -> Option<Box<Self>> {
        let kept = Self {
            utf8: format == Some(1),
            content_type,
            user,
        };
        (kept != Self::default()).then(|| Box::new(kept))
    }
}

/// A packet from a device.
#[derive(Debug, Clone)]
pub enum Incoming {
    Connect(Box<Connect>),
    Publish(Publish),
    PubRel(u16),
    PingReq,
    /// The filters and the QoS asked for each.
    Subscribe {
        pkid: u16,
        filters: Vec<(String, QoS)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    /// A device acknowledged a QoS 1 publish the gateway sent it (a command).
    PubAck(u16),
    /// A DISCONNECT: MQTT 5's new Session Expiry Interval, if it sets one, and whether its
    /// reason is 0x04 "disconnect with Will Message".
    Disconnect {
        session_expiry: Option<u32>,
        with_will: bool,
    },
    /// An acknowledgement of a publish from the server; the listener sends none, so ignored.
    Ignored,
    /// A packet only a server sends (CONNACK, SUBACK, ...), or MQTT 5's AUTH, not offered.
    Unexpected(&'static str),
}

/// How a CONNECT is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCode {
    Accepted,
    UnsupportedVersion,
    BadClientId,
    BadCredentials,
    NotAuthorized,
    Busy,
    BadAuthMethod,
}

/// MQTT 5's CONNACK properties: what the server grants.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub receive_max: u16,
    pub max_packet: u32,
    pub topic_alias_max: u16,
    pub session_expiry: Option<u32>,
    pub server_keep_alive: Option<u16>,
    pub assigned_client_id: Option<String>,
}

/// The answer to a publish (QoS 1 or 2): its reason code in MQTT 5; in 3.1.1 every answer is
/// the same PUBACK or PUBREC, and "not stored" is said by closing the connection instead. The
/// codes and what each means to a device are the protocol crate's (`refusal`), which the
/// device-side client reads them back with.
pub use tributary_protocol::refusal::PublishCode as AckCode;

/// Why the server closes an MQTT 5 connection (DISCONNECT's reason code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    Malformed,
    ProtocolError,
    NotAuthorized,
    ShuttingDown,
    KeepAliveTimeout,
    ReceiveMaximumExceeded,
    TopicAliasInvalid,
    TopicNameInvalid,
    PacketTooLarge,
    Unspecified,
}

/// A PUBLISH from the gateway to a device (a command).
#[derive(Debug, Clone)]
pub struct Outbound {
    /// 0 at QoS 0.
    pub pkid: u16,
    /// At most once or at least once: what the subscription granted.
    pub qos: QoS,
    pub topic: String,
    pub payload: Bytes,
    pub dup: bool,
    /// MQTT 5: where the device answers, and what it sends back to say which command.
    pub response_topic: Option<String>,
    pub correlation: Option<Bytes>,
}

/// An answer to a device.
#[derive(Debug, Clone)]
pub enum Reply {
    ConnAck {
        code: ConnectCode,
        session_present: bool,
        grant: Option<Box<Grant>>,
        reason: Option<String>,
    },
    PubAck {
        pkid: u16,
        code: AckCode,
        reason: Option<String>,
    },
    PubRec {
        pkid: u16,
        code: AckCode,
        reason: Option<String>,
    },
    /// `found`: whether the PUBREL's packet id was one the session can complete; MQTT 5 says
    /// "packet identifier not found" for one whose PUBREC refused the publish.
    PubComp {
        pkid: u16,
        found: bool,
    },
    PingResp,
    /// Per filter: the QoS granted, or `None`: refused (not the device's own commands).
    SubAck {
        pkid: u16,
        granted: Vec<Option<QoS>>,
    },
    /// Per filter: whether a subscription existed.
    UnsubAck {
        pkid: u16,
        existed: Vec<bool>,
    },
    /// A command to the device, QoS 1.
    Publish(Box<Outbound>),
    /// MQTT 5 only; nothing is written on a 3.1.1 connection.
    Disconnect {
        reason: Closing,
        detail: Option<String>,
    },
}

/// Why bytes could not be read as a packet.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Malformed(String),
    #[error("MQTT protocol level {0} is not supported (3.1, 3.1.1 and 5 are)")]
    UnsupportedProtocol(u8),
    #[error("topic alias {0} was never set or is over the maximum")]
    TopicAlias(u16),
    #[error("{0}")]
    TopicName(String),
}

/// Topic aliases a client may set (MQTT 5), granted in CONNACK.
pub const TOPIC_ALIAS_MAX: u16 = 32;

/// The codec of one connection.
#[derive(Debug)]
pub struct Codec {
    version: Option<Version>,
    /// The largest packet read (the fixed header's remaining length).
    max_packet: usize,
    /// MQTT 5: topic aliases as the client set them, by alias - 1.
    aliases: Vec<Option<String>>,
    /// MQTT 5: the client's Maximum Packet Size, and whether it takes reason strings.
    client_max_packet: Option<u32>,
    problem_info: bool,
    /// The protocol level the CONNECT sent (3 for a rewritten 3.1 CONNECT).
    level: u8,
}

impl Codec {
    pub fn new(max_packet: usize) -> Self {
        Self {
            version: None,
            max_packet,
            aliases: Vec::new(),
            client_max_packet: None,
            problem_info: true,
            level: 4,
        }
    }

    /// The version the CONNECT chose, once it was read.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The next packet in `buf`, if it has all arrived.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, ReadError> {
        let packet = self.read_any(buf)?;
        // What the parsers let through but the specification forbids, and no answer could
        // carry: packet id 0, a (UN)SUBSCRIBE without a topic filter.
        match &packet {
            Some(Incoming::PubRel(0))
            | Some(Incoming::Subscribe { pkid: 0, .. })
            | Some(Incoming::Unsubscribe { pkid: 0, .. }) => {
                Err(ReadError::Malformed("packet identifier 0".into()))
            }
            Some(Incoming::Subscribe { filters, .. }) if filters.is_empty() => Err(
                ReadError::Malformed("SUBSCRIBE without a topic filter".into()),
            ),
            Some(Incoming::Unsubscribe { filters, .. }) if filters.is_empty() => Err(
                ReadError::Malformed("UNSUBSCRIBE without a topic filter".into()),
            ),
            _ => Ok(packet),
        }
    }

    fn read_any(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, ReadError> {
        let version = match self.version {
            Some(v) => v,
            None => match first_connect(buf, self.max_packet)? {
                None => return Ok(None),
                Some((v, level)) => {
                    self.level = level;
                    v
                }
            },
        };
        match version {
            Version::V311 => self.read_v4(buf),
            Version::V5 => self.read_v5(buf),
        }
    }

    fn read_v4(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, ReadError> {
        let packet = match v4::Packet::read(buf, self.max_packet) {
            Ok(p) => p,
            Err(V4Error::InsufficientBytes(_)) => return Ok(None),
            Err(V4Error::InvalidProtocolLevel(level)) => {
                return Err(ReadError::UnsupportedProtocol(level))
            }
            Err(e) => return Err(ReadError::Malformed(format!("{e:?}"))),
        };
        Ok(Some(match packet {
            v4::Packet::Connect(c) => {
                if c.protocol != rumqttc::mqttbytes::Protocol::V4 {
                    return Err(ReadError::UnsupportedProtocol(5));
                }
                let level = self.level;
                self.version = Some(Version::V311);
                Incoming::Connect(Box::new(Connect {
                    version: Version::V311,
                    level,
                    client_id: c.client_id,
                    clean_start: c.clean_session,
                    keep_alive: c.keep_alive,
                    username: c.login.as_ref().map(|l| l.username.clone()),
                    password: c.login.map(|l| l.password.into_bytes()),
                    session_expiry: 0,
                    auth_method: None,
                    will: match c.last_will {
                        None => None,
                        Some(w) => {
                            check_topic_name(&w.topic)?;
                            let mut publish = Publish::new(w.topic, w.message, w.qos, 0);
                            publish.retain = w.retain;
                            Some(Box::new(Will {
                                publish,
                                delay_s: 0,
                            }))
                        }
                    },
                }))
            }
            v4::Packet::Publish(p) if p.topic.is_empty() => {
                // MQTT-4.7.3-1: a topic name is at least one character.
                return Err(ReadError::Malformed("PUBLISH with an empty topic".into()));
            }
            v4::Packet::Publish(p) => {
                check_topic_name(&p.topic)?;
                check_dup(p.dup, p.qos)?;
                let mut publish = Publish::new(p.topic, p.payload, p.qos, p.pkid);
                publish.retain = p.retain;
                Incoming::Publish(publish)
            }
            v4::Packet::PubRel(r) => Incoming::PubRel(r.pkid),
            v4::Packet::PingReq => Incoming::PingReq,
            v4::Packet::Subscribe(s) => Incoming::Subscribe {
                pkid: s.pkid,
                filters: s.filters.into_iter().map(|f| (f.path, f.qos)).collect(),
            },
            v4::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
                pkid: u.pkid,
                filters: u.topics,
            },
            v4::Packet::Disconnect => Incoming::Disconnect {
                session_expiry: None,
                with_will: false,
            },
            v4::Packet::PubAck(a) => Incoming::PubAck(a.pkid),
            v4::Packet::PubRec(_) | v4::Packet::PubComp(_) => Incoming::Ignored,
            v4::Packet::ConnAck(_)
            | v4::Packet::SubAck(_)
            | v4::Packet::UnsubAck(_)
            | v4::Packet::PingResp => Incoming::Unexpected("server-only packet from a client"),
        }))
    }

    fn read_v5(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, ReadError> {
        // A DISCONNECT with no reason code (remaining length 0) is MQTT 5's normal one, which
        // rumqttc's parser refuses ("payload required"); MQTT.js sends it.
        if buf.starts_with(&[0xE0, 0x00]) {
            buf.advance(2);
            return Ok(Some(Incoming::Disconnect {
                session_expiry: None,
                with_will: false,
            }));
        }
        let limit = u32::try_from(self.max_packet).unwrap_or(u32::MAX);
        let packet = match v5p::Packet::read(buf, Some(limit)) {
            Ok(p) => p,
            Err(V5Error::InsufficientBytes(_)) => return Ok(None),
            Err(V5Error::InvalidProtocolLevel(level)) => {
                return Err(ReadError::UnsupportedProtocol(level))
            }
            Err(e) => return Err(ReadError::Malformed(format!("{e:?}"))),
        };
        Ok(Some(match packet {
            v5p::Packet::Connect(c, will, login) => {
                let will = match will {
                    None => None,
                    Some(w) => Some(Box::new(self.will_v5(w)?)),
                };
                self.version = Some(Version::V5);
                let props = c.properties.unwrap_or_default();
                self.client_max_packet = props.max_packet_size;
                self.problem_info = props.request_problem_info != Some(0);
                Incoming::Connect(Box::new(Connect {
                    version: Version::V5,
                    level: 5,
                    client_id: c.client_id,
                    clean_start: c.clean_start,
                    keep_alive: c.keep_alive,
                    username: login.as_ref().map(|l| l.username.clone()),
                    password: login.map(|l| l.password.into_bytes()),
                    session_expiry: props.session_expiry_interval.unwrap_or(0),
                    auth_method: props.authentication_method,
                    will,
                }))
            }
            v5p::Packet::Publish(p) => Incoming::Publish(self.publish_v5(p)?),
            v5p::Packet::PubRel(r) => Incoming::PubRel(r.pkid),
            v5p::Packet::PingReq(_) => Incoming::PingReq,
            v5p::Packet::Subscribe(s) => Incoming::Subscribe {
                pkid: s.pkid,
                filters: s
                    .filters
                    .into_iter()
                    .map(|f| (f.path, qos_of(f.qos)))
                    .collect(),
            },
            v5p::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
                pkid: u.pkid,
                filters: u.filters,
            },
            v5p::Packet::Disconnect(d) => Incoming::Disconnect {
                session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
                with_will: d.reason_code == v5p::DisconnectReasonCode::DisconnectWithWillMessage,
            },
            v5p::Packet::PubAck(a) => Incoming::PubAck(a.pkid),
            v5p::Packet::PubRec(_) | v5p::Packet::PubComp(_) => Incoming::Ignored,
            v5p::Packet::Auth(_) => {
                Incoming::Unexpected("AUTH: enhanced authentication is not offered")
            }
            v5p::Packet::ConnAck(_)
            | v5p::Packet::SubAck(_)
            | v5p::Packet::UnsubAck(_)
            | v5p::Packet::PingResp(_) => Incoming::Unexpected("server-only packet from a client"),
        }))
    }

    /// A v5 PUBLISH, its topic alias resolved and the properties the gateway acts on kept.
    fn publish_v5(&mut self, p: v5p::Publish) -> Result<Publish, ReadError> {
        let topic = String::from_utf8(p.topic.to_vec())
            .map_err(|_| ReadError::Malformed("PUBLISH topic is not UTF-8".into()))?;
        let props = p.properties.unwrap_or_default();
        let topic = self.alias(topic, props.topic_alias)?;
        check_topic_name(&topic)?;
        let qos = qos_of(p.qos);
        check_dup(p.dup, qos)?;
        let mut publish = Publish::new(topic, p.payload, qos, p.pkid);
        publish.retain = p.retain;
        publish.properties = Properties::kept(
            props.payload_format_indicator,
            props.content_type,
            props.user_properties,
        );
        Ok(publish)
    }

    /// A v5 CONNECT's Will, as the publish it becomes and its delay.
    fn will_v5(&self, w: v5p::LastWill) -> Result<Will, ReadError> {
        let topic = String::from_utf8(w.topic.to_vec())
            .map_err(|_| ReadError::Malformed("Will topic is not UTF-8".into()))?;
        check_topic_name(&topic)?;
        let mut publish = Publish::new(topic, w.message, qos_of(w.qos), 0);
        publish.retain = w.retain;
        let mut delay_s = 0;
        if let Some(props) = w.properties {
            delay_s = props.delay_interval.unwrap_or(0);
            publish.properties = Properties::kept(
                props.payload_format_indicator,
                props.content_type,
                props.user_properties,
            );
        }
        Ok(Will { publish, delay_s })
    }

    /// Resolves a topic alias: a topic with an alias sets it, an empty topic uses it.
    fn alias(&mut self, topic: String, alias: Option<u16>) -> Result<String, ReadError> {
        let Some(alias) = alias else {
            return if topic.is_empty() {
                Err(ReadError::Malformed(
                    "PUBLISH without a topic or topic alias".into(),
                ))
            } else {
                Ok(topic)
            };
        };
        if alias == 0 || alias > TOPIC_ALIAS_MAX {
            return Err(ReadError::TopicAlias(alias));
        }
        let slot = usize::from(alias - 1);
        if self.aliases.len() <= slot {
            self.aliases.resize(slot + 1, None);
        }
        if topic.is_empty() {
            self.aliases[slot]
                .clone()
                .ok_or(ReadError::TopicAlias(alias))
        } else {
            self.aliases[slot] = Some(topic.clone());
            Ok(topic)
        }
    }
}

fn qos_of(qos: V5QoS) -> QoS {
    match qos {
        V5QoS::AtMostOnce => QoS::AtMostOnce,
        V5QoS::AtLeastOnce => QoS::AtLeastOnce,
        V5QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// The largest CONNECT taken (client id, credentials, will, properties): memory a peer can
/// hold before it is authenticated.
pub const MAX_CONNECT_BYTES: usize = 64 * 1024;

/// Looks at the CONNECT at the start of `buf` for its protocol version. `None`: not all of it
/// has arrived. A 3.1 CONNECT is rewritten in place to 3.1.1's, once all of it is in.
/// Anything that is not a CONNECT is left to the 3.1.1 parser, which says what it is.
fn first_connect(
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<Option<(Version, u8)>, ReadError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first >> 4 != 1 {
        return Ok(Some((Version::V311, 4)));
    }
    let Some((len_len, remaining)) = remaining_length(&buf[1..]).map_err(ReadError::Malformed)?
    else {
        return Ok(None);
    };
    if remaining > MAX_CONNECT_BYTES {
        // Before anyone is authenticated, a peer gets a few bytes of memory, not a packet's
        // worth: the connection closes before the rest is read.
        return Err(ReadError::Malformed(format!(
            "CONNECT of {remaining} bytes, over the {MAX_CONNECT_BYTES} a CONNECT may have"
        )));
    }
    let start = 1 + len_len;
    let Some(name_len) = buf
        .get(start..start + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return Ok(None);
    };
    if name_len > 6 {
        // Neither "MQTT" nor "MQIsdp": the 3.1.1 parser says what is wrong with it.
        return Ok(Some((Version::V311, 4)));
    }
    let Some(&level) = buf.get(start + 2 + name_len) else {
        return Ok(None);
    };
    let name = &buf[start + 2..start + 2 + name_len];
    match (name, level) {
        (b"MQTT", 5) => Ok(Some((Version::V5, 5))),
        (b"MQIsdp", 3) => {
            if remaining < 2 + name_len + 1 || remaining > max_packet {
                return Err(ReadError::Malformed(format!(
                    "MQTT 3.1 CONNECT with remaining length {remaining}"
                )));
            }
            let frame = start + remaining;
            if buf.len() < frame {
                return Ok(None);
            }
            // 3.1.1's CONNECT: the name "MQTT" (two bytes shorter) and level 4.
            let mut rewritten = BytesMut::with_capacity(buf.len());
            rewritten.extend_from_slice(&[first]);
            write_remaining_length(&mut rewritten, remaining - 2);
            rewritten.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4]);
            rewritten.extend_from_slice(&buf[start + 2 + name_len + 1..]);
            *buf = rewritten;
            Ok(Some((Version::V311, 3)))
        }
        _ => Ok(Some((Version::V311, 4))),
    }
}

/// The remaining-length varint at the start of `bytes`: its length in bytes and its value, or
/// `None` if it has not all arrived.
pub fn remaining_length(bytes: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((i + 1, value)));
        }
    }
    if bytes.len() >= 4 {
        return Err("remaining length longer than 4 bytes".into());
    }
    Ok(None)
}

fn write_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.extend_from_slice(&[byte]);
        if len == 0 {
            break;
        }
    }
}

mod write;

#[cfg(test)]
mod tests;
