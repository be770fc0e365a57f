//! Medians, maxima and rates.

/// Median and maximum of a sample (`None` for an empty one). NaNs are
/// ignored.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub median: f64,
    pub max: f64,
    pub n: usize,
}

/// The median (mean of the two middle values for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The largest value.
pub fn max(values: &[f64]) -> Option<f64> {
    values
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .max_by(f64::total_cmp)
}

/// Median and maximum together.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    Some(Summary {
        median: median(values)?,
        max: max(values)?,
        n: values.iter().filter(|x| !x.is_nan()).count(),
    })
}

/// The `p`-th percentile (0 < p ≤ 100) by the nearest-rank method: the
/// smallest value that at least `p` % of the values are at most. NaNs are
/// ignored; `None` for an empty sample.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Events per second of `count` events over `micros` microseconds.
pub fn per_second(count: u64, micros: u64) -> f64 {
    if micros == 0 {
        return 0.0;
    }
    count as f64 * 1e6 / micros as f64
}

/// Counts of sorted timestamps (µs) falling in each `[start + i*width,
/// start + (i+1)*width)` for `buckets` buckets.
pub fn histogram(sorted_micros: &[u64], start: u64, width: u64, buckets: usize) -> Vec<u32> {
    let mut out = vec![0u32; buckets];
    if width == 0 {
        return out;
    }
    let from = sorted_micros.partition_point(|&t| t < start);
    for &t in &sorted_micros[from..] {
        let i = ((t - start) / width) as usize;
        if i >= buckets {
            break;
        }
        out[i] += 1;
    }
    out
}

/// The longest interval without an event that overlaps `[from, to]`, in
/// the same unit as the times: between consecutive sorted `times`, the
/// last one at or before `from` (or `from` itself, if none) and the first
/// one at or after `to` (or `to`, if none) included. So a stall that began
/// before `from` or ended after `to` counts whole; `None` if `to < from`.
pub fn longest_gap(sorted_times: &[u64], from: u64, to: u64) -> Option<u64> {
    if to < from {
        return None;
    }
    let first = sorted_times.partition_point(|&t| t <= from);
    let start = if first > 0 {
        sorted_times[first - 1]
    } else {
        from
    };
    let after = sorted_times.partition_point(|&t| t < to).max(first);
    let end = sorted_times.get(after).copied().unwrap_or(to);
    let mut longest = 0;
    let mut previous = start;
    for &t in &sorted_times[first..after] {
        longest = longest.max(t - previous);
        previous = t;
    }
    Some(longest.max(end - previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 99.0), None);
    }

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn max_and_summary() {
        assert_eq!(max(&[1.0, 9.5, 3.0]), Some(9.5));
        assert_eq!(max(&[]), None);
        let s = summarize(&[1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.max, s.n), (2.0, 10.0, 3));
        assert!(summarize(&[f64::NAN]).is_none());
    }

    #[test]
    fn longest_gaps_overlap_the_window() {
        let t = [10, 11, 12, 20, 21, 40];
        // Inside: 12 → 20.
        assert_eq!(longest_gap(&t, 11, 21), Some(8));
        // A stall that ends after the window counts whole: 21 → 40.
        assert_eq!(longest_gap(&t, 19, 25), Some(19));
        // One that began before it too: 12 → 20.
        assert_eq!(longest_gap(&t, 15, 16), Some(8));
        // No event before the window: from `from`; none after: to `to`.
        assert_eq!(longest_gap(&t, 0, 5), Some(10));
        assert_eq!(longest_gap(&t, 40, 50), Some(10));
        assert_eq!(longest_gap(&[], 3, 7), Some(4));
        assert_eq!(longest_gap(&t, 5, 3), None);
        assert_eq!(longest_gap(&t, 20, 20), Some(1));
    }

    #[test]
    fn rates_and_histograms() {
        assert_eq!(per_second(500, 250_000), 2000.0);
        assert_eq!(per_second(1, 0), 0.0);
        let t = [5, 999, 1000, 1500, 2999, 3000, 10_000];
        assert_eq!(histogram(&t, 0, 1000, 3), vec![2, 2, 1]);
        assert_eq!(histogram(&t, 1000, 1000, 2), vec![2, 1]);
        assert_eq!(histogram(&t, 0, 0, 2), vec![0, 0]);
    }
}
