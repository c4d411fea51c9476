//! `tributary rules test`: the configured rules over a file of events, without a gateway.
//!
//! Each input line is a device event as JSON, the shape devices publish over MQTT and the
//! gateway writes to Kafka (`{"device_id","seq","time_ms","kind":"reading","values":[...]}` or a
//! position); lines that are not are reported with their number and skipped. Events are routed
//! as the gateway would route them (a rule's `route` compares with that topic), de-duplicated
//! by `(device, seq)` as the spool would, and run through the same rule code the spool runs as
//! it commits. Each derived record is printed as a JSON line (topic, key, timestamp, headers,
//! value), as the file sink writes it.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};

use super::{RuleSet, State};
use crate::route::Router;
use crate::route::RoutesConfig;
use tributary_spool::record::EventId;

/// What a run saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub derived: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Lines that were not events: (line number, why).
    pub bad_lines: Vec<(u64, String)>,
}

/// Runs `rules` over the events in `input`, writing derived records to `out`.
pub fn run(
    rules: &RuleSet,
    routes: RoutesConfig,
    input: impl BufRead,
    mut out: impl Write,
) -> std::io::Result<Summary> {
    let router = Router::new(routes)
        .map_err(std::io::Error::other)?
        .keeping_events(false);
    let mut states: HashMap<(usize, String), State> = HashMap::new();
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    let mut summary = Summary::default();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        let number = n as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        // The MQTT topic the event arrived on, where the line names it (rules may select by it).
        #[derive(serde::Deserialize)]
        struct Arrived {
            mqtt_topic: Option<String>,
        }
        let mqtt_topic = serde_json::from_str::<Arrived>(&line)
            .ok()
            .and_then(|a| a.mqtt_topic);
        let event = match tributary_protocol::json::decode_line(line.as_bytes()) {
            Ok((event, _session)) => event,
            Err(e) => {
                summary.bad_lines.push((number, e));
                continue;
            }
        };
        if let Err(e) = event.validate() {
            summary.bad_lines.push((number, e.to_string()));
            continue;
        }
        if !seen.insert((event.device_id.clone(), event.seq)) {
            summary.duplicates += 1;
            continue;
        }
        summary.events += 1;
        let record = match router.event(event.clone(), 0, mqtt_topic.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                summary.bad_lines.push((number, e.to_string()));
                continue;
            }
        };
        let source = EventId {
            device_id: event.device_id.clone(),
            session: 0,
            seq: event.seq,
            writer: None,
        };
        let output = rules.run(
            &source,
            &event,
            (&record.topic, mqtt_topic.as_deref()),
            &mut states,
        );
        summary.late += output.late.len() as u64;
        for (_, derived) in output.records {
            summary.derived += 1;
            writeln!(out, "{}", derived.to_json())?;
        }
    }
    Ok(summary)
}
