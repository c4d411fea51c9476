use super::*;

fn v5_connect(problem_info: Option<u8>) -> BytesMut {
    let mut connect = v5p::Connect {
        keep_alive: 30,
        client_id: "env-1".into(),
        clean_start: false,
        properties: Some(v5p::ConnectProperties::new()),
    };
    if let Some(p) = connect.properties.as_mut() {
        p.session_expiry_interval = Some(600);
        p.request_problem_info = problem_info;
    }
    let mut buf = BytesMut::new();
    let login = v5p::Login::new("env-1", "secret");
    v5p::Packet::Connect(connect, None, Some(login))
        .write(&mut buf, None)
        .unwrap();
    buf
}

fn v5_publish(topic: &str, alias: Option<u16>, pkid: u16) -> BytesMut {
    let mut p = v5p::Publish::new(topic, V5QoS::AtLeastOnce, &b"{}"[..], None);
    p.pkid = pkid;
    let mut props = v5p::PublishProperties {
        topic_alias: alias,
        ..Default::default()
    };
    props
        .user_properties
        .push(("site".into(), "depot-3".into()));
    p.properties = Some(props);
    let mut buf = BytesMut::new();
    v5p::Packet::Publish(p).write(&mut buf, None).unwrap();
    buf
}

#[test]
fn an_mqtt_5_connect_sets_the_version_and_its_publishes_resolve_topic_aliases() {
    let mut codec = Codec::new(1 << 20);
    let mut buf = v5_connect(None);
    buf.extend_from_slice(&v5_publish("devices/env-1/readings", Some(3), 1));
    buf.extend_from_slice(&v5_publish("", Some(3), 2));
    let Some(Incoming::Connect(c)) = codec.read(&mut buf).unwrap() else {
        panic!("a CONNECT")
    };
    assert_eq!(
        (c.version, c.level, c.session_expiry),
        (Version::V5, 5, 600)
    );
    assert_eq!(c.password.as_deref(), Some(&b"secret"[..]));
    for pkid in [1, 2] {
        let Some(Incoming::Publish(p)) = codec.read(&mut buf).unwrap() else {
            panic!("a PUBLISH")
        };
        assert_eq!((p.topic.as_str(), p.pkid), ("devices/env-1/readings", pkid));
        let props = p.properties.expect("user properties");
        assert_eq!(props.user, [("site".to_owned(), "depot-3".to_owned())]);
    }
    let mut unknown = v5_publish("", Some(4), 3);
    assert!(matches!(
        codec.read(&mut unknown),
        Err(ReadError::TopicAlias(4))
    ));
    let mut over = v5_publish("t", Some(TOPIC_ALIAS_MAX + 1), 3);
    assert!(matches!(
        codec.read(&mut over),
        Err(ReadError::TopicAlias(_))
    ));
}

#[test]
fn an_mqtt_3_1_connect_is_served_as_3_1_1() {
    // CONNECT "MQIsdp" level 3, clean session, keep-alive 60, client id "old-1".
    let mut body = vec![0, 6];
    body.extend_from_slice(b"MQIsdp");
    body.extend_from_slice(&[3, 0b10, 0, 60, 0, 5]);
    body.extend_from_slice(b"old-1");
    let mut buf = BytesMut::from(&[0x10, body.len() as u8][..]);
    buf.extend_from_slice(&body);
    buf.extend_from_slice(&[0xC0, 0x00]); // PINGREQ
    let mut codec = Codec::new(1 << 20);
    let Some(Incoming::Connect(c)) = codec.read(&mut buf).unwrap() else {
        panic!("a CONNECT")
    };
    assert_eq!((c.version, c.level), (Version::V311, 3));
    assert_eq!((c.client_id.as_str(), c.keep_alive), ("old-1", 60));
    assert!(matches!(
        codec.read(&mut buf).unwrap(),
        Some(Incoming::PingReq)
    ));
}

#[test]
fn other_protocol_levels_are_unsupported() {
    let mut body = vec![0, 4];
    body.extend_from_slice(b"MQTT");
    body.extend_from_slice(&[6, 0b10, 0, 60, 0, 1, b'x']);
    let mut buf = BytesMut::from(&[0x10, body.len() as u8][..]);
    buf.extend_from_slice(&body);
    assert!(matches!(
        Codec::new(1024).read(&mut buf),
        Err(ReadError::UnsupportedProtocol(6))
    ));
}

