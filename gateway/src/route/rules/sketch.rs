//! A quantile sketch with relative accuracy, for a window's percentiles (`p50`, `p95`, `p99.9`).
//!
//! The design is DDSketch's (Masson, Rim and Lee, VLDB 2019; the same logarithmic buckets as
//! OpenTelemetry's exponential histograms): a value `x > 0` is counted in bin
//! `i = ⌈log_γ x⌉`, which holds the values in `(γ^(i-1), γ^i]`, with `γ = (1 + α) / (1 - α)`.
//! Any value of a bin lies within a relative `α` of the bin's representative `2γ^i / (γ + 1)`,
//! so the quantile read from the bins is within `α` (1 %) of the exact one, whatever the
//! distribution. Negative values are binned by magnitude apart; magnitudes below
//! [`MIN_MAGNITUDE`] count as zero; values that are not finite are left out.
//!
//! Invariants:
//! - A quantile `q` is the value at rank `⌊q·(n − 1)⌋` (from 0) of the `n` values counted, within
//!   a relative 1 %: the bin holding that rank is found by walking the bins in value order.
//! - Its size is bounded: each sign keeps at most [`MAX_BINS`] contiguous bins. Values whose bin
//!   would widen that span further are counted in the lowest-magnitude bin kept, so only
//!   magnitudes more than 10^17 times smaller than the largest lose accuracy. Temperatures
//!   drifting between 20 and 25 °C take 12 bins; the state is a few dozen bytes.
//! - It is plain data (postcard in the rule state), updated in O(1) per value except when a
//!   value falls outside the bins kept so far: they are then rebuilt (at most [`MAX_BINS`]).

use serde::{Deserialize, Serialize};

/// The relative accuracy: 1 %.
pub const ALPHA: f64 = 0.01;

/// Magnitudes below this count as zero.
pub const MIN_MAGNITUDE: f64 = 1e-9;

/// The most bins one sign keeps (γ^2048 ≈ 10^17.6).
pub const MAX_BINS: usize = 2048;

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// The values counted, by bin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    /// Values of magnitude below [`MIN_MAGNITUDE`].
    zero: u64,
    /// Positive values, by bin.
    positive: Bins,
    /// Negative values, by the bin of their magnitude.
    negative: Bins,
}

/// Contiguous bins `offset ..= offset + counts.len() - 1`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Bins {
    offset: i32,
    counts: Vec<u64>,
}

/// The largest bin index a finite value has (|ln f64::MAX / ln γ| < 35,500), with room.
const MAX_INDEX: i64 = 40_000;

impl Bins {
    /// Whether the bins are as [`Bins::add`] leaves them. Bins read back from a damaged state
    /// row may not be; they are then treated as empty rather than trusted with arithmetic or an
    /// allocation.
    fn sane(&self) -> bool {
        i64::from(self.offset).abs() <= MAX_INDEX && self.counts.len() <= MAX_BINS
    }

    fn add(&mut self, index: i32) {
        if !self.sane() {
            *self = Bins::default();
        }
        let index = i64::from(index).clamp(-MAX_INDEX, MAX_INDEX);
        if self.counts.is_empty() {
            self.offset = index as i32;
            self.counts.push(1);
            return;
        }
        let offset = i64::from(self.offset);
        let top = offset + self.counts.len() as i64 - 1;
        // The span after adding, cut to the MAX_BINS highest bins: lower ones fold into the
        // lowest bin kept.
        let (low, high) = (offset.min(index), top.max(index));
        let low = low.max(high - MAX_BINS as i64 + 1);
        if low != offset || high != top {
            let mut counts = vec![0u64; (high - low + 1) as usize];
            for (i, c) in self.counts.iter().enumerate() {
                let at = ((offset + i as i64).max(low) - low) as usize;
                if let Some(slot) = counts.get_mut(at) {
                    *slot = slot.saturating_add(*c);
                }
            }
            self.counts = counts;
            self.offset = low as i32;
        }
        let at = (index.max(low) - low) as usize;
        if let Some(c) = self.counts.get_mut(at) {
            *c = c.saturating_add(1);
        }
    }

