//! Revocation reaches open sessions: after SIGHUP, a device removed from the credentials file
//! and a device whose certificate the new CRL revokes are disconnected at once, a certificate
//! that expires during a session ends it, and a device whose credential still holds streams on
//! through the reload on the same connection. A CRL past its next update is warned about.

use super::*;

/// An MQTT 3.1.1 session over TLS, connected (CONNACK seen): by password or by certificate.
async fn mqtt_tls(
    site: &Site,
    id: &str,
    password: Option<&str>,
    cert: Option<&Pair>,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let port = site.gateway.mqtt_tls.expect("TLS").port();
    let mut options = rumqttc::MqttOptions::new(id, "localhost", port);
    if let Some(pw) = password {
        options.set_credentials(id, pw);
    }
    options.set_keep_alive(Duration::from_secs(60));
    options.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(site.pki.client_config(cert)),
    ));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.poll())
            .await
            .expect("connected in time")
            .expect("connection");
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = event {
            break;
        }
    }
    (client, events)
}

#[test]
fn a_reload_closes_the_sessions_it_revokes_and_an_expiring_certificate_ends_its_own() {
    let mut site = site("sec-revoke", "");
    let passwd = site.gateway.dir.path().join("devices.passwd");
    let cert_1 = site.pki.device("cert-1");
    let until = std::time::SystemTime::now() + Duration::from_secs(8);
    let short_1 = site.pki.device_until("short-1", until);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (env_1, mut env_1_events) = mqtt_tls(&site, "env-1", Some("pw-one"), None).await;
        let (cert_client, mut cert_events) = mqtt_tls(&site, "cert-1", None, Some(&cert_1)).await;
        let (_short, mut short_events) = mqtt_tls(&site, "short-1", None, Some(&short_1)).await;
        let mut env_2 = tcp_tls(&site, None).await;
        env_2
            .send(&Message::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                device_id: "env-2".into(),
                password: Some("pw-two".into()),
                session: Some(1),
            }))
            .await
            .expect("hello");
        env_2
            .send(&Message::Events(vec![event("env-2", 1)]))
            .await
            .expect("events");
        match tokio::time::timeout(Duration::from_secs(20), env_2.next()).await {
            Ok(Some(Ok(Ok(Message::Answer(a))))) => assert_eq!(a.stored, 1, "{a:?}"),
            other => panic!("env-2's first batch: {other:?}"),
        }

        // The operator removes env-2's password and revokes cert-1, then reloads.
        let removed = Command::new(binary("tributary"))
            .args(["devices", "remove", "env-2", "--file"])
            .arg(&passwd)
            .output()
            .expect("devices remove");
        assert!(removed.status.success());
        site.pki.revoke(&cert_1);
        site.pki.write_crl();
        site.gateway.hangup();
        wait_for_log(&site.gateway, "Reloaded credentials", 1).await;

        // env-2's TCP session hears why, then closes; a batch it sends now is not stored.
        let _ = env_2.send(&Message::Events(vec![event("env-2", 2)])).await;
        let mut told = None;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(20), env_2.next()).await
        {
            match message {
                Ok(Message::Nack(n)) => told = Some(n),
                Ok(Message::Answer(a)) => panic!("a batch answered after revocation: {a:?}"),
                _ => {}
            }
        }
        let told = told.expect("a NACK before the close");
        assert_eq!(told.code, NackCode::Unauthorized, "{told:?}");
        assert!(told.text.contains("revoked"), "{told:?}");

        // cert-1's MQTT session is closed, its publish unanswered.
        cert_client
            .publish(
                "devices/cert-1/readings",
                rumqttc::QoS::AtLeastOnce,
                false,
                reading("cert-1", 1),
            )
            .await
            .expect("queue");
        assert!(
            closed(&mut cert_events, Duration::from_secs(20)).await,
            "the revoked certificate's session was closed"
        );

        // env-1, whose password still holds, streams on over the same connection.
        env_1
            .publish(
                "devices/env-1/readings",
                rumqttc::QoS::AtLeastOnce,
                false,
                reading("env-1", 1),
            )
            .await
            .expect("queue");
        assert!(
            !closed(&mut env_1_events, Duration::from_secs(20)).await,
            "env-1 is answered after the reload"
        );

        // short-1's certificate runs out 8 s after it was made: the session ends then, with
        // no reload.
        assert!(
            closed(&mut short_events, Duration::from_secs(30)).await,
            "the session of an expired certificate was closed"
        );
        assert!(
            std::time::SystemTime::now() + Duration::from_millis(1500) >= until,
            "not before the certificate's end"
        );
        // A CRL past its next-update date is said at the reload that reads it.
        site.pki.write_crl_until(2020);
        site.gateway.hangup();
        wait_for_log(&site.gateway, "Reloaded credentials", 2).await;
        assert!(
            site.gateway.log().contains("past its next-update date"),
            "{}",
            site.gateway.log()
        );
    });
    let mut gateway = site.gateway;
    let stopped = gateway.stop();
    assert_eq!(stopped.refused("tcp/revoked"), 1, "{}", stopped.stdout);
    assert_eq!(
        stopped.refused("mqtt/certificate_revoked"),
        1,
        "{}",
        stopped.stdout
    );
    assert_eq!(
        stopped.refused("mqtt/certificate_expired"),
        1,
        "{}",
        stopped.stdout
    );
}
