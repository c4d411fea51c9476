//! What the gateway remembers of each Sparkplug edge node between its messages: the metric
//! definitions its births gave (names, aliases, types, units), the seq it expects next, the
//! bdSeq of its session, and whether its data is flagged until its next birth.

use std::collections::HashMap;

use super::proto::Metric;

/// How many edge nodes are remembered at most; the state of another one is not kept (its data
/// is flagged `no-birth`), so a flood of invented node ids cannot grow memory.
pub const MAX_EDGE_NODES: usize = 10_000;
/// How many metric definitions one birth may leave remembered.
pub const MAX_METRICS_PER_BIRTH: usize = 10_000;
/// How many devices' births one edge node may leave remembered; a DBIRTH for one more is
/// stored as an event but not remembered (its data by alias is then flagged `unknown-alias`),
/// so a node inventing device ids cannot grow memory.
pub const MAX_DEVICES_PER_NODE: usize = 1_000;

/// A metric as a birth defined it.
#[derive(Debug, Clone, PartialEq)]
pub struct Defined {
    pub name: String,
    pub datatype: Option<u32>,
    /// From the birth's properties (`engUnit`, `engUnits`, `unit` or `units`).
    pub unit: String,
}

/// The metrics one birth (NBIRTH for the node, DBIRTH for a device) defined.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Birth {
    pub by_alias: HashMap<u64, Defined>,
    pub by_name: HashMap<String, Defined>,
}

impl Birth {
    /// The definitions of a birth's metrics (the first [`MAX_METRICS_PER_BIRTH`]).
    pub fn of(metrics: &[Metric]) -> Self {
        let mut birth = Self::default();
        for m in metrics.iter().take(MAX_METRICS_PER_BIRTH) {
            let Some(name) = m.name.clone() else { continue };
            let defined = Defined {
                name: name.clone(),
                datatype: m.datatype,
                unit: unit_of(m).unwrap_or_default(),
            };
            if let Some(alias) = m.alias {
                birth.by_alias.insert(alias, defined.clone());
            }
            birth.by_name.insert(name, defined);
        }
        birth
    }

    /// What a data message's metric is: by name if it has one, else by alias.
    pub fn resolve(&self, m: &Metric) -> Option<&Defined> {
        match (&m.name, m.alias) {
            (Some(name), _) => self.by_name.get(name),
            (None, Some(alias)) => self.by_alias.get(&alias),
            (None, None) => None,
        }
    }
}

/// A metric's engineering unit from its properties, where it has one.
pub fn unit_of(m: &Metric) -> Option<String> {
    let props = m.properties.as_ref()?;
    props
        .keys
        .iter()
        .zip(&props.values)
        .find(|(k, _)| matches!(k.as_str(), "engUnit" | "engUnits" | "unit" | "units"))
        .and_then(|(_, v)| match &v.value {
            Some(super::proto::PropertyScalar::String(s)) => Some(s.clone()),
            _ => None,
        })
}

/// Why an edge node's data is flagged, until its next NBIRTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// No NBIRTH seen since the gateway started (or since the node's death).
    NoBirth,
    /// A message's seq was not the one after the last.
    SeqGap,
    /// A data message named an alias no birth defined.
    UnknownAlias,
}

impl Flag {
    pub fn label(self) -> &'static str {
        match self {
            Flag::NoBirth => "no-birth",
            Flag::SeqGap => "seq-gap",
            Flag::UnknownAlias => "unknown-alias",
        }
    }

    /// The refusal label it is counted under.
    pub fn counted(self) -> &'static str {
        match self {
            Flag::NoBirth => "sparkplug_no_birth",
            Flag::SeqGap => "sparkplug_seq_gap",
            Flag::UnknownAlias => "sparkplug_unknown_alias",
        }
    }
}

/// One edge node.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub birth: Option<Birth>,
    pub devices: HashMap<String, Birth>,
    /// The seq the next message must have (after NBIRTH's, wrapping at 256).
    pub next_seq: Option<u8>,
    /// The bdSeq of the session its NBIRTH began.
    pub bd_seq: Option<u64>,
    /// Set until the next NBIRTH.
    pub flag: Option<Flag>,
}

impl Node {
    /// Remembers a device's birth, if there is room for it ([`MAX_DEVICES_PER_NODE`]).
    pub fn device_born(&mut self, device: &str, birth: Birth) -> bool {
        if !self.devices.contains_key(device) && self.devices.len() >= MAX_DEVICES_PER_NODE {
            return false;
        }
        self.devices.insert(device.to_owned(), birth);
        true
    }

    /// Checks a message's seq against the one expected and moves it on; `false` on a gap.
    pub fn take_seq(&mut self, seq: Option<u64>) -> bool {
        let got = seq.and_then(|s| u8::try_from(s).ok());
        let fine = match (self.next_seq, got) {
            (Some(expected), Some(got)) => expected == got,
            (None, _) => true,
            (Some(_), None) => false,
        };
        self.next_seq = got.map(|g| g.wrapping_add(1));
        fine
    }
}

/// Every edge node, by `(group, node)`.
#[derive(Debug, Default)]
pub struct Nodes {
    nodes: HashMap<(String, String), Node>,
}

impl Nodes {
    /// The node's state, made if there is room for one more; `None` once
    /// [`MAX_EDGE_NODES`] are remembered.
    pub fn get(&mut self, group: &str, node: &str) -> Option<&mut Node> {
        let key = (group.to_owned(), node.to_owned());
        if !self.nodes.contains_key(&key) && self.nodes.len() >= MAX_EDGE_NODES {
            return None;
        }
        Some(self.nodes.entry(key).or_insert_with(|| Node {
            flag: Some(Flag::NoBirth),
            ..Node::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_remembers_a_bounded_number_of_device_births() {
        let mut node = Node::default();
        for i in 0..MAX_DEVICES_PER_NODE {
            assert!(node.device_born(&format!("d{i}"), Birth::default()));
        }
        assert!(!node.device_born("one-more", Birth::default()));
        assert!(
            node.device_born("d0", Birth::default()),
            "a rebirth of a known one"
        );
        assert_eq!(node.devices.len(), MAX_DEVICES_PER_NODE);
    }

    #[test]
    fn seqs_wrap_at_256_and_a_skipped_one_is_a_gap() {
        let mut node = Node::default();
        assert!(node.take_seq(Some(0)), "NBIRTH's seq starts the count");
        for s in 1..=255 {
            assert!(node.take_seq(Some(s)));
        }
        assert!(node.take_seq(Some(0)), "255 is followed by 0");
        assert!(!node.take_seq(Some(2)), "1 was skipped");
        assert!(node.take_seq(Some(3)), "counting goes on from the gap");
        assert!(!node.take_seq(None), "a data message without a seq");
    }
}
