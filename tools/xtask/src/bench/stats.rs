//! The statistics of the benchmarks: medians of interleaved runs, percentiles of
//! latency samples, the least-squares slope of a series over time.

use std::cmp::Ordering;

/// A value two of which can be averaged (for the median of an even count).
pub trait Midpoint: PartialOrd + Copy {
    /// The value halfway between `a` and `b`.
    fn midpoint(a: Self, b: Self) -> Self;
}

impl Midpoint for f64 {
    fn midpoint(a: f64, b: f64) -> f64 {
        (a + b) / 2.0
    }
}

impl Midpoint for u64 {
    fn midpoint(a: u64, b: u64) -> u64 {
        a / 2 + b / 2 + (a % 2 + b % 2) / 2
    }
}

impl Midpoint for std::time::Duration {
    fn midpoint(a: Self, b: Self) -> Self {
        (a + b) / 2
    }
}

/// The median of `v`: its middle value once sorted, or for an even count the midpoint
/// of the two middle ones. `v` must not be empty (every benchmark runs at least once).
pub fn median<T: Midpoint>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        T::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// [`median`] of the values that are numbers (a failed measurement is NaN), NaN if
/// there are none.
pub fn median_of_numbers(v: Vec<f64>) -> f64 {
    let v: Vec<f64> = v.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() { f64::NAN } else { median(v) }
}

/// The `p`th percentile of the ascending `sorted` (nearest rank below); `sorted` must
/// not be empty.
pub fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() - 1) * p.min(100) / 100]
}

/// Least-squares slope of `y` over `x` (0 for fewer than two points or a vertical
/// spread of none).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn median_is_the_middle_or_the_midpoint_of_the_two() {
        assert_eq!(median(vec![3u64, 1, 2]), 2);
        assert_eq!(median(vec![4u64, 1, 3, 2]), 2);
        assert_eq!(median(vec![u64::MAX, u64::MAX]), u64::MAX);
        assert_eq!(median(vec![1.0f64, 2.0]), 1.5);
        assert_eq!(median(vec![7u64]), 7);
        assert_eq!(median(vec![2.5f64, -1.0, 9.0]), 2.5);
        assert_eq!(
            median(vec![
                Duration::from_millis(9),
                Duration::from_millis(1),
                Duration::from_millis(5)
            ]),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn nan_is_left_out() {
        assert_eq!(median_of_numbers(vec![f64::NAN, 3.0, 1.0, 2.0]), 2.0);
        assert!(median_of_numbers(vec![f64::NAN]).is_nan());
        assert!(median_of_numbers(Vec::new()).is_nan());
    }

    #[test]
    fn percentiles_take_the_nearest_rank_below() {
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50), 50.0);
        assert_eq!(percentile(&v, 99), 99.0);
        assert_eq!(percentile(&[1.0, 2.0], 50), 1.0);
        assert_eq!(percentile(&[1.0, 2.0], 1000), 2.0);
    }

    #[test]
    fn slope_of_a_line_and_of_noise() {
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[(0.0, 4.0), (1.0, 4.0), (2.0, 4.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 4.0)]), 0.0);
    }
}
