//! Latency samples and the `RESULT` line.
//!
//! Every latency is kept (a 10 s saturation run is a few hundred thousand `u64`s), so percentiles are
//! exact order statistics rather than histogram buckets.

use std::fmt;
use std::time::Duration;

/// Latencies in nanoseconds, in no particular order.
#[derive(Debug, Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn record(&mut self, latency: Duration) {
        self.0
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// The order statistics of the samples.
    pub fn into_sorted(mut self) -> Sorted {
        self.0.sort_unstable();
        Sorted(self.0)
    }
}

/// Samples in ascending order.
#[derive(Debug)]
pub struct Sorted(Vec<u64>);

impl Sorted {
    /// The smallest sample at or above a fraction `q` of all samples (nearest rank), in milliseconds;
    /// 0 without samples.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = (q * self.0.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.0.len()) - 1;
        self.0[index] as f64 / 1e6
    }

    pub fn max_ms(&self) -> f64 {
        self.0.last().map_or(0.0, |&ns| ns as f64 / 1e6)
    }
}

/// `key=value` pairs after `RESULT`, in insertion order; numbers are written with fixed decimals so
/// that scripts can read them with `sed`/`awk`.
#[derive(Debug, Default)]
pub struct ResultLine(Vec<(String, String)>);

impl ResultLine {
    pub fn text(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        self.0.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn number(&mut self, key: &str, value: f64, decimals: usize) -> &mut Self {
        self.0.push((key.to_owned(), format!("{value:.decimals$}")));
        self
    }

    /// `<prefix>p50_ms`, `p90`, `p99`, `p999` (99.9 %) and `<prefix>max_ms` of `sorted`.
    pub fn latencies(&mut self, prefix: &str, sorted: &Sorted) -> &mut Self {
        for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)] {
            self.number(&format!("{prefix}{name}_ms"), sorted.percentile_ms(q), 3);
        }
        self.number(&format!("{prefix}max_ms"), sorted.max_ms(), 3)
    }
}

impl fmt::Display for ResultLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RESULT")?;
        for (key, value) in &self.0 {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(millis: impl IntoIterator<Item = u64>) -> Sorted {
        let mut samples = Samples::default();
        for ms in millis {
            samples.record(Duration::from_millis(ms));
        }
        samples.into_sorted()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        // 1..=100 ms in reverse order.
        let sorted = sorted((1..=100).rev());
        assert_eq!(sorted.percentile_ms(0.50), 50.0);
        assert_eq!(sorted.percentile_ms(0.99), 99.0);
        assert_eq!(sorted.percentile_ms(0.999), 100.0);
        assert_eq!(sorted.max_ms(), 100.0);
        assert_eq!(sorted.percentile_ms(0.0), 1.0);
    }

    #[test]
    fn no_samples_reads_as_zero() {
        let sorted = Samples::default().into_sorted();
        assert_eq!(sorted.percentile_ms(0.99), 0.0);
        assert_eq!(sorted.max_ms(), 0.0);
    }

    #[test]
    fn result_line_is_key_value_pairs() {
        let mut line = ResultLine::default();
        line.text("label", "warm")
            .number("rps", 1234.56, 1)
            .latencies("lag_", &sorted([2, 4]));
        assert_eq!(
            line.to_string(),
            "RESULT label=warm rps=1234.6 lag_p50_ms=2.000 lag_p90_ms=4.000 lag_p99_ms=4.000 \
             lag_p999_ms=4.000 lag_max_ms=4.000"
        );
    }
}
