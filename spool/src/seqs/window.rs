//! The de-duplication window of one lane: which of the last `width` sequence numbers below and
//! at the highest one are stored, each with a fingerprint of its event time.
//!
//! A ring of `width` slots indexed by `seq % width`: slot `seq % width` speaks for `seq` only
//! while `highest - width < seq <= highest`. Moving the highest up clears the slots it passes
//! over, so a slot never vouches for a seq it was not written for.
//!
//! Stored in the spool's `sessions.window` column ([`Window::encode`]): the width (u32, little
//! endian), then `width / 64` words of the bitmap, then `width` fingerprints (u32 each). About
//! 1 KiB at the default width of 256.

/// The fingerprint of an event: the low 32 bits of its event time in ms. A retransmission
/// carries its original time; a different event with the same seq (a counter reset) has a
/// different time, unless it is a multiple of about 49.7 days away to the millisecond.
pub fn fingerprint(time_ms: i64) -> u32 {
    time_ms as u32
}

/// Whether `width` can be a window's: a multiple of 64 from 64 to 65536.
pub fn valid_width(width: usize) -> bool {
    (64..=65536).contains(&width) && width.is_multiple_of(64)
}

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The highest seq stored; meaningless while nothing is marked.
    highest: u64,
    bits: Vec<u64>,
    prints: Vec<u32>,
}

/// What the window knows of a seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Above the highest: not stored.
    Above,
    /// Inside the window and not stored (a gap, or an event arriving out of order).
    Unmarked,
    /// Inside the window and stored, with this fingerprint.
    Marked(u32),
    /// More than `width` below the highest: the window cannot say.
    Below,
}

impl Window {
    /// An empty window `width` wide; `width` is a positive multiple of 64 (the config ensures
    /// it; anything else is rounded up).
    pub fn new(width: usize) -> Self {
        let words = width.div_ceil(64).max(1);
        Self {
            highest: 0,
            bits: vec![0; words],
            prints: vec![0; words * 64],
        }
    }

    pub fn width(&self) -> u64 {
        self.prints.len() as u64
    }

    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// How many seqs the window vouches for.
    pub fn marked(&self) -> u32 {
        self.bits.iter().map(|w| w.count_ones()).sum()
    }

    fn slot(&self, seq: u64) -> usize {
        (seq % self.width()) as usize
    }

    fn is_set(&self, slot: usize) -> bool {
        self.bits[slot / 64] & (1 << (slot % 64)) != 0
    }

    pub fn seen(&self, seq: u64) -> Seen {
        if seq > self.highest {
            return Seen::Above;
        }
        if self.highest - seq >= self.width() {
            return Seen::Below;
        }
        let slot = self.slot(seq);
        if self.is_set(slot) {
            Seen::Marked(self.prints[slot])
        } else {
            Seen::Unmarked
        }
    }

    /// Records `seq` as stored with `print`, moving the window up if it is above the highest.
    /// A seq below the window starts it again from that seq (nothing above it is kept).
    pub fn mark(&mut self, seq: u64, print: u32) {
        let width = self.width();
        if seq > self.highest {
            let gap = seq - self.highest;
            if gap >= width {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in self.highest + 1..=seq {
                    let slot = self.slot(s);
                    self.bits[slot / 64] &= !(1 << (slot % 64));
                }
            }
            self.highest = seq;
        } else if self.highest - seq >= width {
            self.bits.iter_mut().for_each(|w| *w = 0);
            self.highest = seq;
        }
        let slot = self.slot(seq);
        self.bits[slot / 64] |= 1 << (slot % 64);
        self.prints[slot] = print;
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.bits.len() * 8 + self.prints.len() * 4);
        out.extend_from_slice(&(self.width() as u32).to_le_bytes());
        for w in &self.bits {
            out.extend_from_slice(&w.to_le_bytes());
        }
        for p in &self.prints {
            out.extend_from_slice(&p.to_le_bytes());
        }
        out
    }

    /// The window stored as `bytes` with `highest`, at `width`. A window stored at another
    /// width, or bytes that do not decode, give an empty window: it then vouches for nothing,
    /// so events are stored rather than dropped.
    /// A `width` of 0 takes the width stored (for tools that only show the window).
    pub fn decode(bytes: Option<&[u8]>, highest: u64, width: usize) -> Self {
        let stored = bytes
            .and_then(|b| b.get(..4))
            .and_then(|b| b.try_into().ok())
            .map(|b| u32::from_le_bytes(b) as usize)
            .filter(|&w| valid_width(w));
        let width = match width {
            0 => stored.unwrap_or(super::DEFAULT_WINDOW),
            w => w,
        };
        let mut w = Self::new(width);
        w.highest = highest;
        let Some(bytes) = bytes else { return w };
        let words = w.bits.len();
        let expected = 4 + words * 8 + words * 64 * 4;
        if bytes.len() != expected || stored != Some(w.width() as usize) {
            return w;
        }
        for (i, chunk) in bytes[4..4 + words * 8].chunks_exact(8).enumerate() {
            w.bits[i] = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        }
        for (i, chunk) in bytes[4 + words * 8..].chunks_exact(4).enumerate() {
            w.prints[i] = u32::from_le_bytes(chunk.try_into().unwrap_or_default());
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_seq_is_vouched_for_until_the_window_moves_past_it() {
        let mut w = Window::new(64);
        w.mark(10, 1);
        w.mark(12, 2);
        assert_eq!(w.seen(10), Seen::Marked(1));
        assert_eq!(w.seen(11), Seen::Unmarked);
        assert_eq!(w.seen(13), Seen::Above);
        // 73 is the highest a window of 64 holding 10 can have.
        w.mark(73, 3);
        assert_eq!(w.seen(10), Seen::Marked(1));
        // 74 shares 10's slot: passing it clears it, so the slot never speaks for 10 again.
        w.mark(74, 4);
        assert_eq!(w.seen(10), Seen::Below);
        assert_eq!(w.seen(74), Seen::Marked(4));
        assert_eq!(w.seen(12), Seen::Marked(2));
        w.mark(76, 5);
        assert_eq!(w.seen(12), Seen::Below);
        assert_eq!(w.seen(75), Seen::Unmarked);
        assert_eq!(w.marked(), 3);
    }

    #[test]
    fn a_seq_far_below_restarts_the_window_from_it() {
        let mut w = Window::new(64);
        w.mark(u64::MAX, 9);
        w.mark(101, 1);
        assert_eq!(w.highest(), 101);
        assert_eq!(w.seen(u64::MAX), Seen::Above);
        assert_eq!(w.seen(101), Seen::Marked(1));
        assert_eq!(w.marked(), 1);
    }

    #[test]
    fn the_stored_form_round_trips_and_a_foreign_one_vouches_for_nothing() {
        let mut w = Window::new(128);
        for s in [3, 5, 90, 130] {
            w.mark(s, s as u32 * 7);
        }
        let bytes = w.encode();
        assert_eq!(Window::decode(Some(&bytes), w.highest(), 128), w);
        let other = Window::decode(Some(&bytes), w.highest(), 256);
        assert_eq!(other.marked(), 0);
        assert_eq!(Window::decode(Some(&bytes[..10]), 130, 128).marked(), 0);
        assert_eq!(Window::decode(None, 130, 128).seen(129), Seen::Unmarked);
    }
}