    fn total(&self) -> u64 {
        if !self.sane() {
            return 0;
        }
        self.counts.iter().fold(0, |n, c| n.saturating_add(*c))
    }

    /// `(bin index, count)` in index order; nothing for bins that are not [`Self::sane`].
    fn bins(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        let counts = if self.sane() { &self.counts[..] } else { &[] };
        counts
            .iter()
            .enumerate()
            .map(|(i, c)| (self.offset + i as i32, *c))
    }
}

/// A bin's representative value: within a relative [`ALPHA`] of every value in the bin.
fn representative(index: i32) -> f64 {
    let g = gamma();
    // γ^(i−1) first: the bin of f64::MAX would overflow γ^i. Capped at the largest finite.
    (g.powi(index - 1) * (2.0 * g / (g + 1.0))).min(f64::MAX)
}

/// Where a value is counted: computed once per value, however many sketches count it (an
/// event is in several hopping windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    Zero,
    Positive(i32),
    Negative(i32),
}

impl Bin {
    /// `None` for a value that is not finite: it is left out.
    pub fn of(value: f64) -> Option<Bin> {
        if !value.is_finite() {
            return None;
        }
        let magnitude = value.abs();
        if magnitude < MIN_MAGNITUDE {
            return Some(Bin::Zero);
        }
        // Finite magnitudes give |index| < 36,000.
        let index = (magnitude.ln() / gamma().ln()).ceil() as i32;
        Some(if value > 0.0 {
            Bin::Positive(index)
        } else {
            Bin::Negative(index)
        })
    }
}

impl Sketch {
    /// Counts `value` (left out if it is not finite).
    #[cfg(test)]
    pub fn add(&mut self, value: f64) {
        if let Some(bin) = Bin::of(value) {
            self.count_in(bin);
        }
    }

    /// Counts a value in its bin.
    pub fn count_in(&mut self, bin: Bin) {
        match bin {
            Bin::Zero => self.zero = self.zero.saturating_add(1),
            Bin::Positive(i) => self.positive.add(i),
            Bin::Negative(i) => self.negative.add(i),
        }
    }

    /// The values counted.
    pub fn count(&self) -> u64 {
        self.zero
            .saturating_add(self.positive.total())
            .saturating_add(self.negative.total())
    }

