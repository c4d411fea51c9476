//! The protocol's own TCP client over TLS: a HELLO is authenticated by password or client
//! certificate, events for another device are refused as FORBIDDEN, and every refusal is counted.

use super::*;

fn hello(device: &str, password: Option<&str>) -> Message {
    Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        device_id: device.into(),
        password: password.map(Into::into),
        session: Some(7),
    })
}

async fn answer<S>(framed: &mut Framed<S, MessageCodec>) -> Option<Message>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(20), framed.next()).await {
        Ok(Some(Ok(Ok(m)))) => Some(m),
        _ => None,
    }
}

#[test]
fn tcp_over_tls_authenticates_hello_and_forbids_events_for_other_devices() {
    let mut site = site("sec-tcp", "");
    let cert_1 = site.pki.device("cert-1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // A password in HELLO; an event for another device in the batch is forbidden.
        let mut c = tcp_tls(&site, None).await;
        c.send(&hello("env-1", Some("pw-one"))).await.expect("send");
        c.send(&Message::Events(vec![event("env-1", 1), event("env-2", 2), event("env-1", 3)]))
            .await
            .expect("send");
        match answer(&mut c).await {
            Some(Message::Answer(a)) => {
                assert_eq!((a.up_to_seq, a.stored, a.duplicates), (3, 2, 0), "{a:?}");
                assert_eq!(a.refused.len(), 1, "{a:?}");
                let refused = &a.refused[0];
                assert_eq!((refused.seq, refused.code), (2, NackCode::Forbidden));
                assert!(refused.text.contains("env-2"), "{refused:?}");
            }
            other => panic!("expected one ANSWER for the batch, got {other:?}"),
        }

        // A client certificate proves the HELLO's id; a HELLO for someone else is refused.
        let mut c = tcp_tls(&site, Some(&cert_1)).await;
        c.send(&hello("cert-1", None)).await.expect("send");
        c.send(&Message::Events(vec![event("cert-1", 1)])).await.expect("send");
        assert!(
            matches!(answer(&mut c).await, Some(Message::Answer(a)) if a.stored == 1 && a.refused.is_empty())
        );
        let mut c = tcp_tls(&site, Some(&cert_1)).await;
        c.send(&hello("env-2", None)).await.expect("send");
        match answer(&mut c).await {
            Some(Message::Nack(n)) => {
                assert_eq!(n.code, NackCode::Unauthorized);
                assert!(n.text.contains("cert-1"), "{n:?}");
            }
            other => panic!("expected NACK unauthorized, got {other:?}"),
        }

        // A wrong password, and a device id that does not exist: the same answer, word for
        // word, so a refusal does not tell which ids exist (the counters keep which).
        let mut texts = Vec::new();
        for id in ["env-2", "no-such-device"] {
            let mut c = tcp_tls(&site, None).await;
            c.send(&hello(id, Some("nope"))).await.expect("send");
            match answer(&mut c).await {
                Some(Message::Nack(n)) if n.code == NackCode::Unauthorized => texts.push(n.text),
                other => panic!("expected NACK unauthorized, got {other:?}"),
            }
        }
        assert_eq!(texts[0], texts[1], "{texts:?}");
        assert!(!texts[0].contains("env-2") && !texts[0].contains("unknown"), "{texts:?}");
    });
    let stopped = site.gateway.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let readings = consume(&site.brokers, &site.topics.readings, 3, IDLE);
    let ids: BTreeSet<String> = readings
        .iter()
        .filter_map(|m| m.headers.get("event-id").cloned())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["env-1:7:1".into(), "env-1:7:3".into(), "cert-1:7:1".into()]),
        "{readings:?}"
    );
    for counter in ["tcp/acl", "tcp/auth_id_mismatch", "tcp/auth_wrong_password"] {
        assert!(
            stopped.stdout.contains(counter),
            "{counter}:\n{}",
            stopped.stdout
        );
    }
}
