//! Samples and their summaries.

use std::time::Duration;

/// Latency samples of one measured operation, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn push(&mut self, elapsed: Duration) {
        self.0.push(elapsed.as_secs_f64() * 1e6);
    }

    pub fn push_us(&mut self, us: f64) {
        self.0.push(us);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0..=1), nearest-rank; NaN when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        nearest_rank(&sorted, q)
    }

    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    pub fn p90(&self) -> f64 {
        self.quantile(0.9)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::max)
    }

    /// How much this operation's median is above `base`'s, with a 95 % interval: the rounds are
    /// resampled with replacement ([`RESAMPLES`] times), and each round's two samples stay
    /// together (they ran in the same round, in the same state of the machine). An interval that
    /// holds 0 means this run cannot tell the two apart. Sample `i` of each must come from the
    /// same round, as the latency rounds record them.
    pub fn median_above(&self, base: &Samples) -> Difference {
        let n = self.0.len().min(base.0.len());
        let median = |values: &mut [f64]| {
            values.sort_by(f64::total_cmp);
            nearest_rank(values, 0.5)
        };
        let point = median(&mut self.0[..n].to_vec()) - median(&mut base.0[..n].to_vec());
        // xorshift64: deterministic, so that a run's report can be reproduced from its samples.
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let (mut ours, mut theirs) = (vec![0.0; n], vec![0.0; n]);
        let mut differences = Vec::with_capacity(RESAMPLES);
        for _ in 0..RESAMPLES {
            for slot in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let round = (state % n as u64) as usize;
                ours[slot] = self.0[round];
                theirs[slot] = base.0[round];
            }
            differences.push(median(&mut ours) - median(&mut theirs));
        }
        differences.sort_by(f64::total_cmp);
        let at = |q: f64| differences[((q * RESAMPLES as f64) as usize).min(RESAMPLES - 1)];
        Difference {
            point,
            low: at(0.025),
            high: at(0.975),
        }
    }
}

/// The `q` quantile (0..=1) of `sorted`, nearest-rank.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// How many times [`Samples::median_above`] resamples the rounds.
pub const RESAMPLES: usize = 1000;

/// A difference of medians, in µs, with its 95 % interval.
#[derive(Clone, Copy, Debug)]
pub struct Difference {
    pub point: f64,
    pub low: f64,
    pub high: f64,
}

impl Difference {
    /// Whether the interval holds 0: the run cannot tell the two operations apart.
    pub fn holds_zero(&self) -> bool {
        self.low <= 0.0 && 0.0 <= self.high
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut s = Samples::default();
        for us in [5.0, 1.0, 4.0, 2.0, 3.0] {
            s.push_us(us);
        }
        assert_eq!(s.median(), 3.0);
        assert_eq!(s.p90(), 5.0);
        assert_eq!(s.quantile(0.2), 1.0);
        assert_eq!(s.max(), 5.0);
        assert!(Samples::default().median().is_nan());
    }

    /// Rounds of a machine whose state drifts: each round's samples share a level, and each
    /// sample adds its own jitter.
    fn rounds(shift: f64) -> (Samples, Samples) {
        let (mut base, mut other) = (Samples::default(), Samples::default());
        for round in 0..400u32 {
            let level = 100.0 + f64::from(round % 37) * 3.0;
            let jitter = |k: u32| f64::from((round * 7 + k * 13) % 11) - 5.0;
            base.push_us(level + jitter(1));
            other.push_us(level + jitter(2) + shift);
        }
        (base, other)
    }

    #[test]
    fn a_difference_of_medians_holds_zero_only_when_there_is_none() {
        let (base, same) = rounds(0.0);
        let none = same.median_above(&base);
        assert!(none.holds_zero(), "{none:?}");
        assert!(none.point.abs() <= 5.0, "{none:?}");

        let (base, above) = rounds(20.0);
        let some = above.median_above(&base);
        assert!(!some.holds_zero(), "{some:?}");
        assert!(some.low <= 20.0 && 20.0 <= some.high, "{some:?}");
        assert!(some.low > 10.0, "{some:?}");
    }
}