    /// The `q` quantile (`0 ≤ q ≤ 1`), or `None` when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (n - 1) as f64).floor() as u64;
        let mut seen = 0u64;
        // In value order: the most negative first.
        for (i, c) in self.negative.bins().rev() {
            seen = seen.saturating_add(c);
            if seen > rank {
                return Some(-representative(i));
            }
        }
        seen = seen.saturating_add(self.zero);
        if seen > rank {
            return Some(0.0);
        }
        for (i, c) in self.positive.bins() {
            seen = seen.saturating_add(c);
            if seen > rank {
                return Some(representative(i));
            }
        }
        // Unreachable: the bins hold `n` values and `rank < n`.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact value at rank ⌊q·(n − 1)⌋.
    fn exact(values: &[f64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    fn within(estimate: f64, exact: f64) -> bool {
        (estimate - exact).abs() <= ALPHA * exact.abs() + 1e-12
    }

    #[test]
    fn percentiles_of_1_to_100_are_within_one_percent() {
        let mut s = Sketch::default();
        for v in 1..=100 {
            s.add(v as f64);
        }
        assert_eq!(s.count(), 100);
        for (q, want) in [
            (0.0, 1.0),
            (0.5, 50.0),
            (0.95, 95.0),
            (0.99, 99.0),
            (1.0, 100.0),
        ] {
            let got = s.quantile(q).unwrap();
            assert!(within(got, want), "q {q}: {got} vs {want}");
        }
    }

    #[test]
    fn negative_zero_and_positive_values_are_ordered() {
        let mut s = Sketch::default();
        for v in [-5.0, -0.5, 0.0, 1e-12, 0.5, 5.0] {
            s.add(v);
        }
        let got: Vec<f64> = (0..6)
            .map(|r| s.quantile(r as f64 / 5.0).unwrap())
            .collect();
        for (g, want) in got.iter().zip([-5.0, -0.5, 0.0, 0.0, 0.5, 5.0]) {
            assert!(within(*g, want), "{got:?}");
        }
    }

    #[test]
    fn values_that_are_not_finite_are_left_out_and_an_empty_sketch_has_no_quantile() {
        let mut s = Sketch::default();
        assert_eq!(s.quantile(0.5), None);
        s.add(f64::NAN);
        s.add(f64::INFINITY);
        assert_eq!(s.quantile(0.5), None);
        s.add(3.0);
        assert!(within(s.quantile(0.5).unwrap(), 3.0));
    }

    #[test]
    fn a_span_wider_than_the_bound_keeps_the_large_magnitudes_accurate() {
        let mut s = Sketch::default();
        s.add(1e-8);
        s.add(1e12);
        s.add(1e15);
        assert!(s.positive.counts.len() <= MAX_BINS);
        assert_eq!(s.count(), 3);
        assert!(within(s.quantile(1.0).unwrap(), 1e15));
        assert!(within(s.quantile(0.5).unwrap(), 1e12));
    }

    #[test]
    fn a_slowly_drifting_temperature_takes_a_few_bins() {
        let mut s = Sketch::default();
        for i in 0..3600 {
            s.add(20.0 + 5.0 * (i as f64 / 3600.0));
        }
        let bytes = postcard::to_allocvec(&s).unwrap();
        assert!(bytes.len() < 64, "{} bytes", bytes.len());
    }

    #[test]
    fn the_extremes_of_f64_stay_finite_and_within_one_percent() {
        let mut s = Sketch::default();
        for v in [f64::MAX, -f64::MAX, f64::MIN_POSITIVE, 1e-300] {
            s.add(v);
        }
        let top = s.quantile(1.0).unwrap();
        assert!(top.is_finite() && within(top, f64::MAX), "{top}");
        let bottom = s.quantile(0.0).unwrap();
        assert!(bottom.is_finite() && within(bottom, -f64::MAX), "{bottom}");
    }

    #[test]
    fn damaged_bins_from_disk_are_dropped_not_trusted() {
        // As a corrupt state row could decode: an offset no value has, more bins than kept.
        let mut s = Sketch {
            zero: 0,
            positive: Bins {
                offset: -2_000_000_000,
                counts: vec![u64::MAX; 3],
            },
            negative: Bins {
                offset: i32::MAX,
                counts: vec![1; MAX_BINS + 1],
            },
        };
        assert_eq!(s.count(), 0);
        assert_eq!(s.quantile(0.5), None);
        s.add(3.0);
        s.add(-3.0);
        assert_eq!(s.count(), 2);
        assert!(within(s.quantile(1.0).unwrap(), 3.0));
        assert!(within(s.quantile(0.0).unwrap(), -3.0));
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            -1e6..1e6f64,
            -50.0..50.0f64,
            Just(0.0),
            (1e-6..1e9f64),
            (-1e9..-1e-6f64),
        ]
    }

    proptest! {
        #[test]
        fn every_quantile_is_within_one_percent_of_the_exact_value(
            values in proptest::collection::vec(value(), 1..400),
            q in 0.0..=1.0f64,
        ) {
            let mut s = Sketch::default();
            for v in &values {
                s.add(*v);
            }
            // Magnitudes below MIN_MAGNITUDE count as zero; the strategy makes none but 0.
            let want = exact(&values, q);
            let got = s.quantile(q).unwrap();
            prop_assert!(within(got, want), "q {} got {} want {}", q, got, want);
        }
    }
}
