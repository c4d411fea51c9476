//! Where events and refusals come from: the label of every per-transport counter, the status
//! page's device and refusal rows, and the connection layer's listeners. One enum, so a new
//! transport is added in one place and a misspelt label does not compile.

use std::fmt;

use serde::Serialize;

/// A transport devices use, or another place a refusal is counted (`admin`, `spool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Mqtt,
    Teltonika,
    /// A site broker's bridge.
    Bridge,
    /// Tailed files.
    Files,
    /// Modbus devices the gateway polls.
    Modbus,
    /// The admin listener (refusals only).
    Admin,
    /// The spool (sequence anomalies it stored and marked).
    Spool,
}

impl Transport {
    /// The transports devices' events arrive on.
    pub const DEVICES: [Transport; 6] = [
        Transport::Tcp,
        Transport::Mqtt,
        Transport::Teltonika,
        Transport::Bridge,
        Transport::Files,
        Transport::Modbus,
    ];

    /// The label, as metrics, logs and the status page spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Mqtt => "mqtt",
            Transport::Teltonika => "teltonika",
            Transport::Bridge => "bridge",
            Transport::Files => "files",
            Transport::Modbus => "modbus",
            Transport::Admin => "admin",
            Transport::Spool => "spool",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Transport;

    #[test]
    fn labels_serialise_as_they_display() {
        for t in [
            Transport::Tcp,
            Transport::Mqtt,
            Transport::Teltonika,
            Transport::Bridge,
            Transport::Files,
            Transport::Modbus,
            Transport::Admin,
            Transport::Spool,
        ] {
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
    }
}