#[test]
fn a_refused_publish_is_answered_with_its_reason_unless_the_client_wants_none() {
    for (problem_info, expect_reason) in [(None, true), (Some(0), false)] {
        let mut codec = Codec::new(1 << 20);
        codec.read(&mut v5_connect(problem_info)).unwrap();
        let mut out = BytesMut::new();
        let reply = Reply::PubAck {
            pkid: 7,
            code: AckCode::QuotaExceeded,
            reason: Some("spool full".into()),
        };
        codec.write(&reply, &mut out).unwrap();
        let Ok(v5p::Packet::PubAck(ack)) = v5p::Packet::read(&mut out, None) else {
            panic!("a PUBACK")
        };
        assert_eq!(
            (ack.pkid, ack.reason),
            (7, v5p::PubAckReason::QuotaExceeded)
        );
        let reason = ack.properties.and_then(|p| p.reason_string);
        assert_eq!(reason.is_some(), expect_reason, "{problem_info:?}");
    }
}

#[test]
fn a_3_1_1_connection_gets_plain_answers_and_no_disconnect() {
    let codec = Codec::new(1024);
    let mut out = BytesMut::new();
    let refused = Reply::PubAck {
        pkid: 9,
        code: AckCode::PayloadFormatInvalid,
        reason: Some("not JSON".into()),
    };
    codec.write(&refused, &mut out).unwrap();
    assert_eq!(&out[..], [0x40, 0x02, 0x00, 0x09], "a plain PUBACK");
    out.clear();
    let disconnect = Reply::Disconnect {
        reason: Closing::ShuttingDown,
        detail: None,
    };
    codec.write(&disconnect, &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn a_connack_grants_flow_control_and_assigns_a_client_id() {
    let mut codec = Codec::new(1 << 20);
    codec.read(&mut v5_connect(None)).unwrap();
    let mut out = BytesMut::new();
    let grant = Grant {
        receive_max: 8,
        max_packet: 1 << 20,
        topic_alias_max: TOPIC_ALIAS_MAX,
        session_expiry: None,
        server_keep_alive: Some(60),
        assigned_client_id: Some("tributary-1".into()),
    };
    let reply = Reply::ConnAck {
        code: ConnectCode::Accepted,
        session_present: true,
        grant: Some(Box::new(grant)),
        reason: None,
    };
    codec.write(&reply, &mut out).unwrap();
    let Ok(v5p::Packet::ConnAck(ack)) = v5p::Packet::read(&mut out, None) else {
        panic!("a CONNACK")
    };
    let props = ack.properties.expect("properties");
    assert!(ack.session_present);
    assert_eq!(props.receive_max, Some(8));
    assert_eq!(props.server_keep_alive, Some(60));
    assert_eq!(
        props.assigned_client_identifier.as_deref(),
        Some("tributary-1")
    );
}

#[test]
fn an_mqtt_5_disconnect_without_a_reason_code_is_a_normal_disconnect() {
    let mut codec = Codec::new(1 << 20);
    let mut buf = v5_connect(None);
    buf.extend_from_slice(&[0xE0, 0x00]);
    codec.read(&mut buf).unwrap();
    assert!(matches!(
        codec.read(&mut buf).unwrap(),
        Some(Incoming::Disconnect {
            session_expiry: None,
            with_will: false
        })
    ));
    assert!(buf.is_empty());
}

#[test]
fn a_disconnect_without_a_reason_string_is_four_well_formed_bytes() {
    let mut codec = Codec::new(1 << 20);
    codec.read(&mut v5_connect(None)).unwrap();
    let mut out = BytesMut::new();
    let reply = Reply::Disconnect {
        reason: Closing::KeepAliveTimeout,
        detail: None,
    };
    codec.write(&reply, &mut out).unwrap();
    assert_eq!(&out[..], [0xE0, 0x02, 0x8D, 0x00]);
    let Ok(v5p::Packet::Disconnect(d)) = v5p::Packet::read(&mut out, None) else {
        panic!("a DISCONNECT")
    };
    assert_eq!(d.reason_code, v5p::DisconnectReasonCode::KeepAliveTimeout);
}
