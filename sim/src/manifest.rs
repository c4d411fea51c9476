//! What a run sent, for `verify`: per device, the seqs it sent and how many were acknowledged.
//!
//! A device's seqs are consecutive from `first_seq`, so three numbers describe everything it
//! did: `first_seq ..= acked_up_to` must all be in the topics (the gateway acknowledged them);
//! `acked_up_to + 1 ..= last_sent_seq` may be (sent, never acknowledged); anything else with
//! its id is not from this run. Written as JSON by `tributary-sim run --manifest FILE`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::device::Outcome;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub seed: u64,
    pub devices: Vec<DeviceEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEntry {
    pub id: String,
    /// `reading` or `position`.
    pub kind: String,
    /// `tcp`, `mqtt-qos0` or `mqtt-qos1`.
    pub transport: String,
    pub first_seq: u64,
    pub last_sent_seq: Option<u64>,
    pub acked_up_to: Option<u64>,
}

/// Why a manifest could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a run manifest: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
}

impl Manifest {
    pub fn from_outcomes(seed: u64, outcomes: &[Outcome]) -> Self {
        Self {
            seed,
            devices: outcomes
                .iter()
                .map(|o| DeviceEntry {
                    id: o.id.clone(),
                    kind: o.kind.as_str().to_owned(),
                    transport: o.link.to_string(),
                    first_seq: o.first_seq,
                    last_sent_seq: o.last_sent_seq,
                    acked_up_to: o.acked_up_to,
                })
                .collect(),
        }
    }

    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ManifestError::Io {
            path: shown.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ManifestError::Json {
            path: shown,
            source,
        })
    }

    pub fn write(&self, path: &Path) -> Result<(), ManifestError> {
        let shown = path.display().to_string();
        let json = serde_json::to_vec(self).map_err(|source| ManifestError::Json {
            path: shown.clone(),
            source,
        })?;
        std::fs::write(path, json).map_err(|source| ManifestError::Io {
            path: shown,
            source,
        })
    }

    /// Events the gateway acknowledged.
    pub fn acknowledged(&self) -> u64 {
        self.devices
            .iter()
            .filter_map(|d| d.acked_up_to.map(|a| (a + 1).saturating_sub(d.first_seq)))
            .sum()
    }
}
