//! Which event a packet id stands for.
//!
//! A device hands rumqttc publishes in seq order; rumqttc writes them in the order requested and
//! reports each as `Outgoing::Publish(pkid)`. That order maps packet ids to seqs, and a PUBACK's
//! packet id to the event it answers. Every connection starts a fresh [`Inflight`] (clean
//! session): rumqttc's own replay never mixes with the device's resends.

use std::collections::{HashMap, VecDeque};

/// Publishes requested and not yet written, and written ones awaiting their answer.
#[derive(Debug, Default)]
pub struct Inflight {
    /// `None`: a publish that is not an event (an answer to a command).
    requested: VecDeque<Option<u64>>,
    awaiting: HashMap<u16, u64>,
}

impl Inflight {
    /// The publish of `seq` was handed to the client.
    pub fn requested(&mut self, seq: u64) {
        self.requested.push_back(Some(seq));
    }

    /// A publish that is not an event (a command's answer) was requested: it takes its place
    /// in the order of writes, and its acknowledgement stands for no event.
    pub fn requested_other(&mut self) {
        self.requested.push_back(None);
    }

    /// The client wrote a publish with `pkid`: the seq it carries (the oldest requested), now
    /// awaiting its answer when `answered` (QoS 1), else done with (QoS 0).
    pub fn published(&mut self, pkid: u16, answered: bool) -> Option<u64> {
        let seq = self.requested.pop_front()??;
        if answered {
            self.awaiting.insert(pkid, seq);
        }
        Some(seq)
    }

    /// The answer to `pkid` came: the seq it answers, if one awaited it.
    pub fn answered(&mut self, pkid: u16) -> Option<u64> {
        self.awaiting.remove(&pkid)
    }

    /// Publishes requested or written and not yet answered.
    pub fn len(&self) -> usize {
        self.requested.len() + self.awaiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Written publishes awaiting their answer.
    pub fn awaiting(&self) -> usize {
        self.awaiting.len()
    }

    /// Requested publishes not written yet.
    pub fn unwritten(&self) -> usize {
        self.requested.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Inflight;

    #[test]
    fn packet_ids_map_to_seqs_in_the_order_they_were_written() {
        let mut f = Inflight::default();
        for seq in [5, 6, 7] {
            f.requested(seq);
        }
        assert_eq!(f.published(10, true), Some(5));
        assert_eq!(f.published(11, true), Some(6));
        assert_eq!(
            f.published(12, false),
            Some(7),
            "QoS 0: written, nothing awaited"
        );
        assert_eq!(f.published(13, true), None, "nothing was requested for it");
        f.requested_other();
        f.requested(8);
        assert_eq!(f.published(14, true), None, "a command's answer");
        assert_eq!(f.published(15, true), Some(8));
        assert_eq!(f.answered(14), None);
        assert_eq!(f.answered(15), Some(8));
        assert_eq!((f.len(), f.awaiting(), f.unwritten()), (2, 2, 0));
        assert_eq!(f.answered(11), Some(6));
        assert_eq!(f.answered(11), None, "answered once");
        assert_eq!(f.answered(12), None);
        assert_eq!(f.answered(10), Some(5));
        assert!(f.is_empty());
    }
}
