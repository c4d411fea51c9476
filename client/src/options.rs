//! How a device connects with rumqttc: client id and user name are its device id (the gateway
//! checks the password against the id), a clean session (every connection starts afresh; the
//! device resends what was not answered), keep-alive 30 s, TLS and password where it has them.

use std::sync::Arc;
use std::time::Duration;

/// What a device presents on a connection.
#[derive(Clone, Default)]
pub struct Auth {
    pub password: Option<String>,
    /// TLS with this configuration (the CA the gateway's certificate chains to).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

const KEEP_ALIVE: Duration = Duration::from_secs(30);

fn transport(tls: &Option<Arc<rustls::ClientConfig>>) -> Option<rumqttc::Transport> {
    tls.as_ref().map(|config| {
        rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config.clone()))
    })
}

/// MQTT 3.1.1 options for `device_id` at `host` (the name TLS checks) and `port`.
pub fn v311(device_id: &str, host: String, port: u16, auth: &Auth) -> rumqttc::MqttOptions {
    let mut options = rumqttc::MqttOptions::new(device_id, host, port);
    options.set_keep_alive(KEEP_ALIVE);
    options.set_clean_session(true);
    if let Some(password) = &auth.password {
        options.set_credentials(device_id, password.clone());
    }
    if let Some(t) = transport(&auth.tls) {
        options.set_transport(t);
    }
    options
}

/// MQTT 5 options, as [`v311`].
pub fn v5(device_id: &str, host: String, port: u16, auth: &Auth) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(device_id, host, port);
    options.set_keep_alive(KEEP_ALIVE);
    options.set_clean_start(true);
    if let Some(password) = &auth.password {
        options.set_credentials(device_id, password.clone());
    }
    if let Some(t) = transport(&auth.tls) {
        options.set_transport(t);
    }
    options
}

#[cfg(test)]
mod tests {
    use super::Auth;

    #[test]
    fn a_device_connects_as_itself_with_a_clean_session_and_its_password() {
        let auth = Auth {
            password: Some("pw".into()),
            tls: None,
        };
        let o = super::v311("env-1", "127.0.0.1".into(), 1883, &auth);
        assert_eq!(o.client_id(), "env-1");
        assert!(o.clean_session());
        let login = o.credentials().map(|l| (l.username, l.password));
        assert_eq!(login, Some(("env-1".into(), "pw".into())));
        assert_eq!(o.keep_alive().as_secs(), 30);
        let o = super::v5("env-1", "127.0.0.1".into(), 1883, &Auth::default());
        assert_eq!(o.client_id(), "env-1");
        assert!(o.clean_start());
        assert!(o.credentials().is_none());
    }
}
